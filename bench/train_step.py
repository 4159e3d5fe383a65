"""One MTP training step (forward, backward, AdamW): the naive all-heads loss (logits [B, S, H, V] materialised, as the
seed project did) against wmtp_nb's memory-efficient loss (one head's logits at a time), each in a fresh process.

    .venv/bin/python bench/train_step.py                 # micro config: dim 512, 4 trunk + 4 head blocks, vocab 32000
    .venv/bin/python bench/train_step.py --steps 3 --batch 4 --seq 512

Prints ms per step and peak RSS per mode, and the ratios ours / naive (target: memory <= 0.6x, time <= 1x).
"""
import argparse, json, resource, subprocess, sys, time


def one_mode(mode: str, a) -> dict:
    import torch
    from vendor.meta_llama.model import ModelArgs, Transformer
    from wmtp_nb.model import MetaLlamaMTPAdapter
    from wmtp_nb.train import efficient_mtp_loss, naive_mtp_loss
    torch.manual_seed(0)
    if a.threads: torch.set_num_threads(a.threads)
    args = ModelArgs.from_params(dict(dim=a.dim, n_layers=a.trunk + a.heads, n_heads=a.n_heads, vocab_size=a.vocab,
                                      multiple_of=256, norm_eps=1e-5, n_future_tokens=a.heads))
    ad = MetaLlamaMTPAdapter(Transformer(args).init_weights(seed=0))
    opt = torch.optim.AdamW(ad.parameters(), lr=1e-4)
    ids = torch.randint(3, a.vocab, (a.batch, a.seq))
    labels = ids.clone(); labels[:, : a.seq // 4] = -100
    tg = torch.full((a.batch, a.seq, a.heads), -100)
    for k in range(a.heads): tg[:, : a.seq - k - 1, k] = labels[:, k + 1:]
    fn = naive_mtp_loss if mode == "naive" else efficient_mtp_loss
    rss_before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    times, losses = [], []
    for i in range(a.steps + 1):  # the first step warms up (allocator, optimiser state)
        t0 = time.perf_counter()
        p = fn(ad, ids, tg)
        opt.step(); opt.zero_grad(set_to_none=True)
        if i: times.append(time.perf_counter() - t0)
        losses.append(p.loss.item())
    return {"mode": mode, "ms_per_step": 1000 * sum(times) / len(times), "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
            "rss_before_steps_mb": rss_before, "first_loss": losses[0], "n_params_m": sum(p.numel() for p in ad.parameters()) / 1e6}


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--dim", type=int, default=512); ap.add_argument("--trunk", type=int, default=4)
    ap.add_argument("--heads", type=int, default=4); ap.add_argument("--n_heads", type=int, default=8)
    ap.add_argument("--vocab", type=int, default=32000); ap.add_argument("--batch", type=int, default=4)
    ap.add_argument("--seq", type=int, default=512); ap.add_argument("--steps", type=int, default=2)
    ap.add_argument("--threads", type=int, default=0); ap.add_argument("--mode", default=None)
    a = ap.parse_args()
    if a.mode:
        print(json.dumps(one_mode(a.mode, a))); return
    res = {}
    for mode in ("naive", "efficient"):
        cmd = [sys.executable, __file__, "--mode", mode] + [f"--{k}={v}" for k, v in vars(a).items() if k != "mode"]
        out = subprocess.run(cmd, capture_output=True, text=True, check=True).stdout.strip().splitlines()[-1]
        res[mode] = json.loads(out)
    print(f"config: dim {a.dim}, {a.trunk} trunk + {a.heads} head blocks, {a.n_heads} attention heads, vocab {a.vocab}, "
          f"batch {a.batch}x{a.seq}, float32, CPU, {res['naive']['n_params_m']:.1f} M params, {a.steps} timed steps")
    for m, r in res.items():
        print(f"{m:>10}: {r['ms_per_step']:9.0f} ms/step   peak RSS {r['peak_rss_mb']:7.0f} MB   "
              f"(RSS before steps {r['rss_before_steps_mb']:.0f} MB, first loss {r['first_loss']:.4f})")
    n, e = res["naive"], res["efficient"]
    print(f"ratios efficient/naive: time {e['ms_per_step'] / n['ms_per_step']:.2f}x, peak RSS {e['peak_rss_mb'] / n['peak_rss_mb']:.2f}x, "
          f"peak RSS above the pre-step level {(e['peak_rss_mb'] - e['rss_before_steps_mb']) / (n['peak_rss_mb'] - n['rss_before_steps_mb']):.2f}x")
    assert abs(n["first_loss"] - e["first_loss"]) < 1e-3, "the two losses must agree"


main()
