"""The critic stage can fit what it is shown (issue 14's critic diagnosis, `bench/critic_probe.py` at full size).

On the synthetic benchmark a linear stage-1 critic stayed near chance on validation. This pins down that it is not
the wiring: the real `CriticStage` with its optimiser and schedule (`make_optimizer`) fits 8 sequences (the value head
is in the optimiser with a non-zero learning rate, its values carry a gradient from h_j, the targets follow the
outcome), and only the value head moves (the trunk stays frozen). The `surprise` head the benchmark now uses (it reads
the policy's surprise at the tokens so far; `bench/critic_probe.py --heads`) goes through the same stage.
"""
import sys
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests"))
from _step_grads import collate, records, tiny_adapter  # noqa: E402

from wmtp_nb.config import Config  # noqa: E402
from wmtp_nb.optim import make_optimizer  # noqa: E402
from wmtp_nb.runtime import DistInfo  # noqa: E402
from wmtp_nb.stages import CriticStage, batch_counts  # noqa: E402
from wmtp_nb.weighting import output_states  # noqa: E402


def fit_critic(ad, steps: int) -> tuple[float, dict]:
    "Train `ad`'s value head through the real CriticStage and optimiser on the 8 records for `steps`: (first value loss, last metrics)."
    cfg = Config.model_validate({"runtime": {"device": "cpu", "dtype": "float32"},
                                 "training": {"lr": 1e-2, "warmup_steps": 0, "max_steps": steps, "min_lr_ratio": 1.0}})
    stage = CriticStage(cfg, ad, DistInfo())
    assert {id(p) for p in stage.trainable()} == {id(p) for p in ad.value_head.parameters()}
    opt, sch = make_optimizer([p for p in ad.parameters() if p.requires_grad], cfg, steps)
    b = collate(records())
    counts = dict(zip(("pairs", "selected", "states"), batch_counts(b["labels"], ad.n_future_tokens)))
    first = None
    for _ in range(steps):
        m = stage.micro_step(b, counts, 1.0)
        first = m["train/value_loss"] if first is None else first
        opt.step(); sch.step(); opt.zero_grad(set_to_none=True)
    return first, m


def test_critic_stage_overfits_eight_sequences():
    ad = tiny_adapter(value_head=True)
    with torch.no_grad():
        for p in ad.value_head.parameters(): p.zero_()                 # the real zero initialisation
    trunk0 = {n: p.detach().clone() for n, p in ad.model.named_parameters()}
    first, m = fit_critic(ad, 300)
    assert m["train/value_loss"] < 0.5 * first, (first, m["train/value_loss"])
    b = collate(records())
    # independently: the critic's objective (MSE to the outcome at every output state) has an exact optimum over a
    # linear head, the least-squares fit on the frozen features norm(h_j); the trained head must come close to it
    with torch.no_grad():
        st = output_states(b["labels"] != -100)                                 # [B, S]
        feats = ad.model.norm(ad.trunk_states(b["input_ids"]))[st]             # [N, D]
        y = b["is_correct"][:, None].expand_as(st)[st].double()                # [N]: the outcome, every state
        X = torch.cat([feats.double(), torch.ones(len(feats), 1, dtype=torch.float64)], 1)
        best = ((X @ torch.linalg.lstsq(X, y[:, None]).solution)[:, 0] - y).pow(2).mean().item()
        got = (ad.value_head(feats).double() - y).pow(2).mean().item()
    assert got < best + 0.02 and best < 0.5 * y.var(unbiased=False).item(), (got, best)
    assert all(torch.equal(p, trunk0[n]) for n, p in ad.model.named_parameters()), "the critic stage moved the trunk"


def test_surprise_critic_stage_fits_and_keeps_the_trunk():
    "The `surprise` value head (issue 14) through the same stage: its inputs come from the frozen policy, only it moves."
    from wmtp_nb.model import ValueHead
    ad = tiny_adapter(value_head=True)
    ad.value_head = ValueHead(ad.dim, "surprise", seed=0)
    trunk0 = {n: p.detach().clone() for n, p in ad.model.named_parameters()}
    first, m = fit_critic(ad, 200)
    assert first > 0.1 and m["train/value_loss"] < 0.5 * first, (first, m["train/value_loss"])
    assert m["value/accuracy"] == 1.0, m
    assert all(torch.equal(p, trunk0[n]) for n, p in ad.model.named_parameters()), "the critic stage moved the trunk"
