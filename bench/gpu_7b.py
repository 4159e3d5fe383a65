"""7B-shape training step on one GPU: tokens/s, MFU and peak memory of the 7B defaults (bf16 FSDP, fused head CE).

The model is Meta's `7B_1T_4` shape (dim 4096, 32 attention heads, SwiGLU 11008, vocab 32000, 4 future-token heads)
with fewer trunk layers so that float32 master weights + AdamW fit one device unsharded. Each setting is measured in
the same process on a fresh model (2 warm-up steps, then timed steps); everything prints and lands in a JSON file.

    python bench/gpu_7b.py --out runs/bench                   # on a CUDA machine
    python bench/gpu_7b.py --tiny                             # a CPU smoke run of the script itself (tiny shapes)

Sections: (1) the fused linear cross-entropy on CUDA against a naive pass (loss and every gradient), and liger-kernel's
against both when it is installed; (2) one head's loss at 7B size: naive logits vs ours vs liger, time and peak memory;
(3) the training step of the 7B defaults (FSDP2 bf16, activation checkpointing, fused CE, fused AdamW) and its
variants, beside `wmtp_nb.memory.memory_plan`'s estimate for the same setting.
"""
from __future__ import annotations

import argparse, gc, json, os, sys, time, traceback
from pathlib import Path

import torch
import torch.nn.functional as F

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from vendor.meta_llama.model import ModelArgs, Transformer
import wmtp_nb.loss as wloss
from wmtp_nb.loss import fused_linear_cross_entropy
from wmtp_nb.mtp_loss import mtp_loss
from wmtp_nb.model import MetaLlamaMTPAdapter
import wmtp_nb.runtime as runtime
from wmtp_nb.runtime import apply_activation_checkpointing, shard_model

H200_BF16_PEAK = 989.4e12  # dense bf16 tensor-core peak of an H100/H200 SXM (the MFU denominator)
RESULTS: dict = {}


def log(*a):
    print(*a, flush=True)


def sync(dev):
    if dev.type == "cuda": torch.cuda.synchronize()


def reset_peak(dev):
    gc.collect()
    if dev.type == "cuda":
        torch.cuda.empty_cache(); torch.cuda.reset_peak_memory_stats()


def peak_gib(dev) -> float:
    return torch.cuda.max_memory_allocated() / 2**30 if dev.type == "cuda" else float("nan")


def gemm_roofline(dev, n: int, iters: int = 10) -> float:
    "bf16 matrix-product FLOP/s measured here (n × n × n, mean of `iters` after 3 warm-ups)."
    a = torch.randn(n, n, device=dev, dtype=torch.bfloat16); b = torch.randn(n, n, device=dev, dtype=torch.bfloat16)
    for _ in range(3): a @ b
    sync(dev); t = time.perf_counter()
    for _ in range(iters): a @ b
    sync(dev)
    return 2 * n**3 * iters / (time.perf_counter() - t)


# ---- (1) correctness of the fused CE on this device ----------------------------------------------------------------
def naive_weighted_ce(x, W, targets, w):
    "Reference: full logits in float32, per-token CE, Σ w·CE."
    logits = x.float() @ W.float().T                                                   # [N, V]
    ce = F.cross_entropy(logits, targets.clamp_min(0), reduction="none") * (targets != -100)
    return (ce * w).sum(), ce


def grads_of(fn, x, W, *rest):
    x = x.detach().clone().requires_grad_(True); W = W.detach().clone().requires_grad_(True)
    loss, ce = fn(x, W, *rest)
    loss.backward()
    return loss.detach().float(), ce.detach().float(), x.grad.float(), W.grad.float()


def rel(a, b) -> float:
    return float((a - b).abs().max() / b.abs().max().clamp_min(1e-30))


