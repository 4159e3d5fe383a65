"""One MTP training step (forward, backward, AdamW) of the micro config, implementation by implementation: each mode
measured in its own fresh process (so no mode inherits another's allocator cache), the processes alternated round by
round, wall and CPU time, peak RSS, ratios within one run.

    .venv/bin/python bench/train_step.py                      # dim 512, 4 trunk + 4 head blocks, vocab 32000, 4 x 512
    .venv/bin/python bench/train_step.py --rounds 2 --modes fused-fp32,naive-fp32

Modes (loss implementation, optimiser, dtype):
  naive-fp32            all heads' logits [B, S, H, V] at once (`mtp_loss(impl="naive")`), torch's default AdamW   (reference)
  efficient-fp32        main before issue 16: one head's logits at a time, torch's default AdamW           (before)
  fused-fp32            `training.mtp_loss: fused` (wmtp_nb.loss), fused AdamW                              (after)
  fused-ckpt-fp32       the same with `runtime.activation_checkpointing: true` (the default config's setting): the
                        trunk blocks recomputed in the backward (their activations live through every head's pass)
  fused-ckptall-fp32    the same with every block recomputed, the head blocks too (the policy before: no memory
                        gained over fused-ckpt, since one head block is alive at a time, for more recompute)
  fused-recompute-fp32  the same through the weights-after-CE path (the backward recomputes the logits): the
                        measured reason why known weights take the gradients-in-forward path in float32 (not default)
  fused-bf16            fused + `runtime.dtype: bfloat16` (CPU autocast; AMX here)                          (after)
  rho1-efficient-fp32   Rho-1 step, reference CE cached (a tensor), main's loss and AdamW                  (before)
  rho1-fused-fp32, rho1-fused-bf16                                                                          (after)
Before issue 16, `runtime.dtype: bfloat16` was ignored on CPU: main's bf16 step is its fp32 step.
Every mode runs with the training loop's CPU heap policy (`runtime.release_cpu_heap`, `wmtp_nb.cpu_heap`: the freed
heap returned to the system after each head's backward; the naive loss has no per-head backward, so it is untouched);
the suffix `@glibc` (`fused-ckpt-fp32@glibc`) runs a mode with glibc's default allocator settings instead, `@mmap8` with
the policy and a fixed 8 MiB mmap threshold (`configure_cpu_heap(True, 8)`).

Per mode, from `rounds` fresh processes (one per round, modes alternated, the order rotated each round), each running
a warm-up step and `steps` timed steps: seconds per step (best over every timed step: the machine is shared, the best
is the least disturbed; the median in brackets), CPU seconds per step (process CPU time of all threads, best), tokens/s
(B*S per step), achieved GFLOP/s (model FLOPs of the step: 6 x matmul params x tokens plus attention, all tokens
counted whether or not an implementation skips masked rows) against the GEMM-only roofline of the same FLOPs at the
GEMM rates measured in the same process after its steps (one product per shape of the step, in the step's dtype, best
rate), peak RSS (ru_maxrss, read before the roofline products), the RSS before the first step (model and batch; the
AdamW state is created by the first step) and the peak's rise above it, the 1-minute load average at the start.
Targets (issue 16): fused-fp32 <= 0.6x naive time and <= 0.3x its peak memory; fused-bf16 <= 0.3x naive fp32 time;
rho1-fused within 1.1x the fused baseline step of the same dtype.
"""
import argparse, contextlib, json, os, resource, subprocess, sys, time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
MODES = ["naive-fp32", "efficient-fp32", "fused-fp32", "fused-ckpt-fp32", "fused-ckptall-fp32", "fused-recompute-fp32", "fused-bf16",
         "rho1-efficient-fp32", "rho1-fused-fp32", "rho1-fused-bf16"]
DEFAULT_MODES = [m for m in MODES if m not in ("fused-recompute-fp32", "fused-ckptall-fp32")] + ["fused-ckpt-fp32@glibc"]
HEAP_POLICIES = {"": (True, None), "glibc": (False, None), "mmap8": (True, 8)}  # mode suffix -> configure_cpu_heap's arguments


