"""Data commands and multi-process sampling, run as fresh processes (what a user or torchrun does)."""
import json, os, shutil, subprocess, sys
from pathlib import Path

import numpy as np

from wmtp_nb.files import check_sha256sums, read_jsonl


SCRIPTS = {"prepare_data_cli": "wmtp_prepare_data", "convert_codecontests_cli": "wmtp_convert_codecontests",
           "make_synthetic_codecontests_cli": "wmtp_make_synthetic_codecontests", "build_arrow_cli": "wmtp_build_arrow"}
OFFLINE = {"HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1"}  # the data layer never needs the hub


def cli(func: str, *args, env=None) -> subprocess.CompletedProcess:
    "Run a data console script (the one installed beside this interpreter, no PATH lookup), offline."
    script = Path(sys.executable).parent / SCRIPTS[func]
    assert script.is_file(), f"{script} missing: run `make install` (settings.ini console_scripts)"
    out = subprocess.run([sys.executable, str(script), *map(str, args)], capture_output=True, text=True,
                         env={**(env or os.environ), **OFFLINE})
    assert out.returncode == 0, out.stderr[-3000:]
    return out


def test_prepare_data_real_mbpp_humaneval(tmp_path):
    out = cli("prepare_data_cli", "--storage", tmp_path, "--only", "mbpp,humaneval")
    base = tmp_path / "datasets_v2"
    counts = {s: sum(1 for _ in open(base / "mbpp/processed" / f"{s}.jsonl")) for s in ("train", "valid", "test")}
    assert counts == {"train": 374, "valid": 90, "test": 500}, counts
    test = read_jsonl(base / "mbpp/processed/test.jsonl")
    assert sorted(int(r["metadata"]["mbpp_task_id"]) for r in test) == list(range(11, 511))
    assert all(r["metadata"]["test_list"] and r["is_correct"] for r in test)
    he = read_jsonl(base / "humaneval/processed/test.jsonl")
    assert len(he) == 164 and {"prompt", "test", "entry_point"} <= set(he[0]["metadata"])
    assert check_sha256sums(base / "mbpp") == [] and check_sha256sums(base / "humaneval") == []
    again = cli("prepare_data_cli", "--storage", tmp_path, "--only", "mbpp,humaneval")
    assert again.stdout.count("up to date") == 2, again.stdout


def test_synthetic_convert_sample_shard_across_processes(tmp_path):
    cli("make_synthetic_codecontests_cli", tmp_path / "raw", "--n_records", 30000, "--solutions_per_problem", 50)
    cli("convert_codecontests_cli", tmp_path / "raw", "--out", tmp_path / "cc", "--max_tokens", 0)
    st = json.loads((tmp_path / "cc/stats/train.json").read_text())
    assert st["records"] + sum(json.loads((tmp_path / f"cc/stats/{s}.json").read_text())["records"]
                               for s in ("valid", "test")) == 30000
    # every rank of W computes its shard in its own process; together they are the whole sample, once
    code = r"""
import json, sys
from wmtp_nb.sampling import load_metadata, sample_balanced, sample_curriculum, shard
ds, stage, rank, world = sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4])
meta = load_metadata(ds, "train")
idx = sample_balanced(meta, 2000, seed=7) if stage == "1" else sample_curriculum(meta, 3000, seed=7, replace=True)
mine = shard(idx, rank, world)
recs = meta.records.select(mine)
print(json.dumps({"idx": mine.tolist(), "all": idx.tolist(), "ok": [r["is_correct"] == bool(meta.is_correct[i]) for r, i in zip(recs, mine)]}))
"""
    for stage in ("1", "2"):
        for world in (1, 2, 3, 4):
            outs = [json.loads(subprocess.run([sys.executable, "-c", code, str(tmp_path / "cc"), stage, str(r), str(world)],
                                              capture_output=True, text=True, check=True, env={**os.environ, **OFFLINE}
                                              ).stdout.strip().splitlines()[-1]) for r in range(world)]
            assert all(o["all"] == outs[0]["all"] for o in outs)  # same sample in every process
            joined = sorted(i for o in outs for i in o["idx"])
            assert joined == sorted(outs[0]["all"])  # covering
            positions = [p for r in range(world) for p in range(r, len(outs[0]["all"]), world)]
            assert len(set(positions)) == len(positions)  # disjoint positions
            assert all(all(o["ok"]) for o in outs)


def test_convert_codecontests_with_project_tokenizer(tmp_path):
    from wmtp_nb.datasets import _problem_row, write_codecontests_parquet
    from wmtp_nb.tokenizer import train_code_tokenizer
    tok = train_code_tokenizer(tmp_path / "tok.model", vocab_size=400, sources=("mbpp",))
    rows = [_problem_row("1_A", "Print a number.", 2, [(3, "print(1)"), (3, "print(2)\n" * 3000)], [(3, "print(0)"), (2, "x")])]
    write_codecontests_parquet(tmp_path / "raw" / "test-00000-of-00001.parquet", rows)
    out = cli("convert_codecontests_cli", tmp_path / "raw", "--out", tmp_path / "cc", "--tokenizer", tok)
    recs = read_jsonl(tmp_path / "cc/processed/test.jsonl")
    assert [r["task_id"] for r in recs] == ["1_A_correct_0", "1_A_incorrect_0"]
    assert json.loads(out.stdout)["test"]["conversion"] == {"problems": 1, "kept": 2, "dropped_language": 1, "dropped_too_long": 1}


def test_build_arrow_for_storage_written_before_it(tmp_path):
    "The one-time step: a dataset with JSONL, metadata and the old npy cache gets its Arrow form; idempotent; verified."
    cli("prepare_data_cli", "--storage", tmp_path, "--only", "humaneval")
    d = tmp_path / "datasets_v2" / "humaneval"
    shutil.rmtree(d / "arrow")
    (d / "cache" / "test").mkdir(parents=True)
    (d / "cache" / "test" / "offsets.npy").write_bytes(b"old")
    out = cli("build_arrow_cli", "--root", tmp_path)
    assert "humaneval/test: built" in out.stdout, out.stdout
    assert not (d / "cache").exists()
    assert "humaneval/test: current" in cli("build_arrow_cli", "--root", d).stdout
    from datasets import load_from_disk
    rows = load_from_disk(str(d / "arrow" / "test"))
    assert rows["task_id"] == [r["task_id"] for r in read_jsonl(d / "processed" / "test.jsonl")]
    from wmtp_nb.sampling import verify_dataset
    assert verify_dataset(d) == []
