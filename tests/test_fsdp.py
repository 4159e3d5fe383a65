"""FSDP on CPU: two gloo processes under torchrun on a tiny model (issue 13). FSDP trains like DDP (float32: to rounding;
bf16: within bf16 error over accumulated micro-batches); its checkpoints are the same adapter checkpoints as DDP's and
load everywhere (from_pretrained, models.init_from, evaluate, wmtp_inspect_model); a run killed with SIGKILL resumes
bit-identically, and its sharded training state resumes on one process."""
import json, os, shutil, signal, subprocess, sys, time

import pytest
import torch
from safetensors.torch import load_file

pytest.importorskip("wmtp_nb.sampling"); pytest.importorskip("wmtp_nb.collate")

from _train_assets import ROOT, build, overrides, run_cli


@pytest.fixture(scope="module")
def assets(tmp_path_factory):
    root = tmp_path_factory.mktemp("fsdp")
    return root, build(root)


def _losses(run_dir):
    return [json.loads(l)["train/loss"] for l in (run_dir / "metrics.jsonl").read_text().splitlines()]


def _weights(ckpt):
    return load_file(str(ckpt / "policy.safetensors"))


def _ok(r):
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-5000:]
    return r


def test_fsdp_matches_ddp_and_saves_the_same_checkpoint(assets):
    root, st = assets
    common = {"data.sampling": "all", "data.n_samples": 24, "training.max_steps": 3, "training.grad_accum": 3,
              "training.save_every": 3, "mlflow.enabled": "false", "checkpoint.keep": 0}
    runs = {"ddp": {"runtime.strategy": "ddp", "runtime.dtype": "float32"},
            "fsdp32": {"runtime.strategy": "fsdp", "runtime.dtype": "float32"},
            "fsdp16": {"runtime.strategy": "fsdp", "runtime.dtype": "bfloat16", "runtime.activation_checkpointing": "true"}}
    out = {}
    for name, rt in runs.items():
        out[name] = _ok(run_cli(["--config", "configs/baseline.yaml", "--override",
                                 *overrides(root, st, **common, **rt, **{"experiment.run_name": name})], torchrun=2))
    R = root / "runs"
    assert "memory plan per device" in out["fsdp32"].stdout and "fsdp over 2 process(es)" in out["fsdp32"].stdout
    # float32 compute: FSDP and DDP agree to rounding, step by step and in the final weights
    ddp, f32, f16 = _losses(R / "ddp"), _losses(R / "fsdp32"), _losses(R / "fsdp16")
    assert len(ddp) == 3 and max(abs(a - b) for a, b in zip(ddp, f32)) < 1e-5, (ddp, f32)
    wd, w32, w16 = _weights(R / "ddp" / "last"), _weights(R / "fsdp32" / "last"), _weights(R / "fsdp16" / "last")
    assert set(wd) == set(w32) and max((wd[k] - w32[k]).abs().max().item() for k in wd) < 1e-5
    # bf16 compute (fp32 master weights and reduce), 3 accumulated micro-batches: within bf16 error
    assert max(abs(a - b) / abs(a) for a, b in zip(ddp, f16)) < 2e-2, (ddp, f16)
    w0 = load_file(str(st / "models_v2" / "tiny-mtp" / "safetensors" / "model.safetensors"))
    upd = lambda w: torch.cat([(w[k] - w0[k]).flatten() for k in sorted(w0)])
    rel = ((upd(w16) - upd(wd)).norm() / upd(wd).norm()).item()
    assert rel < 0.2, rel  # Adam's normalised steps amplify bf16 noise on tiny gradients; the direction agrees
    # one checkpoint format whatever the strategy: the same files, the same meta keys
    files = lambda d: sorted(str(p.relative_to(d)) for p in d.rglob("*") if "train_state" not in p.parts)
    assert files(R / "ddp" / "last") == files(R / "fsdp32" / "last") == \
        ["adapter_config.json", "meta.json", "policy.safetensors", "tokenizer", "tokenizer/tokenizer.model"]
    meta = json.loads((R / "fsdp32" / "last" / "meta.json").read_text())
    assert (meta["world_size"], meta["sharded"], meta["step"]) == (2, True, 3)
    assert sorted(p.name for p in (R / "fsdp32" / "last" / "train_state").iterdir()) == [".metadata", "__0_0.distcp", "__1_0.distcp"]
    # ...loaded by the same from_pretrained: equal logits
    from wmtp_nb.model import MetaLlamaMTPAdapter
    a = MetaLlamaMTPAdapter.from_pretrained(R / "ddp" / "last", device="cpu")
    b = MetaLlamaMTPAdapter.from_pretrained(R / "fsdp32" / "last", device="cpu")
    ids = torch.randint(0, a.vocab_size, (2, 16), generator=torch.Generator().manual_seed(0))
    with torch.no_grad(): la, lb = a.full_forward(ids).logits, b.full_forward(ids).logits
    assert la.shape == (2, 16, 4, a.vocab_size) and (la - lb).abs().max().item() < 1e-5
    # ...and by wmtp_inspect_model
    r = subprocess.run([str(__import__("pathlib").Path(sys.executable).parent / "wmtp_inspect_model"), str(R / "fsdp32" / "best")],
                       capture_output=True, text=True, timeout=300, env={**os.environ, "OMP_NUM_THREADS": "1"})
    assert r.returncode == 0 and "checkpoint (step 3, value head none)" in r.stdout and "loss" in r.stdout, r.stdout + r.stderr


