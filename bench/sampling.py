"""Sampling at CodeContests scale: stage 1 (50 K, balanced) and stage 2 (200 K, curriculum) on 3.7 M records.

    .venv/bin/python bench/sampling.py [--n-records 3719500] [--cache storage/bench/codecontests-synth]

Builds the synthetic dataset once (wmtp_nb.datasets.make_synthetic_codecontests -> convert_codecontests: parquet in
the real schema, then the storage layout; ~1.9 GB of JSONL, a few minutes on 2 cores), then runs each measurement in
a fresh Python process and prints wall time, index-selection time, read time and peak RSS
(resource.getrusage(RUSAGE_SELF).ru_maxrss of the child). Two ways of reading the chosen records are timed:
streaming (`RecordReader.iter_take`, what a DataLoader does batch by batch) and materialising the whole list
(`RecordReader.take`). For comparison the naive approach (json.load of the metadata file, then a full pass over the
JSONL keeping the chosen lines) is measured in the same run on stage 1.
"""
import argparse, json, subprocess, sys, time
from pathlib import Path

# This process stays lean (stdlib only): Linux keeps ru_maxrss across fork + exec, so a child would report the
# parent's peak. Building the dataset and measuring both happen in child processes.

CHILD = r"""
import json, resource, sys, time
t0 = time.perf_counter()
import numpy as np
from wmtp_nb.sampling import load_metadata, sample_balanced, sample_curriculum, shard
rss = lambda: resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # MB (Linux: KB)
ds, stage, n, mode = sys.argv[1], sys.argv[2], int(sys.argv[3]), sys.argv[4]
rss_import = rss()
if mode == "naive":  # the seed's way: parse all metadata, then scan the text for the chosen lines
    t = time.perf_counter()
    meta = json.load(open(f"{ds}/processed/train_metadata.json"))["metadata"]
    cor = np.array([m["is_correct"] for m in meta]); dif = np.array([m["difficulty"] for m in meta])
    class M: pass
    m = M(); m.is_correct, m.difficulty, m.jsonl_path = cor, dif, ds
    idx = sample_balanced(m, n, seed=0) if stage == "stage1" else sample_curriculum(m, n, seed=0)
    t_select = time.perf_counter() - t
    t = time.perf_counter()
    want = set(idx.tolist()); recs = []
    with open(f"{ds}/processed/train.jsonl") as f:
        for i, line in enumerate(f):
            if i in want: recs.append(json.loads(line))
    chars = sum(len(r["output"]) for r in recs)
else:
    t = time.perf_counter()
    meta = load_metadata(ds, "train")
    idx = sample_balanced(meta, n, seed=0) if stage == "stage1" else sample_curriculum(meta, n, seed=0)
    idx = shard(idx, 0, 1)
    t_select = time.perf_counter() - t
    t = time.perf_counter()
    reader = meta.reader()
    if mode == "stream":
        chars = sum(len(r["output"]) for r in reader.iter_take(idx))
    else:
        recs = reader.take(idx); chars = sum(len(r["output"]) for r in recs)
t_read = time.perf_counter() - t
print(json.dumps({"select_s": t_select, "read_s": t_read, "wall_s": time.perf_counter() - t0,
                  "peak_rss_mb": rss(), "rss_after_import_mb": rss_import, "chars": chars}))
"""


BUILD = r"""
import json, sys, time
from pathlib import Path
from wmtp_nb.datasets import convert_codecontests, make_synthetic_codecontests
from wmtp_nb.files import check_sha256sums
cache, n_records = Path(sys.argv[1]), int(sys.argv[2])
ds, stamp = cache / "dataset", cache / "built.json"
if stamp.is_file() and json.loads(stamp.read_text()) == {"n_records": n_records} and not check_sha256sums(ds):
    print("dataset cached"); sys.exit(0)
t = time.time()
make_synthetic_codecontests(cache / "raw", n_records, seed=0)
print(f"generated parquet in {time.time() - t:.0f} s"); t = time.time()
convert_codecontests(cache / "raw", ds, max_tokens=None, overwrite=True)  # short texts: no record is near 2048 tokens
stamp.write_text(json.dumps({"n_records": n_records}))
print(f"converted in {time.time() - t:.0f} s")
"""


def child(ds: Path, stage: str, n: int, mode: str) -> dict:
    out = subprocess.run([sys.executable, "-c", CHILD, str(ds), stage, str(n), mode], capture_output=True, text=True)
    if out.returncode:
        raise RuntimeError(out.stderr)
    return json.loads(out.stdout.strip().splitlines()[-1])


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--n-records", type=int, default=3_719_500)  # SPEC §5: 3.69 M train + 14.7 K valid + 14.8 K test
    ap.add_argument("--cache", default=str(Path(__file__).resolve().parents[1] / "storage" / "bench" / "codecontests-synth"))
    ap.add_argument("--naive", action="store_true", help="also time the naive full-parse approach (slow, ~GB RSS)")
    a = ap.parse_args()
    subprocess.run([sys.executable, "-c", BUILD, a.cache, str(a.n_records)], check=True)
    ds = Path(a.cache) / "dataset"
    st = json.loads((ds / "stats/train.json").read_text())
    size = (ds / "processed/train.jsonl").stat().st_size
    print(f"dataset: {ds} train {st['records']:,} records ({st['correct']:,} correct), JSONL {size / 1e9:.2f} GB, "
          f"{size / st['records']:.0f} B/record; difficulty {st['difficulty']}")
    runs = [("stage1", 50_000, "stream"), ("stage1", 50_000, "list"), ("stage2", 200_000, "stream"),
            ("stage2", 200_000, "list")] + ([("stage1", 50_000, "naive")] if a.naive else [])
    print(f"{'stage':7} {'n':>7} {'read':7} {'select s':>9} {'read s':>7} {'wall s':>7} {'peak RSS MB':>12} {'RSS after imports':>18}")
    for stage, n, mode in runs:
        r = child(ds, stage, n, mode)
        print(f"{stage:7} {n:7d} {mode:7} {r['select_s']:9.3f} {r['read_s']:7.2f} {r['wall_s']:7.2f} "
              f"{r['peak_rss_mb']:12.0f} {r['rss_after_import_mb']:18.0f}")


main()
