"""Why the synthetic benchmark's stage-1 critic does not learn (issue 14): what a value head can read from the trunk.

    .venv/bin/python bench/critic_probe.py [--base runs/synth-pretrain/base] [--critic runs/synth-critic-s0/best]
                                           [--n-train 300] [--n-valid 150] [--trunk-steps 0]
                                           [--heads linear,mlp,surprise --head-steps 100,300]

Valid split only (never test). Every figure is printed; nothing is asserted. Four checks:
1. **Wiring**: the real `CriticStage` (the demo's preset, bf16 autocast where the CPU has it, its AdamW + schedule)
   on 8 training sequences (4 correct, 4 mutants, 8 tasks) for 300 steps: the value loss must fall, the last-state
   accuracy reach 1 and the explained variance turn positive. If it does, the value head is in the optimiser, its
   learning rate is not zero and its values come from h_j with a gradient.
2. **Linear probes** (logistic regression, L-BFGS, small L2) on the normalised frozen trunk states norm(h_j) of the
   base model, fitted on training tasks, AUROC on valid tasks: correct vs mutant at the last output state (what the
   critic's accuracy measures), at every output state (the critic's own regression problem), and the state that has
   just read the bug token x_bug (value read from h_j = the state after token x_j) against correct states.
3. **Converged value heads**: a linear (least squares) and an MLP (Adam, 40 epochs) `ValueHead` fitted on the same
   features with the critic's target (the outcome at every output state), graded like `analysis_weights.ipynb` grades
   a critic: AUROC of "is the bug token" for the TD weights (low weight = bug-like) and the share of valid mutants whose
   bug token is in its sequence's lowest decile (chance about 0.1), with the default weighting (γ = 1, λ = 0.95) and λ = 0.
4. `--critic`: the same grades for a trained critic checkpoint; `--trunk-steps N`: a critic whose trunk trains too
   (N steps of 16, AdamW 1e-3), to tell a frozen-trunk limit from a data limit.
5. `--heads`: each `ValueHead` kind trained like the critic stage (frozen trunk, AdamW lr 3e-3, batches of 16 training
   records, target the outcome at every output state) for each of `--head-steps`, graded on valid: last-state
   accuracy and AUROC, explained variance over the output states, and the bug-token credit of its TD weights at
   λ = 0.95 (the default), 0.5 and 0 (`--head-target lambda_return --head-lam 0`: TD(0) targets instead of the
   outcome). This chose `surprise` for configs/synthetic-critic.yaml (issue 14).
"""
import argparse, random, sys, time
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
from wmtp_nb.collate import MTPCollator
from wmtp_nb.config import load_config
from wmtp_nb.credit import auroc, bug_batches, bug_rank_stats, bug_targets, verifiable_token_scores
from wmtp_nb.files import read_jsonl, storage_dir
from wmtp_nb.model import MetaLlamaMTPAdapter, ValueHead
from wmtp_nb.synthetic import bug_token_positions
from wmtp_nb.tokenizer import load_tokenizer
from wmtp_nb.optim import make_optimizer
from wmtp_nb.runtime import DistInfo
from wmtp_nb.stages import CriticStage, batch_counts
from wmtp_nb.weighting import critic_targets, output_states


def take(data: Path, split: str, n: int) -> list[dict]:
    "n correct and n mutant records of `split`, in a fixed shuffled order."
    recs = read_jsonl(data / f"{split}.jsonl")
    random.Random(0).shuffle(recs)
    return [r for r in recs if r["is_correct"]][:n] + [r for r in recs if not r["is_correct"]][:n]


@torch.no_grad()
def trunk_features(ad, coll, recs: list[dict]) -> list[dict]:
    "Per record: norm(h_j) at its output states `[n, D]`, their positions, the outcome and the bug position (mutants)."
    out = []
    for i in range(0, len(recs), 32):
        chunk = recs[i:i + 32]
        b = coll(chunk)
        h = ad.model.norm(ad.trunk_states(b["input_ids"])).float()              # [B, S, D]
        st = output_states(b["labels"] != -100)                                  # [B, S]
        for j, r in enumerate(chunk):
            pos = torch.nonzero(st[j])[:, 0]
            out.append(dict(h=h[j, pos], pos=pos, y=float(r["is_correct"]),
                            bug=None if r["is_correct"] else bug_token_positions(coll, r)[0]))
    return out


