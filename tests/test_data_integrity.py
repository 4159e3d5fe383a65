"""Issue 15, data items, as a user meets them: `wmtp_verify_storage` checks every dataset line by line, and training
refuses a corrupt line and too many records without a target before step 1 (and logs the share while it runs)."""
import json, os, subprocess, sys, warnings
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent))
import _train_assets  # noqa: E402

OFFLINE = {"HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1"}


def _verify(root: Path) -> subprocess.CompletedProcess:
    script = Path(sys.executable).parent / "wmtp_verify_storage"
    return subprocess.run([sys.executable, str(script), "--root", str(root)], capture_output=True, text=True,
                          env={**os.environ, **OFFLINE})


def _records(n=6):
    return [{"instruction": f"Return {i}.", "input": "", "output": f"def f():\n    return {i}\n", "task_id": f"t{i}",
             "is_correct": i % 2 == 0, "metadata": {"source": "toy", "difficulty": 7, "has_tests": False}} for i in range(n)]


def test_verify_storage_checks_datasets_line_by_line(tmp_path):
    from wmtp_nb.datasets import write_dataset
    from wmtp_nb.sampling import write_split_metadata
    (tmp_path / "models_v2").mkdir()
    d = tmp_path / "datasets_v2" / "toy"
    write_dataset(d, {"train": _records()})
    r = _verify(tmp_path)
    assert r.returncode == 0 and "ok  datasets_v2/toy" in r.stdout, r.stdout + r.stderr
    # metadata whose labels disagree with the JSONL (two swapped: the same size, so loading cannot see it)
    meta = d / "processed" / "train_metadata.json"
    stats = json.loads(meta.read_text())["stats"]
    write_split_metadata(meta, [False, True, True, False, True, False], [7] * 6, stats)
    r = _verify(tmp_path)
    assert r.returncode == 1 and "BAD datasets_v2/toy" in r.stdout
    assert "train.jsonl:1: is_correct=True, difficulty=7 but train_metadata.json entry 0 says is_correct=False" in r.stdout
    assert "SHA256SUMS mismatch: processed/train_metadata.json" in r.stdout
    # the JSONL edited in place (one difficulty changed, same size): its hash and the line are reported
    write_dataset(d, {"train": _records()}, overwrite=True)
    jsonl = d / "processed" / "train.jsonl"
    lines = jsonl.read_text().splitlines(keepends=True)
    lines[3] = lines[3].replace('"difficulty": 7', '"difficulty": 8')
    jsonl.write_text("".join(lines))
    r = _verify(tmp_path)
    assert r.returncode == 1 and "train_metadata.json records" in r.stdout and "(the file changed since)" in r.stdout
    assert "train.jsonl:4: is_correct=False, difficulty=8 but arrow/train row 3 (line 4) has is_correct=False, difficulty=7" in r.stdout


def test_loading_checks_the_jsonl_size(tmp_path):
    from wmtp_nb.datasets import write_dataset
    from wmtp_nb.sampling import load_metadata
    d = tmp_path / "toy"
    write_dataset(d, {"train": _records()})
    jsonl = d / "processed" / "train.jsonl"
    jsonl.write_text(jsonl.read_text().replace('"is_correct": true', '"is_correct": false', 1))  # one byte longer
    with pytest.raises(ValueError, match="the JSONL changed since; rebuild with `wmtp_build_arrow"):
        load_metadata(d, "train")


def test_training_logs_the_share_of_records_without_a_target(tmp_path, monkeypatch):
    "A run whose max_length cuts some prompts: warned before step 1, `data/no_target_share` in metrics.jsonl."
    from wmtp_nb.collate import MTPCollator
    from wmtp_nb.config import load_config
    from wmtp_nb.files import read_jsonl
    from wmtp_nb.tokenizer import load_tokenizer
    from wmtp_nb.train import train
    storage = _train_assets.build(tmp_path)
    jsonl = storage / "datasets_v2" / "tiny" / "processed" / "train.jsonl"
    recs = read_jsonl(jsonl)
    for r in recs[:2]:  # two of 24 records get a prompt far longer than the others
        r["instruction"] = "Write a function that adds a number to its argument, carefully and with care. " * 6
    jsonl.write_text("".join(json.dumps(r) + "\n" for r in recs))
    tok = load_tokenizer(storage / "models_v2" / "tiny-mtp")
    lengths = [MTPCollator(tok).prompt_length(r) for r in recs]
    max_length = max(lengths[2:]) + 8
    assert min(lengths[:2]) >= max_length
    cfg = load_config(_train_assets.ROOT / "configs" / "baseline.yaml", overrides=_train_assets.overrides(
        tmp_path, storage, **{"data.sampling": "all", "data.n_samples": "null", "data.is_correct": "null",
                              "data.max_length": max_length, "experiment.run_name": "cut", "training.max_steps": 3, "training.epochs": 1}))
    with warnings.catch_warnings(record=True) as w:
        warnings.simplefilter("always")
        train(cfg)
    assert any("2 of the 24 samples this rank trains on (8.3%)" in str(x.message) for x in w), [str(x.message) for x in w]
    rows = read_jsonl(tmp_path / "runs" / "cut" / "metrics.jsonl")
    assert all("data/no_target_share" in r for r in rows)
    # sampling "all" in file order, 2 × 2 records a step: records 0 and 1 (the long ones) are in step 1 only
    assert [r["data/no_target_share"] for r in rows] == [0.5, 0.0, 0.0]
