"""Throughput of the sandbox: 200 short programs (half pass, half fail, a few time out) on 2 workers.

    .venv/bin/python bench/sandbox.py [--n 200] [--workers 2] [--timeout 1.0]

Prints programs/s for `run_many` (sandboxed, 2 workers and 1 worker) and for a naive serial baseline measured in the
same run: `subprocess.run([sys.executable, "-c", program + tests], timeout=...)` with no isolation at all. Every sandboxed
job is a `check_program`: the program in its sandbox, the tests in a separate judge process, plain data between them;
runs are forked from one pre-imported launcher (zygote) per worker, whose start-up is part of the measured time
(except the first one's, started by the `sandbox_capabilities()` probe). The 6 endless loops cost 1 s each in every
configuration, so they bound the ratio.
"""
import argparse, subprocess, sys, time
from collections import Counter

from wmtp_nb.sandbox import run_many, sandbox_capabilities


def make_jobs(n: int, timeout: float) -> tuple[list[dict], list[str]]:
    "n check_program jobs: 3% loop forever, the rest alternate passing and failing tests."
    jobs, expected = [], []
    n_loop = max(1, n * 3 // 100)
    for i in range(n):
        prog = f"def f(xs):\n    return sorted(x * {i % 7 + 1} for x in xs)\n"
        if i < n_loop:
            prog, tests, exp = "while True: pass\n", "assert True", "timed_out"
        elif i % 2 == 0:
            tests, exp = f"assert f([3, 1, 2]) == {[x * (i % 7 + 1) for x in (1, 2, 3)]}", "passed"
        else:
            tests, exp = f"assert f([3, 1, 2]) == [0], f([3, 1, 2])", "failed"
        jobs.append(dict(program=prog, tests=tests, timeout=timeout)); expected.append(exp)
    return jobs, expected


def naive(jobs: list[dict]) -> list[str]:
    "The baseline: run each program + tests with the host interpreter, serially, no isolation."
    out = []
    for j in jobs:
        try:
            p = subprocess.run([sys.executable, "-c", j["program"] + "\n" + j["tests"]], capture_output=True,
                               timeout=j["timeout"])
            out.append("passed" if p.returncode == 0 else "failed")
        except subprocess.TimeoutExpired:
            out.append("timed_out")
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n", type=int, default=200)
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--timeout", type=float, default=1.0)
    ap.add_argument("--skip-serial", action="store_true", help="skip the 1-worker sandbox run")
    a = ap.parse_args()
    print("isolation:", sandbox_capabilities())
    jobs, expected = make_jobs(a.n, a.timeout)
    rows = []
    t = time.perf_counter(); base = naive(jobs); t_naive = time.perf_counter() - t
    rows.append(("naive subprocess.run, serial", t_naive, base))
    configs = [a.workers] + ([] if a.skip_serial or a.workers == 1 else [1])
    for w in configs:
        t = time.perf_counter(); rs = run_many(jobs, workers=w, progress=True); dt = time.perf_counter() - t
        rows.append((f"sandbox run_many, {w} worker{'s' * (w > 1)}", dt, [r.status for r in rs]))
    print(f"\n{a.n} programs: {dict(Counter(expected))} expected, timeout {a.timeout:g} s")
    print(f"{'':34s} {'seconds':>8s} {'programs/s':>11s} {'vs naive':>9s}  statuses")
    for name, dt, st in rows:
        ok = "ok" if st == expected else f"MISMATCH {sum(x != y for x, y in zip(st, expected))}"
        print(f"{name:34s} {dt:8.2f} {a.n / dt:11.1f} {t_naive / dt:8.2f}x  {dict(Counter(st))} {ok}")


main()
