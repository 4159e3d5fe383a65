"""Sampling at CodeContests scale: the Arrow data layer (Hugging Face `datasets`) beside the layer it replaced.

    .venv/bin/python bench/sampling.py [--n-records 3719500] [--cache storage/bench/codecontests-synth]
                                       [--baseline 7ecac99] [--convert] [--repeat 7] [--no-bytecode-cache]

Synthetic CodeContests parquet files (wmtp_nb.datasets.make_synthetic_codecontests: the real schema, SPEC §5 sizes)
are generated once and converted twice, each conversion timed in a fresh process: by this checkout (JSONL + metadata
+ Arrow form) and by the baseline commit's wmtp_nb (`git archive` into a temporary directory, put first on PYTHONPATH:
JSONL + metadata + npy column cache read by the byte-offset `RecordReader`). The two JSONL files must be identical.
Conversions are cached (their times are printed from the cache); `--convert` redoes and re-times them.

Then every figure comes from a fresh process, both layers side by side, on the 3.69 M-record train split:
  select  load the sampling columns, draw the sample (stage 1: 50 K balanced; stage 2: 200 K curriculum), shard it
          for one rank: the selection (the issue-17 gate: stage 2 with peak RSS < 280 MB, wall <= 1.5x the old layer's)
  rows    the same, then make the rank's records readable: `Dataset.select(shard)` of the Arrow form (which imports
          `datasets`), or a `RecordReader` over the JSONL: what `MicroBatches` does before step 1
  read    the same, then read every chosen record in micro-batches of 8 in sample order, as `MicroBatches.batch` does
Children reuse compiled bytecode (kept in a temporary directory, compiled by one untimed run of each layer), as an
installed package does; `--no-bytecode-cache` keeps PYTHONDONTWRITEBYTECODE, if set, so every child compiles.
Each `select` figure is the run of median wall time out of `--repeat` (7) runs per layer, old and new alternating
(peak RSS: the highest of them); `rows` and `read` run once.
Columns: seconds to select, to make the rows readable, to read; wall seconds of the whole process (interpreter start-up
excluded, imports included); peak RSS (VmHWM); RSS after the imports; anonymous RSS at the end (the process's own memory:
the rest of a peak is pages of memory-mapped files, page cache the kernel can reclaim); a hash of the drawn indices,
which must be equal for both layers.
"""
import argparse, json, os, subprocess, sys, tempfile, time
from pathlib import Path

# This process stays lean (stdlib only) and measures nothing itself: every figure is a child's own /proc/self/status.
ROOT = Path(__file__).resolve().parents[1]

CHILD = r"""
import hashlib, json, sys, time
t0 = time.perf_counter()
def status():
    d = {}
    for line in open("/proc/self/status"):
        k, v = line.split(":", 1)
        if k in ("VmHWM", "RssAnon", "RssFile"): d[k] = int(v.split()[0]) / 1024
    return d
import numpy as np
import wmtp_nb.sampling
from wmtp_nb.sampling import load_metadata, sample_balanced, sample_curriculum, shard
ds, stage, n, mode = sys.argv[1], sys.argv[2], int(sys.argv[3]), sys.argv[4]
arrow = not hasattr(wmtp_nb.sampling, "RecordReader")  # which layer this is
rss_import = status()["VmHWM"]
t = time.perf_counter()
meta = load_metadata(ds, "train")
idx = sample_balanced(meta, n, seed=0) if stage == "stage1" else sample_curriculum(meta, n, seed=0)
mine = shard(idx, 0, 1)
t_select = time.perf_counter() - t
t = time.perf_counter()
if mode in ("rows", "read"):
    if arrow:
        rows = meta.records.select(mine).select_columns(["instruction", "input", "output", "task_id", "is_correct"])
    else:
        reader = meta.reader()
t_rows = time.perf_counter() - t
t, chars = time.perf_counter(), 0
if mode == "read":
    if arrow:
        for j in range(0, len(mine), 8):
            chars += sum(map(len, rows[list(range(j, min(j + 8, len(mine))))]["output"]))
    else:
        for j in range(0, len(mine), 8):
            chars += sum(len(r["output"]) for r in reader.take(mine[j:j + 8].tolist()))
t_read = time.perf_counter() - t
end = status()
print(json.dumps({"layer": "arrow" if arrow else "offsets", "select_s": t_select, "rows_s": t_rows, "read_s": t_read,
                  "wall_s": time.perf_counter() - t0, "peak_rss_mb": end["VmHWM"], "rss_import_mb": rss_import,
                  "anon_end_mb": end["RssAnon"], "chars": chars,
                  "indices": hashlib.sha256(np.asarray(mine, np.int64).tobytes()).hexdigest()[:12]}))
"""