def _torchrun(args, nproc):
    return [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", str(nproc),
            "-m", "wmtp_nb.train", *args]


def _descendants(pid: int) -> list[int]:
    "Every process below `pid` (from /proc), deepest first."
    parent = {}
    for d in os.listdir("/proc"):
        if d.isdigit():
            try: parent[int(d)] = int(open(f"/proc/{d}/stat").read().rsplit(")", 1)[1].split()[1])
            except (OSError, IndexError, ValueError): pass
    out, todo = [], [pid]
    while todo:
        me = todo.pop()
        kids = [c for c, p in parent.items() if p == me]
        out += kids; todo += kids
    return out[::-1]


def test_fsdp_sigkill_resume_is_bit_identical_and_resumes_on_one_rank(assets):
    root, st = assets
    steps = 8
    common = {"training.max_steps": steps, "training.save_every": 1, "training.grad_accum": 1, "mlflow.enabled": "false",
              "data.sampling": "all", "data.n_samples": 24, "checkpoint.keep": 0, "models.init_from": "null",
              "runtime.strategy": "fsdp"}
    args = lambda name, **kw: ["--config", "configs/verifiable.yaml", "--override",
                               *overrides(root, st, **{**common, **kw, "experiment.run_name": name})]
    _ok(run_cli(args("straight"), torchrun=2))
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    proc = subprocess.Popen(_torchrun(args("killed"), 2), cwd=ROOT, env=env, stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL)
    meta = root / "runs" / "killed" / "last" / "meta.json"
    deadline = time.time() + 400
    while time.time() < deadline and proc.poll() is None:
        if meta.is_file() and json.loads(meta.read_text())["step"] >= 3: break
        time.sleep(0.02)
    assert proc.poll() is None, "the run finished before it could be killed"
    for pid in [*_descendants(proc.pid), proc.pid]:  # both ranks (torchrun starts them in their own sessions), then torchrun
        try: os.kill(pid, signal.SIGKILL)
        except ProcessLookupError: pass
    proc.wait()
    killed_at = json.loads(meta.read_text())["step"]
    assert killed_at < steps
    shutil.copytree(root / "runs" / "killed", root / "runs" / "shrunk", symlinks=True)
    # the DCP shards and the consolidated policy file hold the same model (independent reader: DCP's own converter)
    from torch.distributed.checkpoint.format_utils import dcp_to_torch_save
    dcp_to_torch_save(root / "runs" / "killed" / "last" / "train_state", root / "full.pt")
    full = torch.load(root / "full.pt", weights_only=False)
    cons = _weights(root / "runs" / "killed" / "last")
    assert all(torch.equal(full["model"][f"model.{k}"], v) for k, v in cons.items())
    assert any(k.endswith("exp_avg") for k in full["optimizer"]["state"]) or full["optimizer"]["state"]
    # same world size: bit-identical to the uninterrupted run
    r = _ok(run_cli(args("killed"), torchrun=2))
    assert f"at step {killed_at}/{steps}" in r.stdout
    a, b = _weights(root / "runs" / "straight" / "last"), _weights(root / "runs" / "killed" / "last")
    assert all(torch.equal(a[k], b[k]) for k in a)
    va = load_file(str(root / "runs" / "straight" / "last" / "value_head.safetensors"))
    vb = load_file(str(root / "runs" / "killed" / "last" / "value_head.safetensors"))
    assert all(torch.equal(va[k], vb[k]) for k in va)
    rows = [json.loads(l)["step"] for l in (root / "runs" / "killed" / "metrics.jsonl").read_text().splitlines()]
    assert rows == list(range(1, steps + 1))
    # 2 ranks -> 1: resharded by DCP; grad_accum doubled keeps the global batch, so the data order continues
    r = _ok(run_cli(args("shrunk", **{"training.grad_accum": 2})))
    assert f"written by 2 rank(s), on 1" in r.stdout and "nothing to shard" in r.stdout, r.stdout
    assert f"at step {killed_at}/{steps}" in r.stdout and "data: the checkpoint was written with" not in r.stdout
    straight, shrunk = _losses(root / "runs" / "straight"), _losses(root / "runs" / "shrunk")
    assert len(shrunk) == steps
    # same weights and samples at the first resumed step; only the micro-batch layout differs
    assert abs(shrunk[killed_at] - straight[killed_at]) / straight[killed_at] < 2e-2, (shrunk, straight)
    # a different global batch still resumes, and says that the data order changes
    shutil.rmtree(root / "runs" / "shrunk2", ignore_errors=True)
    shutil.copytree(root / "runs" / "shrunk", root / "runs" / "shrunk2")
    r = _ok(run_cli(args("shrunk2", **{"training.max_steps": steps + 1})))
    assert "data: the checkpoint was written with 4 sequences per optimiser step, this run has 2" in r.stdout, r.stdout