def step_gemms(a) -> list[tuple[int, int, int, int, int]]:
    "(count, batch, M, K, N) of the forward matrix products of one step; backward doubles them (same shapes, transposed)."
    from vendor.meta_llama.model import ffn_hidden_dim
    T, D, F, V, hd = a.batch * a.seq, a.dim, ffn_hidden_dim(a.dim, 256, None), a.vocab, a.dim // a.n_heads
    blocks = a.trunk + a.heads
    return [(4 * blocks, 1, T, D, D), (2 * blocks, 1, T, D, F), (blocks, 1, T, F, D), (a.heads, 1, T, D, V),
            (2 * blocks, a.batch * a.n_heads, a.seq, hd, a.seq)]               # attention: QKᵀ and AV, every head


def gemm_roofline_s(a, dtype) -> tuple[float, float]:
    "(model GFLOP of one step, seconds the step's GEMMs take at the GEMM rates measured now in `dtype`)."
    import torch
    flops, secs = 0.0, 0.0
    for count, batch, M, K, N in step_gemms(a):
        x, w = torch.randn(batch, M, K, dtype=dtype), torch.randn(batch, K, N, dtype=dtype)
        x @ w
        best = float("inf")
        for _ in range(3):
            t0 = time.perf_counter(); x @ w; best = min(best, time.perf_counter() - t0)
        f = 3 * count * 2.0 * batch * M * K * N                                # forward + backward (2x)
        flops += f; secs += f / (2.0 * batch * M * K * N / best)
    return flops / 1e9, secs


