"""`make demo`: the CPU-scale benchmark of issue 14, end to end, through the papermill notebooks.

    python tools/demo.py [--seeds 0,1,2] [--jobs 2] [--tiny]          # what `make demo` runs (after `make assets`)
    python tools/demo.py --compare runs/analysis/synthetic_report.json other/analysis/synthetic_report.json
    python tools/demo.py --markdown runs/analysis/synthetic_report.json          # the README's tables

Steps (each a papermill run whose executed copy lands in runs/; every finished step is skipped on a re-run, so a
killed demo resumes; delete runs/synth-* to train again):

1. pretrain: `nbs/train.ipynb -p stage pretrain -p preset synthetic-pretrain` turns the random `synth-mtp`
   (`make assets`) into the base model (plain uniform MTP on the correct training solutions), then
   `wmtp_nb.micro.publish_model` writes its checkpoint as the storage model dir `runs/synth-pretrain/base/`.
2. per seed s: critic (stage 1, from the base) -> verifiable (from that critic), rho1 (from the base, reference =
   the base), baseline (from the base): `-p preset synthetic-critic` / `synthetic`, seed s for data and runtime;
   `--jobs` runs at a time (default 2: one per core, one thread each; a run's result does not depend on it).
3. `nbs/evaluate.ipynb`: the base and every experiment on the held-out test tasks of `synthetic-verifiable`
   (n samples per task, the same sampling seed for every model: common random numbers for paired comparisons), in
   `--jobs` papermill runs side by side, each over its share of the models.
4. `nbs/analysis_weights.ipynb` (training curves and the bug-token credit score) and `nbs/analysis_passk.ipynb`
   (Pass@1/5 per experiment over tasks and seeds, paired differences) for the runs tagged `benchmark: synthetic`.
5. `runs/analysis/synthetic_report.json`: every figure of the benchmark and nothing machine-dependent (no times,
   paths or ids), so that two demos from the same seeds can be compared byte for byte (`--compare`); the wall and
   CPU time (this process and every finished child) and the mean 1-minute load average go to
   `runs/analysis/demo_time.json` (the demo shares its cores: CPU time and load say what the wall time means).

`--tiny` (tests): 2-step runs, 1 seed, 2 samples on 4 tasks, to check that the pipeline runs; `--storage`/`--runs`
point elsewhere (else $WMTP_STORAGE / $WMTP_RUNS or storage/, runs/).
"""
from __future__ import annotations

import argparse, json, os, resource, sys, threading, time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
BENCHMARK = "synthetic"
PREFIX = "synth"
EVAL = dict(datasets="synthetic", split="test", n=10, temperature=0.8, top_p=0.95, max_new_tokens=64, seed=0, ks="1,5,10",
            batch_size=100, workers=2)
TINY = dict(train=["training.max_steps=2", "training.eval_every=1", "training.save_every=1", "data.valid_n_samples=4",
                   "data.n_samples=32"],
            eval=dict(n=2, limit=4, ks="1,2", max_new_tokens=16))


def log(msg: str) -> None:
    print(f"[demo {time.strftime('%H:%M:%S')}] {msg}", flush=True)


class _Prefixed:
    "A stream for papermill's stdout_file: the notebook's output, line by line, prefixed with its name (runs interleave)."
    def __init__(self, name: str, stream):
        self.name, self.stream, self.buf = name, stream, ""

    def write(self, text: str) -> None:
        self.buf += text
        *lines, self.buf = self.buf.split("\n")
        for line in lines:
            self.stream.write(f"  {self.name}| {line}\n")

    def flush(self) -> None:
        self.stream.flush()


def papermill(nb: str, out: Path, params: dict) -> None:
    "Execute `nbs/<nb>` into `out` with `params`, from the project root, printing the notebook's output as it runs."
    import papermill as pm
    t0 = time.time()
    log(f"{nb} -> {out.name} {json.dumps({k: v for k, v in params.items() if k != 'overrides'})}"
        + (f" overrides={params['overrides']}" if params.get("overrides") else ""))
    pm.execute_notebook(str(ROOT / "nbs" / nb), str(out), parameters=params, kernel_name="python3", cwd=str(ROOT),
                        progress_bar=False, stdout_file=_Prefixed(out.stem, sys.stdout), stderr_file=_Prefixed(out.stem, sys.stderr))
    log(f"{out.name} done in {time.time() - t0:.0f}s")


