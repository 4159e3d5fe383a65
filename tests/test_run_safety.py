"""Runs: one writer per run directory (a second training is refused naming the holder; under torchrun every rank
stops; a killed holder's lock is taken over), nothing lost on resume (a save killed between the two renames of
`last/` resumes from the newest complete checkpoint, bit-identical to an uninterrupted run, with no duplicate step in
metrics.jsonl or MLflow), no half-truths (a failed run's final_metrics.json says `failed` and the error), and
settings refused up front (unsafe run names, out-of-range numbers, k > n in evaluation). Issue 15."""
import json, os, signal, socket, subprocess, sys, time
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

pytest.importorskip("wmtp_nb.sampling"); pytest.importorskip("wmtp_nb.collate")

from _train_assets import ROOT, build, overrides, run_cli
from wmtp_nb.config import load_config
from wmtp_nb.files import RunLock, RunLockedError, read_jsonl


@pytest.fixture(scope="module")
def assets(tmp_path_factory):
    root = tmp_path_factory.mktemp("runsafety")
    return root, build(root)


def _args(root, st, name, **kw):
    return ["--config", "configs/baseline.yaml", "--override", *overrides(root, st, **{"experiment.run_name": name, **kw})]


def _steps(run_dir):
    return [r["step"] for r in read_jsonl(run_dir / "metrics.jsonl")]


def _mlflow(root):
    from mlflow import MlflowClient
    return MlflowClient(f"sqlite:///{root / 'runs' / 'mlflow.db'}")


def _mlflow_runs(root, name):
    c = _mlflow(root)
    return c.search_runs([e.experiment_id for e in c.search_experiments()], f"attributes.run_name = '{name}'")


def _wait_for(cond, proc, what, log, timeout=300):
    deadline = time.time() + timeout
    while time.time() < deadline:
        if cond(): return
        assert proc.poll() is None, f"the training exited before {what}: {Path(log.name).read_text()[-3000:]}"
        time.sleep(0.05)
    raise AssertionError(f"timed out waiting for {what}")


def test_second_training_refused_and_killed_holder_taken_over(assets):
    root, st = assets
    run = root / "runs" / "twice"
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONUNBUFFERED": "1"}
    log = open(root / "twice-first.log", "w+")
    first = subprocess.Popen([sys.executable, "-m", "wmtp_nb.train",
                              *_args(root, st, "twice", **{"training.max_steps": 100000, "training.save_every": 3})],
                             cwd=ROOT, env=env, stdout=subprocess.DEVNULL, stderr=log, text=True)
    try:
        _wait_for(lambda: (run / "last" / "meta.json").is_file(), first, "its first checkpoint", log)
        second = run_cli(_args(root, st, "twice", **{"training.max_steps": 4}))
        assert second.returncode == 3, second.stderr[-3000:]
        assert f"is in use by pid {first.pid} on host {socket.gethostname()}" in second.stderr, second.stderr[-2000:]
        assert "choose another experiment.run_name" in second.stderr
        assert first.poll() is None                             # the holder is untouched and still training
    finally:
        first.kill(); first.wait(); log.close()
    assert len(_mlflow_runs(root, "twice")) == 1                # the refused run opened no MLflow run
    steps = _steps(run)
    assert steps == list(range(1, len(steps) + 1)), steps       # one writer: 1, 2, 3, … (never 1, 1, 2, 2)
    assert json.loads((run / ".lock").read_text())["pid"] == first.pid   # SIGKILL: the record stays behind
    done = max(json.loads(m.read_text())["step"] for m in run.glob("*/meta.json"))
    third = run_cli(_args(root, st, "twice", **{"training.max_steps": done + 2}))
    assert third.returncode == 0, third.stderr[-3000:]
    assert f"taking over the stale lock of pid {first.pid}" in third.stderr, third.stderr[-2000:]
    assert f"at step {done}/{done + 2}" in third.stdout, third.stdout[-2000:]
    assert not (run / ".lock").exists()                         # released at the end
    assert _steps(run) == list(range(1, done + 3))
    final = json.loads((run / "final_metrics.json").read_text())
    assert (final["status"], final["error"], final["step"], final["checkpoint_step"]) == ("finished", None, done + 2, done + 2)


