"""`make mlflow` over a store holding demo-style runs (training runs logged by `RunLogger`, an evaluation logged by
`log_report_mlflow`): the server comes up on a free loopback port, its REST API lists the experiments, the run names
and a metric history, serves the artifacts, and it stops by its pid (process group). The analysis readers
(`find_runs`, `read_run_metrics` with its MLflow fallback) read the same store."""
import json, os, urllib.parse, urllib.request

import pytest

from _servers import Make, free_port, listeners

STEPS = {"demo-critic": ("critic", "value/loss", [0.9, 0.5, 0.25]), "demo-baseline": ("baseline", "train/loss", [3.0, 2.5, 2.25])}


@pytest.fixture(scope="module")
def store(tmp_path_factory):
    "A runs/ directory with the demo's layout: two training runs and one evaluation in runs/mlflow.db."
    from wmtp_nb.config import Config, dump_config
    from wmtp_nb.evaluate import log_report_mlflow, write_eval
    from wmtp_nb.tracking import RunLogger, tracking_uri
    runs = tmp_path_factory.mktemp("mlflow-server") / "runs"
    for name, (stage, key, values) in STEPS.items():
        cfg = Config.model_validate({"paths": {"runs": str(runs)}, "experiment": {"stage": stage, "run_name": name}})
        (runs / name).mkdir(parents=True)
        (runs / name / "config.yaml").write_text(dump_config(cfg))
        log = RunLogger(cfg, runs / name)
        for step, v in enumerate(values, 1):
            log.log(step, {key: v, "lr": 1e-4})
        log.finish({key: values[-1]})
    rep = {"dataset": "humaneval", "pass_at_k": {"pass@1": 0.25}, "ci95": {"pass@1": [0.0, 0.5]}, "exact_match": 0.0,
           "n_tasks": 4, "seed": 0, "sampling": {"n": 2, "temperature": 0.8}, "run": "demo-baseline",
           "prompt_convention": "humaneval-raw", "model": str(runs / "demo-baseline" / "best")}
    out = runs / "demo-baseline" / "eval" / "humaneval"
    write_eval(out, [{"task_id": "HumanEval/0", "samples": []}], rep)
    log_report_mlflow(rep, out, uri=tracking_uri(None, runs), run_name="demo-baseline-humaneval")
    return runs


def _get(base: str, path: str, **query) -> dict:
    with urllib.request.urlopen(f"{base}{path}?{urllib.parse.urlencode(query)}", timeout=30) as r:
        return json.loads(r.read())


def _post(base: str, path: str, body: dict) -> dict:
    req = urllib.request.Request(f"{base}{path}", json.dumps(body).encode(), {"Content-Type": "application/json"})
    with urllib.request.urlopen(req, timeout=30) as r:
        return json.loads(r.read())


def _health(base: str) -> bool:
    try:
        with urllib.request.urlopen(f"{base}/health", timeout=5) as r:
            return r.status == 200
    except OSError:
        return False


def test_make_mlflow_serves_the_demo_runs(store):
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    server = Make("mlflow", {**os.environ, "OMP_NUM_THREADS": "1"}, f"MLFLOW_PORT={port}", f"WMTP_RUNS={store}")
    try:
        server.wait_for(lambda: _health(base), 240, "mlflow server /health")
        assert listeners(port) == {"127.0.0.1"}, listeners(port)
        exps = {e["name"]: e for e in _post(base, "/api/2.0/mlflow/experiments/search", {"max_results": 100})["experiments"]}
        assert {"wmtp", "evaluation"} <= exps.keys(), exps.keys()
        assert exps["wmtp"]["artifact_location"] == str((store / "mlartifacts").resolve())
        found = _post(base, "/api/2.0/mlflow/runs/search",
                      {"experiment_ids": [exps["wmtp"]["experiment_id"], exps["evaluation"]["experiment_id"]]})["runs"]
        by_name = {r["info"]["run_name"]: r for r in found}
        assert sorted(by_name) == ["demo-baseline", "demo-baseline-humaneval", "demo-critic"], sorted(by_name)
        assert all(r["info"]["status"] == "FINISHED" for r in found)
        histories = {}
        for name, (stage, key, values) in STEPS.items():
            info = by_name[name]["info"]
            assert info["run_id"] == (store / name / "mlflow_run_id").read_text().strip()
            hist = _get(base, "/api/2.0/mlflow/metrics/get-history", run_id=info["run_id"], metric_key=key)["metrics"]
            histories[f"{name} {key}"] = [(m["step"], m["value"]) for m in hist]
            assert histories[f"{name} {key}"] == list(enumerate(values, 1)), hist
        ev = by_name["demo-baseline-humaneval"]
        assert {m["key"]: m["value"] for m in ev["data"]["metrics"]}["humaneval/pass_at_1"] == 0.25
        arts = _get(base, "/api/2.0/mlflow/artifacts/list", run_id=by_name["demo-baseline"]["info"]["run_id"])
        assert sorted(f["path"] for f in arts["files"]) == ["config.yaml", "final_metrics.json"], arts
        # a tracking server instead of the file (MLFLOW_TRACKING_URI=http://…, a cluster's setup): the same functions
        from wmtp_nb.evaluate import log_report_mlflow
        rep = {"dataset": "mbpp", "pass_at_k": {"pass@1": 0.5}, "ci95": {"pass@1": [0.25, 0.75]}, "exact_match": 0.0,
               "n_tasks": 2, "seed": 0, "sampling": {"n": 1}, "model": "m"}
        rid = log_report_mlflow(rep, uri=base, experiment="via-server", run_name="remote-eval")
        (remote,) = _post(base, "/api/2.0/mlflow/runs/search", {"experiment_ids": [
            _get(base, "/api/2.0/mlflow/experiments/get-by-name", experiment_name="via-server")["experiment"]["experiment_id"]]})["runs"]
        assert (remote["info"]["run_id"], remote["info"]["run_name"], remote["info"]["status"]) == (rid, "remote-eval", "FINISHED")
        print("REST:", json.dumps({"experiments": sorted(exps), "runs": sorted(by_name), **histories,
                                   "demo-baseline artifacts": sorted(f["path"] for f in arts["files"])}))
    finally:
        rc = server.stop()
    assert not server.group(), "the server outlived its process group"
    assert not _health(base)
    print("make mlflow output:\n" + "\n".join(server.lines[:3]), f"\n... stopped, make exit status {rc}")


def test_analysis_readers_on_the_store(store):
    from wmtp_nb.analysis import find_runs, read_run_metrics
    assert find_runs(store, stages=("baseline", "critic")) == {"baseline": store / "demo-baseline", "critic": store / "demo-critic"}
    rows = read_run_metrics(store / "demo-baseline")           # metrics.jsonl
    (store / "demo-critic" / "metrics.jsonl").unlink()
    fallback = read_run_metrics(store / "demo-critic")          # MLflow history from runs/mlflow.db
    assert [r["train/loss"] for r in rows] == STEPS["demo-baseline"][2]
    assert fallback == [{"step": s, "value/loss": v, "lr": 1e-4} for s, v in enumerate(STEPS["demo-critic"][2], 1)]
