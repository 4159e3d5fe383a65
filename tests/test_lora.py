"""LoRA (issue 19) end to end on tiny models: DDP and FSDP (two gloo processes) train the same adapters and write the
same LoRA checkpoint (adapters only, base by reference; training state without the frozen base); base weights stay
untouched; the checkpoint loaded for evaluation gives the logits of its training form; a LoRA run resumes
bit-identically; models.init_from a LoRA checkpoint starts at its merged weights; ref_tuning (papermill, LoRA, a
Hugging Face reference) exports a reference directory that rho1 reads by run name, under a new reference-CE cache key;
ref_tuning of an MTP model's head 0 in full."""
import json, shutil, subprocess, sys

import pytest
import torch
import yaml
from safetensors.torch import load_file

pytest.importorskip("wmtp_nb.sampling"); pytest.importorskip("wmtp_nb.collate")

from _train_assets import ROOT, build, overrides, run_cli

LORA = {"models.lora.r": 4, "models.lora.alpha": 8, "models.lora.dropout": 0.0, "training.lr": 1e-2,
        "mlflow.enabled": "false"}


@pytest.fixture(scope="module")
def assets(tmp_path_factory):
    root = tmp_path_factory.mktemp("lora")
    return root, build(root)


def _ok(r):
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-5000:]
    return r


def _rows(run_dir):
    return [json.loads(l) for l in (run_dir / "metrics.jsonl").read_text().splitlines()]


def _files(d):
    return sorted(str(p.relative_to(d)) for p in d.rglob("*") if p.is_file() and "train_state" not in p.parts)


def _ids(vocab, seed=0):
    return torch.randint(3, vocab, (2, 20), generator=torch.Generator().manual_seed(seed))