def test_torchrun_every_rank_stops_when_the_run_is_held(assets):
    root, st = assets
    with RunLock(root / "runs" / "held"):
        t0 = time.time()
        r = run_cli(_args(root, st, "held", **{"training.max_steps": 2}), torchrun=2, timeout=240)
        assert r.returncode != 0
        assert f"is in use by pid {os.getpid()}" in r.stderr, r.stderr[-3000:]
        assert "rank 1: rank 0 could not lock the run" in r.stderr, r.stderr[-3000:]  # rank 1 was told, did not hang
        assert time.time() - t0 < 200
        assert not (root / "runs" / "held" / "config.yaml").exists()
    # Rho-1 under torchrun: rank 1 waits for rank 0's reference scoring outside the training group's timeout
    r = run_cli(["--config", "configs/rho1.yaml", "--override",
                 *overrides(root, st, **{"experiment.run_name": "rho1-2p", "training.max_steps": 1, "mlflow.enabled": "false"})],
                torchrun=2, timeout=300)
    assert r.returncode == 0, r.stderr[-3000:]
    assert "scored now) cached" in r.stdout


CRASH = r'''
import json, os, runpy, sys, time
from pathlib import Path
_replace, _swaps = os.replace, [0]
def replace(src, dst):
    _replace(src, dst)
    if Path(src).name == "last" and Path(dst).name == ".last.old":        # the first of the two renames of last/
        _swaps[0] += 1
        if _swaps[0] == 1:                       # publishing step 8 (step 4's had no last/ to move)
            m = Path(dst).parent / "metrics.jsonl"
            while not m.is_file() or json.loads(m.read_text().splitlines()[-1])["step"] < 10: time.sleep(0.01)
            os._exit(9)                          # killed between the renames, after steps 9, 10 were logged
os.replace = replace
sys.argv = ["wmtp_nb.train", *sys.argv[1:]]
runpy.run_module("wmtp_nb.train", run_name="__main__")
'''


def test_killed_between_the_renames_resumes_from_the_newest_checkpoint(assets):
    root, st = assets
    common = {"training.max_steps": 14, "training.save_every": 4, "training.eval_every": 100, "checkpoint.keep": 0,
              "data.sampling": "all", "data.n_samples": 24}
    r = run_cli(_args(root, st, "straight14", **common, **{"mlflow.enabled": "false"}))
    assert r.returncode == 0, r.stderr[-3000:]
    args = _args(root, st, "cut", **common)
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    r = subprocess.run([sys.executable, "-c", CRASH, *args], cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)
    assert r.returncode == 9, r.stderr[-3000:]
    run = root / "runs" / "cut"
    assert not (run / "last").exists() and (run / ".last.old").is_dir() and (run / ".pending-00000008").is_dir()
    [mrun] = _mlflow_runs(root, "cut")
    assert max(m.step for m in _mlflow(root).get_metric_history(mrun.info.run_id, "train/loss")) >= 9
    r = run_cli(args)
    assert r.returncode == 0, r.stderr[-3000:]
    assert "at step 8/14" in r.stdout and "from .pending-00000008/" in r.stdout, r.stdout[-3000:]
    assert sorted(p.name for p in run.iterdir() if p.name.startswith(".")) == []     # no leftovers, no lock
    assert _steps(run) == list(range(1, 15))
    a, b = load_file(str(root / "runs" / "straight14" / "last" / "policy.safetensors")), load_file(str(run / "last" / "policy.safetensors"))
    assert all(torch.equal(a[k], b[k]) for k in a)             # as if never interrupted
    # MLflow: the same run, each metric once per step, the resume step as a tag
    [mrun] = _mlflow_runs(root, "cut")
    c = _mlflow(root)
    for key in ("train/loss", "lr", "valid/ce"):
        steps = [m.step for m in c.get_metric_history(mrun.info.run_id, key)]
        assert len(steps) == len(set(steps)), (key, sorted(steps))
    assert sorted(m.step for m in c.get_metric_history(mrun.info.run_id, "train/loss")) == list(range(1, 15))
    assert (mrun.data.tags["resume_step"], mrun.info.status) == ("8", "FINISHED")


