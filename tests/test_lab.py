"""`make lab` as root and as a user: JupyterLab binds 127.0.0.1 on the port asked for, prints the URL with its token,
answers `/api/status` (only with the token), passes `--allow-root` exactly when it runs as root, and its default
kernel is this project's environment (a kernel started through the server runs this .venv's python and imports this
checkout's wmtp_nb). Stopped by its pid (process group)."""
import json, os, re, shutil, subprocess, sys, tempfile, urllib.error, urllib.request
from pathlib import Path

import pytest

from _servers import ROOT, Make, free_port, listeners

NOBODY = 65534


def _status(url: str) -> int:
    try:
        with urllib.request.urlopen(url, timeout=10) as r:
            return r.status
    except urllib.error.HTTPError as e:
        return e.code
    except OSError:
        return 0


def _api(base: str, path: str, token: str, method: str = "GET", body: dict | None = None) -> dict:
    req = urllib.request.Request(f"{base}{path}", json.dumps(body).encode() if body is not None else None,
                                 {"Authorization": f"token {token}", "Content-Type": "application/json"}, method=method)
    with urllib.request.urlopen(req, timeout=60) as r:
        return json.loads(r.read() or b"{}")


# As a user: uid/gid nobody via setpriv. The one capability kept, reading and searching directories, is there only
# because this machine's Python lives under /root (mode 700); Jupyter's root check looks at the uid alone.
AS_NOBODY = ("setpriv", f"--reuid={NOBODY}", f"--regid={NOBODY}", "--clear-groups", "--inh-caps=+dac_read_search",
             "--ambient-caps=+dac_read_search")


@pytest.mark.parametrize("who", ["root", "user"])
def test_make_lab(who):
    euid = os.geteuid()
    if who == "root" and euid != 0:
        pytest.skip("needs root")
    prefix = ()
    if who == "user" and euid == 0:
        if not shutil.which("setpriv") or subprocess.run([*AS_NOBODY, "true"]).returncode != 0:
            pytest.skip("cannot run as another user here (setpriv)")
        prefix = AS_NOBODY
    uid = 0 if who == "root" else NOBODY if euid == 0 else euid
    home = Path(tempfile.mkdtemp(prefix="wmtp-lab-"))   # HOME and Jupyter's runtime dir, writable by the user
    home.chmod(0o777)
    env = {**os.environ, "HOME": str(home), "JUPYTER_RUNTIME_DIR": str(home / "runtime"), "OMP_NUM_THREADS": "1"}
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    lab = Make("lab", env, f"LAB_PORT={port}", prefix=prefix)
    try:
        url = lab.wait_for(lambda: re.search(rf"http://127\.0\.0\.1:{port}/lab\?token=(\w+)", lab.output), 240,
                           "the URL with its token")
        token = url.group(1)
        assert listeners(port) == {"127.0.0.1"}, listeners(port)
        assert _status(f"{base}/api/status") == 403                     # no token, no access
        status = _api(base, "/api/status", token)
        assert "started" in status, status
        (server,) = lab.children()
        argv = Path(f"/proc/{server}/cmdline").read_bytes().decode().split("\0")
        assert ("--allow-root" in argv) == (who == "root"), argv
        assert Path(f"/proc/{server}/status").read_text().count(f"Uid:\t{uid}\t") == 1
        specs = _api(base, "/api/kernelspecs", token)
        assert specs["default"] == "python3", specs
        kernel = _api(base, "/api/kernels", token, "POST", {"name": "python3"})
        try:
            from jupyter_client import BlockingKernelClient
            kc = BlockingKernelClient(connection_file=str(home / "runtime" / f"kernel-{kernel['id']}.json"))
            kc.load_connection_file()
            kc.start_channels()
            kc.wait_for_ready(timeout=120)
            out = []
            reply = kc.execute_interactive("import os, sys, wmtp_nb; print(sys.executable, wmtp_nb.__file__, os.getuid())",
                                           timeout=120, output_hook=lambda m: out.append(m["content"].get("text", "")))
            kc.stop_channels()
            assert reply["content"]["status"] == "ok", reply["content"]
            exe, pkg, kernel_uid = "".join(out).split()
            assert Path(exe).resolve() == Path(sys.executable).resolve() and Path(exe).parent == ROOT / ".venv" / "bin", exe
            assert Path(pkg) == ROOT / "wmtp_nb" / "__init__.py" and int(kernel_uid) == uid
        finally:
            _api(base, f"/api/kernels/{kernel['id']}", token, "DELETE")
        print(f"make lab as {who}:", next(l for l in lab.lines if "token=" in l).strip(), "| kernel:", exe)
    finally:
        lab.stop()
        shutil.rmtree(home, ignore_errors=True)
    assert not lab.group(), "JupyterLab outlived its process group"
    assert _status(f"{base}/api/status") == 0