def test_fsdp_critic_then_verifiable_then_evaluate(assets):
    "With the surprise value head (the demo's), whose token surprise runs head 0 through the sharded output projection."
    root, st = assets
    common = {"training.max_steps": 2, "training.save_every": 1, "mlflow.enabled": "false", "runtime.strategy": "fsdp",
              "runtime.activation_checkpointing": "true", "checkpoint.keep": 1, "models.value_head": "surprise"}
    _ok(run_cli(["--config", "configs/critic.yaml", "--override",
                 *overrides(root, st, **common, **{"experiment.run_name": "fcritic"})], torchrun=2))
    crit = root / "runs" / "fcritic" / "best"
    assert (crit / "adapter_config.json").is_file() and (crit / "value_head.safetensors").is_file()
    r = _ok(run_cli(["--config", "configs/verifiable.yaml", "--override",
                     *overrides(root, st, **common, **{"experiment.run_name": "fver", "models.init_from": "fcritic"})], torchrun=2))
    best = root / "runs" / "fver" / "best"
    from wmtp_nb.model import MetaLlamaMTPAdapter
    ad = MetaLlamaMTPAdapter.from_pretrained(best, device="cpu")
    assert ad.value_head is not None and ad.value_head.kind == "surprise"
    # the critic trained its (zero-initialised) value head, which the verifiable run started from
    assert any(v.abs().sum() > 0 for v in load_file(str(crit / "value_head.safetensors")).values())
    assert "init_from: fcritic" in (root / "runs" / "fver" / "config.yaml").read_text()
    env = {**os.environ, "OMP_NUM_THREADS": "1", "MLFLOW_TRACKING_URI": f"sqlite:///{root / 'mlflow.db'}"}
    ev = subprocess.run([sys.executable, "-m", "wmtp_nb.evaluate", str(best), "--dataset", "mbpp", "--task_ids", "MBPP/11",
                         "--n", "1", "--temperature", "0", "--max_new_tokens", "8", "--ks", "1", "--no_mlflow",
                         "--out_dir", str(root / "fver-eval")], capture_output=True, text=True, timeout=400, env=env, cwd=ROOT)
    assert ev.returncode == 0, ev.stdout[-2000:] + ev.stderr[-3000:]
    rep = json.loads((root / "fver-eval" / "report.json").read_text())
    assert rep["n_tasks"] == 1 and rep["n_samples"] == 1 and "pass@1" in rep["pass_at_k"]


def test_dry_run_prints_the_7b_plan(assets):
    root, _ = assets
    r = _ok(run_cli(["--config", "configs/baseline.yaml", "--dry_run", "--world_size", "4", "--override",
                     f"paths.storage={root / 'nowhere'}", "runtime.device=cuda"]))
    assert "strategy: fsdp" in r.stdout and "activation_checkpointing: true" in r.stdout
    assert "# memory plan per device: 6.74 B params" in r.stdout and "fsdp over 4 process(es)" in r.stdout
    assert "optimizer state                    12.55 GiB" in r.stdout and "total                              33.71 GiB" in r.stdout
    assert "logits (fused, row chunks)          1.17 GiB" in r.stdout  # training.mtp_loss: fused (issue 16); 2097-row chunks on CUDA
