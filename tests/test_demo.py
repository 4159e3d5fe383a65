"""`make demo`'s pipeline (tools/demo.py) end to end on a tiny setting: a small synthetic dataset, a tiny `synth-mtp`,
2-step runs, one seed, 2 samples on 4 tasks. Every step runs through its papermill notebook (pretrain, publish, critic ->
verifiable, rho1, baseline, evaluation, both analyses); the report names every experiment with its data condition and
grades every method's credit; a second demo from scratch (a fresh runs dir, same seeds) writes the same report byte for
byte, and a call on a finished runs dir skips every finished step and writes it again unchanged."""
import json, os, subprocess, sys

import pytest

from wmtp_nb.datasets import write_dataset
from wmtp_nb.micro import build_synthetic_base
from wmtp_nb.synthetic import generate_records

ROOT = __import__("pathlib").Path(__file__).resolve().parents[1]


def _demo(tmp, *extra, runs="runs"):
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONUNBUFFERED": "1"}
    env.pop("MLFLOW_TRACKING_URI", None)
    return subprocess.run([sys.executable, str(ROOT / "tools" / "demo.py"), "--tiny", "--seeds", "0", "--jobs", "2",
                           "--storage", str(tmp / "storage"), "--runs", str(tmp / runs), *extra],
                          cwd=ROOT, capture_output=True, text=True, timeout=1800, env=env)


@pytest.fixture(scope="module")
def demo(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("demo")
    recs = generate_records(0, {"train": 60, "valid": 6, "test": 6}, 2)   # no sandbox pass here: nbs/16 tests that
    write_dataset(tmp / "storage" / "datasets_v2" / "synthetic-verifiable", recs, {"source": "synthetic-verifiable"})
    build_synthetic_base(tmp / "storage", dim=32, n_layers=5, n_heads=2, vocab_size=400, verbose=False)
    r = _demo(tmp)
    assert r.returncode == 0, (r.stdout + r.stderr)[-5000:]
    return tmp, r


def test_every_step_ran(demo):
    tmp, r = demo
    runs = tmp / "runs"
    names = ["synth-pretrain"] + [f"synth-{e}-s0" for e in ("critic", "verifiable", "rho1", "baseline")]
    for n in names:
        assert (runs / f"{n}.ipynb").is_file() and (runs / n / "last" / "meta.json").is_file(), n
    assert (runs / "synth-pretrain" / "base" / "configs" / "params.json").is_file()          # the published base
    for n in ("synth-pretrain", "synth-baseline-s0", "synth-verifiable-s0", "synth-rho1-s0"):
        rep = json.loads((runs / n / "eval" / "synthetic" / "report.json").read_text())
        assert (rep["n_tasks"], rep["samples_per_task"], rep["split"]) == (4, [2, 2], "test"), n
    for f in ("analysis_weights.ipynb", "analysis_passk.ipynb", "analysis/credit_bug_token.png", "analysis/passk_synthetic.png",
              "analysis/passk_vs_baseline.png", "analysis/demo_time.json"):
        assert (runs / f).is_file(), f
    # the rho1 run scored against the base, and every experiment started from it
    cfg = (runs / "synth-rho1-s0" / "config.yaml").read_text()
    assert f"reference: {runs / 'synth-pretrain' / 'base'}" in cfg and f"init_from: {runs / 'synth-pretrain' / 'base'}" in cfg


def test_report_content(demo):
    tmp, r = demo
    rep = json.loads((tmp / "runs" / "analysis" / "synthetic_report.json").read_text())
    exps = {e["experiment"]: e for e in rep["passk"]["experiments"]}
    assert list(exps) == ["pretrain", "baseline", "verifiable", "rho1"]
    assert {e: x["data_condition"] for e, x in exps.items()} == {
        "pretrain": "correct only", "baseline": "correct only", "verifiable": "correct + incorrect", "rho1": "correct only"}
    assert all(x["n_seeds"] == 1 and set(x) >= {"pass@1", "pass@2"} for x in exps.values())
    assert {d["experiment"] for d in rep["passk"]["vs_baseline"]} == {"pretrain", "verifiable", "rho1"}
    methods = {m["method"]: m for m in rep["credit"]["methods"]}
    assert list(methods) == ["position", "base_ce", "critic", "verifiable", "rho1", "baseline"]
    assert all(set(m["heads"]) == {"head_0", "head_1", "head_2", "head_3"} for m in methods.values())
    assert all(h["auroc"] == 0.5 for h in methods["baseline"]["heads"].values())            # uniform weights: all tied
    assert "wall time" in r.stdout and "Verifiable-Critic WMTP [correct + incorrect]" in r.stdout
    md = subprocess.run([sys.executable, str(ROOT / "tools" / "demo.py"), "--markdown", str(tmp / "runs" / "analysis" / "synthetic_report.json")],
                        capture_output=True, text=True)
    assert md.returncode == 0 and "| Verifiable-Critic WMTP (correct + incorrect) | 1 |" in md.stdout, md.stdout + md.stderr
    assert [c["run"] for c in rep["critic"]] == ["synth-critic-s0"]                          # the critic's valid figures
    assert 0 <= rep["critic"][0]["valid_value_accuracy"] <= 1 and "valid_explained_variance" in rep["critic"][0]
    n_rows = len(exps) + (1 + 3) + (1 + len(methods)) + (1 + len(rep["critic"]))          # rows; headers after the first table
    assert md.stdout.count("\n| ") == n_rows, md.stdout                                   # every row of the four tables
    # the credit figures are logged to the runs' MLflow runs
    from mlflow import MlflowClient
    client = MlflowClient(f"sqlite:///{tmp / 'runs' / 'mlflow.db'}")
    run_id = (tmp / "runs" / "synth-verifiable-s0" / "mlflow_run_id").read_text().strip()
    assert "credit/auroc/head_0" in client.get_run(run_id).data.metrics


def test_fresh_demo_reproduces(demo):
    "Bit-for-bit from its seeds: every run trained, sampled and graded again from scratch gives the same report."
    tmp, _ = demo
    r = _demo(tmp, runs="runs2")
    assert r.returncode == 0, (r.stdout + r.stderr)[-5000:]
    assert "finished, skipped" not in r.stdout
    a, b = (tmp / d / "analysis" / "synthetic_report.json" for d in ("runs", "runs2"))
    cmp = subprocess.run([sys.executable, str(ROOT / "tools" / "demo.py"), "--compare", str(a), str(b)], capture_output=True, text=True)
    assert cmp.returncode == 0 and "identical" in cmp.stdout, (json.loads(a.read_text()), json.loads(b.read_text()))


def test_second_call_resumes(demo):
    tmp, _ = demo
    first = (tmp / "runs" / "analysis" / "synthetic_report.json").read_bytes()
    r = _demo(tmp)
    assert r.returncode == 0, (r.stdout + r.stderr)[-5000:]
    assert r.stdout.count("finished, skipped") == 5 and "already evaluated with these settings" in r.stdout
    assert (tmp / "runs" / "analysis" / "synthetic_report.json").read_bytes() == first
