"""One MTP training step (forward, backward, AdamW) of the micro config, implementation by implementation, each in a
fresh process (so that its peak RSS is its own), runs alternated, ratios within one run.

    .venv/bin/python bench/train_step.py                       # dim 512, 4 trunk + 4 head blocks, vocab 32000, 4 x 512
    .venv/bin/python bench/train_step.py --rounds 2 --steps 2  # the default: two rounds (second in reverse order)

Modes (loss implementation, optimiser, dtype):
  naive-fp32            all heads' logits [B, S, H, V] at once (`naive_mtp_loss`), torch's default AdamW   (reference)
  efficient-fp32        main before issue 16: one head's logits at a time, torch's default AdamW           (before)
  fused-fp32            `training.mtp_loss: fused` (wmtp_nb.loss), fused AdamW                              (after)
  fused-recompute-fp32  the same with the weights-after-CE path (backward recomputes the logits): the measured
                        reason why known weights take the gradients-in-forward path
  fused-bf16            fused + `runtime.dtype: bfloat16` (CPU autocast; AMX here)                          (after)
  rho1-efficient-fp32   Rho-1 step, reference CE cached (a tensor), main's loss and AdamW                  (before)
  rho1-fused-fp32 / rho1-fused-bf16                                                                           (after)
Before issue 16, `runtime.dtype: bfloat16` was ignored on CPU: main's bf16 step is its fp32 step.

Per mode: seconds per step, tokens/s (B*S per step), peak RSS of the process and its rise above the RSS before the
first step, achieved GFLOP/s (model FLOPs of the step: 6 x matmul params x tokens + attention, all tokens counted
whether or not an implementation skips masked rows) and the GEMM-only roofline of the same FLOPs at the GEMM rates
measured in the same process just before the timed steps (one GEMM per shape of the step, in the step's dtype).
Targets (issue 16): fused-fp32 <= 0.6x naive time and <= 0.3x its peak memory; fused-bf16 <= 0.3x naive fp32 time;
rho1-fused within 1.1x the fused baseline step of the same dtype.
"""
import argparse, contextlib, json, os, resource, subprocess, sys, time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
MODES = ["naive-fp32", "efficient-fp32", "fused-fp32", "fused-recompute-fp32", "fused-bf16",
         "rho1-efficient-fp32", "rho1-fused-fp32", "rho1-fused-bf16"]


def rss_mb() -> float:
    "Current resident set size (MB)."
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"): return int(line.split()[1]) / 1024
    return float("nan")


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


