"""The synthetic verifiable dataset at its default size: built through `wmtp_prepare_data` (the `make assets` hook),
every record confirmed in the sandbox, bit-identical to a fresh generation, readable by sampling and evaluation."""
import json, os, subprocess, sys
from itertools import combinations
from pathlib import Path

import numpy as np
import pytest

from wmtp_nb.datasets import check_record
from wmtp_nb.files import check_sha256sums, read_jsonl
from wmtp_nb.sampling import load_metadata, sample_balanced, sample_curriculum
from wmtp_nb.synthetic import (DATASET_NAME, DEFAULT_TASKS, HELDOUT_PAIRS, TaskSpec, generate_records,
                               synthetic_eval_tasks)

BIN = Path(sys.executable).parent


def script(name: str, *args) -> subprocess.CompletedProcess:
    "Run a console script installed beside this interpreter (no PATH lookup)."
    exe = BIN / name
    assert exe.is_file(), f"{exe} missing: run `make install` (settings.ini console_scripts)"
    out = subprocess.run([sys.executable, str(exe), *map(str, args)], capture_output=True, text=True)
    assert out.returncode == 0, out.stdout[-2000:] + out.stderr[-3000:]
    return out


@pytest.fixture(scope="module")
def built(tmp_path_factory) -> Path:
    "The default dataset, built once through the prepare_data hook (the full sandbox confirmation: about a minute)."
    root = tmp_path_factory.mktemp("storage")
    script("wmtp_prepare_data", "--storage", root, "--only", DATASET_NAME)
    return root / "datasets_v2" / DATASET_NAME


def _expected_lines(records: list[dict]) -> list[str]:
    "The JSONL lines a build writes for freshly generated `records` (the sandbox adds only its verdict)."
    out = []
    for r in records:
        r["metadata"]["sandbox"] = {"status": "passed" if r["is_correct"] else "failed"}
        out.append(json.dumps(r, ensure_ascii=False))
    return out


@pytest.mark.slow
def test_full_build_confirmed_and_bit_identical(built):
    assert check_sha256sums(built) == []
    fresh = generate_records(seed=0)
    for split, n in DEFAULT_TASKS.items():
        lines = (built / "processed" / f"{split}.jsonl").read_text(encoding="utf-8").splitlines()
        assert lines == _expected_lines(fresh[split]), f"{split}: the file differs from a fresh generation"
        recs = [json.loads(l) for l in lines]
        assert len({r["metadata"]["task"] for r in recs}) == n
        for i, r in enumerate(recs):
            check_record(r, f"{split} record {i}")
            assert r["metadata"]["sandbox"]["status"] == ("passed" if r["is_correct"] else "failed")
        # every mutant is its correct twin with exactly the recorded span changed
        by_id = {r["task_id"]: r for r in recs}
        for r in (r for r in recs if not r["is_correct"]):
            m = r["metadata"]["mutation"]
            twin = by_id[m["correct_task_id"]]
            a, b = m["bug_span"]
            assert r["output"][a:b] == m["mutated"] and twin["output"][a:a + len(m["original"])] == m["original"]
            assert r["output"][:a] + m["original"] + r["output"][b:] == twin["output"]
            assert twin["is_correct"] and twin["metadata"]["task"] == r["metadata"]["task"]
    stats = json.loads((built / "stats" / "info.json").read_text())["splits"]
    print("\nsynthetic-verifiable:", {s: (v["conversion"]["tasks"], v["correct"], v["incorrect"]) for s, v in stats.items()})


def test_generation_independent_of_hash_seed():
    "Same seed, different PYTHONHASHSEED: the same records (no set or dict order leaks into the data)."
    code = ("import hashlib, json; from wmtp_nb.synthetic import generate_records; "
            "r = generate_records(0, {'train': 60, 'valid': 10, 'test': 10}); "
            "print(hashlib.sha256(json.dumps(r).encode()).hexdigest())")
    digests = {subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True,
                              env={**os.environ, "PYTHONHASHSEED": h}).stdout for h in ("0", "1", "12345")}
    assert len(digests) == 1, digests


@pytest.mark.slow
def test_splits_by_task_with_heldout_pairs(built):
    recs = {s: read_jsonl(built / "processed" / f"{s}.jsonl") for s in DEFAULT_TASKS}
    tasks = {s: {r["metadata"]["task"] for r in rs} for s, rs in recs.items()}
    assert not (tasks["train"] & tasks["valid"]) and not (tasks["train"] & tasks["test"]) and not (tasks["valid"] & tasks["test"])
    seen_pairs = {p for r in recs["train"] for p in combinations(r["metadata"]["features"], 2)}
    seen_pieces = {f for r in recs["train"] for f in r["metadata"]["features"]}
    for split in ("valid", "test"):
        for a, b in HELDOUT_PAIRS[split]:
            assert tuple(sorted((a, b))) not in seen_pairs, (split, a, b)
        for r in recs[split]:
            f = set(r["metadata"]["features"])
            assert any(a in f and b in f for a, b in HELDOUT_PAIRS[split]), r["task_id"]
            assert f <= seen_pieces, (r["task_id"], f - seen_pieces)
            assert set(TaskSpec(**r["metadata"]["spec"]).features()) == f


@pytest.mark.slow
def test_sampling_and_evaluation_read_the_dataset(built):
    meta = load_metadata(built, "train")
    n_incorrect = int((~np.asarray(meta.is_correct)).sum())
    idx = sample_balanced(meta, 2 * n_incorrect, seed=0)
    assert np.asarray(meta.is_correct)[idx].sum() == n_incorrect
    cur = sample_curriculum(meta, 2000, seed=0, replace=True, is_correct=True)
    dif = np.asarray(meta.difficulty)[cur]
    assert dif[:600].max() <= 7 and (dif[:600] <= 3).mean() > 0.5 and dif[1400:].max() >= 8
    assert set(np.asarray(meta.is_correct)[cur]) == {True}
    tasks = synthetic_eval_tasks(built, "test")
    assert len(tasks) == DEFAULT_TASKS["test"]
    assert all(t["entry_point"] == "solve" and t["prompt"].endswith("### Response:\n") and 3 <= len(t["test_list"]) <= 5
               for t in tasks)
    again = script("wmtp_make_synthetic", "--out", built)  # the console script and the hook share one build key
    assert "up to date" in again.stdout, again.stdout


def test_cli_small_build_deterministic(tmp_path):
    args = ("--n_train", 10, "--n_valid", 3, "--n_test", 3)
    for d in ("a", "b"):
        script("wmtp_make_synthetic", "--out", tmp_path / d / DATASET_NAME, *args)
    sums = [(tmp_path / d / DATASET_NAME / "SHA256SUMS").read_bytes() for d in ("a", "b")]
    assert sums[0] == sums[1]
    script("wmtp_make_synthetic", "--out", tmp_path / "c" / DATASET_NAME, "--seed", 1, *args)
    assert (tmp_path / "c" / DATASET_NAME / "SHA256SUMS").read_bytes() != sums[0]
    stats = json.loads((tmp_path / "a" / DATASET_NAME / "stats" / "train.json").read_text())
    assert stats["conversion"]["tasks"] == 10 and 0 < stats["incorrect"] <= stats["correct"]