def setup(a, ckpt: str = ""):
    "The micro model (activation checkpointing of the trunk blocks when `ckpt` is 'trunk', of every block when 'all'), one batch with targets for every head (a prompt"
    " quarter without targets), a cached reference CE."
    import torch
    from vendor.meta_llama.model import ModelArgs, Transformer
    from wmtp_nb.model import MetaLlamaMTPAdapter
    from wmtp_nb.runtime import apply_activation_checkpointing
    from wmtp_nb.weighting import align_to_heads
    torch.set_num_threads(a.threads)
    torch.manual_seed(0)
    args = ModelArgs.from_params(dict(dim=a.dim, n_layers=a.trunk + a.heads, n_heads=a.n_heads, vocab_size=a.vocab,
                                      multiple_of=256, norm_eps=1e-5, n_future_tokens=a.heads))
    ad = MetaLlamaMTPAdapter(Transformer(args).init_weights(seed=0))
    if ckpt: apply_activation_checkpointing(ad, heads=ckpt == "all")
    g = torch.Generator().manual_seed(1)
    ids = torch.randint(3, a.vocab, (a.batch, a.seq), generator=g)
    labels = ids.clone(); labels[:, : a.seq // 4] = -100
    tg = torch.full((a.batch, a.seq, a.heads), -100)
    for k in range(a.heads): tg[:, : a.seq - k - 1, k] = labels[:, k + 1:]
    ref = align_to_heads((torch.randn(a.batch, a.seq, generator=g).abs() + 1.5) * (labels != -100), a.heads)
    return ad, ids, tg, ref


def make_step(mode: str, ad, ids, tg, ref, optimizers: dict):
    "One optimiser step of `mode` as a function returning the loss (Rho1Stage.micro_step's arguments for rho1 modes)."
    import torch
    from functools import partial
    from wmtp_nb.mtp_loss import Rho1Weights, mtp_loss
    from wmtp_nb.optim import fast_adamw
    from wmtp_nb.weighting import rho1_keep_counts
    rho1, impl, dt = mode.startswith("rho1-"), mode.removeprefix("rho1-").rsplit("-", 1)[0], mode.rsplit("-", 1)[1]
    kw = {}
    if impl == "fused-recompute": kw["weight_fn"] = lambda k, ce: torch.ones_like(ce)      # weights "after" the CE
    if rho1:
        mask = tg != -100
        kw = dict(weight_fn=Rho1Weights(ref, mask, 0.6, "signed"), denominator=rho1_keep_counts(mask, 0.6).sum().float().clamp_min(1))
    fn = partial(mtp_loss, impl="fused" if impl.startswith("fused") else impl)
    kind = "fused" if impl.startswith("fused") else "default"                  # before issue 16: torch's default AdamW
    if kind not in optimizers:
        params = list(ad.parameters())
        optimizers[kind] = fast_adamw(params, lr=1e-4) if kind == "fused" else torch.optim.AdamW(params, lr=1e-4)
    opt = optimizers[kind]
    ctx = (lambda: torch.autocast("cpu", dtype=torch.bfloat16)) if dt == "bf16" else contextlib.nullcontext

    def step() -> float:
        with ctx(): p = fn(ad, ids, tg, **kw)
        opt.step(); opt.zero_grad(set_to_none=True)
        return p.loss.item()
    return step


def run_mode(mode: str, a) -> dict:
    "In this (fresh) process: RSS before the first step, a warm-up step, `steps` timed steps (wall and CPU time), the"
    " peak RSS, then the GEMM rates of the step's shapes in the mode's dtype (after the peak is read)."
    import torch
    from wmtp_nb.cpu_heap import configure_cpu_heap, rss_mb
    load = os.getloadavg()[0]
    mode, _, heap = mode.partition("@")
    configure_cpu_heap(*HEAP_POLICIES[heap])                                 # no suffix: what train() does on CPU
    ad, ids, tg, ref = setup(a, ckpt="trunk" if "-ckpt-" in mode else "all" if "-ckptall-" in mode else "")
    step = make_step(mode, ad, ids, tg, ref, {})
    before = rss_mb()
    first = step()
    wall, cpu = [], []
    for _ in range(a.steps):
        t0, c0 = time.perf_counter(), time.process_time()
        step()
        wall.append(time.perf_counter() - t0); cpu.append(time.process_time() - c0)
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    gflop, roof_s = gemm_roofline_s(a, torch.bfloat16 if mode.endswith("bf16") else torch.float32)
    return {"mode": mode + (f"@{heap}" if heap else ""), "load": load, "wall": wall, "cpu": cpu, "rss_before_mb": before, "peak_rss_mb": peak,
            "first_loss": first, "gflop": gflop, "roof_s": roof_s}


def run_child(args: list[str], a) -> dict:
    cmd = [sys.executable, __file__] + args + [f"--{k}={v}" for k, v in vars(a).items() if k not in ("mode", "modes", "child")]
    # OMP_WAIT_POLICY=PASSIVE: a thread waiting for a descheduled sibling sleeps instead of spinning, so that the CPU
    # time on a loaded machine counts work, not spinning (set it in the environment to override)
    env = {"OMP_WAIT_POLICY": "PASSIVE", **os.environ, "OMP_NUM_THREADS": str(a.threads), "PYTHONPATH": str(ROOT)}
    r = subprocess.run(cmd, capture_output=True, text=True, cwd=ROOT, env=env)
    if r.returncode != 0: raise RuntimeError(f"{' '.join(args)} failed:\n{r.stderr[-3000:]}")
    sys.stderr.write(r.stderr); sys.stderr.flush()
    return json.loads(r.stdout.strip().splitlines()[-1])


def summarise(runs: list[dict], a) -> dict:
    "One mode's runs (one per round) -> best/median seconds, CPU seconds, GFLOP/s, roofline, RSS (median over runs)."
    med = lambda v: sorted(v)[len(v) // 2]
    wall, cpu = [t for r in runs for t in r["wall"]], [t for r in runs for t in r["cpu"]]
    best, gflop = min(wall), runs[0]["gflop"]
    roof_s = min(r["roof_s"] for r in runs)
    return {"s_best": best, "s_median": med(wall), "cpu_s_best": min(cpu), "cpu_s_median": med(cpu),
            "tokens_per_s": a.batch * a.seq / best, "gflops": gflop / best, "roofline_gflops": gflop / roof_s,
            "peak_rss_mb": med([r["peak_rss_mb"] for r in runs]), "rss_before_mb": med([r["rss_before_mb"] for r in runs]),
            "first_loss": runs[0]["first_loss"], "load": sum(r["load"] for r in runs) / len(runs)}


def report(res: dict[str, dict], modes: list[str], title: str) -> None:
    print(f"\n{title}")
    print("| mode | s/step best (median) | CPU s/step best (median) | tokens/s | GFLOP/s | GEMM roofline GFLOP/s | of roofline "
          "| peak RSS MB | RSS before MB | step rise MB | load avg | first loss |")
    print("|---|---|---|---|---|---|---|---|---|---|---|---|")
    for m in modes:
        t = res[m]
        print(f"| {m} | {t['s_best']:.2f} ({t['s_median']:.2f}) | {t['cpu_s_best']:.2f} ({t['cpu_s_median']:.2f}) | "
              f"{t['tokens_per_s']:.0f} | {t['gflops']:.0f} | {t['roofline_gflops']:.0f} | {t['gflops'] / t['roofline_gflops']:.0%} | "
              f"{t['peak_rss_mb']:.0f} | {t['rss_before_mb']:.0f} | {t['peak_rss_mb'] - t['rss_before_mb']:.0f} | "
              f"{t['load']:.1f} | {t['first_loss']:.5f} |")
    print("The machine is shared (load average in the table; 2 cores): wall-time ratios move with the load, CPU-time ratios "
          f"(process CPU time, all threads; OMP_WAIT_POLICY={os.environ.get('OMP_WAIT_POLICY', 'PASSIVE')} in the children, "
          "so waiting threads sleep rather than spin) are the fairer figure under load.")
    have = lambda *xs: all(x in res for x in xs)
    for key, what in (("cpu_s_best", "CPU time"), ("s_best", "wall time")):
        t = lambda x, y: res[x][key] / res[y][key]
        print(f"ratios by {what} (best of the steps):")                    # only the ratios whose modes ran
        if have("fused-fp32", "naive-fp32"):
            extra = "".join(f"; {x} {t(x, 'naive-fp32'):.2f}x" for x in ("fused-ckpt-fp32", "fused-ckptall-fp32") if x in res)
            print(f"  fused-fp32 / naive-fp32: time {t('fused-fp32', 'naive-fp32'):.2f}x (target <= 0.6){extra}")
        if have("fused-bf16", "naive-fp32"):
            print(f"  fused-bf16 / naive-fp32: time {t('fused-bf16', 'naive-fp32'):.2f}x (target <= 0.3)")
        for dt in ("fp32", "bf16"):
            if have(f"rho1-fused-{dt}", f"fused-{dt}"):
                print(f"  rho1-fused-{dt} / fused-{dt}: {t(f'rho1-fused-{dt}', f'fused-{dt}'):.2f}x (target <= 1.1)")
        before = [(x, y, label) for x, y, label in (("fused-fp32", "efficient-fp32", "fp32 step"), ("fused-bf16", "efficient-fp32",
                  "bf16 step (main ran fp32 under runtime.dtype=bfloat16)"), ("rho1-fused-fp32", "rho1-efficient-fp32", "Rho-1 fp32"))
                  if have(x, y)]
        if before:
            print("  before -> after: " + "; ".join(f"{label} {t(x, y):.2f}x main's" for x, y, label in before))
        if have("fused-fp32", "fused-recompute-fp32"):
            print(f"  known weights, gradients in the forward pass / recomputed in the backward: "
                  f"{t('fused-fp32', 'fused-recompute-fp32'):.2f}x")
    m = lambda x, y, f: f(res[x]) / f(res[y])
    peak, rise = (lambda r: r["peak_rss_mb"]), (lambda r: r["peak_rss_mb"] - r["rss_before_mb"])
    if "naive-fp32" in res:
        parts = [f"{x} / naive-fp32 peak {m(x, 'naive-fp32', peak):.2f}x, rise above the pre-step RSS {m(x, 'naive-fp32', rise):.2f}x"
                 for x in ("fused-fp32", "fused-ckpt-fp32", "fused-ckptall-fp32") if x in res]
        if parts: print("memory (peak RSS of a fresh process, median over rounds; target <= 0.3): " + "; ".join(parts))
    if have("fused-fp32", "efficient-fp32"):
        print(f"memory before -> after: fused-fp32 / efficient-fp32 peak {m('fused-fp32', 'efficient-fp32', peak):.2f}x")
    cpu = lambda r: r["cpu_s_best"]
    for x in ("fused-ckpt-fp32@glibc", "fused-ckpt-fp32@mmap8"):
        if have(x, "naive-fp32", "fused-ckpt-fp32"):
            print(f"CPU heap policy: {x} / naive-fp32 peak {m(x, 'naive-fp32', peak):.2f}x; runtime.release_cpu_heap (the default) "
                  f"against {x}: peak RSS {m('fused-ckpt-fp32', x, peak):.2f}x, CPU time {m('fused-ckpt-fp32', x, cpu):.2f}x")
    fp32 = [res[x]["first_loss"] for x in modes if "fp32" in x and not x.startswith("rho1")]
    assert max(fp32) - min(fp32) < 1e-3, f"float32 first losses disagree: {fp32}"
    for x in modes:
        y = x.replace("bf16", "fp32")
        if x.endswith("bf16") and y in res:
            assert abs(res[x]["first_loss"] - res[y]["first_loss"]) < 1e-2 * abs(res[y]["first_loss"]), (x, res[x], res[y])


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--dim", type=int, default=512); ap.add_argument("--trunk", type=int, default=4)
    ap.add_argument("--heads", type=int, default=4); ap.add_argument("--n_heads", type=int, default=8)
    ap.add_argument("--vocab", type=int, default=32000); ap.add_argument("--batch", type=int, default=4)
    ap.add_argument("--seq", type=int, default=512); ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--rounds", type=int, default=3, help="fresh processes per mode, alternated with the other modes")
    ap.add_argument("--steps", type=int, default=2, help="timed steps per process, after a warm-up step")
    ap.add_argument("--modes", default=",".join(DEFAULT_MODES), help="comma-separated subset of " + ",".join(MODES))
    ap.add_argument("--child", default=None, help=argparse.SUPPRESS)
    a = ap.parse_args()
    modes = [m for m in a.modes.split(",") if m]
    if a.child == "run": print(json.dumps(run_mode(modes[0], a))); return
    bad = [m for m in modes if m.partition("@")[0] not in MODES or m.partition("@")[2] not in HEAP_POLICIES]
    if bad: raise SystemExit(f"--modes: unknown {bad}; choose from {MODES}, each optionally with the suffix @glibc or @mmap8")
    print(f"config: dim {a.dim}, {a.trunk} trunk + {a.heads} head blocks, {a.n_heads} attention heads, vocab {a.vocab}, "
          f"batch {a.batch}x{a.seq}, {a.threads} threads, CPU; each mode in a fresh process per round ({a.rounds} rounds, "
          f"modes alternated, order rotated), a warm-up step then {a.steps} timed steps per process")
    load0 = os.getloadavg()
    runs: dict[str, list] = {m: [] for m in modes}
    for i in range(a.rounds):
        shift = i * len(modes) // a.rounds
        for m in modes[shift:] + modes[:shift]:
            r = run_child(["--child", "run", "--modes", m], a)
            runs[m].append(r)
            print(f"  round {i + 1} {m:>21}: {' '.join(f'{w:.2f}' for w in r['wall'])} s, "
                  f"{' '.join(f'{c:.2f}' for c in r['cpu'])} CPU s, peak RSS {r['peak_rss_mb']:.0f} MB, load {r['load']:.1f}",
                  file=sys.stderr, flush=True)
    res = {m: summarise(runs[m], a) for m in modes}
    load1 = os.getloadavg()
    report(res, modes, f"load average (1, 5, 15 min) at the start {load0[0]:.1f} {load0[1]:.1f} {load0[2]:.1f}, at the end "
                       f"{load1[0]:.1f} {load1[1]:.1f} {load1[2]:.1f} (2 cores shared)")


if __name__ == "__main__":
    main()
