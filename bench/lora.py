"""One MTP training step (memory-efficient loss, AdamW) with LoRA (peft, r 16 on the seven projections of every block)
against full fine-tuning, on the micro config (storage/models_v2/micro-mtp: dim 512, 4 trunk + 4 head blocks, vocab
32000; a random model of the same shape when it is not built). Each mode runs in its own process, alternately, so
that peak memory is per mode; step times are the median over rounds.

    .venv/bin/python bench/lora.py                          # CPU, float32, batch 4 x 512, 2 timed steps x 2 rounds
    .venv/bin/python bench/lora.py --device cuda --dtype bfloat16 --batch 8 --seq 2048

Prints per mode: trainable parameters, ms/step, peak memory (CPU: peak RSS; CUDA: max allocated), the gradient and
AdamW-state bytes actually held (beside wmtp_nb.memory's plan of them), and the ratios LoRA / full.
"""
import argparse, json, resource, statistics, subprocess, sys, time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def one_mode(mode: str, a) -> dict:
    import torch
    from vendor.meta_llama.model import ModelArgs, Transformer
    from wmtp_nb.collate import mtp_targets
    from wmtp_nb.config import LoraConfig
    from wmtp_nb.lora import apply_lora, lora_trainable
    from wmtp_nb.memory import memory_plan
    from wmtp_nb.model import MetaLlamaMTPAdapter
    from wmtp_nb.runtime import autocast
    from wmtp_nb.mtp_loss import mtp_loss
    torch.manual_seed(0)
    if a.threads: torch.set_num_threads(a.threads)
    dev = torch.device(a.device)
    micro = ROOT / "storage" / "models_v2" / "micro-mtp"
    if (micro / "configs" / "params.json").is_file():
        ad, source = MetaLlamaMTPAdapter.from_pretrained(micro, device=dev, dtype=torch.float32, initialize_value_head=False), str(micro)
    else:
        args = ModelArgs(dim=512, n_layers=8, n_heads=8, vocab_size=32000, multiple_of=256, n_future_tokens=4)
        ad, source = MetaLlamaMTPAdapter(Transformer(args).init_weights(seed=0)).to(dev), "random (micro-mtp shape)"
    lora = {"full": None, "lora": LoraConfig(r=a.r, alpha=2.0 * a.r, dropout=0.05),
            "lora-nodrop": LoraConfig(r=a.r, alpha=2.0 * a.r, dropout=0.0)}[mode]
    if lora is not None:
        apply_lora(ad, lora, seed=0)
        params = lora_trainable(ad, train_value_head=False)
    else:
        params = [p for p in ad.parameters()]
    opt = torch.optim.AdamW(params, lr=1e-4)
    g = torch.Generator().manual_seed(1)
    ids = torch.randint(3, ad.vocab_size, (a.batch, a.seq), generator=g)
    labels = ids.clone(); labels[:, : a.seq // 4] = -100
    tg = mtp_targets(labels, ad.n_future_tokens).to(dev)
    ids = ids.to(dev)
    if dev.type == "cuda": torch.cuda.synchronize(); torch.cuda.reset_peak_memory_stats()
    rss_before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    times, losses = [], []
    for i in range(a.steps + 1):  # the first step warms up (allocator, optimiser state)
        t0 = time.perf_counter()
        with autocast(dev, a.dtype):
            p = mtp_loss(ad, ids, tg, impl="efficient")
        opt.step()
        grad_bytes = sum(q.grad.numel() * q.grad.element_size() for q in ad.parameters() if q.grad is not None)
        opt.zero_grad(set_to_none=True)
        if dev.type == "cuda": torch.cuda.synchronize()
        if i: times.append(time.perf_counter() - t0)
        losses.append(p.loss.item())
    state_bytes = sum(t.numel() * t.element_size() for st in opt.state.values() for t in st.values() if torch.is_tensor(t) and t.dim())
    plan = memory_plan(ad.args, a.batch, a.seq, 1, "ddp", torch.bfloat16 if a.dtype == "bfloat16" else None,
                       device_type=dev.type, lora=lora, activation_checkpointing=False)
    peak = torch.cuda.max_memory_allocated() / 2**20 if dev.type == "cuda" else resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    return {"mode": mode, "source": source, "ms_per_step": [1000 * t for t in times], "peak_mb": peak, "rss_before_mb": rss_before,
            "trainable": sum(q.numel() for q in params), "total": sum(q.numel() for q in ad.parameters()),
            "grad_mb": grad_bytes / 2**20, "optimizer_mb": state_bytes / 2**20,
            "plan_grad_mb": plan["gradients"] / 2**20, "plan_optimizer_mb": plan["optimizer state"] / 2**20,
            "first_loss": losses[0], "last_loss": losses[-1]}


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--batch", type=int, default=4); ap.add_argument("--seq", type=int, default=512)
    ap.add_argument("--steps", type=int, default=2); ap.add_argument("--rounds", type=int, default=2)
    ap.add_argument("--r", type=int, default=16); ap.add_argument("--threads", type=int, default=0)
    ap.add_argument("--device", default="cpu"); ap.add_argument("--dtype", default="float32")
    ap.add_argument("--mode", default=None)
    a = ap.parse_args()
    if a.mode:
        print(json.dumps(one_mode(a.mode, a))); return
    runs = {"full": [], "lora": [], "lora-nodrop": []}
    for _ in range(a.rounds):
        for mode in runs:
            cmd = [sys.executable, __file__, "--mode", mode] + [f"--{k}={v}" for k, v in vars(a).items() if k != "mode"]
            out = subprocess.run(cmd, capture_output=True, text=True, check=True, cwd=ROOT).stdout.strip().splitlines()[-1]
            runs[mode].append(json.loads(out))
    res = {m: {**rs[0], "ms": statistics.median(t for r in rs for t in r["ms_per_step"]), "peak_mb": max(r["peak_mb"] for r in rs),
               "rss_before_mb": max(r["rss_before_mb"] for r in rs)} for m, rs in runs.items()}
    f, l, l0 = res["full"], res["lora"], res["lora-nodrop"]
    print(f"model: {f['source']}, {f['total'] / 1e6:.1f} M params; batch {a.batch} x {a.seq}, {a.dtype}, {a.device}; "
          f"LoRA r {a.r}, alpha {2 * a.r}, dropout 0.05 (the default; lora-nodrop: 0) on wq wk wv wo w1 w2 w3 of all 8 blocks; "
          f"{a.steps} timed steps x {a.rounds} rounds per mode")
    peak_name = "peak allocated" if a.device == "cuda" else "peak RSS"
    for m, r in res.items():
        print(f"{m:>11}: {r['trainable'] / 1e6:8.3f} M trainable  {r['ms']:8.0f} ms/step  {peak_name} {r['peak_mb']:7.0f} MB "
              f"(before steps {r['rss_before_mb']:.0f} MB)  grads {r['grad_mb']:7.1f} MB (plan {r['plan_grad_mb']:.1f})  "
              f"AdamW state {r['optimizer_mb']:7.1f} MB (plan {r['plan_optimizer_mb']:.1f})  loss {r['first_loss']:.4f} -> {r['last_loss']:.4f}")
    grow = lambda r: r["peak_mb"] - (r["rss_before_mb"] if a.device == "cpu" else 0)
    for name, x in (("lora", l), ("lora-nodrop", l0)):
        print(f"ratios {name}/full: trainable {x['trainable'] / f['trainable']:.4f}x, time {x['ms'] / f['ms']:.2f}x, {peak_name} "
              f"{x['peak_mb'] / f['peak_mb']:.2f}x" + (f", growth during the steps {grow(x) / grow(f):.2f}x" if a.device == "cpu" else "")
              + f", grads + AdamW state {(x['grad_mb'] + x['optimizer_mb']) / (f['grad_mb'] + f['optimizer_mb']):.4f}x")
    for x in (l, l0):   # B = 0: the first LoRA step sees the base model's loss
        assert abs(f["first_loss"] - x["first_loss"]) < 1e-4, (f["first_loss"], x["first_loss"])


main()
