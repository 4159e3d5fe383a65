"""Forward time of the micro policy (storage/models_v2/micro-mtp, built by `make assets`): trunk_forward and full_forward,
against a naive forward (explicit softmax attention, Python loop over heads, straight from the state dict) in the same run.

    .venv/bin/python bench/model_forward.py [--batch 4] [--seq 512] [--reps 5]
"""
import argparse, math, time

import torch

from wmtp_nb.files import storage_dir
from wmtp_nb.model import MetaLlamaMTPAdapter


def naive_full_forward(m, tokens):
    "Same math, no SDPA: explicit causal softmax attention; the rotary helper is shared."
    from vendor.meta_llama.model import apply_rope
    B, S = tokens.shape
    a = m.params
    cos, sin = m.rope(0, S, tokens.device)
    causal = torch.full((S, S), float("-inf")).triu(1)

    def block(blk, x):
        h = blk.attention_norm(x)
        at = blk.attention
        q = apply_rope(at.wq(h).view(B, S, at.n_heads, at.head_dim), cos, sin).transpose(1, 2)
        k = apply_rope(at.wk(h).view(B, S, at.n_kv_heads, at.head_dim), cos, sin).transpose(1, 2)
        v = at.wv(h).view(B, S, at.n_kv_heads, at.head_dim).transpose(1, 2)
        rep = at.n_heads // at.n_kv_heads
        k, v = k.repeat_interleave(rep, 1), v.repeat_interleave(rep, 1)
        att = ((q @ k.transpose(-1, -2)) / math.sqrt(at.head_dim) + causal).softmax(-1) @ v
        x = x + at.wo(att.transpose(1, 2).reshape(B, S, -1))
        return x + blk.feed_forward(blk.ffn_norm(x))

    x = m.tok_embeddings(tokens)
    for blk in m.layers[:-1]:
        x = block(blk, x)
    return torch.stack([m.output(m.norm(block(hb, x))) for hb in m.heads], 2)


def timed(fn, reps):
    fn()  # warm-up
    ts = []
    for _ in range(reps):
        t0 = time.perf_counter(); fn(); ts.append(time.perf_counter() - t0)
    return sorted(ts)[len(ts) // 2]


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--model", default=str(storage_dir() / "models_v2" / "micro-mtp"))
    ap.add_argument("--batch", type=int, default=4)
    ap.add_argument("--seq", type=int, default=512)
    ap.add_argument("--reps", type=int, default=5)
    a = ap.parse_args()
    torch.manual_seed(0)
    ad = MetaLlamaMTPAdapter.from_pretrained(a.model, device="cpu").eval()
    ids = torch.randint(3, ad.vocab_size, (a.batch, a.seq))
    print(f"{a.model}: {ad.num_parameters() / 1e6:.1f} M params, batch {a.batch} x {a.seq} tokens, "
          f"{torch.get_num_threads()} threads")
    with torch.no_grad():
        t_trunk = timed(lambda: ad.trunk_forward(ids), a.reps)
        t_full = timed(lambda: ad.full_forward(ids), a.reps)
        t_naive = timed(lambda: naive_full_forward(ad.model, ids), a.reps)
        err = (ad.full_forward(ids).logits - naive_full_forward(ad.model, ids)).abs().max().item()
    print(f"trunk_forward {t_trunk * 1e3:8.1f} ms")
    print(f"full_forward  {t_full * 1e3:8.1f} ms  (4 heads + value head)")
    print(f"naive full    {t_naive * 1e3:8.1f} ms  -> full_forward is {t_naive / t_full:.2f}x faster (max |diff| {err:.1e})")


main()