BUILD = r"""
import json, sys, time
from pathlib import Path
import wmtp_nb.sampling
from wmtp_nb.datasets import convert_codecontests
raw, out = Path(sys.argv[1]), Path(sys.argv[2])
t = time.perf_counter()
convert_codecontests(raw, out, max_tokens=None, overwrite=True, progress=False)  # short texts: none near 2048 tokens
print(json.dumps({"convert_s": time.perf_counter() - t, "layer": "offsets" if hasattr(wmtp_nb.sampling, "RecordReader") else "arrow"}))
"""

GENERATE = r"""
import json, sys
from wmtp_nb.datasets import make_synthetic_codecontests
print(json.dumps(make_synthetic_codecontests(sys.argv[1], int(sys.argv[2]), seed=0, progress=False)))
"""


PYCACHE: str | None = None  # where the children keep bytecode (None: as the environment says)


def run(code: str, *args, pythonpath: str | None = None) -> dict:
    "Run `code` in a fresh interpreter (offline, one thread); its last stdout line as JSON."
    env = {**os.environ, "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1"}
    if PYCACHE:  # bytecode compiled once and reused, as an ordinary install does (never inside the checkout)
        env.pop("PYTHONDONTWRITEBYTECODE", None)
        env["PYTHONPYCACHEPREFIX"] = PYCACHE
    if pythonpath:
        env["PYTHONPATH"] = pythonpath + os.pathsep + env.get("PYTHONPATH", "")
    # cwd outside the checkout: `python -c` puts the cwd first on sys.path, before PYTHONPATH
    out = subprocess.run([sys.executable, "-c", code, *map(str, args)], capture_output=True, text=True, env=env,
                         cwd=tempfile.gettempdir())
    if out.returncode:
        raise RuntimeError(out.stderr[-4000:])
    return json.loads(out.stdout.strip().splitlines()[-1])


def baseline_package(rev: str, into: Path) -> str:
    "The wmtp_nb (and vendor) of commit `rev`, extracted from git into `into`; the directory for PYTHONPATH."
    archive = subprocess.run(["git", "-C", str(ROOT), "archive", rev, "wmtp_nb", "vendor"], capture_output=True, check=True)
    subprocess.run(["tar", "-x", "-C", str(into)], input=archive.stdout, check=True)
    return str(into)


def converted(raw: Path, out: Path, stamp: dict, force: bool, pythonpath: str | None = None) -> float:
    "Convert `raw` into `out` (timed, in a child) unless the cached conversion matches `stamp`; the conversion seconds."
    f = out.parent / f"{out.name}.json"
    if not force and f.is_file() and (rec := json.loads(f.read_text()))["stamp"] == stamp and (out / "processed").is_dir():
        return rec["convert_s"]
    r = run(BUILD, raw, out, pythonpath=pythonpath)
    if r["layer"] != ("offsets" if pythonpath else "arrow"):
        raise RuntimeError(f"the conversion into {out} ran the {r['layer']} layer, not the one asked for")
    f.write_text(json.dumps({"stamp": stamp, "convert_s": r["convert_s"]}))
    return r["convert_s"]