def finished(run_dir: Path) -> bool:
    "A training run that reached its last step (`final_metrics.json` and a `last/` checkpoint at that step)."
    try:
        final = json.loads((run_dir / "final_metrics.json").read_text())
        last = json.loads((run_dir / "last" / "meta.json").read_text())
    except (OSError, ValueError):
        return False
    return last.get("step") == final.get("step")


def train(runs: Path, run: str, stage: str, preset: str, overrides: list[str]) -> None:
    if finished(runs / run):
        log(f"{run}: finished, skipped")
        return
    papermill("train.ipynb", runs / f"{run}.ipynb",
              {"stage": stage, "preset": preset, "run_name": run, "overrides": overrides})


def experiment_runs(runs: Path, seeds: list[int], base: Path, extra: list[str]) -> list[tuple[str, list]]:
    "The training runs of the three experiments, `(run, [after], stage, preset, overrides)`, all from the same base."
    out = []
    for s in seeds:
        ident = [f"runtime.seed={s}", f"data.seed={s}"] + extra
        critic = f"{PREFIX}-critic-s{s}"
        out += [(critic, [], "critic", "synthetic-critic", [f"models.init_from={base}", *ident]),
                (f"{PREFIX}-rho1-s{s}", [], "rho1", "synthetic", [f"models.init_from={base}", f"models.reference={base}", *ident]),
                (f"{PREFIX}-baseline-s{s}", [], "baseline", "synthetic", [f"models.init_from={base}", *ident]),
                (f"{PREFIX}-verifiable-s{s}", [critic], "verifiable", "synthetic", [f"models.init_from={runs / critic}", *ident])]
    return out


def run_all(runs: Path, plan: list[tuple], jobs: int) -> None:
    "Train the runs of `plan`, `jobs` at a time (one thread each), each after the runs it starts from."
    futures: dict[str, object] = {}
    with ThreadPoolExecutor(max(1, jobs)) as pool:
        def one(run, after, stage, preset, overrides):
            for a in after: futures[a].result()
            train(runs, run, stage, preset, overrides)
        for run, after, stage, preset, overrides in sorted(plan, key=lambda p: len(p[1])):   # dependants last
            futures[run] = pool.submit(one, run, after, stage, preset, overrides)
        for f in futures.values(): f.result()


def report(runs: Path) -> dict:
    "The benchmark's figures from the analysis notebooks' JSON outputs (no times, paths or ids)."
    a = runs / "analysis"
    return {"benchmark": BENCHMARK, "passk": json.loads((a / f"passk_{BENCHMARK}.json").read_text()),
            "credit": json.loads((a / "credit.json").read_text()), "critic": critic_report(runs)}


def critic_report(runs: Path) -> list[dict]:
    "Each stage-1 critic's validation at its last step (valid split): value accuracy at the last state, explained variance."
    out = []
    for d in sorted(runs.glob(f"{PREFIX}-critic-s*")):
        if not d.is_dir(): continue
        f = json.loads((d / "final_metrics.json").read_text())
        out.append({"run": d.name, "step": f.get("step"), "valid_value_accuracy": f.get("valid/value_accuracy"),
                    "valid_explained_variance": f.get("valid/explained_variance"), "valid_value_loss": f.get("valid/value_loss")})
    return out


