"""Two processes write to one fresh SQLite MLflow store at the same moment, the way a training run (rank 0,
`RunLogger`) and an evaluation (`log_report_mlflow`) do: both finish, nothing is lost, the database is intact.

Both resolve the store through the library's defaults (`$WMTP_RUNS/mlflow.db`), so this is the demo's layout. Without
the file lock around store creation, two processes opening a fresh store race in MLflow's schema migration and one
fails ("table ... already exists" / "Online migration expected to match one row")."""
import json, os, sqlite3, subprocess, sys, time

from _servers import ROOT

WRITER = r"""
import json, sys, time
from pathlib import Path
from wmtp_nb.config import Config
from wmtp_nb.tracking import RunLogger
from wmtp_nb.evaluate import log_report_mlflow
role, runs, n = sys.argv[1], Path(sys.argv[2]), int(sys.argv[3])
(runs / f"ready-{role}").touch()
while not (runs / "go").exists():
    time.sleep(0.002)
t0 = time.time()
if role == "train":
    cfg = Config.model_validate({"experiment": {"stage": "baseline", "run_name": "demo-baseline"}})
    (runs / "demo-baseline").mkdir(parents=True, exist_ok=True)
    log = RunLogger(cfg, runs / "demo-baseline")
    for s in range(1, n + 1):
        log.log(s, {"train/loss": 1.0 / s, "lr": 1e-4 * s})
    log.finish({"train/loss": 1.0 / n})
else:
    for i in range(n):
        rep = {"dataset": "humaneval", "pass_at_k": {"pass@1": i / n}, "ci95": {"pass@1": [0.0, 1.0]},
               "exact_match": 0.0, "n_tasks": 3, "seed": i, "sampling": {"n": 2, "temperature": 0.8},
               "run": "demo-baseline", "prompt_convention": "humaneval-raw", "model": "demo-baseline/best"}
        log_report_mlflow(rep, run_name=f"demo-baseline-humaneval-{i}")
print(json.dumps({"role": role, "start": t0, "end": time.time()}))
"""


def test_two_writers_at_once_on_a_fresh_store(tmp_path):
    runs = tmp_path / "runs"
    runs.mkdir()
    env = {k: v for k, v in os.environ.items() if k != "MLFLOW_TRACKING_URI"}
    env.update(WMTP_RUNS=str(runs), OMP_NUM_THREADS="1", PYTHONUNBUFFERED="1")
    n_steps, n_evals = 300, 20
    procs = {role: subprocess.Popen([sys.executable, "-c", WRITER, role, str(runs), str(n)], cwd=ROOT, env=env,
                                    stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
             for role, n in (("train", n_steps), ("eval", n_evals))}
    deadline = time.time() + 300
    while not all((runs / f"ready-{r}").exists() for r in procs) and time.time() < deadline:
        assert all(p.poll() is None for p in procs.values()), {r: p.communicate() for r, p in procs.items()}
        time.sleep(0.05)
    assert not (runs / "mlflow.db").exists()          # neither has touched the store yet: both start on a fresh one
    (runs / "go").touch()
    out = {r: p.communicate(timeout=600) for r, p in procs.items()}
    for r, p in procs.items():
        assert p.returncode == 0, f"{r} writer failed:\n{out[r][1][-4000:]}"
    spans = {r: json.loads(out[r][0].strip().splitlines()[-1]) for r in procs}
    print("writer spans (s after go):", {r: (round(s["start"] - spans["train"]["start"], 2),
                                            round(s["end"] - spans["train"]["start"], 2)) for r, s in spans.items()})
    assert spans["train"]["start"] < spans["eval"]["end"] and spans["eval"]["start"] < spans["train"]["end"], spans

    from mlflow import MlflowClient
    client = MlflowClient(f"sqlite:///{runs / 'mlflow.db'}")
    wmtp, evaluation = client.get_experiment_by_name("wmtp"), client.get_experiment_by_name("evaluation")
    assert wmtp.artifact_location == evaluation.artifact_location == str((runs / "mlartifacts").resolve())
    (train_run,) = client.search_runs([wmtp.experiment_id])
    assert (train_run.info.run_name, train_run.info.status) == ("demo-baseline", "FINISHED")
    hist = client.get_metric_history(train_run.info.run_id, "train/loss")
    assert [m.step for m in hist] == list(range(1, n_steps + 1))
    assert [m.value for m in hist] == [1.0 / s for s in range(1, n_steps + 1)]
    evals = client.search_runs([evaluation.experiment_id], max_results=1000)
    assert sorted(r.info.run_name for r in evals) == sorted(f"demo-baseline-humaneval-{i}" for i in range(n_evals))
    assert all(r.info.status == "FINISHED" for r in evals)
    assert sorted(r.data.metrics["humaneval/pass_at_1"] for r in evals) == [i / n_evals for i in range(n_evals)]
    with sqlite3.connect(runs / "mlflow.db") as db:
        assert db.execute("PRAGMA integrity_check").fetchone() == ("ok",)
        assert db.execute("SELECT COUNT(*) FROM metrics").fetchone()[0] == 2 * n_steps + 4 * n_evals
    print(f"train: {len(hist)} steps, eval: {len(evals)} runs, integrity_check ok")
