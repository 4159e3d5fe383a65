"""papermill parameters survive nbdev_clean, and `-p` values reach the run (papermill only warns when the tag is gone)."""
import json, shutil, subprocess, sys
from pathlib import Path

import nbformat

FIXTURE = Path(__file__).parent / "fixtures" / "params.ipynb"
BIN = Path(sys.executable).parent


def test_parameters_tag_survives_nbdev_clean(tmp_path, root):
    nb = tmp_path / "params.ipynb"
    shutil.copy(FIXTURE, nb)
    subprocess.run([str(BIN / "nbdev_clean"), "--fname", str(nb)], cwd=root, check=True)
    tags = [c.metadata.get("tags", []) for c in nbformat.read(nb, as_version=4).cells]
    assert ["parameters"] in tags, f"nbdev_clean dropped the parameters tag: {tags}"


def test_injected_value_reaches_the_run(tmp_path, root):
    nb = tmp_path / "params.ipynb"
    shutil.copy(FIXTURE, nb)
    subprocess.run([str(BIN / "nbdev_clean"), "--fname", str(nb)], cwd=root, check=True)
    out = tmp_path / "out.json"
    r = subprocess.run([sys.executable, "-m", "papermill", str(nb), str(tmp_path / "run.ipynb"),
                        "-p", "greeting", "hello", "-p", "repeat", "3", "-k", "python3"],
                       cwd=root, capture_output=True, text=True, env={**__import__("os").environ, "PM_FIXTURE_OUT": str(out)})
    assert r.returncode == 0, r.stderr[-3000:]
    assert json.loads(out.read_text()) == {"greeting": "hello", "repeat": 3}
    cells = nbformat.read(tmp_path / "run.ipynb", as_version=4).cells
    assert any("injected-parameters" in c.metadata.get("tags", []) for c in cells)
