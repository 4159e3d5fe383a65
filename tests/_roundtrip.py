"""Round trip of training targets through evaluation (issue 12, item 2): the collator's label ids of a record are
replayed as a model's output through `generate` (prompt encoding, stop sequences, decoding), and the completion is
scored by `score_completions` (code extraction, sandbox) beside the raw reference.

Only the public API of the collator, generation, datasets and evaluation is used, so the same harness measures any
version of them (the issue's "before" figures were taken with it on the unmodified code)."""
from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace
from typing import Mapping, Sequence

import torch


class ReplayPolicy(torch.nn.Module):
    "Stand-in for Meta's `Transformer`: after each known prompt, head 0 emits that prompt's continuation ids, then EOS."
    def __init__(self, continuations: Mapping[tuple[int, ...], Sequence[int]], vocab_size: int, eos_id: int,
                 max_seq_len: int = 16384):
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
    "`(prompt ids, label ids)` of each record as `collator.encode` builds them (labels: the unmasked ones, EOS last)."
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
    rounds: list[dict[tuple[int, ...], int]] = []  # a prompt seen twice (several solutions) goes to a later round
    for i, (prompt_ids, _) in enumerate(targets):
        key = tuple(prompt_ids)
        free = next((r for r in rounds if key not in r), None)
        if free is None:
            rounds.append(free := {})
        free[key] = i
    out: list[str | None] = [None] * len(prompts)
    for r in rounds:
        idx = list(r.values())
        policy = ReplayPolicy({tuple(targets[i][0]): targets[i][1] for i in idx}, tokenizer.n_words, tokenizer.eos_id)
        params = SamplingParams(n=1, temperature=0.0, max_new_tokens=max(len(targets[i][1]) for i in idx) + 1,
                                stop=tuple(stop))
        for i, c in zip(idx, generate(policy, tokenizer, [prompts[i] for i in idx], params, batch_size=batch_size)):
            out[i] = c[0]
    return out


def compare_statuses(tasks, items: Sequence[tuple[str, str, str]], workers: int = 2, timeout: float = 10.0) -> dict:
    "Sandbox outcome of each `(task_id, round-tripped completion, raw reference)` pair, and the pairs that differ."
    from wmtp_nb.evaluate import score_completions
    comps: dict[str, list[str]] = {}
    where = []
    for tid, completion, reference in items:
        comps.setdefault(tid, [])
        where.append((tid, len(comps[tid])))
        comps[tid] += [completion, reference]
    res = {r["task_id"]: r["samples"] for r in score_completions(tasks, comps, timeout=timeout, workers=workers, ks=(1,))}
    pairs = [(res[tid][j], res[tid][j + 1]) for tid, j in where]
    unequal = lambda a, b: (a["status"] == "passed") != (b["status"] == "passed")
    rerun = [i for i, (a, b) in enumerate(pairs) if unequal(a, b)]
    for i in rerun:  # once more, alone and with more time: a time-out on a loaded machine is no difference
        tid = where[i][0]
        again = score_completions(tasks, {tid: list(items[i][1:])}, timeout=3 * timeout, workers=1, ks=(1,))
        pairs[i] = tuple(again[0]["samples"])
    differ = [(where[i][0], a["status"], b["status"], a["reason"][:120], b["reason"][:120])
              for i, (a, b) in enumerate(pairs) if unequal(a, b)]
    return {"n": len(items), "roundtrip_passed": sum(a["status"] == "passed" for a, _ in pairs),
            "reference_passed": sum(b["status"] == "passed" for _, b in pairs), "differ": differ,
            "rerun": len(rerun)}


def _cc_row(name: str, description: str, solutions: Sequence[str], incorrect: Sequence[str],
            tests: tuple[list[str], list[str]]) -> dict:
    "A CodeContests row (schema columns the converter and the evaluation read; the rest null) with Python 3 solutions."
    sols = lambda s: {"language": [3] * len(s), "solution": list(s)}
    return {"name": name, "description": description, "public_tests": {"input": tests[0], "output": tests[1]},
            "private_tests": {"input": [], "output": []}, "generated_tests": {"input": [], "output": []},
            "source": 2, "difficulty": 7, "solutions": sols(solutions), "incorrect_solutions": sols(incorrect),
            "cf_rating": 1200}


# Python 3 solutions as CodeContests has them: CRLF line ends, tabs, a leading comment or blank line, non-ASCII text,
# trailing spaces, a uniformly indented one, and wrong ones (wrong answer, exception, syntax error).
HANDMADE = [
    _cc_row("H1. Sum", "Read n and then n integers; print their sum.",
            ["import sys\r\ndef main():\r\n    n = int(input())\r\n    a = list(map(int, input().split()))\r\n    print(sum(a))\r\n\r\nmain()\r\n",
             "n=int(input());print(sum(map(int,input().split())))"],
            ["n = int(input())\nprint(max(map(int, input().split())))\n", "print(int(input()) + undefined_name)\n"],
            (["3\n1 2 3\n", "1\n-5\n"], ["6\n", "-5\n"])),
    _cc_row("H2. Double", "Print twice the integer n.",
            ["# -*- coding: utf-8 -*-\n\nimport sys\ndef main():\n\tn = int(sys.stdin.readline())\n\tprint(n * 2)\nmain()\n",
             "\n\nn = int(input())   \nprint(2*n)   \n",
             "    n = int(input())\n    print(n + n)\n"],
            ["def f(:\n    pass\n", "n = int(input())\nprint(n * 3)\n"],
            (["4\n", "0\n"], ["8\n", "0\n"])),
    _cc_row("H3. Greeting", "Read a name and greet it.",
            ["s = input()  # имя ✓\nprint('Hello, ' + s + '!')  # 😀 never printed\n",
             "def greet(s: str) -> str:\n    \"\"\"Grüße.\"\"\"\n    return f'Hello, {s}!'\n\nif __name__ == '__main__':\n    print(greet(input()))\n"],
            ["print('Hallo, ' + input())\n"],
            (["Ada\n", "Émile\n"], ["Hello, Ada!\n", "Hello, Émile!\n"])),
]


def codecontests_sample(root: Path, n_synthetic: int = 120, seed: int = 0) -> tuple[list, list[dict]]:
    "`(tasks, records)`: synthetic CodeContests parquet files plus `HANDMADE`, through the real converter (Python 3)."
    import json
    from wmtp_nb.datasets import convert_codecontests, make_synthetic_codecontests, write_codecontests_parquet
    from wmtp_nb.evaluate import codecontests_tasks, load_codecontests
    raw = Path(root) / "cc_raw"
    make_synthetic_codecontests(raw, n_records=n_synthetic, seed=seed, solutions_per_problem=10, progress=False)
    for f in raw.rglob("*.parquet"):  # keep the train split: problem names restart per split ("0_T" is train and test)
        if not f.name.startswith("train"):
            f.unlink()
    write_codecontests_parquet(raw / "data" / "test-handmade.parquet", HANDMADE)
    files = sorted(raw.rglob("*.parquet"))
    tasks = codecontests_tasks([row for f in files for row in load_codecontests(f)])
    convert_codecontests(raw, Path(root) / "cc", tokenizer=None, max_tokens=None, progress=False)
    records = [json.loads(l) for f in sorted((Path(root) / "cc" / "processed").glob("*.jsonl"))
               for l in f.read_text().splitlines() if l.strip()]
    return tasks, records