def test_lora_ddp_and_fsdp_train_the_same_adapters(assets):
    root, st = assets
    common = {**LORA, "data.sampling": "all", "data.n_samples": 24, "training.max_steps": 4, "training.grad_accum": 2,
              "training.save_every": 4, "checkpoint.keep": 0, "runtime.dtype": "float32"}
    for name, strategy, ckpt in (("lddp", "ddp", "false"), ("lfsdp", "fsdp", "false"), ("lfsdp-ac", "fsdp", "true")):
        r = _ok(run_cli(["--config", "configs/baseline.yaml", "--override",
                         *overrides(root, st, **common, **{"runtime.strategy": strategy, "experiment.run_name": name,
                                                           "runtime.activation_checkpointing": ckpt})], torchrun=2))
    assert "LoRA r 4" in r.stdout, r.stdout[-2000:]
    R = root / "runs"
    ddp, fsdp, fsdp_ac = _rows(R / "lddp"), _rows(R / "lfsdp"), _rows(R / "lfsdp-ac")
    assert max(abs(a["train/loss"] - b["train/loss"]) for a, b in zip(ddp, fsdp)) < 1e-5, (ddp, fsdp)
    assert max(abs(a["train/loss"] - b["train/loss"]) for a, b in zip(ddp, fsdp_ac)) < 1e-5, (ddp, fsdp_ac)
    assert ddp[-1]["train/loss"] < ddp[0]["train/loss"], [r["train/loss"] for r in ddp]
    # one LoRA checkpoint format whatever the strategy: adapters and peft's config, no policy.safetensors
    want = ["adapter_config.json", "lora/adapter_config.json", "lora/adapter_model.safetensors", "meta.json",
            "tokenizer/tokenizer.model"]
    assert _files(R / "lddp" / "last") == _files(R / "lfsdp" / "last") == want
    a, b = (load_file(str(R / n / "last" / "lora" / "adapter_model.safetensors")) for n in ("lddp", "lfsdp"))
    assert set(a) == set(b) and len(a) == 6 * 7 * 2 and max((a[k] - b[k]).abs().max().item() for k in a) < 1e-5
    assert all(b[k].abs().max() > 0 for k in b if "lora_B" in k)              # every adapter trained, FFN too
    cfg = json.loads((R / "lfsdp" / "last" / "adapter_config.json").read_text())
    base = st / "models_v2" / "tiny-mtp"
    assert cfg["lora"]["base"]["path"] == str(base.resolve())
    # the training state holds the trainable tensors only (the frozen base is rebuilt from the base), sharded by DCP
    from torch.distributed.checkpoint import FileSystemReader
    md = FileSystemReader(str(R / "lfsdp" / "last" / "train_state")).read_metadata().state_dict_metadata
    model_keys = [k for k in md if k.startswith("model.")]
    assert model_keys and all(".lora_A." in k or ".lora_B." in k for k in model_keys), model_keys[:5]
    # base weights untouched: the adapted model's base layers are the storage file's tensors
    from wmtp_nb.evaluate import load_policy
    from wmtp_nb.model import MetaLlamaMTPAdapter
    kept = MetaLlamaMTPAdapter.from_pretrained(R / "lfsdp" / "last", device="cpu", merge=False)
    w0 = load_file(str(base / "safetensors" / "model.safetensors"))
    sd = {k.replace(".base_layer", ""): v for k, v in kept.model.state_dict().items() if "lora_" not in k}
    assert set(sd) == set(w0) and all(torch.equal(sd[k], w0[k]) for k in w0)
    # evaluation's loader (merged) gives the training form's logits
    merged, tok = load_policy(R / "lfsdp" / "last")
    ids = _ids(kept.vocab_size)
    plain = MetaLlamaMTPAdapter.from_pretrained(base, device="cpu").eval()
    with torch.no_grad():
        d = (merged.full_forward(ids).logits - kept.full_forward(ids).logits).abs().max().item()
        moved = (merged.full_forward(ids).logits - plain.full_forward(ids).logits).abs().max().item()
    assert d < 1e-5 and moved > 1e-3, (d, moved)
    # an independent merge, without peft: W + alpha/r · B·A on every target of the storage file, FFN included
    sd, scale = dict(w0), 8 / 4
    for k in (k for k in b if k.endswith(".lora_A.weight")):
        mod = k.removesuffix(".lora_A.weight")
        sd[mod + ".weight"] = w0[mod + ".weight"] + scale * (b[mod + ".lora_B.weight"] @ b[k])
    by_hand = MetaLlamaMTPAdapter.from_pretrained(base, device="cpu").eval()
    by_hand.model.load_state_dict(sd, strict=True)
    with torch.no_grad():
        d_hand = (merged.full_forward(ids).logits - by_hand.full_forward(ids).logits).abs().max().item()
    assert d_hand < 1e-5, d_hand
    # speculative decoding of the checkpoint as evaluation loads it (merged) = greedy decoding of its training form
    from wmtp_nb.generate import generate_ids, speculative_greedy_ids
    prompts = [ids[0, :6].tolist(), ids[1, :9].tolist()]
    spec = [speculative_greedy_ids(merged, p, 16, tok.eos_id)[0] for p in prompts]
    assert spec == generate_ids(kept.eval(), prompts, 16, tok.eos_id), spec
    assert spec != generate_ids(plain, prompts, 16, tok.eos_id)              # the adapters change the tokens
    # wmtp_inspect_model reads it too
    r = subprocess.run([str(__import__("pathlib").Path(sys.executable).parent / "wmtp_inspect_model"), str(R / "lfsdp" / "last")],
                       capture_output=True, text=True, timeout=300)
    assert r.returncode == 0 and "checkpoint (step 4" in r.stdout, r.stdout + r.stderr