def logistic_probe(X: torch.Tensor, y: torch.Tensor, l2: float = 1e-3):
    "A fitted logistic regression `X -> score` (L-BFGS)."
    w = torch.zeros(X.shape[1] + 1, requires_grad=True)
    Xb = torch.cat([X, torch.ones(len(X), 1)], 1)
    opt = torch.optim.LBFGS([w], max_iter=300, line_search_fn="strong_wolfe")
    def closure():
        opt.zero_grad()
        loss = torch.nn.functional.binary_cross_entropy_with_logits(Xb @ w, y) + l2 * (w[:-1] ** 2).sum()
        loss.backward()
        return loss
    opt.step(closure)
    return lambda Z: (torch.cat([Z, torch.ones(len(Z), 1)], 1) @ w).detach().numpy()


def probe(name: str, tr: list[dict], va: list[dict], select) -> None:
    "Print train and valid AUROC of a probe on the (features, outcome) pairs `select(record)` yields."
    def stack(rs):
        pairs = [p for r in rs for p in select(r)]
        return torch.stack([p[0] for p in pairs]), np.array([p[1] for p in pairs])
    (Xt, yt), (Xv, yv) = stack(tr), stack(va)
    f = logistic_probe(Xt, torch.as_tensor(yt, dtype=torch.float32))
    st, sv = f(Xt), f(Xv)
    print(f"  {name:55s} train {auroc(st[yt == 1], st[yt == 0]):.3f}  valid {auroc(sv[yv == 1], sv[yv == 0]):.3f}  "
          f"(n = {len(yt)} / {len(yv)})")


def credit(ad, head: torch.nn.Module, batches: list[dict], **weighting) -> str:
    "Bug-token AUROC / lowest-decile share of the TD weights with `head` as the value head (head 0; all heads agree)."
    ad.value_head = head
    out = []
    for b in batches:
        w, m = verifiable_token_scores(ad, b, weighting)
        out.append((-w, m, bug_targets(b["bug_pos"], w.shape[1], w.shape[2])))      # bug-like = low weight
    s = bug_rank_stats(out)["head_0"]
    return f"AUROC {s['auroc']:.3f}, lowest decile {s['extreme_decile']:.3f} (chance {s['chance_extreme_decile']:.3f})"


def overfit_check(base: Path, data: Path, steps: int = 300) -> None:
    "The real CriticStage on 8 sequences: does it fit them?"
    cfg = load_config(ROOT / "configs" / "critic.yaml", "synthetic-critic", [f"training.max_steps={steps}"])
    ad = MetaLlamaMTPAdapter.from_pretrained(base, device="cpu", initialize_value_head=True, value_head=cfg.models.value_head)
    tok = load_tokenizer(ad.tokenizer_path)
    recs, seen, batch = read_jsonl(data / "train.jsonl"), set(), []
    random.Random(0).shuffle(recs)
    for r in recs:
        if r["metadata"]["task"] in seen or sum(x["is_correct"] == r["is_correct"] for x in batch) >= 4: continue
        seen.add(r["metadata"]["task"]); batch.append(r)
        if len(batch) == 8: break
    b = MTPCollator(tok, max_length=cfg.data.max_length)(batch)
    stage = CriticStage(cfg, ad, DistInfo())
    params = stage.trainable()
    opt, sch = make_optimizer(params, cfg, steps)
    counts = dict(zip(("pairs", "selected", "states"), batch_counts(b["labels"], ad.n_future_tokens)))
    print(f"1. CriticStage on 8 training sequences (runtime.dtype={cfg.runtime.dtype}, lr {cfg.training.lr}, "
          f"{sum(p.numel() for p in params)} trainable of {sum(p.numel() for p in ad.parameters())} parameters):")
    for s in range(steps):
        m = stage.micro_step(b, counts, 1.0)
        opt.step(); sch.step(); opt.zero_grad(set_to_none=True)
        if s in (0, 49, steps - 1):
            print(f"  step {s + 1:4d}: value loss {m['train/value_loss']:.4f}, last-state accuracy {m['value/accuracy']:.3f}, "
                  f"explained variance {m['value/explained_variance']:+.3f}")


