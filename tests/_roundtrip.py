"""Round trip of training targets through evaluation (issue 12, item 2): the collator's label tokens of a record are
replayed as a model's output through `generate` (prompt encoding, stop sequences, decoding), and the completions are
scored by `score_completions` (code extraction, sandbox) beside the raw reference.

Only the public API of the collator, generation and evaluation is used, so the same harness measures any version of
them (the issue's "before" figure was taken with it on the unmodified code)."""
from __future__ import annotations

from types import SimpleNamespace
from typing import Mapping, Sequence

import torch


class ReplayPolicy(torch.nn.Module):
    "Stand-in for Meta's `Transformer`: after each known prompt, head 0 emits that prompt's continuation ids, then EOS."
    def __init__(self, continuations: Mapping[tuple[int, ...], Sequence[int]], vocab_size: int, eos_id: int,
                 max_seq_len: int = 8192):
        super().__init__()
        self.table = {tuple(p): list(c) for p, c in continuations.items()}
        self.vocab_size, self.eos_id = vocab_size, eos_id
        self.params, self.n_future_tokens = SimpleNamespace(max_seq_len=max_seq_len), 1
        self.anchor = torch.nn.Parameter(torch.zeros(1))  # `generate_ids` reads the device from the parameters
        self.hist = self.rows = None

    def setup_cache(self, B: int, S: int):
        self.hist, self.rows = torch.zeros(B, S, dtype=torch.long), [None] * B

    def clear_cache(self):
        self.hist = self.rows = None

    def forward(self, tokens: torch.Tensor, start_pos: int = 0, return_all_heads: bool = False) -> torch.Tensor:
        B, S = tokens.shape
        end = start_pos + S
        self.hist[:, start_pos:end] = tokens
        logits = torch.zeros(B, 1, 1, self.vocab_size)  # [B, 1, H=1, V]: only the last position is read
        for b in range(B):
            if self.rows[b] is None:  # still inside its prompt, or exactly at its end now
                cont = self.table.get(tuple(self.hist[b, :end].tolist()))
                if cont is not None:
                    self.rows[b] = (end, cont)
            if self.rows[b] is not None:
                n_prompt, cont = self.rows[b]
                j = end - n_prompt
                logits[b, 0, 0, cont[j] if j < len(cont) else self.eos_id] = 1.0
        return logits


def collated_targets(collator, records: Sequence[Mapping]) -> list[tuple[list[int], list[int]]]:
    "`(prompt ids, label ids)` of each record as `collator` builds them (labels: the non-masked positions, EOS last)."
    out = []
    for r in records:
        ids, labels = collator.encode(r)
        n_prompt = next((i for i, l in enumerate(labels) if l != -100), len(labels))
        out.append((ids[:n_prompt], [l for l in labels if l != -100]))
    return out


def replay_completions(tokenizer, prompts: Sequence[str], targets: Sequence[tuple[list[int], list[int]]],
                       stop: Sequence[str], batch_size: int = 16) -> list[str]:
    "The completion `generate` returns for each prompt when the model emits exactly the collator's label ids."
    from wmtp_nb.generate import SamplingParams, generate
    table = {}
    for p, (prompt_ids, label_ids) in zip(prompts, targets):
        table[tuple(prompt_ids)] = label_ids
    policy = ReplayPolicy(table, tokenizer.n_words, tokenizer.eos_id)
    longest = max(len(l) for _, l in targets)
    params = SamplingParams(n=1, temperature=0.0, max_new_tokens=longest + 1, stop=tuple(stop))
    return [c[0] for c in generate(policy, tokenizer, list(prompts), params, batch_size=batch_size)]


def compare_statuses(tasks, completions: Mapping[str, str], references: Mapping[str, str], workers: int = 2,
                     timeout: float = 10.0) -> dict:
    "Sandbox status of each task's round-tripped completion and of its raw reference, and where they differ."
    from wmtp_nb.evaluate import score_completions
    ids = list(completions)
    both = {tid: [completions[tid], references[tid]] for tid in ids}
    res = score_completions(tasks, both, timeout=timeout, workers=workers, ks=(1,))
    st = {r["task_id"]: (r["samples"][0]["status"], r["samples"][1]["status"]) for r in res}
    reasons = {r["task_id"]: r["samples"][0]["reason"][:120] for r in res}
    return {"n": len(ids), "roundtrip_passed": sum(a == "passed" for a, _ in st.values()),
            "reference_passed": sum(b == "passed" for _, b in st.values()),
            "differ": {t: (a, b, reasons[t]) for t, (a, b) in st.items() if (a == "passed") != (b == "passed")}}