def test_lora_resume_is_bit_identical_and_init_from_starts_merged(assets):
    root, st = assets
    common = {**LORA, "models.lora.dropout": 0.1, "data.sampling": "all", "data.n_samples": 24, "training.max_steps": 5,
              "training.grad_accum": 1, "training.save_every": 1, "checkpoint.keep": 10, "models.init_from": "null",
              "runtime.strategy": "fsdp", "models.lora.save_merged": "true"}
    args = lambda name, **kw: ["--config", "configs/verifiable.yaml", "--override",
                               *overrides(root, st, **{**common, **kw, "experiment.run_name": name})]
    _ok(run_cli(args("vstraight"), torchrun=2))
    R = root / "runs"
    # a copy of the run whose last/ is its step-2 checkpoint: resuming it must end with the same bytes
    shutil.copytree(R / "vstraight", R / "vresumed")
    shutil.rmtree(R / "vresumed" / "last")
    shutil.copytree(R / "vstraight" / "checkpoints" / "step-00000002", R / "vresumed" / "last")
    for later in (R / "vresumed" / "checkpoints").glob("step-*"):               # as if killed after step 2: recover()
        if int(later.name.removeprefix("step-")) > 2: shutil.rmtree(later)    # takes the newest complete checkpoint
    r = _ok(run_cli(args("vresumed"), torchrun=2))
    assert "at step 2/5" in r.stdout, r.stdout[-2000:]
    for f in ("lora/adapter_model.safetensors", "value_head.safetensors"):
        a, b = load_file(str(R / "vstraight" / "last" / f)), load_file(str(R / "vresumed" / "last" / f))
        assert set(a) == set(b) and all(torch.equal(a[k], b[k]) for k in a), f
    assert [x["step"] for x in _rows(R / "vresumed")] == [1, 2, 3, 4, 5]
    assert [x["train/loss"] for x in _rows(R / "vresumed")] == [x["train/loss"] for x in _rows(R / "vstraight")]
    # save_merged: the chosen checkpoint carries merged/, a plain checkpoint equal to the adapted model
    from wmtp_nb.model import MetaLlamaMTPAdapter
    from wmtp_nb.checkpoint import resolve_checkpoint
    ck = resolve_checkpoint(R / "vstraight")
    assert sorted(p.name for p in (ck / "merged").iterdir()) == ["adapter_config.json", "policy.safetensors", "tokenizer",
                                                                 "value_head.safetensors"]
    kept = MetaLlamaMTPAdapter.from_pretrained(ck, device="cpu", merge=False).eval()   # eval: no LoRA dropout
    ids = _ids(kept.vocab_size, 1)
    with torch.no_grad():
        ref = kept.full_forward(ids)
        mg = MetaLlamaMTPAdapter.from_pretrained(ck / "merged", device="cpu").full_forward(ids)
    assert (mg.logits - ref.logits).abs().max().item() < 1e-5 and torch.allclose(mg.values, ref.values, atol=1e-6)
    # the console script writes the same merged weights elsewhere
    out = root / "vstraight-merged"
    r = subprocess.run([str(__import__("pathlib").Path(sys.executable).parent / "wmtp_merge_lora"), str(ck), "--out_dir", str(out)],
                       capture_output=True, text=True, timeout=300)
    assert r.returncode == 0 and "merged into" in r.stdout, r.stdout + r.stderr
    m1, m2 = load_file(str(ck / "merged" / "policy.safetensors")), load_file(str(out / "policy.safetensors"))
    assert set(m1) == set(m2) and all(torch.equal(m1[k], m2[k]) for k in m1)
    # models.init_from a LoRA checkpoint: its merged weights, fresh adapters on top (B = 0), the checkpoint as base
    from wmtp_nb.config import load_config
    from wmtp_nb.lora import has_lora
    from wmtp_nb.train import build_adapter
    cfg = load_config(ROOT / "configs" / "verifiable.yaml",
                      overrides=overrides(root, st, **{**common, "models.init_from": "vstraight", "experiment.run_name": "vnext"}))
    nxt = build_adapter(cfg, torch.device("cpu"))
    assert has_lora(nxt) and nxt.lora_base["path"] == str(ck.resolve())
    with torch.no_grad():
        out = nxt.eval().full_forward(ids)
    assert (out.logits - ref.logits).abs().max().item() < 1e-5 and torch.allclose(out.values, ref.values, atol=1e-6)
    # the critic gets no adapters (its trunk is frozen), the value head alone trains
    crit = build_adapter(load_config(ROOT / "configs" / "critic.yaml", overrides=overrides(root, st, **LORA)), torch.device("cpu"))
    assert not has_lora(crit)


