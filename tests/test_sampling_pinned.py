"""Sampled indices are identical to those of the pre-Arrow data layer (issue 17): pinned, not recomputed.

The fixture `fixtures/sampling_pinned.json` was written by the implementation this layer replaced (byte-offset
`RecordReader` and npy column cache, wmtp_nb at commit 7ecac99), from the same seeded toy dataset:

    git archive 7ecac99 wmtp_nb vendor | tar -x -C /tmp/old
    PYTHONPATH=/tmp/old python tests/test_sampling_pinned.py --write

Only the public API both versions share is used here (`write_dataset`, `load_metadata`, the samplers, `shard`).
"""
import json, sys, tempfile
from pathlib import Path

import numpy as np

FIXTURE = Path(__file__).resolve().parent / "fixtures" / "sampling_pinned.json"
N_RECORDS = 3000


def toy_records(n: int = N_RECORDS, seed: int = 0):
    "Seeded records: ~60 % correct, difficulties 0 (unknown) to 11 skewed like CodeContests."
    rng = np.random.default_rng(seed)
    levels = np.array([0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11])
    probs = np.array([1, 4, 6, 3, 2, 3, 1, 60, 4, 3, 2, 11], float)
    dif = rng.choice(levels, n, p=probs / probs.sum())
    cor = rng.random(n) < 0.6
    for i in range(n):
        yield {"instruction": f"Task {i}: print {i % 97}.", "input": "" if i % 3 else f"n = {i}", "output": f"print({i % 97})",
               "task_id": f"t{i}", "is_correct": bool(cor[i]),
               "metadata": {"source": "toy", "difficulty": int(dif[i]), "has_tests": False}}


def draws(root: Path) -> dict[str, list[int]]:
    "Every sampler on the toy dataset, with several seeds, sizes, conditions and epochs; then shards."
    from wmtp_nb.datasets import write_dataset
    from wmtp_nb.sampling import draw_sample, load_metadata, sample_all, sample_balanced, sample_curriculum, shard
    write_dataset(root / "toy", {"train": toy_records()}, info={"source": "toy"})
    meta = load_metadata(root / "toy", "train")
    two = {"easy": (1, 5), "hard": (6, 11)}
    out = {
        "balanced_500_s3": sample_balanced(meta, 500, seed=3),
        "balanced_1800_s0": sample_balanced(meta, 1800, seed=0),
        "balanced_3000_s1_replace": sample_balanced(meta, 3000, seed=1, replace=True),
        "curriculum_600_s5": sample_curriculum(meta, 600, seed=5),
        "curriculum_400_s2_correct_3ep": sample_curriculum(meta, 400, seed=2, is_correct=True, epochs=3),
        "curriculum_900_s7_incorrect_replace": sample_curriculum(meta, 900, seed=7, is_correct=False, replace=True),
        "curriculum_300_s4_two_buckets": sample_curriculum(
            meta, 300, seed=4, buckets=two, phases=[(0.5, {"easy": 0.8, "hard": 0.2}), (1.0, {"easy": 0.2, "hard": 0.8})]),
        "all_correct": sample_all(meta, None, is_correct=True),
        "all_100_incorrect": sample_all(meta, 100, is_correct=False),
        "draw_balanced_200_2ep": draw_sample(meta, "balanced", 200, 11, epochs=2),
        "draw_curriculum_250_2ep": draw_sample(meta, "curriculum", 250, 12, epochs=2),
        "draw_all_50": draw_sample(meta, "all", 50, 0),
    }
    for r in range(3):
        out[f"shard_{r}_of_3_curriculum_600_s5"] = shard(out["curriculum_600_s5"], r, 3)
        out[f"shard_{r}_of_3_drop_last_balanced_500_s3"] = shard(out["balanced_500_s3"], r, 3, drop_last=True)
    return {k: np.asarray(v).astype(np.int64).tolist() for k, v in out.items()}


def test_sampled_indices_match_the_pinned_ones(tmp_path):
    pinned = json.loads(FIXTURE.read_text())
    got = draws(tmp_path)
    assert sorted(got) == sorted(pinned["draws"])
    for k, v in pinned["draws"].items():
        assert got[k] == v, f"{k}: first difference at position {next(i for i, (a, b) in enumerate(zip(got[k], v)) if a != b)}"


def test_the_records_read_are_the_jsonl_lines(tmp_path):
    "The rows the Arrow layer returns for drawn indices are the JSONL's lines at those indices (independent read)."
    from wmtp_nb.files import read_jsonl
    from wmtp_nb.sampling import load_metadata
    pinned = json.loads(FIXTURE.read_text())["draws"]
    draws(tmp_path)
    lines = read_jsonl(tmp_path / "toy" / "processed" / "train.jsonl")
    meta = load_metadata(tmp_path / "toy", "train")
    idx = pinned["curriculum_600_s5"][:200]
    rows = meta.records.select(idx)
    for i, row in zip(idx, rows):
        want = lines[i]
        assert {k: row[k] for k in ("instruction", "input", "output", "task_id", "is_correct")} == \
               {k: want[k] for k in ("instruction", "input", "output", "task_id", "is_correct")}
        assert row["metadata"] == want["metadata"] and row["line"] == i + 1


if __name__ == "__main__" and "--write" in sys.argv:
    import wmtp_nb
    with tempfile.TemporaryDirectory() as d:
        res = draws(Path(d))
    FIXTURE.parent.mkdir(exist_ok=True)
    FIXTURE.write_text(json.dumps({"written_by": f"wmtp_nb from {Path(wmtp_nb.__file__).parent}", "n_records": N_RECORDS,
                                   "draws": res}, separators=(",", ":")) + "\n")
    print(f"wrote {FIXTURE}: {', '.join(f'{k} ({len(v)})' for k, v in res.items())}")
