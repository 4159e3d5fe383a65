"""Author notebooks as jupytext percent scripts, keep only the .ipynb in the repo.

    python tools/py2nb.py /tmp/src/06_weighting.py nbs/06_weighting.ipynb   # script -> notebook (cleaned)
    python tools/py2nb.py nbs/06_weighting.ipynb /tmp/src/06_weighting.py   # notebook -> script, for editing

Cells are `# %%` (code) and `# %% [markdown]`. The notebook gets the project kernelspec and is
passed through `nbdev_clean`, so `make test`'s sync check is satisfied.
"""
import subprocess, sys
from pathlib import Path

import jupytext

KERNELSPEC = {"display_name": "Python 3 (ipykernel)", "language": "python", "name": "python3"}


def main(src: str, dst: str) -> None:
    src, dst = Path(src), Path(dst)
    nb = jupytext.read(src)
    if dst.suffix == ".ipynb":
        nb.metadata = {"kernelspec": KERNELSPEC}
        for c in nb.cells:  # jupytext's own cell metadata is noise here; keep papermill tags
            c.metadata = {k: v for k, v in c.metadata.items() if k == "tags"}
        jupytext.write(nb, dst, fmt="ipynb")
        subprocess.run([str(Path(sys.executable).parent / "nbdev_clean"), "--fname", str(dst)], check=True)
    else:
        jupytext.write(nb, dst, fmt="py:percent")
    print(f"{src} -> {dst}")


if __name__ == "__main__":
    main(*sys.argv[1:3])