def head_comparison(base: Path, data: Path, kinds: list[str], steps_list: list[int], bb: list[dict],
                    target: str = "return", lam: float = 0.95) -> None:
    "Train each value-head kind like the critic stage (frozen trunk) on training records; grade on valid (5.)."
    ad = MetaLlamaMTPAdapter.from_pretrained(base, device="cpu", dtype=torch.float32, initialize_value_head=False).eval()
    coll = MTPCollator(load_tokenizer(ad.tokenizer_path), max_length=160)
    tr = read_jsonl(data / "train.jsonl"); random.Random(0).shuffle(tr)
    tr = [r for r in tr if r["is_correct"]][:1200] + [r for r in tr if not r["is_correct"]][:1200]
    va = take(data, "valid", 200)
    with torch.no_grad():
        def pre(recs):                                                           # trunk output and value inputs, once
            out = []
            for i in range(0, len(recs), 32):
                b = coll(recs[i:i + 32]); tm = b["labels"] != -100
                out.append((b, ad.trunk_states(b["input_ids"]), tm))
            return out
        vab = pre(va)
    print(f"5. value-head kinds trained like the critic stage ({len(tr)} training records, batches of 16, AdamW 3e-3, "
          f"target {target}{f' λ={lam}' if target == 'lambda_return' else ''}), "
          f"graded on {len(va)} valid records and {sum(len(b['bug_pos']) for b in bb)} valid mutants (head 0):")
    for kind in kinds:
        for steps in steps_list:
            torch.manual_seed(0)
            ad.value_head = ValueHead(ad.dim, kind, seed=0)
            opt = torch.optim.AdamW(ad.value_head.parameters(), lr=3e-3, weight_decay=0.0)
            g = random.Random(0)
            for s in range(steps):
                b = coll(g.sample(tr, 16)); tm = b["labels"] != -100; st = output_states(tm)
                with torch.no_grad(): h = ad.trunk_states(b["input_ids"])
                v = ad.value_forward(h, b["input_ids"], tm)
                tg = critic_targets(v, b["is_correct"].float(), st, 1.0, lam, target)   # the critic stage's targets
                loss = torch.where(st, (v - tg) ** 2, 0.0).sum() / st.sum()
                opt.zero_grad(); loss.backward(); opt.step()
            with torch.no_grad():
                vl, y, e, gg = [], [], [], []
                for b, h, tm in vab:
                    v, st = ad.value_forward(h, b["input_ids"], tm), output_states(tm)
                    idx = st.long().cumsum(1).argmax(1)                          # the last output state
                    vl.append(v[torch.arange(len(v)), idx]); y.append(b["is_correct"].float())
                    tgt = b["is_correct"].float()[:, None].expand_as(v)
                    e.append((tgt - v)[st]); gg.append(tgt[st])
                vl, y, e, gg = torch.cat(vl), torch.cat(y), torch.cat(e), torch.cat(gg)
                acc = ((vl > 0.5).float() == y).float().mean().item()
                ev = 1 - e.var(unbiased=False).item() / gg.var(unbiased=False).item()
            head = ad.value_head
            print(f"  {kind:8s} {steps:5d} steps: valid last-state accuracy {acc:.3f}, AUROC "
                  f"{auroc(vl[y == 1].numpy(), vl[y == 0].numpy()):.3f}, explained variance {ev:+.3f}\n"
                  f"      bug token, λ=0.95: {credit(ad, head, bb)}; λ=0.5: {credit(ad, head, bb, lam=0.5)}; "
                  f"λ=0: {credit(ad, head, bb, lam=0.0)}", flush=True)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--base", default=str(ROOT / "runs" / "synth-pretrain" / "base"))
    ap.add_argument("--critic", default=None, help="a trained critic checkpoint to grade the same way")
    ap.add_argument("--n-train", type=int, default=300, help="correct and mutant training records each, for the probes")
    ap.add_argument("--n-valid", type=int, default=150)
    ap.add_argument("--trunk-steps", type=int, default=0, help="also train a critic whose trunk trains, for N steps")
    ap.add_argument("--heads", default=None, help="only 5.: compare these value-head kinds (comma-separated)")
    ap.add_argument("--head-steps", default="100,300", help="5.: training steps per kind (comma-separated)")
    ap.add_argument("--head-target", default="return", choices=("return", "lambda_return"), help="5.: the critic's target")
    ap.add_argument("--head-lam", type=float, default=0.95, help="5.: λ of the lambda_return target (0: TD(0))")
    args = ap.parse_args()
    torch.manual_seed(0)
    data, base = storage_dir() / "datasets_v2" / "synthetic-verifiable" / "processed", Path(args.base)
    t0 = time.time()
    if args.heads:
        tok = load_tokenizer(MetaLlamaMTPAdapter.from_pretrained(base, device="cpu", initialize_value_head=False).tokenizer_path)
        bb = bug_batches(tok, [r for r in read_jsonl(data / "valid.jsonl") if not r["is_correct"]], batch_size=32, max_length=160)
        head_comparison(base, data, args.heads.split(","), [int(x) for x in args.head_steps.split(",")], bb,
                        args.head_target, args.head_lam)
        print(f"({time.time() - t0:.0f} s)")
        return 0
    overfit_check(base, data)
    ad = MetaLlamaMTPAdapter.from_pretrained(base, device="cpu", dtype=torch.float32, initialize_value_head=True).eval()
    tok = load_tokenizer(ad.tokenizer_path)
    coll = MTPCollator(tok, max_length=160)
    tr, va = trunk_features(ad, coll, take(data, "train", args.n_train)), trunk_features(ad, coll, take(data, "valid", args.n_valid))
    print(f"2. logistic probes on the frozen trunk of {base} (AUROC of correct vs mutant; fitted on train tasks):")
    probe("last output state", tr, va, lambda r: [(r["h"][-1], r["y"])])
    probe("every output state (the critic's regression problem)", tr, va, lambda r: [(x, r["y"]) for x in r["h"]])
    probe("mutant states from the bug on vs correct states", tr, va,
          lambda r: [(x, r["y"]) for x, p in zip(r["h"], r["pos"]) if r["y"] == 1 or p >= r["bug"]])
    probe("mutant states after the bug state vs correct states", tr, va,
          lambda r: [(x, r["y"]) for x, p in zip(r["h"], r["pos"]) if r["y"] == 1 or p > r["bug"]])
    probe("the state that read the bug token vs correct states", tr, va,
          lambda r: [(x, r["y"]) for x, p in zip(r["h"], r["pos"]) if r["y"] == 1 or p == r["bug"]])
    mutants = [r for r in read_jsonl(data / "valid.jsonl") if not r["is_correct"]]
    bb = bug_batches(tok, mutants, batch_size=32, max_length=160)
    X = torch.cat([r["h"] for r in tr]); Y = torch.cat([torch.full((len(r["h"]),), r["y"]) for r in tr])
    print(f"3. value heads fitted to convergence on those features (linear: least squares; MLP: Adam, 40 epochs) (target: the outcome at every output state), "
          f"graded on {len(mutants)} valid mutants (TD weights, head 0):")
    for kind in ("linear", "mlp"):
        vh, g = ValueHead(X.shape[1], kind, seed=0), torch.Generator().manual_seed(0)
        if kind == "linear":                                                     # least squares: the exact optimum
            sol = torch.linalg.lstsq(torch.cat([X, torch.ones(len(X), 1)], 1).double(), Y.double()[:, None]).solution[:, 0]
            with torch.no_grad(): vh.net.weight.copy_(sol[:-1][None].float()); vh.net.bias.copy_(sol[-1:].float())
        else:
            opt = torch.optim.Adam(vh.parameters(), lr=3e-3)
            for _ in range(40):
                for idx in torch.randperm(len(X), generator=g).split(512):
                    opt.zero_grad(); ((vh(X[idx]) - Y[idx]) ** 2).mean().backward(); opt.step()
        with torch.no_grad(): mse = ((vh(X) - Y) ** 2).mean().item()
        print(f"  {kind:6s} train MSE {mse:.4f} (variance of the targets {Y.var(unbiased=False).item():.4f}); "
              f"λ=0.95: {credit(ad, vh, bb)}; λ=0: {credit(ad, vh, bb, lam=0.0)}")
    if args.critic:
        ck = MetaLlamaMTPAdapter.from_pretrained(args.critic, device="cpu", dtype=torch.float32, initialize_value_head=True).eval()
        print(f"4. critic checkpoint {args.critic}: {credit(ad, ck.value_head, bb)}")
    if args.trunk_steps:
        ad2 = MetaLlamaMTPAdapter.from_pretrained(base, device="cpu", dtype=torch.float32, initialize_value_head=True)
        recs = take(data, "train", 1000); random.Random(1).shuffle(recs)
        opt = torch.optim.AdamW(ad2.parameters(), lr=1e-3, weight_decay=0.0)
        ad2.train()
        for s in range(args.trunk_steps):
            b = coll(recs[(s * 16) % len(recs):(s * 16) % len(recs) + 16])
            st = output_states(b["labels"] != -100)
            v = ad2.value_forward(ad2.trunk_states(b["input_ids"])).float()
            loss = torch.where(st, (v - b["is_correct"].float()[:, None]) ** 2, 0.0).sum() / st.sum()
            opt.zero_grad(); loss.backward(); opt.step()
        ad2.eval()
        with torch.no_grad():
            fv = trunk_features(ad2, coll, take(data, "valid", args.n_valid))
            v_last, yv = np.array([ad2.value_head(r["h"][-1:]).item() for r in fv]), np.array([r["y"] for r in fv])
        print(f"4. trunk and value head trained {args.trunk_steps} steps: valid last-state AUROC "
              f"{auroc(v_last[yv == 1], v_last[yv == 0]):.3f}; {credit(ad2, ad2.value_head, bb)}")
    print(f"({time.time() - t0:.0f} s)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