def same_file(a: Path, b: Path, block: int = 1 << 24) -> bool:
    "Byte-for-byte equality of two files, read in blocks."
    if a.stat().st_size != b.stat().st_size:
        return False
    with open(a, "rb") as fa, open(b, "rb") as fb:
        while x := fa.read(block):
            if x != fb.read(block):
                return False
    return True


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n-records", type=int, default=3_719_500)  # SPEC §5: 3.69 M train + 14.7 K valid + 14.8 K test
    ap.add_argument("--cache", default=str(ROOT / "storage" / "bench" / "codecontests-synth"))
    ap.add_argument("--baseline", default="7ecac99", help="commit whose data layer is measured beside this one")
    ap.add_argument("--convert", action="store_true", help="convert (and time) both datasets again")
    ap.add_argument("--repeat", type=int, default=7, help="runs of each select figure (the median wall is shown)")
    ap.add_argument("--no-bytecode-cache", action="store_true",
                    help="leave PYTHONDONTWRITEBYTECODE as it is (each child then compiles every module it imports)")
    a = ap.parse_args()
    cache = Path(a.cache)
    cache.mkdir(parents=True, exist_ok=True)
    raw, stamp = cache / "raw", {"n_records": a.n_records}
    if not ((cache / "raw.json").is_file() and json.loads((cache / "raw.json").read_text()) == stamp):
        t = time.time()
        run(GENERATE, raw, a.n_records)
        (cache / "raw.json").write_text(json.dumps(stamp))
        print(f"generated {a.n_records:,} records of parquet in {time.time() - t:.0f} s")
    with tempfile.TemporaryDirectory(prefix="wmtp-bench-baseline-") as tmp:
        old_pkg = baseline_package(a.baseline, Path(tmp))
        layers = {"old": (cache / "old", old_pkg, f"{a.baseline} (offsets + npy cache)"),
                  "new": (cache / "new", None, "this checkout (datasets Arrow)")}
        conv = {k: converted(raw, d, {**stamp, "rev": a.baseline if pp else "checkout"}, a.convert, pp)
                for k, (d, pp, _) in layers.items()}
        jsonl = {k: d / "processed" / "train.jsonl" for k, (d, _, _) in layers.items()}
        st = json.loads((cache / "new" / "stats" / "train.json").read_text())
        print(f"train split: {st['records']:,} records ({st['correct']:,} correct), JSONL {jsonl['new'].stat().st_size / 1e9:.2f} GB "
              f"({'identical' if same_file(jsonl['old'], jsonl['new']) else 'DIFFERENT'} for both layers); "
              f"difficulty {st['difficulty']}")
        arrow_gb = sum(f.stat().st_size for f in (cache / "new" / "arrow" / "train").glob("*.arrow")) / 1e9
        print(f"conversion of all {a.n_records:,} records (parquet -> storage layout, one process): "
              f"old {conv['old']:.0f} s (JSONL + metadata + npy cache), new {conv['new']:.0f} s "
              f"(JSONL + metadata + Arrow form, {arrow_gb:.2f} GB for train)" + ("" if a.convert else "  [as cached; --convert re-times]"))
        global PYCACHE
        bytecode = "compiled in every child (PYTHONDONTWRITEBYTECODE)" if os.environ.get("PYTHONDONTWRITEBYTECODE") else "cached"
        if not a.no_bytecode_cache:
            PYCACHE, bytecode = str(Path(tmp) / "pycache"), "cached (one untimed run of each layer first)"
            for k, (d, pp, _) in layers.items():  # compile what each layer imports; nothing of this is timed
                run(CHILD, d, "stage1", 1000, "rows", pythonpath=pp)
        print(f"bytecode: {bytecode}; machine load (1, 5, 15 min): {' '.join(f'{x:.1f}' for x in os.getloadavg())}")
        print(f"{'stage':7} {'n':>7} {'mode':6} {'layer':32} {'select s':>8} {'rows s':>7} {'read s':>7} {'wall s':>7} "
              f"{'peak RSS MB':>11} {'after imports':>13} {'anon at end':>11}  indices")
        res = {}
        for stage, n in (("stage1", 50_000), ("stage2", 200_000)):
            for mode in ("select", "rows", "read"):
                runs = {"old": [], "new": []}
                for _ in range(a.repeat if mode == "select" else 1):  # old and new alternate: both meet the same load
                    for k in ("old", "new"):
                        d, pp, name = layers[k]
                        runs[k].append(r := run(CHILD, d, stage, n, mode, pythonpath=pp))
                        if r["layer"] != ("offsets" if pp else "arrow"):
                            raise RuntimeError(f"{name}: the child ran the {r['layer']} layer")
                for k in ("old", "new"):
                    name = layers[k][2]
                    r = res[stage, mode, k] = sorted(runs[k], key=lambda x: x["wall_s"])[len(runs[k]) // 2]  # median wall
                    r["peak_rss_mb"] = max(x["peak_rss_mb"] for x in runs[k])
                    if len({x["indices"] for x in runs[k]}) > 1:
                        raise RuntimeError(f"{name}: repeated runs drew different indices")
                    print(f"{stage:7} {n:7d} {mode:6} {name:32} {r['select_s']:8.3f} {r['rows_s']:7.3f} {r['read_s']:7.2f} "
                          f"{r['wall_s']:7.2f} {r['peak_rss_mb']:11.0f} {r['rss_import_mb']:13.0f} {r['anon_end_mb']:11.0f}  "
                          f"{r['indices']}")
                o, nw = res[stage, mode, "old"], res[stage, mode, "new"]
                ratio = lambda k: f"{nw[k] / o[k]:7.2f}" if o[k] > 0.0005 else f"{'-':>7}"
                print(f"{'':7} {'':7} {'':6} {'new / old':32} {nw['select_s'] / o['select_s']:8.2f} {ratio('rows_s')} "
                      f"{ratio('read_s')} {nw['wall_s'] / o['wall_s']:7.2f} {nw['peak_rss_mb'] / o['peak_rss_mb']:11.2f}  "
                      f"{'same indices' if o['indices'] == nw['indices'] else 'INDICES DIFFER'}")
        g = res["stage2", "select", "new"], res["stage2", "select", "old"]
        print(f"gate (stage-2 select, 200 K): peak RSS {g[0]['peak_rss_mb']:.0f} MB (< 280: {'yes' if g[0]['peak_rss_mb'] < 280 else 'NO'}), "
              f"wall {g[0]['wall_s']:.2f} s vs {g[1]['wall_s']:.2f} s = {g[0]['wall_s'] / g[1]['wall_s']:.2f}x "
              f"(<= 1.5x: {'yes' if g[0]['wall_s'] <= 1.5 * g[1]['wall_s'] else 'NO'}); bytecode {bytecode.split(' (')[0]}, "
              f"load {os.getloadavg()[0]:.1f}")


main()