def check_fused_ce(dev, N: int, D: int, V: int, liger):
    torch.backends.cuda.matmul.allow_tf32 = False                           # exactness: float32 products in float32
    g = torch.Generator(device="cpu").manual_seed(0)
    out = {}
    for dtype in (torch.float32, torch.bfloat16):
        x = (torch.randn(N, D, generator=g) * 1.0).to(dev, dtype)
        W = (torch.randn(V, D, generator=g) * D**-0.5).to(dev, dtype)
        t = torch.randint(0, V, (N,), generator=g).to(dev); t[::7] = -100
        w = torch.rand(N, generator=g).to(dev)
        ref = grads_of(lambda x, W, t, w: naive_weighted_ce(x, W, t, w), x, W, t, w)
        ours = grads_of(lambda x, W, t, w: fused_linear_cross_entropy(x, W, t, torch.where(t != -100, w, 0.0)), x, W, t, w)
        row = {"ours_vs_naive": dict(zip(("loss", "ce", "dx", "dW"), (rel(a, b) for a, b in zip(ours, ref))))}
        if liger is not None:
            def lig(x, W, t, w):
                ce = liger(x, W, t, reduction="none", accum_dtype=torch.float32).float()
                return (ce * torch.where(t != -100, w, 0.0)).sum(), ce
            lg = grads_of(lig, x, W, t, w)
            row["liger_vs_naive"] = dict(zip(("loss", "ce", "dx", "dW"), (rel(a, b) for a, b in zip(lg, ref))))
            row["liger_vs_ours"] = dict(zip(("loss", "ce", "dx", "dW"), (rel(a, b) for a, b in zip(lg, ours))))
        out[str(dtype).removeprefix("torch.")] = row
        log(f"  fused CE {dtype}: " + json.dumps(row, default=lambda v: f"{v:.2e}"))
    torch.backends.cuda.matmul.allow_tf32 = True
    return out


# ---- (2) one head's loss at 7B size ---------------------------------------------------------------------------------
def loss_bench(dev, N: int, D: int, V: int, liger, iters: int = 5):
    g = torch.Generator(device="cpu").manual_seed(1)
    x0 = torch.randn(N, D, generator=g).to(dev, torch.bfloat16)
    W0 = (torch.randn(V, D, generator=g) * D**-0.5).to(dev, torch.bfloat16)
    t = torch.randint(0, V, (N,), generator=g).to(dev)
    w = torch.rand(N, generator=g).to(dev)
    impls = {"naive (bf16 logits, float CE)": lambda x, W: (F.cross_entropy((x @ W.T).float(), t, reduction="none") * w).sum(),
             "ours (fused, default chunk rows)": lambda x, W: fused_linear_cross_entropy(x, W, t, w)[0],
             "ours (fused, 262-row chunks)": lambda x, W: fused_linear_cross_entropy(x, W, t, w, chunk_rows=262)[0],
             "ours (fused, 8192-row chunks)": lambda x, W: fused_linear_cross_entropy(x, W, t, w, chunk_rows=8192)[0]}
    if liger is not None:
        impls["liger fused linear CE"] = lambda x, W: (liger(x, W, t, reduction="none", accum_dtype=torch.float32).float() * w).sum()
    out = {}
    for name, fn in impls.items():
        x = x0.clone().requires_grad_(True); W = W0.clone().requires_grad_(True)
        for _ in range(2): fn(x, W).backward()
        x.grad = W.grad = None
        reset_peak(dev); base = torch.cuda.memory_allocated() if dev.type == "cuda" else 0
        sync(dev); t0 = time.perf_counter()
        for _ in range(iters):
            fn(x, W).backward(); x.grad = W.grad = None
        sync(dev); ms = (time.perf_counter() - t0) / iters * 1e3
        extra = (torch.cuda.max_memory_allocated() - base) / 2**30 if dev.type == "cuda" else float("nan")
        out[name] = {"ms": ms, "peak_extra_gib": extra}
        log(f"  {name:32s} {ms:8.2f} ms fwd+bwd   peak above inputs {extra:6.2f} GiB")
    return out


