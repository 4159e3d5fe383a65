"""Build the docs site offline: nbdev's notebook processing, then a pure-Python renderer.

`nbdev_docs` needs Quarto, which cannot be installed without network access. We run the same
processing nbdev runs before Quarto (sidebar, `_quarto.yml`, hidden cells dropped, `show_doc`
rendered) into `_proc/`, then render that Quarto project with `smalldocs` into `_docs/`.
Users with Quarto can still run `nbdev_docs`: `nbs/_quarto.yml` is a normal Quarto project file.
"""
import os, shutil, subprocess, sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def main() -> int:
    os.chdir(ROOT)
    from nbdev.config import get_config
    from nbdev.doclinks import _build_modidx
    from nbdev.quarto import nbdev_sidebar, refresh_quarto_yml
    from nbdev.serve import proc_nbs

    cfg = get_config()
    refresh_quarto_yml()
    _build_modidx()
    nbdev_sidebar.__wrapped__(path=cfg.nbs_path)
    proc = proc_nbs(cfg.nbs_path, n_workers=2, force=True)
    smalldocs = Path(sys.executable).parent / "smalldocs"
    r = subprocess.run([str(smalldocs), "render", str(proc)], capture_output=True, text=True)
    print(r.stdout[-4000:], r.stderr[-4000:], sep="")
    if r.returncode:
        return r.returncode
    site = proc / "_site"
    if not site.is_dir():  # smalldocs honours project.output-dir from nbdev.yml
        site = proc / cfg.doc_path.name
    out = ROOT / cfg.doc_path.name
    tmp = out.with_name(out.name + ".tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    shutil.copytree(site, tmp)
    shutil.rmtree(out, ignore_errors=True)
    tmp.rename(out)
    print(f"docs: {len(list(out.rglob('*.html')))} pages in {out.relative_to(ROOT)}/")
    return 0


if __name__ == "__main__":
    sys.exit(main())