def one_mode(mode: str, a) -> dict:
    "Run one mode in this process: warm-up step, roofline, timed steps."
    import torch
    from vendor.meta_llama.model import ModelArgs, Transformer
    from wmtp_nb.model import MetaLlamaMTPAdapter
    from wmtp_nb.train import MTP_LOSSES, fast_adamw, rho1_keep_counts
    from wmtp_nb.weighting import align_to_heads, rho1_weights
    torch.set_num_threads(a.threads)
    torch.manual_seed(0)
    args = ModelArgs.from_params(dict(dim=a.dim, n_layers=a.trunk + a.heads, n_heads=a.n_heads, vocab_size=a.vocab,
                                      multiple_of=256, norm_eps=1e-5, n_future_tokens=a.heads))
    ad = MetaLlamaMTPAdapter(Transformer(args).init_weights(seed=0))
    g = torch.Generator().manual_seed(1)
    ids = torch.randint(3, a.vocab, (a.batch, a.seq), generator=g)
    labels = ids.clone(); labels[:, : a.seq // 4] = -100                    # a prompt quarter without targets
    tg = torch.full((a.batch, a.seq, a.heads), -100)
    for k in range(a.heads): tg[:, : a.seq - k - 1, k] = labels[:, k + 1:]
    rho1, impl, dt = mode.startswith("rho1-"), mode.removeprefix("rho1-").rsplit("-", 1)[0], mode.rsplit("-", 1)[1]
    kw = {}
    if impl == "fused-recompute": kw["head_weights"] = lambda k, ce: torch.ones_like(ce)   # weights "after" the CE
    if rho1:                                                                # Rho1Stage.micro_step with a cached reference
        ref = align_to_heads((torch.randn(a.batch, a.seq, generator=g).abs() + 1.5) * (labels != -100), a.heads)
        mask = tg != -100
        kw = dict(head_weights=lambda k, ce: rho1_weights(ce[..., None], ref[..., k:k + 1], mask[..., k:k + 1], 0.6, "signed")[..., 0],
                  denominator=rho1_keep_counts(mask, 0.6).sum().float().clamp_min(1), normalize="selected")
    fn = MTP_LOSSES["fused" if impl.startswith("fused") else impl]
    params = list(ad.parameters())
    opt = fast_adamw(params, lr=1e-4) if impl.startswith("fused") else torch.optim.AdamW(params, lr=1e-4)
    dtype = torch.bfloat16 if dt == "bf16" else torch.float32
    ctx = (lambda: torch.autocast("cpu", dtype=torch.bfloat16)) if dt == "bf16" else contextlib.nullcontext

    def step() -> float:
        with ctx(): p = fn(ad, ids, tg, **kw)
        opt.step(); opt.zero_grad(set_to_none=True)
        return p.loss.item()

    rss_before = rss_mb()
    first_loss = step()                                                     # warm-up: allocator, optimiser state
    gflop, roof_s = gemm_roofline_s(a, dtype)
    times = []
    for _ in range(a.steps):
        t0 = time.perf_counter(); step(); times.append(time.perf_counter() - t0)
    s = sorted(times)[len(times) // 2] if len(times) % 2 else sum(sorted(times)[len(times) // 2 - 1: len(times) // 2 + 1]) / 2
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    return {"mode": mode, "s_per_step": s, "tokens_per_s": a.batch * a.seq / s, "peak_rss_mb": peak,
            "step_rss_mb": peak - rss_before, "gflop": gflop, "gflops": gflop / s, "roofline_gflops": gflop / roof_s,
            "first_loss": first_loss, "optimizer": "fused" if opt.defaults.get("fused") else "default",
            "n_params_m": sum(p.numel() for p in params) / 1e6}


def run_round(modes: list[str], a) -> dict[str, dict]:
    res = {}
    for mode in modes:
        cmd = [sys.executable, __file__, "--mode", mode] + [f"--{k}={v}" for k, v in vars(a).items() if k not in ("mode", "modes")]
        env = {**os.environ, "OMP_NUM_THREADS": str(a.threads), "PYTHONPATH": str(ROOT)}
        r = subprocess.run(cmd, capture_output=True, text=True, cwd=ROOT, env=env)
        if r.returncode != 0: raise RuntimeError(f"{mode} failed:\n{r.stderr[-3000:]}")
        res[mode] = json.loads(r.stdout.strip().splitlines()[-1])
        print(f"  {mode:>21}: {res[mode]['s_per_step']:.2f} s/step", file=sys.stderr, flush=True)
    return res


def report(res: dict[str, dict], title: str) -> None:
    print(f"\n{title}")
    print(f"| mode | s/step | tokens/s | GFLOP/s | GEMM roofline GFLOP/s | of roofline | peak RSS MB | step RSS MB | first loss |")
    print("|---|---|---|---|---|---|---|---|---|")
    for m, r in res.items():
        print(f"| {m} | {r['s_per_step']:.2f} | {r['tokens_per_s']:.0f} | {r['gflops']:.0f} | {r['roofline_gflops']:.0f} | "
              f"{r['gflops'] / r['roofline_gflops']:.0%} | {r['peak_rss_mb']:.0f} | {r['step_rss_mb']:.0f} | {r['first_loss']:.5f} |")
    ratio = lambda x, y, k="s_per_step": res[x][k] / res[y][k] if x in res and y in res else float("nan")
    print(f"fused-fp32 / naive-fp32:  time {ratio('fused-fp32', 'naive-fp32'):.2f}x (target <= 0.6), "
          f"peak RSS {ratio('fused-fp32', 'naive-fp32', 'peak_rss_mb'):.2f}x (target <= 0.3), "
          f"step RSS {ratio('fused-fp32', 'naive-fp32', 'step_rss_mb'):.2f}x")
    print(f"fused-bf16 / naive-fp32:  time {ratio('fused-bf16', 'naive-fp32'):.2f}x (target <= 0.3)")
    print(f"rho1-fused / fused (same dtype): fp32 {ratio('rho1-fused-fp32', 'fused-fp32'):.2f}x, "
          f"bf16 {ratio('rho1-fused-bf16', 'fused-bf16'):.2f}x (target <= 1.1)")
    print(f"before -> after: fp32 step {ratio('fused-fp32', 'efficient-fp32'):.2f}x of main's, bf16 step "
          f"{ratio('fused-bf16', 'efficient-fp32'):.2f}x of main's (which ran fp32), Rho-1 fp32 "
          f"{ratio('rho1-fused-fp32', 'rho1-efficient-fp32'):.2f}x; known weights: gradients in forward vs recompute "
          f"{ratio('fused-fp32', 'fused-recompute-fp32'):.2f}x")
    fp32 = [r["first_loss"] for m, r in res.items() if m.endswith("fp32") and not m.startswith("rho1")]
    assert max(fp32) - min(fp32) < 1e-3, f"float32 first losses disagree: {fp32}"
    for m, r in res.items():
        if m.endswith("bf16"):
            ref = res.get(m.replace("bf16", "fp32"))
            if ref: assert abs(r["first_loss"] - ref["first_loss"]) < 1e-2 * abs(ref["first_loss"]), (m, r["first_loss"], ref["first_loss"])


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--dim", type=int, default=512); ap.add_argument("--trunk", type=int, default=4)
    ap.add_argument("--heads", type=int, default=4); ap.add_argument("--n_heads", type=int, default=8)
    ap.add_argument("--vocab", type=int, default=32000); ap.add_argument("--batch", type=int, default=4)
    ap.add_argument("--seq", type=int, default=512); ap.add_argument("--steps", type=int, default=2)
    ap.add_argument("--threads", type=int, default=2); ap.add_argument("--rounds", type=int, default=2)
    ap.add_argument("--modes", default=",".join(MODES), help="comma-separated subset of " + ",".join(MODES))
    ap.add_argument("--mode", default=None, help=argparse.SUPPRESS)
    a = ap.parse_args()
    if a.mode:
        print(json.dumps(one_mode(a.mode, a))); return
    modes = [m for m in a.modes.split(",") if m]
    bad = [m for m in modes if m not in MODES]
    if bad: raise SystemExit(f"--modes: unknown {bad}; choose from {MODES}")
    print(f"config: dim {a.dim}, {a.trunk} trunk + {a.heads} head blocks, {a.n_heads} attention heads, vocab {a.vocab}, "
          f"batch {a.batch}x{a.seq}, {a.threads} threads, CPU, {a.steps} timed steps after one warm-up, "
          f"each mode in a fresh process; round 2 runs the modes in reverse order")
    for i in range(a.rounds):
        order = modes if i % 2 == 0 else modes[::-1]
        print(f"round {i + 1}: {', '.join(order)}", file=sys.stderr, flush=True)
        res = run_round(order, a)
        report({m: res[m] for m in modes}, f"round {i + 1} (load average {os.getloadavg()[0]:.1f})")


if __name__ == "__main__":
    main()
