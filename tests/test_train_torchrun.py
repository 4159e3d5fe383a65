"""Two gloo processes under torchrun: disjoint shards covering the sample, identical parameters on both ranks after
training, one MLflow run, the same training and validation numbers as one process with the same global batch; and a
run killed mid-training then resumed ends with the uninterrupted run's weights."""
import json, os, signal, subprocess, sys, time

import pytest
import torch
from safetensors.torch import load_file

# The data layer (issue 5: wmtp_nb.sampling, wmtp_nb.collate) is built in parallel; until it is merged these
# end-to-end tests are skipped rather than faked.
pytest.importorskip("wmtp_nb.sampling"); pytest.importorskip("wmtp_nb.collate")

from _train_assets import ROOT, build, overrides, run_cli


@pytest.fixture(scope="module")
def assets(tmp_path_factory):
    root = tmp_path_factory.mktemp("torchrun")
    return root, build(root)


def test_two_process_gloo_run(assets):
    root, st = assets
    ov = overrides(root, st, **{"experiment.run_name": "ddp2", "data.sampling": "all", "data.n_samples": 12,
                                "data.is_correct": "null", "training.max_steps": 2, "training.grad_accum": 2})
    r = run_cli(["--config", "configs/baseline.yaml", "--override", *ov], torchrun=2)
    assert r.returncode == 0, r.stdout[-2000:] + r.stderr[-4000:]
    ranks = json.loads((root / "runs" / "ddp2" / "ranks.json").read_text())
    assert [x["rank"] for x in ranks] == [0, 1]
    a, b = set(ranks[0]["shard"]), set(ranks[1]["shard"])
    assert not a & b and a | b == set(range(12)), (a, b)
    assert ranks[0]["fingerprint"] == ranks[1]["fingerprint"]
    # rank 0 alone logged: one MLflow run named ddp2, and one metrics row per step
    assert len((root / "runs" / "ddp2" / "metrics.jsonl").read_text().splitlines()) == 2
    from mlflow import MlflowClient
    client = MlflowClient(f"sqlite:///{root / 'runs' / 'mlflow.db'}")
    runs = client.search_runs([e.experiment_id for e in client.search_experiments()], "attributes.run_name = 'ddp2'")
    assert len(runs) == 1 and runs[0].info.status == "FINISHED", runs
    final = json.loads((root / "runs" / "ddp2" / "final_metrics.json").read_text())
    assert final["world_size"] == 2
    # the same global batch in one process (4 accumulated micro-batches of 2 instead of 2 ranks x 2): the loss is
    # normalised over the whole step, so training follows the same path; validation (each rank its shard of the 6
    # held-out records, sums reduced across ranks) gives the same numbers
    ov1 = overrides(root, st, **{"experiment.run_name": "single", "data.sampling": "all", "data.n_samples": 12,
                                 "data.is_correct": "null", "training.max_steps": 2, "training.grad_accum": 4, "mlflow.enabled": "false"})
    r = run_cli(["--config", "configs/baseline.yaml", "--override", *ov1])
    assert r.returncode == 0, r.stderr[-3000:]
    one = json.loads((root / "runs" / "single" / "final_metrics.json").read_text())
    for k in ("train/loss", "valid/ce", "valid/ce_head_3", "valid/weighted_ce", "valid/ce_correct"):
        assert abs(final[k] - one[k]) < 1e-4 * max(1.0, abs(one[k])), (k, final[k], one[k])
    a = load_file(str(root / "runs" / "ddp2" / "last" / "policy.safetensors"))
    b = load_file(str(root / "runs" / "single" / "last" / "policy.safetensors"))
    assert all(torch.allclose(a[k], b[k], atol=1e-5) for k in a)


def test_kill_and_resume_matches_uninterrupted(assets):
    root, st = assets
    steps = 24
    common = {"training.max_steps": steps, "training.save_every": 1, "training.grad_accum": 1, "mlflow.enabled": "false",
              "data.sampling": "all", "data.n_samples": 24, "checkpoint.keep": 0}
    r = run_cli(["--config", "configs/verifiable.yaml", "--override",
                 *overrides(root, st, **common, **{"experiment.run_name": "straight", "models.init_from": "null"})])
    assert r.returncode == 0, r.stderr[-3000:]
    args = ["--config", "configs/verifiable.yaml", "--override",
            *overrides(root, st, **common, **{"experiment.run_name": "killed", "models.init_from": "null"})]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    proc = subprocess.Popen([sys.executable, "-m", "wmtp_nb.train", *args], cwd=ROOT, env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    meta = root / "runs" / "killed" / "last" / "meta.json"
    deadline = time.time() + 240
    while time.time() < deadline and proc.poll() is None:
        if meta.is_file() and json.loads(meta.read_text())["step"] >= 3: break
        time.sleep(0.02)
    assert proc.poll() is None, "the run finished before it could be killed"
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    killed_at = json.loads(meta.read_text())["step"]
    assert killed_at < steps
    r = run_cli(args)
    assert r.returncode == 0, r.stderr[-3000:]
    assert f"at step {killed_at}/{steps}" in r.stdout
    a = load_file(str(root / "runs" / "straight" / "last" / "policy.safetensors"))
    b = load_file(str(root / "runs" / "killed" / "last" / "policy.safetensors"))
    assert all(torch.equal(a[k], b[k]) for k in a)
    va = load_file(str(root / "runs" / "straight" / "last" / "value_head.safetensors"))
    vb = load_file(str(root / "runs" / "killed" / "last" / "value_head.safetensors"))
    assert all(torch.equal(va[k], vb[k]) for k in va)
    rows = [json.loads(l)["step"] for l in (root / "runs" / "killed" / "metrics.jsonl").read_text().splitlines()]
    assert rows == list(range(1, steps + 1))