def print_report(rep: dict) -> None:
    p = rep["passk"]
    print(f"\nheld-out test tasks of synthetic-verifiable: {p['n_tasks']} tasks x n={p['n_samples']} samples "
          f"(T={p['sampling']['temperature']}), 95% bootstrap CIs over tasks and seeds")
    print(f"{'experiment':44s} {'seeds':>5s}  " + "  ".join(f"{k:>22s}" for k in p["ks"]))
    for e in p["experiments"]:
        cells = [f"{100 * e[k]['mean']:5.1f} [{100 * e[k]['ci95'][0]:5.1f}, {100 * e[k]['ci95'][1]:5.1f}]" for k in p["ks"]]
        print(f"{e['label'] + ' [' + e['data_condition'] + ']':44s} {e['n_seeds']:5d}  " + "  ".join(f"{c:>22s}" for c in cells))
    for d in p["vs_baseline"]:
        print(f"  {d['label']:42s} {d['k']}: {100 * d['diff']:+5.1f} points vs baseline, 95% CI "
              f"[{100 * d['ci95'][0]:+.1f}, {100 * d['ci95'][1]:+.1f}]")
    for r in rep.get("critic", []):
        print(f"  {r['run']}: valid value accuracy {r['valid_value_accuracy']:.3f}, explained variance "
              f"{r['valid_explained_variance']:+.3f}, value loss {r['valid_value_loss']:.4f} (step {r['step']})")
    c = rep["credit"]
    print(f"\nbug-token credit on {c['n_mutants']} held-out mutants ({c['split']}), per head h0..h3: AUROC of 'is the bug token' / "
          f"mean within-sequence percentile of the bug token / share in the extreme decile (chance ~0.1); mean over seeds")
    for m in c["methods"]:
        heads = m["heads"]
        print(f"{m['label'] + ' (' + m['bug_like'] + ')':52s} " + "  ".join(
            f"h{k.split('_')[1]} {v['auroc']:.3f}/{v['mean_percentile']:.2f}/{v['extreme_decile']:.2f}" for k, v in heads.items()))


def markdown_report(rep: dict) -> str:
    "The report as the Markdown tables of the README (Pass@K with CIs, differences to the baseline, bug-token credit)."
    p, c = rep["passk"], rep["credit"]
    lines = [f"| experiment (data condition) | seeds | " + " | ".join(p["ks"]) + " |", "|---|---|" + "---|" * len(p["ks"])]
    for e in p["experiments"]:
        lines.append(f"| {e['label']} ({e['data_condition']}) | {e['n_seeds']} | " + " | ".join(
            f"{100 * e[k]['mean']:.1f} [{100 * e[k]['ci95'][0]:.1f}, {100 * e[k]['ci95'][1]:.1f}]" for k in p["ks"]) + " |")
    lines += ["", "| vs baseline (paired) | " + " | ".join(p["ks"]) + " |", "|---|" + "---|" * len(p["ks"])]
    for lab in dict.fromkeys(d["label"] for d in p["vs_baseline"]):
        ds = {d["k"]: d for d in p["vs_baseline"] if d["label"] == lab}
        lines.append(f"| {lab} | " + " | ".join(f"{100 * ds[k]['diff']:+.1f} [{100 * ds[k]['ci95'][0]:+.1f}, {100 * ds[k]['ci95'][1]:+.1f}]"
                                                  if k in ds else "" for k in p["ks"]) + " |")
    heads = list(c["methods"][0]["heads"])
    lines += ["", "| method (what counts as bug-like) | " + " | ".join(f"head {h.split('_')[1]} (t+{int(h.split('_')[1]) + 1})" for h in heads) + " |",
              "|---|" + "---|" * len(heads)]
    for m in c["methods"]:
        lines.append(f"| {m['label']} ({m['bug_like']}) | " + " | ".join(
            f"{m['heads'][h]['auroc']:.2f} / {m['heads'][h]['mean_percentile']:.2f} / {m['heads'][h]['extreme_decile']:.2f}" for h in heads) + " |")
    if rep.get("critic"):
        lines += ["", "| stage-1 critic (valid split, last step) | value accuracy (last state) | explained variance | value loss |",
                  "|---|---|---|---|"]
        lines += [f"| {r['run']} | {r['valid_value_accuracy']:.3f} | {r['valid_explained_variance']:+.3f} | {r['valid_value_loss']:.4f} |"
                  for r in rep["critic"]]
    return "\n".join(lines)


class LoadMeter:
    "Samples the 1-minute load average every `every` s in a daemon thread: the demo shares its cores, so its wall time needs the load beside it."
    def __init__(self, every: float = 15.0):
        self.samples, self.every, self.stop = [os.getloadavg()[0]], every, threading.Event()
        threading.Thread(target=self._run, daemon=True).start()

    def _run(self) -> None:
        while not self.stop.wait(self.every):
            self.samples.append(os.getloadavg()[0])


