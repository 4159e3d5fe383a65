"""Gradients of one optimiser step of every stage on a tiny model, for the batch-layout test.

    python tests/_step_grads.py OUT.pt MICRO                  # one process: 8 records in micro-batches of MICRO
    python -m torch.distributed.run --nproc_per_node 2 tests/_step_grads.py OUT.pt MICRO   # each rank its strided half

Rank 0 writes {stage: {parameter name: gradient}} after `stages.accumulate_gradients` (counts, micro-steps, sync).
"""
import sys
from pathlib import Path

import torch
from torch import nn

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from vendor.meta_llama.model import ModelArgs, Transformer
from wmtp_nb.config import Config
from wmtp_nb.model import MetaLlamaMTPAdapter, ValueHead
from wmtp_nb.runtime import init_distributed, shutdown_distributed
from wmtp_nb.stages import STAGES, Rho1Stage, accumulate_gradients

N_RECORDS, V = 8, 61


def tiny_adapter(seed: int = 0, value_head: bool = False) -> MetaLlamaMTPAdapter:
    torch.manual_seed(seed)
    args = ModelArgs.from_params(dict(dim=32, n_layers=5, n_heads=4, vocab_size=V, multiple_of=8, norm_eps=1e-5,
                                      n_future_tokens=4))
    ad = MetaLlamaMTPAdapter(Transformer(args).init_weights(seed=seed), ValueHead(32, "linear") if value_head else None)
    if value_head:
        with torch.no_grad():
            for p in ad.value_head.parameters(): p.normal_(0, 0.1)
    return ad


class Reference(nn.Module):
    "Head 0 of another tiny adapter, frozen."
    def __init__(self):
        super().__init__()
        self.m = tiny_adapter(seed=7).requires_grad_(False)

    def forward(self, ids):
        return self.m.head_forward(self.m.trunk_states(ids), 0)


def records(seed: int = 3) -> list:
    "Eight sequences of 5–15 tokens with 1–4 prompt tokens; every third is incorrect."
    g = torch.Generator().manual_seed(seed)
    out = []
    for i in range(N_RECORDS):
        L, p = int(torch.randint(5, 16, (1,), generator=g)), int(torch.randint(1, 5, (1,), generator=g))
        out.append((torch.randint(3, V, (L,), generator=g), p, i % 3 != 0))
    return out


def collate(recs: list) -> dict:
    "Right padding to this micro-batch's longest sequence, prompt masked (the collator's layout)."
    S = max(len(x) for x, _, _ in recs)
    ids, lab = torch.zeros(len(recs), S, dtype=torch.long), torch.full((len(recs), S), -100)
    for b, (x, p, _) in enumerate(recs):
        ids[b, :len(x)] = x
        lab[b, p:len(x)] = x[p:]
    return dict(input_ids=ids, labels=lab, attention_mask=lab != -100, split="train", indices=torch.arange(len(recs)),
                is_correct=torch.tensor([float(c) for _, _, c in recs]))


def main(out: str, micro: int) -> None:
    info = init_distributed("cpu")
    mine = records()[info.rank::info.world_size]                        # the trainer's strided shard
    ga = len(mine) // micro
    cfg = Config.model_validate({"runtime": {"device": "cpu", "dtype": "float32"}, "training": {"grad_accum": ga},
                                 "weighting": {"normalize": "none"}, "rho1": {"k_percent": 1.0}})
    grads = {}
    for stage in ("baseline", "critic", "verifiable", "rho1"):
        ad = tiny_adapter(value_head=STAGES[stage].needs_value_head)
        st = Rho1Stage(cfg, ad, info, reference=Reference()) if stage == "rho1" else STAGES[stage](cfg, ad, info)
        st.trainable()
        accumulate_gradients(st, [collate(mine[i:i + micro]) for i in range(0, len(mine), micro)])
        grads[stage] = {n: p.grad.clone() for n, p in ad.named_parameters() if p.grad is not None}
    if info.rank == 0:
        torch.save(grads, out)
    shutdown_distributed(wait_for_peers=True)   # nobody leaves first (a rank exiting early can abort its gloo peer)


if __name__ == "__main__":
    main(sys.argv[1], int(sys.argv[2]))
