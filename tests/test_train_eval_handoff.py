"""From a training run to its evaluation: the evaluate command given a run directory reads the run's best/ when it was
chosen on validation (else last/), and every place names the run's data condition: the run's config.yaml, its MLflow
parameters and tags, the evaluation report, and the Pass@K comparison notebook."""
import json, os, subprocess, sys

import pytest

from _train_assets import ROOT, build, overrides, run_cli


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    root = tmp_path_factory.mktemp("handoff")
    st = build(root)
    r = run_cli(["--config", "configs/baseline.yaml", "--override",
                 *overrides(root, st, **{"experiment.run_name": "base", "training.max_steps": 2, "training.eval_every": 1})])
    assert r.returncode == 0, r.stderr[-3000:]
    return root, st


def test_config_and_mlflow_name_the_data_condition(trained):
    root, _ = trained
    run = root / "runs" / "base"
    assert (run / "config.yaml").read_text().startswith("# data condition: correct only\n")
    rows = [json.loads(l) for l in (run / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in rows if "valid/ce" in r] == [1, 2]                     # eval_every 1: both steps
    from mlflow import MlflowClient
    client = MlflowClient(f"sqlite:///{root / 'runs' / 'mlflow.db'}")
    (ml,) = client.search_runs([client.get_experiment_by_name("wmtp").experiment_id], "attributes.run_name = 'base'")
    assert ml.data.params["data_condition"] == "correct only"
    assert ml.data.params["data.is_correct"] == "True"
    assert ml.data.tags["data_condition"] == "correct only"
    assert [m.step for m in client.get_metric_history(ml.info.run_id, "valid/ce")] == [1, 2]
    assert "valid/ce_head_0" in ml.data.metrics


def test_evaluate_a_run_dir_and_compare(trained):
    root, st = trained
    run = root / "runs" / "base"
    env = {**os.environ, "OMP_NUM_THREADS": "1", "WMTP_RUNS": str(root / "runs")}
    r = subprocess.run([sys.executable, "-m", "wmtp_nb.evaluate", str(run), "--dataset", "mbpp", "--task_ids", "MBPP/11,MBPP/12",
                        "--n", "1", "--temperature", "0", "--max_new_tokens", "8", "--ks", "1", "--no_mlflow"],
                       cwd=ROOT, capture_output=True, text=True, timeout=600, env=env)
    assert r.returncode == 0, (r.stdout + r.stderr)[-3000:]
    rep = json.loads((run / "eval" / "mbpp" / "report.json").read_text())
    best = json.loads((run / "best" / "meta.json").read_text())
    assert best["best_metric"] == "valid/ce" and "valid/ce" in best["metrics"]
    assert rep["model"] == str(run / "best") and rep["data_condition"] == "correct only" and rep["run"] == "base"
    # the comparison notebook shows the condition beside the experiment
    out = root / "passk.ipynb"
    r = subprocess.run([sys.executable, "-m", "papermill", str(ROOT / "nbs" / "analysis_passk.ipynb"), str(out), "-k", "python3",
                        "--cwd", str(ROOT), "-p", "runs_root", str(root / "runs"), "-p", "datasets", "mbpp",
                        "-p", "out_dir", str(root / "analysis"), "-p", "n_boot", "100"],
                       capture_output=True, text=True, timeout=600, env=env)
    assert r.returncode == 0, (r.stdout + r.stderr)[-3000:]
    text = "".join("".join(o.get("text", "")) for c in json.loads(out.read_text())["cells"] for o in c.get("outputs", []))
    assert "Baseline MTP [correct only]" in text, text[-2000:]
    assert (root / "analysis" / "passk_mbpp.png").is_file()
