"""Time `compute_gae` and `rho1_weights` at B=32, S=2048, H=4 against naive Python loops written here.

    .venv/bin/python bench/weighting.py [--rows-naive 4] [--repeats 5]

Naive GAE (a double loop over rows and reversed time, indexing tensors element by element, the way it is usually
first written) is timed on `--rows-naive` rows and scaled linearly to B rows (rows are independent, so the cost is
linear in B); a second naive variant loops over Python floats (`.tolist()` first) and runs on the whole batch.
Naive Rho-1 (per head: a Python list of (−excess, flat index) over the valid tokens, sorted, top k kept) runs on the
whole batch, since the selection is global over the batch. Outputs are checked against the library's.
"""
import argparse, math, statistics, time

import torch

from wmtp_nb.weighting import build_weights, compute_gae, rho1_weights


def timeit(fn, repeats: int) -> tuple[float, float]:
    "Median and minimum wall time of `fn()` in seconds over `repeats` runs, after one warm-up run."
    fn()
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return statistics.median(times), min(times)


def naive_gae_tensor(values, rewards, mask, gamma, lam):
    "Double loop over rows and reversed time, element-wise tensor indexing; `rewards` [B] on the last valid token."
    B, S = values.shape
    adv = torch.zeros(B, S)
    for b in range(B):
        last = -1
        for t in range(S):
            if mask[b, t]:
                last = t
        next_v, next_a = 0.0, 0.0
        for t in reversed(range(S)):
            if not mask[b, t]:
                next_v, next_a = 0.0, 0.0
                continue
            r = rewards[b] if t == last else 0.0
            d = r + gamma * next_v - values[b, t]
            a = d + gamma * lam * next_a
            adv[b, t] = a
            next_v, next_a = values[b, t], a
    return adv


def naive_gae_floats(values, rewards, mask, gamma, lam):
    "The same double loop over Python floats (`.tolist()` first)."
    v, m, R = values.tolist(), mask.tolist(), rewards.tolist()
    out = []
    for b in range(len(v)):
        S = len(v[b])
        last = max((t for t in range(S) if m[b][t]), default=-1)
        row, next_v, next_a = [0.0] * S, 0.0, 0.0
        for t in reversed(range(S)):
            if not m[b][t]:
                next_v, next_a = 0.0, 0.0
                continue
            d = (R[b] if t == last else 0.0) + gamma * next_v - v[b][t]
            a = d + gamma * lam * next_a
            row[t], next_v, next_a = a, v[b][t], a
        out.append(row)
    return torch.tensor(out)


def naive_rho1(pc, rc, m, k_percent):
    "Per head: sort (−excess, flat index) over valid tokens in Python, keep the top round(k·N) (at least 1)."
    B, S, H = pc.shape
    exc, valid = (pc - rc).tolist(), m.tolist()
    out = torch.zeros(B, S, H)
    for k in range(H):
        items = [(-exc[b][t][k], b * S + t) for b in range(B) for t in range(S) if valid[b][t][k]]
        items.sort()
        n_keep = max(1, int(math.floor(len(items) * k_percent + 0.5))) if items else 0
        for _, idx in items[:n_keep]:
            out[idx // S, idx % S, k] = 1.0
    return out


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--batch", type=int, default=32)
    ap.add_argument("--seq", type=int, default=2048)
    ap.add_argument("--heads", type=int, default=4)
    ap.add_argument("--rows-naive", type=int, default=4, help="rows timed for the tensor-indexing naive GAE")
    ap.add_argument("--repeats", type=int, default=10)
    ap.add_argument("--threads", type=int, default=1, help="torch threads (1: fair against single-threaded Python, "
                    "and stable on a shared machine)")
    ap.add_argument("--block", type=int, default=32, help="compute_gae block size")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    B, S, H = args.batch, args.seq, args.heads
    g = torch.Generator().manual_seed(0)
    # realistic masks: a prompt, an output span, right padding
    start = torch.randint(0, S // 4, (B,), generator=g)
    end = torch.randint(S // 2, S + 1, (B,), generator=g)
    pos = torch.arange(S)
    mask = (pos >= start[:, None]) & (pos < end[:, None])                      # [B, S]
    values = torch.randn(B, S, generator=g)
    rewards = (torch.rand(B, generator=g) > 0.5).float()
    gamma, lam = 0.99, 0.95
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads; B={B} S={S} H={H}, {int(mask.sum())} valid tokens")

    # --- GAE
    t_lib, t_lib_min = timeit(lambda: compute_gae(values, rewards, mask, gamma, lam, block=args.block), args.repeats)
    _, adv, _ = compute_gae(values, rewards, mask, gamma, lam, block=args.block)
    r = min(args.rows_naive, B)
    t0 = time.perf_counter()
    adv_naive = naive_gae_tensor(values[:r], rewards[:r], mask[:r], gamma, lam)
    t_naive_t = (time.perf_counter() - t0) * B / r
    t0 = time.perf_counter()
    adv_floats = naive_gae_floats(values, rewards, mask, gamma, lam)
    t_naive_f = time.perf_counter() - t0
    err = max((adv[:r] - adv_naive).abs().max().item(), (adv - adv_floats).abs().max().item())
    print(f"compute_gae      {t_lib * 1e3:9.2f} ms median, {t_lib_min * 1e3:.2f} ms min, block {args.block}  (max |diff| vs naive {err:.1e})")
    print(f"  naive, tensor indexing  {t_naive_t * 1e3:9.1f} ms  (timed on {r} rows, scaled x{B / r:g})  ratio {t_naive_t / t_lib:7.1f}x")
    print(f"  naive, Python floats    {t_naive_f * 1e3:9.1f} ms  (whole batch)                        ratio {t_naive_f / t_lib:7.1f}x")

    # --- Rho-1
    pc, rc = torch.rand(B, S, H, generator=g) * 5, torch.rand(B, S, H, generator=g) * 5
    hm = torch.stack([mask & (pos + k + 1 < end[:, None]) for k in range(H)], -1)  # [B, S, H]
    t_rho, t_rho_min = timeit(lambda: rho1_weights(pc, rc, hm, 0.6), args.repeats)
    t0 = time.perf_counter()
    sel_naive = naive_rho1(pc, rc, hm, 0.6)
    t_rho_naive = time.perf_counter() - t0
    same = torch.equal(rho1_weights(pc, rc, hm, 0.6), sel_naive)
    print(f"rho1_weights     {t_rho * 1e3:9.2f} ms median, {t_rho_min * 1e3:.2f} ms min  (identical to naive: {same})")
    print(f"  naive, per-head Python sort {t_rho_naive * 1e3:9.1f} ms  (whole batch)                    ratio {t_rho_naive / t_rho:7.1f}x")

    # --- for reference: the weight builder (softmax, clip, entropy floor bisection)
    t_w, t_w_min = timeit(lambda: build_weights(adv, mask, entropy_floor=0.5), args.repeats)
    print(f"build_weights    {t_w * 1e3:9.2f} ms median, {t_w_min * 1e3:.2f} ms min  (floor 0.5, so the bisection runs)")
    print("ratios use medians")


main()
