"""The deployment files, checked offline (no engine, no GPU, no network): the Dockerfile parses and installs the
project from the lock, the lock pins every settings.ini requirement inside its range, the SLURM script is valid bash
whose #SBATCH lines SLURM will read."""
import re, subprocess, sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tools"))
import make_lock  # noqa: E402

DOCKER_INSTRUCTIONS = {"FROM", "ARG", "ENV", "RUN", "COPY", "ADD", "WORKDIR", "VOLUME", "CMD", "ENTRYPOINT", "USER",
                       "EXPOSE", "LABEL", "SHELL", "HEALTHCHECK", "STOPSIGNAL", "ONBUILD", "COMMENT"}


def test_dockerfile_parses_and_installs_from_the_lock():
    from dockerfile_parse import DockerfileParser
    df = DockerfileParser(str(ROOT / "deploy" / "Dockerfile"))
    steps = df.structure
    assert {s["instruction"] for s in steps} <= DOCKER_INSTRUCTIONS, {s["instruction"] for s in steps}
    assert df.baseimage.startswith("nvidia/cuda:") and "runtime" in df.baseimage, df.baseimage
    copies = [s["value"].split() for s in steps if s["instruction"] == "COPY"]
    for *srcs, _dest in copies:  # everything the image copies exists in the checkout
        for src in srcs: assert (ROOT / src).exists(), f"deploy/Dockerfile copies {src}, which is not in the repository"
    runs = " ".join(s["value"] for s in steps if s["instruction"] == "RUN")
    assert "pip install -r deploy/requirements.lock" in runs
    assert "pip install --no-deps -e ." in runs  # the project adds nothing unpinned
    lock_copy = next(i for i, s in enumerate(steps) if s["instruction"] == "COPY" and "requirements.lock" in s["value"])
    project_copy = next(i for i, s in enumerate(steps) if s["instruction"] == "COPY" and s["value"].startswith("wmtp_nb"))
    assert lock_copy < project_copy, "dependencies are installed in a layer before the project's source"


def test_lock_matches_settings(tmp_path):
    assert make_lock.check() == [], make_lock.check()
    pins = make_lock.read_lock(make_lock.LOCK)
    assert pins["torch"] == "2.13.0" and "+" not in "".join(pins.values())  # no local (CPU) build tags
    bad = tmp_path / "requirements.lock"
    bad.write_text(make_lock.LOCK.read_text().replace("torch==2.13.0", "torch==2.12.0").replace("numpy==", "numpy-typo=="))
    problems = make_lock.check(bad)
    assert any("torch==2.12.0 in requirements.lock is outside settings.ini's range ==2.13.0" in p for p in problems), problems
    assert any(p.startswith("numpy") and "not in requirements.lock" in p for p in problems), problems
    (tmp_path / "broken.lock").write_text("torch>=2\n")
    with pytest.raises(ValueError, match="broken.lock:1: expected 'name==version'"):
        make_lock.read_lock(tmp_path / "broken.lock")


def test_sbatch_is_valid_bash_with_sbatch_directives_first():
    script = ROOT / "deploy" / "slurm" / "train.sbatch"
    r = subprocess.run(["bash", "-n", str(script)], capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    lines = script.read_text().splitlines()
    assert lines[0] == "#!/bin/bash"
    first_cmd = next(i for i, l in enumerate(lines) if l.strip() and not l.startswith("#"))
    directives = [i for i, l in enumerate(lines) if l.startswith("#SBATCH")]
    assert directives and max(directives) < first_cmd, "SLURM ignores #SBATCH lines after the first command"
    assert re.search(r"--rdzv_backend c10d", script.read_text()) and "-m wmtp_nb.train" in script.read_text()
