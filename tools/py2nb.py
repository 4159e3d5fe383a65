"""Author notebooks as jupytext percent scripts, keep only the .ipynb in the repo.

    python tools/py2nb.py nbs/06_weighting.ipynb /tmp/src/06_weighting.py   # notebook -> script, for editing
    python tools/py2nb.py /tmp/src/06_weighting.py nbs/06_weighting.ipynb   # script -> notebook (cleaned)

Cells are `# %%` (code) and `# %% [markdown]`. Each cell's id travels in its header (`# %% id="64584dbb"`), so a
round trip keeps the ids that the exported modules cite and that git merges line up on; new cells get fresh ids.
A cell whose source did not change keeps its saved outputs (executed notebooks stay executed). The notebook gets the project kernelspec and is passed through `nbdev_clean`, so `make test`'s sync check is
satisfied.
"""
import subprocess, sys, uuid
from pathlib import Path

import jupytext

KERNELSPEC = {"display_name": "Python 3 (ipykernel)", "language": "python", "name": "python3"}
KEEP = ("tags",)  # cell metadata worth keeping (papermill's `parameters` tag)


def main(src: str, dst: str) -> None:
    src, dst = Path(src), Path(dst)
    nb = jupytext.read(src)
    if dst.suffix == ".ipynb":
        nb.metadata = {"kernelspec": KERNELSPEC}
        try: old = jupytext.read(dst).cells if dst.is_file() else []
        except Exception as e:  # e.g. a notebook with merge-conflict markers: nothing to take ids/outputs from
            print(f"{dst}: not readable ({type(e).__name__}); cell outputs not carried over", file=sys.stderr); old = []
        by_id = {c.get("id"): c for c in old}
        seen = set()
        for c in nb.cells:  # jupytext's own cell metadata is noise here; keep papermill tags and the cell id
            cid = c.metadata.get("id")
            if not cid:  # e.g. a raw front-matter cell, which jupytext folds into its header: match by content
                cid = next((o.get("id") for o in old if o.cell_type == c.cell_type and o.source == c.source), None)
            if not cid or cid in seen: cid = uuid.uuid4().hex[:8]
            seen.add(cid)
            c.metadata = {k: v for k, v in c.metadata.items() if k in KEEP}
            c["id"] = cid
            prev = by_id.get(cid)
            if c.cell_type == "code" and prev is not None and prev.source == c.source:
                c.outputs, c.execution_count = prev.get("outputs", []), prev.get("execution_count")
        jupytext.write(nb, dst, fmt="ipynb")
        subprocess.run([str(Path(sys.executable).parent / "nbdev_clean"), "--fname", str(dst)], check=True)
    else:
        for c in nb.cells:
            if c.get("id"): c.metadata["id"] = c["id"]
        jupytext.write(nb, dst, fmt="py:percent")
    print(f"{src} -> {dst}")


if __name__ == "__main__":
    main(*sys.argv[1:3])
