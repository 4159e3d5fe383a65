"""Execute library notebooks in place so that their saved outputs (examples, plots) show in the docs.

Same rules as `nbdev_test`: cells marked `#| eval: false` or with a flag from settings.ini's
`tst_flags` are skipped. Afterwards the notebook is cleaned with `nbdev_clean`.

    python tools/run_nb.py nbs/06_weighting.ipynb [more.ipynb ...]
"""
import subprocess, sys
from pathlib import Path

from execnb.nbio import read_nb, write_nb
from execnb.shell import CaptureShell
from fastcore.xtras import working_directory
from nbdev.config import get_config


def directives(source: str) -> dict[str, str]:
    "The `#| key: value` lines at the top of a cell."
    out = {}
    for line in source.splitlines():
        if not line.startswith("#|"):
            if line.strip(): break
            continue
        key, _, val = line[2:].strip().partition(" ")
        out[key.rstrip(":") if key.endswith(":") else key] = val.strip()
    return out


def run_notebook(path: Path, skip_flags: set[str]) -> None:
    nb = read_nb(path)

    def skip(cell) -> bool:
        if cell.cell_type != "code": return True
        d = directives(cell.source)
        if d.get("eval", "").lower() == "false" or skip_flags & d.keys():
            cell.outputs, cell.execution_count = [], None
            return True
        return False

    shell = CaptureShell(path)
    with working_directory(path.parent):
        shell.run_all(nb, exc_stop=True, preproc=skip)
    write_nb(nb, path)
    subprocess.run([str(Path(sys.executable).parent / "nbdev_clean"), "--fname", str(path)], check=True)


if __name__ == "__main__":
    flags = set(get_config().get("tst_flags", "").split())
    for p in sys.argv[1:]:
        print(f"running {p}")
        run_notebook(Path(p).resolve(), flags)
