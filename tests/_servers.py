"""Start a long-running `make` target (`make lab`, `make mlflow`) in its own session, read its output, find what
listens on a port, and stop it by its process group (the pid we started), never by name."""
import os, signal, socket, subprocess, threading, time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def free_port() -> int:
    "A TCP port on 127.0.0.1 that nothing listens on right now."
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def listeners(port: int) -> set[str]:
    "IPv4 addresses in LISTEN state on `port` (from /proc/net/tcp; IPv6 sockets from /proc/net/tcp6 as hex)."
    out = set()
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        if not os.path.exists(table):
            continue
        for line in Path(table).read_text().splitlines()[1:]:
            local, state = line.split()[1], line.split()[3]
            addr, p = local.split(":")
            if state == "0A" and int(p, 16) == port:
                out.add(socket.inet_ntoa(bytes.fromhex(addr)[::-1]) if len(addr) == 8 else addr)
    return out


class Make:
    "`[prefix…] make -o install TARGET VAR=…` in a new session; its output lines are collected in `self.lines`."
    def __init__(self, target: str, env: dict, *assignments: str, prefix: tuple[str, ...] = ()):
        self.proc = subprocess.Popen([*prefix, "make", "--no-print-directory", "-o", "install", target, *assignments],
                                     cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                                     start_new_session=True)
        self.lines: list[str] = []
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self):
        for line in self.proc.stdout:
            self.lines.append(line.rstrip("\n"))

    @property
    def output(self) -> str:
        return "\n".join(self.lines)

    def wait_for(self, pred, timeout: float, what: str):
        "Poll `pred()` until it returns something truthy; fail with the output so far."
        deadline = time.time() + timeout
        while time.time() < deadline:
            if (r := pred()):
                return r
            if self.proc.poll() is not None:
                raise AssertionError(f"{what}: make exited with {self.proc.returncode}:\n{self.output[-3000:]}")
            time.sleep(0.5)
        raise AssertionError(f"{what}: not within {timeout}s:\n{self.output[-3000:]}")

    def children(self) -> list[int]:
        "Pids whose parent is the process we started (make; the server it exec'd)."
        kids = []
        for stat in Path("/proc").glob("[0-9]*/stat"):
            try:
                fields = stat.read_text().rsplit(")", 1)[1].split()
            except OSError:
                continue
            if int(fields[1]) == self.proc.pid:
                kids.append(int(stat.parent.name))
        return kids

    def group(self) -> list[int]:
        "Live (not zombie) pids of the process group we started."
        pids = []
        for stat in Path("/proc").glob("[0-9]*/stat"):
            try:
                fields = stat.read_text().rsplit(")", 1)[1].split()
            except OSError:
                continue
            if int(fields[2]) == self.proc.pid and fields[0] != "Z":
                pids.append(int(stat.parent.name))
        return pids

    def stop(self, timeout: float = 60) -> int:
        "SIGTERM to the process group of the pid we started, then wait until the whole group is gone (SIGKILL after `timeout`)."
        if self.group():
            os.killpg(self.proc.pid, signal.SIGTERM)
        deadline = time.time() + timeout
        while self.group() and time.time() < deadline:
            time.sleep(0.2)
        if self.group():
            os.killpg(self.proc.pid, signal.SIGKILL)
        self.proc.wait(10)
        return self.proc.returncode
