"""Write README.md from nbs/index.ipynb (what `nbdev_readme` does, without Quarto).

Markdown cells are copied (image links `images/…` made relative to the root: `nbs/images/…`); visible code cells become fenced Python blocks with their text outputs.
`--check` exits 1 when README.md is out of date (used by `make test`).
"""
import sys
from pathlib import Path

from execnb.nbio import read_nb

ROOT = Path(__file__).resolve().parents[1]
HEADER = "<!-- generated from nbs/index.ipynb by tools/make_readme.py: edit the notebook, not this file -->\n\n"


def hidden(source: str) -> bool:
    lines = [l.strip() for l in source.splitlines() if l.strip().startswith("#|")]
    return any(l.replace(" ", "") in ("#|hide", "#|include:false") or l.startswith("#| default_exp") for l in lines)


def render(nb_path: Path) -> str:
    parts = []
    for cell in read_nb(nb_path).cells:
        src = cell.source.strip()
        if not src: continue
        if cell.cell_type == "markdown":
            parts.append(src.replace("](images/", "](nbs/images/"))   # images beside the notebook, seen from the root
        elif cell.cell_type == "code" and not hidden(src):
            code = "\n".join(l for l in src.splitlines() if not l.startswith("#|"))
            parts.append(f"```python\n{code}\n```")
            text = "".join("".join(o.get("text", "")) if o.get("output_type") == "stream"
                           else "".join(o.get("data", {}).get("text/plain", "")) for o in cell.get("outputs", []))
            if text.strip(): parts.append(f"```\n{text.rstrip()}\n```")
    return HEADER + "\n\n".join(parts) + "\n"


def main() -> int:
    text, readme = render(ROOT / "nbs" / "index.ipynb"), ROOT / "README.md"
    if "--check" in sys.argv:
        if not readme.exists() or readme.read_text() != text:
            print("README.md is out of date: run `python tools/make_readme.py`")
            return 1
        return 0
    readme.write_text(text)
    print("wrote README.md")
    return 0


if __name__ == "__main__":
    sys.exit(main())