def test_a_failed_run_says_so(assets, monkeypatch):
    import wmtp_nb.train as tr
    root, st = assets
    cfg = load_config(ROOT / "configs" / "baseline.yaml",
                      overrides=overrides(root, st, **{"experiment.run_name": "fails", "training.max_steps": 5, "training.save_every": 1}))
    real, calls = tr.accumulate_gradients, []
    def broken(stage, batches, fsdp=False):
        calls.append(1)
        if len(calls) == 3: raise RuntimeError("injected failure at step 3")
        return real(stage, batches, fsdp)
    monkeypatch.setattr(tr, "accumulate_gradients", broken)
    with pytest.raises(RuntimeError, match="injected failure"):
        tr.train(cfg)
    run = root / "runs" / "fails"
    final = json.loads((run / "final_metrics.json").read_text())
    assert (final["status"], final["error"]) == ("failed", "RuntimeError: injected failure at step 3"), final
    assert (final["step"], final["total_steps"], final["checkpoint_step"]) == (2, 5, 2)
    assert "train/loss" in final and not (run / ".lock").exists()
    [mrun] = _mlflow_runs(root, "fails")
    assert mrun.info.status == "FAILED"
    monkeypatch.setattr(tr, "accumulate_gradients", real)      # the rerun resumes and finishes
    assert tr.train(cfg)["status"] == "finished"
    final = json.loads((run / "final_metrics.json").read_text())
    assert (final["status"], final["error"], final["step"]) == ("finished", None, 5)
    # a run that fails while being set up says so too
    bad = load_config(ROOT / "configs" / "baseline.yaml",
                      overrides=overrides(root, st, **{"experiment.run_name": "fails-early", "models.policy": "no-such-model"}))
    with pytest.raises(FileNotFoundError):
        tr.train(bad)
    final = json.loads((root / "runs" / "fails-early" / "final_metrics.json").read_text())
    assert final["status"] == "failed" and "no-such-model" in final["error"] and final["step"] == 0
    # a held run is refused in the Python API as well, before anything is written
    with RunLock(root / "runs" / "held-api"):
        with pytest.raises(RunLockedError, match="is in use by pid"):
            tr.train(load_config(ROOT / "configs" / "baseline.yaml", overrides=overrides(root, st, **{"experiment.run_name": "held-api"})))
    assert sorted(p.name for p in (root / "runs" / "held-api").iterdir()) == []


def test_rho1_reference_scoring_shows_records_per_second_and_eta(assets, capsys):
    from wmtp_nb.train import train
    root, st = assets
    train(load_config(ROOT / "configs" / "rho1.yaml", overrides=overrides(root, st, **{
        "experiment.run_name": "rho1-progress", "training.max_steps": 1, "training.progress": "true", "mlflow.enabled": "false",
        "paths.runs": root / "runs-progress"})))
    err = capsys.readouterr().err.splitlines()
    lines = [l for l in err if l.startswith("rho1: reference CE (train): ")]
    assert lines and lines[-1].split(" [")[0].endswith("/" + lines[-1].split("/")[1].split(" ")[0]), err[-20:]
    assert "rec/s" in lines[-1] and "<" in lines[-1], lines              # records per second and the time left


def test_unsafe_settings_are_refused_up_front(assets, tmp_path):
    root, st = assets
    for ov, msg in (("experiment.run_name=../../x", "experiment.run_name '../../x': a run name is one directory under runs/"),
                    ("training.max_steps=0", "training.max_steps: Input should be greater than or equal to 1 (got 0)"),
                    ("training.max_steps=-5", "training.max_steps: Input should be greater than or equal to 1"),
                    ("training.lr=-0.001", "training.lr: Input should be greater than 0")):
        r = run_cli(["--config", "configs/baseline.yaml", "--override", *overrides(root, st), ov])
        assert r.returncode == 2 and msg in r.stderr, (ov, r.stderr[-2000:])
    assert not (root / "x").exists() and not (root.parent / "x").exists()
    # evaluation: k > n is refused before the model is even read (the path does not exist)
    r = subprocess.run([sys.executable, "-m", "wmtp_nb.evaluate", str(tmp_path / "no-model"), "--ks", "5", "--n", "1"],
                       cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert r.returncode != 0 and "ks: pass@5 needs at least 5 samples per task, but n=1" in r.stderr, r.stderr[-2000:]


def test_train_notebook_refuses_bad_parameters(tmp_path):
    for args, msg in ((["-p", "nproc", "0"], "parameter nproc=0: an integer >= 1"),
                      (["-p", "overrides", "training.lr=1e-5"], "parameter overrides='training.lr=1e-5': a list of 'key.path=value' strings"),
                      (["-p", "stage", "rho2"], "parameter stage='rho2': one of")):
        r = subprocess.run([sys.executable, "-m", "papermill", str(ROOT / "nbs" / "train.ipynb"), str(tmp_path / "out.ipynb"),
                            "-k", "python3", *args], cwd=ROOT, capture_output=True, text=True, timeout=300)
        assert r.returncode != 0 and msg in r.stderr, (args, r.stderr[-2000:])
        assert "torch.distributed.run" not in r.stderr                  # refused before anything was launched