def cpu_seconds() -> float:
    "CPU time (user + system) of this process and of every finished child (papermill kernels, torchrun, training)."
    return sum(getattr(resource.getrusage(w), f) for w in (resource.RUSAGE_SELF, resource.RUSAGE_CHILDREN)
               for f in ("ru_utime", "ru_stime"))


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--seeds", default="0,1,2")
    ap.add_argument("--jobs", type=int, default=2, help="training runs at the same time (one thread each)")
    ap.add_argument("--tiny", action="store_true", help="a pipeline check: 2-step runs, a few samples")
    ap.add_argument("--split", default="test", help="held-out split to evaluate and grade credit on (tune on valid, report test)")
    ap.add_argument("--storage", default=None)
    ap.add_argument("--runs", default=None)
    ap.add_argument("--compare", nargs=2, metavar=("REPORT_A", "REPORT_B"), help="compare two reports and exit")
    ap.add_argument("--markdown", metavar="REPORT", help="print a report as the README's Markdown tables and exit")
    args = ap.parse_args()
    if args.markdown:
        print(markdown_report(json.loads(Path(args.markdown).read_text())))
        return 0
    if args.compare:
        a, b = (Path(p).read_bytes() for p in args.compare)
        print("identical" if a == b else "DIFFERENT")
        return 0 if a == b else 1
    if args.storage: os.environ["WMTP_STORAGE"] = str(Path(args.storage).resolve())
    if args.runs: os.environ["WMTP_RUNS"] = str(Path(args.runs).resolve())
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    from wmtp_nb.files import runs_dir
    from wmtp_nb.micro import publish_model
    from wmtp_nb.storage import verify_model_dir
    runs = runs_dir().resolve()
    runs.mkdir(parents=True, exist_ok=True)
    seeds = [int(s) for s in args.seeds.split(",") if s.strip()]
    extra = TINY["train"] if args.tiny else []
    t0, c0, load = time.time(), cpu_seconds(), LoadMeter()
    pre = f"{PREFIX}-pretrain"
    train(runs, pre, "pretrain", "synthetic-pretrain", extra)
    base = runs / pre / "base"
    if not base.is_dir() or verify_model_dir(base):
        publish_model(runs / pre, base, name=f"{PREFIX}-base")
        log(f"published the base model {base}")
    run_all(runs, experiment_runs(runs, seeds, base, extra), args.jobs)
    t_train, c_train = time.time() - t0, cpu_seconds() - c0
    models = [runs / pre] + [runs / f"{PREFIX}-{e}-s{s}" for s in seeds for e in ("baseline", "verifiable", "rho1")]
    ev = {**EVAL, **(TINY["eval"] if args.tiny else {}), "split": args.split}
    groups = [models[i::max(1, args.jobs)] for i in range(max(1, args.jobs))]      # `jobs` evaluations at a time
    with ThreadPoolExecutor(len(groups)) as pool:
        for f in [pool.submit(papermill, "evaluate.ipynb", runs / f"{PREFIX}-evaluate-{i}.ipynb",
                              {"model_path": ",".join(str(m) for m in g), "log_mlflow": True, "skip_existing": True, **ev})
                  for i, g in enumerate(groups) if g]:
            f.result()
    papermill("analysis_weights.ipynb", runs / "analysis_weights.ipynb", {"benchmark": BENCHMARK, "credit_split": args.split})
    papermill("analysis_passk.ipynb", runs / "analysis_passk.ipynb", {"benchmark": BENCHMARK, "datasets": ev["datasets"], "ks": ev["ks"]})
    rep = report(runs)
    from wmtp_nb.files import atomic_write_json
    out = atomic_write_json(runs / "analysis" / f"{BENCHMARK}_report.json", rep)
    total, cpu = time.time() - t0, cpu_seconds() - c0
    load.stop.set()
    mean_load = sum(load.samples) / len(load.samples)
    atomic_write_json(runs / "analysis" / "demo_time.json", {
        "wall_s": round(total, 1), "train_wall_s": round(t_train, 1), "cpu_s": round(cpu, 1), "train_cpu_s": round(c_train, 1),
        "mean_loadavg_1min": round(mean_load, 2), "loadavg_samples": len(load.samples), "seeds": seeds, "jobs": args.jobs,
        "cpus": os.cpu_count(), "tiny": args.tiny})
    print_report(rep)
    log(f"report {out}; executed notebooks in {runs}")
    log(f"wall time {total:.0f}s (training {t_train:.0f}s); CPU time {cpu:.0f}s (training {c_train:.0f}s) on {os.cpu_count()} "
        f"cores; mean 1-min load average {mean_load:.1f} (this demo alone keeps about {min(args.jobs, os.cpu_count() or 1)} busy)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