# ---- (3) the training step ------------------------------------------------------------------------------------------
def matmul_flops_per_token(a: ModelArgs, S: int) -> float:
    "Forward FLOPs per token: every weight matrix applied (the output projection once per head) + causal attention."
    from vendor.meta_llama.model import ffn_hidden_dim
    D, F_ = a.dim, ffn_hidden_dim(a.dim, a.multiple_of, a.ffn_dim_multiplier)
    kv = (a.n_kv_heads or a.n_heads) * (D // a.n_heads)
    block = D * D * 2 + 2 * D * kv + 3 * D * F_
    blocks = a.n_layers                  # trunk (n_layers - n_future_tokens) + one block per head = n_layers
    attn = 2 * 2 * S * D / 2                                                  # QK^T and AV, causal half, per block
    return 2 * (blocks * block + a.n_future_tokens * a.vocab_size * D) + blocks * attn


def mtp_step(adapter, ids, targets, loss: str) -> float:
    "The library's training loss (`wmtp_nb.mtp_loss`): trunk once, each head forward + backward in turn, one trunk backward."
    return float(mtp_loss(adapter, ids, targets, impl=loss).loss)


def step_bench(dev, args: ModelArgs, B: int, S: int, ac: bool, loss: str, liger_on: bool, steps: int, warmup: int = 2,
               chunk_rows: int | None = None):
    reset_peak(dev)
    torch.manual_seed(0)
    saved, saved_rows = wloss._liger_linear_ce, wloss.default_chunk_rows
    if not liger_on: wloss._liger_linear_ce = lambda: None
    if chunk_rows: wloss.default_chunk_rows = lambda vocab, dtype=None, device_type=None: chunk_rows
    try:
        with torch.device(dev):
            model = Transformer(args)                                         # float32 master weights
        adapter = MetaLlamaMTPAdapter(model)
        n_params = sum(p.numel() for p in adapter.parameters())
        if ac: apply_activation_checkpointing(adapter, heads=loss == "naive")   # as train.py
        if torch.distributed.is_initialized():                                # the 7B default: FSDP2, bf16 compute
            runtime._active = lambda: True                                    # shard_model refuses world 1; here it only casts
            shard_model(adapter, torch.bfloat16)
        opt = torch.optim.AdamW(adapter.parameters(), lr=1e-5, fused=dev.type == "cuda")
        g = torch.Generator(device="cpu").manual_seed(0)
        ids = torch.randint(0, args.vocab_size, (B, S + args.n_future_tokens), generator=g).to(dev)
        x = ids[:, :S]
        targets = torch.stack([ids[:, k + 1: k + 1 + S] for k in range(args.n_future_tokens)], -1)  # [B, S, H]
        weights_gib = torch.cuda.memory_allocated() / 2**30 if dev.type == "cuda" else float("nan")
        times, opt_times, losses = [], [], []
        for i in range(warmup + steps):
            sync(dev); t0 = time.perf_counter()
            losses.append(mtp_step(adapter, x, targets, loss))
            sync(dev); t1 = time.perf_counter()
            opt.step(); opt.zero_grad(set_to_none=True)
            sync(dev); times.append(time.perf_counter() - t0); opt_times.append(time.perf_counter() - t1)
        sec = sorted(times[warmup:])[len(times[warmup:]) // 2]               # median step
        opt_sec = sorted(opt_times[warmup:])[len(opt_times[warmup:]) // 2]
        tok_s = B * S / sec
        flops = 3 * matmul_flops_per_token(args, S) * B * S                    # forward + backward (2×), no recompute
        row = dict(params_b=n_params / 1e9, batch=B, seq=S, activation_checkpointing=ac, loss=loss, liger=liger_on,
                   chunk_rows=chunk_rows or wloss.default_chunk_rows(args.vocab_size, torch.bfloat16, dev.type), sec_per_step=sec, optimizer_sec=opt_sec, tokens_per_s=tok_s, tflops=flops / sec / 1e12, mfu=flops / sec / H200_BF16_PEAK,
                   peak_gib=peak_gib(dev), weights_and_state_gib=weights_gib, first_loss=losses[0], last_loss=losses[-1])
        log(f"  {row['params_b']:.2f}B B={B} S={S} ac={ac!s:5} loss={loss:5} liger={liger_on!s:5} rows={row['chunk_rows']}: {sec:6.3f} s/step (AdamW {opt_sec:.3f})  {tok_s:9.0f} tok/s  "
            f"{row['tflops']:6.1f} TFLOP/s  MFU {row['mfu']:.1%}  peak {row['peak_gib']:6.1f} GiB  loss {losses[0]:.4f}→{losses[-1]:.4f}")
        try:
            from wmtp_nb.memory import memory_plan
            plan = memory_plan(args, B, S, world_size=1, strategy="fsdp", compute_dtype=torch.bfloat16,
                               activation_checkpointing=ac, loss=loss,
                               device_type=dev.type)
            row["plan_gib"] = plan.total / 2**30
            log(f"     memory plan for this setting: {row['plan_gib']:.1f} GiB (measured peak {row['peak_gib']:.1f} GiB)")
        except Exception as e:                                                # the plan needs pydantic (wmtp_nb.config)
            row["plan_error"] = repr(e)
        del model, adapter, opt
        return row
    except torch.cuda.OutOfMemoryError as e:
        log(f"  B={B} S={S} ac={ac} loss={loss}: out of memory ({str(e).splitlines()[0]})")
        return {"batch": B, "seq": S, "activation_checkpointing": ac, "loss": loss, "oom": True}
    finally:
        wloss._liger_linear_ce, wloss.default_chunk_rows = saved, saved_rows
        reset_peak(dev)


def section(name, fn):
    log(f"\n== {name}")
    t = time.perf_counter()
    try:
        RESULTS[name] = fn()
    except Exception:
        traceback.print_exc(); RESULTS[name] = {"error": traceback.format_exc(limit=3)}
    log(f"   ({time.perf_counter() - t:.1f} s)")


def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--tiny", action="store_true", help="tiny shapes (a CPU smoke run of the script)")
    p.add_argument("--layers", type=int, default=16, help="n_layers of the 7B shape (32 in 7B_1T_4)")
    p.add_argument("--out", default=os.environ.get("OUT", "runs/bench"))
    p.add_argument("--steps", type=int, default=5)
    p.add_argument("--steps-only", action="store_true", help="only section 3, with the CPU's 262-row chunks beside the default")
    p.add_argument("--full", action="store_true", help="also the full 32-layer 7B_1T_4 shape (B=4, S=2048, checkpointing)")
    a = p.parse_args()
    dev = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if dev.type == "cuda":
        torch.backends.cuda.matmul.allow_tf32 = True; torch.backends.cudnn.allow_tf32 = True
    if a.tiny:
        args = ModelArgs(dim=128, n_layers=6, n_heads=4, vocab_size=512, multiple_of=32, norm_eps=1e-5, n_future_tokens=4)
        ce_shape, loss_shape, runs = (256, 128, 512), (512, 128, 512), [(2, 64, True, "fused"), (2, 64, False, "efficient")]
    else:
        args = ModelArgs(dim=4096, n_layers=a.layers, n_heads=32, vocab_size=32000, multiple_of=256, norm_eps=1e-5,
                         n_future_tokens=4, rope_theta=10000.0)
        ce_shape, loss_shape = (4096, 4096, 32000), (8 * 2048, 4096, 32000)
        runs = [(4, 2048, True, "fused"), (4, 2048, False, "fused"), (8, 2048, True, "fused"), (4, 2048, True, "efficient")]
    liger = wloss._liger_linear_ce()
    env = dict(torch=torch.__version__, device=torch.cuda.get_device_name() if dev.type == "cuda" else "cpu",
               liger=None if liger is None else __import__("importlib.metadata").metadata.version("liger-kernel"),
               model=args.to_params())
    log(json.dumps(env))
    RESULTS["env"] = env
    if a.steps_only and not a.tiny:
        runs = [(4, 2048, True, "fused", 262), (4, 2048, True, "fused"), (8, 2048, True, "fused")]
    if dev.type == "cuda" and not a.steps_only:
        section("bf16 GEMM roofline (8192^3)", lambda: {"tflops": gemm_roofline(dev, 8192) / 1e12})
        log(f"  {RESULTS['bf16 GEMM roofline (8192^3)']}")
    if not a.steps_only:
        section("fused CE vs naive on this device (N, D, V = %d, %d, %d)" % ce_shape, lambda: check_fused_ce(dev, *ce_shape, liger))
    if not a.steps_only:
        section("one head's loss, fwd+bwd (N, D, V = %d, %d, %d), bf16" % loss_shape, lambda: loss_bench(dev, *loss_shape, liger))
    if dev.type == "cuda" and not torch.distributed.is_initialized():        # FSDP2 needs a process group (world 1 here)
        os.environ.setdefault("MASTER_ADDR", "127.0.0.1"); os.environ.setdefault("MASTER_PORT", "29533")
        torch.distributed.init_process_group("nccl", rank=0, world_size=1)
    rows = []
    def steps():
        for B, S, ac, loss, *rows_ in runs:
            rows.append(step_bench(dev, args, B, S, ac, loss, liger_on=False, steps=a.steps, chunk_rows=rows_[0] if rows_ else None))
        if liger is not None:
            rows.append(step_bench(dev, args, *runs[0][:3], "fused", liger_on=True, steps=a.steps))
        if a.steps_only:
            return rows
        if not a.tiny and a.full:                                             # the real depth, if it fits one device
            full = ModelArgs(**{**args.to_params(), "n_layers": 32})
            rows.append(step_bench(dev, full, 4, 2048, True, "fused", liger_on=False, steps=a.steps))
        return rows
    section(f"training step, 7B shape with n_layers={args.n_layers} (FSDP2 world 1, bf16, fused AdamW)", steps)
    out = Path(a.out); out.mkdir(parents=True, exist_ok=True)
    (out / "gpu_7b.json").write_text(json.dumps(RESULTS, indent=1, default=str))
    log(f"\nwrote {out / 'gpu_7b.json'}")
    if torch.distributed.is_initialized(): torch.distributed.destroy_process_group()


if __name__ == "__main__":
    main()