def test_ref_tuning_then_rho1(assets, tmp_path):
    root, st = assets
    R = root / "runs"
    ov = dict(o.split("=", 1) for o in overrides(root, st, **{**LORA, "training.max_steps": 4, "training.eval_every": 2,
                                                            "training.save_every": 2, "data.n_samples": 16}))
    preset = tmp_path / "tiny.yaml"
    tree: dict = {}
    for k, v in ov.items():
        *parents, leaf = k.split(".")
        node = tree
        for p in parents: node = node.setdefault(p, {})
        node[leaf] = yaml.safe_load(str(v))
    preset.write_text(yaml.safe_dump(tree))
    r = subprocess.run([sys.executable, "-m", "papermill", str(ROOT / "nbs" / "train.ipynb"), str(tmp_path / "rt.ipynb"),
                        "-k", "python3", "-p", "stage", "ref_tuning", "-p", "preset", str(preset), "-p", "run_name", "rtune"],
                       cwd=ROOT, capture_output=True, text=True, timeout=900)
    assert r.returncode == 0, r.stderr[-4000:]
    run = R / "rtune"
    assert (run / "plots" / "loss.png").is_file()
    ref_dir = run / "reference"
    # a storage model dir in the reference's own layout (Hugging Face), complete and verified
    from wmtp_nb.storage import ReferenceModel, verify_model_dir
    assert verify_model_dir(ref_dir) == [] and (ref_dir / "configs" / "config.json").is_file()
    meta = json.loads((ref_dir / "metadata.json").read_text())
    assert meta["tuned_from"] == str((st / "models_v2" / "tiny-ref").resolve()) and meta["step"] in (2, 4)
    from wmtp_nb.model import MetaLlamaMTPAdapter
    from wmtp_nb.checkpoint import resolve_checkpoint
    ck = resolve_checkpoint(run)
    assert (ck / "lora" / "adapter_model.safetensors").is_file() and not (ck / "policy.safetensors").exists()
    tuned = ReferenceModel.from_pretrained(ref_dir, device="cpu", dtype=torch.float32)
    kept = MetaLlamaMTPAdapter.from_pretrained(ck, device="cpu", merge=False)
    base = ReferenceModel.from_pretrained(st / "models_v2" / "tiny-ref", device="cpu", dtype=torch.float32)
    ids = _ids(tuned.vocab_size, 2)
    with torch.no_grad():
        lt, lk = tuned(ids), kept.full_forward(ids).logits[:, :, 0]
        assert (lt - lk).abs().max().item() < 1e-4 and (lt - base(ids)).abs().max().item() > 1e-3
    # rho1 reads it by the run's name; the reference-CE cache key is the tuned weights' sha256
    _ok(run_cli(["--config", "configs/rho1.yaml", "--override",
                 *overrides(root, st, **{"mlflow.enabled": "false", "models.reference": "rtune", "experiment.run_name": "rho1-tuned"})]))
    caches = sorted((R / "cache" / "rho1").glob("*.pt"))
    assert any(p.name.startswith("reference-tiny-train") for p in caches), caches
    from wmtp_nb.reference import ReferenceCECache, reference_weights_sha256
    assert reference_weights_sha256(ref_dir) != reference_weights_sha256(st / "models_v2" / "tiny-ref")
    # the cache key follows the reference's content, not its name: the untuned weights under the same dir name
    untuned = tmp_path / "untuned" / "reference"
    shutil.copytree(st / "models_v2" / "tiny-ref", untuned)
    key = lambda d: ReferenceCECache(tmp_path / "c", d, "tok", preset, 64, "prompt").path.name
    assert key(ref_dir) != key(untuned) and key(ref_dir).split("-")[0] == key(untuned).split("-")[0] == "reference"
    assert key(ref_dir) == key(ref_dir)
    assert "models:\n  policy: tiny-mtp\n  reference: rtune" in (R / "rho1-tuned" / "config.yaml").read_text()


def test_ref_tuning_of_an_mtp_head_0_in_full(assets):
    root, st = assets
    _ok(run_cli(["--config", "configs/ref_tuning.yaml", "--override",
                 *overrides(root, st, **{"mlflow.enabled": "false", "models.reference": "tiny-mtp", "training.max_steps": 2,
                                         "training.save_every": 2, "experiment.run_name": "rt-mtp"})]))
    ref_dir = root / "runs" / "rt-mtp" / "reference"
    params = json.loads((ref_dir / "configs" / "params.json").read_text())
    assert (params["n_future_tokens"], params["n_layers"]) == (1, 3)             # 6 layers, 4 heads: trunk 2 + head 0
    w0 = load_file(str(st / "models_v2" / "tiny-mtp" / "safetensors" / "model.safetensors"))
    w1 = load_file(str(ref_dir / "safetensors" / "model.safetensors"))
    assert set(w1) == {k for k in w0 if not k.startswith("extra_heads.")}
    assert any(not torch.equal(w0[k], w1[k]) for k in w1)                        # trained in full
    from wmtp_nb.config import ConfigError
    r = run_cli(["--config", "configs/ref_tuning.yaml", "--override",
                 *overrides(root, st, **{"models.init_from": "rt-mtp", "experiment.run_name": "rt-bad"})])
    assert r.returncode != 0 and "ref_tuning starts from models.reference" in r.stderr


def test_dry_run_plans_lora(assets):
    root, _ = assets
    r = _ok(run_cli(["--config", "configs/verifiable.yaml", "--dry_run", "--world_size", "4", "--override",
                     f"paths.storage={root / 'nowhere'}", "runtime.device=cuda", "models.init_from=null", "models.lora.r=16"]))
    # 7B, r 16 on the seven projections of 32 blocks: 39,976,960 adapter parameters + the value head (4097) train
    assert "lora:\n    r: 16" in r.stdout and "(39.98 M trainable, LoRA r 16)" in r.stdout, r.stdout[-3000:]
    assert f"{'optimizer state':<30}  {8 * (39_976_960 + 4097) / 4 / 2**30:8.2f} GiB" in r.stdout, r.stdout[-2000:]
