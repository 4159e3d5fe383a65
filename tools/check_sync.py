"""Check that `nbdev_export` and `nbdev_clean` would change nothing.

Runs both in a scratch copy of the working tree (tracked and untracked-but-not-ignored files),
then compares the library and the notebooks byte for byte. The working tree is never modified.
"""
import filecmp, shutil, subprocess, sys, tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent


def working_tree_files() -> list[str]:
    out = subprocess.run(["git", "ls-files", "-co", "--exclude-standard", "-z"], cwd=ROOT,
                         capture_output=True, check=True).stdout.decode()
    return [f for f in out.split("\0") if f and (ROOT / f).is_file()]


def differing(a: Path, b: Path, pattern: str) -> list[str]:
    "Files matching `pattern` that differ, appear or disappear between trees `a` and `b`."
    fa = {p.relative_to(a) for p in a.glob(pattern) if "__pycache__" not in p.parts}
    fb = {p.relative_to(b) for p in b.glob(pattern) if "__pycache__" not in p.parts}
    bad = sorted(str(p) for p in fa ^ fb)
    bad += sorted(str(p) for p in fa & fb if not filecmp.cmp(a / p, b / p, shallow=False))
    return bad


def main() -> int:
    with tempfile.TemporaryDirectory(prefix="wmtp_sync_") as tmp:
        tmp = Path(tmp)
        for f in working_tree_files():
            (tmp / f).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(ROOT / f, tmp / f)
        for cmd in ("nbdev_export", "nbdev_clean"):
            r = subprocess.run([str(BIN / cmd)], cwd=tmp, capture_output=True, text=True)
            if r.returncode:
                print(f"{cmd} failed:\n{r.stdout}{r.stderr}")
                return 1
        problems = [f"wmtp_nb/{p}" for p in differing(ROOT / "wmtp_nb", tmp / "wmtp_nb", "**/*.py")]
        problems += [f"nbs/{p}" for p in differing(ROOT / "nbs", tmp / "nbs", "**/*.ipynb")]
        r = subprocess.run([sys.executable, str(ROOT / "tools" / "make_readme.py"), "--check"], cwd=ROOT)
        if r.returncode: problems.append("README.md (python tools/make_readme.py)")
    if problems:
        print("nbdev_export / nbdev_clean would change these files (run them and commit):")
        print("\n".join(f"  {p}" for p in problems))
        return 1
    print("sync: library matches notebooks; notebooks are clean")
    return 0


if __name__ == "__main__":
    sys.exit(main())
