"""Self-speculative decoding vs plain greedy decoding (batch 1, the latency setting of Gloeckle et al. 2024, §3.2).

    python bench/generate.py                                   # storage/models_v2/micro-mtp (random weights)
    python bench/generate.py --model runs/baseline-local/best  # a trained checkpoint
    python bench/generate.py --train_steps 300                 # first fit the model to MBPP code for 300 steps
    python bench/generate.py --tiny_dim 128 --train_steps 400  # a tiny model (512-piece tokenizer) fitted first

Prints tokens/s of both decoders on the same HumanEval prompts, the speed-up, the mean tokens per forward and the
draft acceptance rate, and checks that both produce the same tokens. A random-weight model has unrelated heads, so
its drafts are almost never accepted and self-speculation costs (it runs all heads on a block of tokens); the heads of
a trained MTP model agree often, and each forward then yields several tokens.
"""
import argparse, json, sys, tempfile, time
from pathlib import Path

import torch

from wmtp_nb.evaluate import humaneval_tasks, load_policy, mbpp_tasks
from wmtp_nb.files import project_root
from wmtp_nb.generate import generate_ids, speculative_greedy_ids
from wmtp_nb.micro import make_tiny_model
from wmtp_nb.tokenizer import train_code_tokenizer


def fit_briefly(model, tok, steps: int, seq_len: int = 256, batch: int = 8, lr: float = 3e-3, seed: int = 0) -> float:
    "Fit all heads of `model` to MBPP train solutions with the plain MTP loss; returns the last loss."
    texts = [t.reference for t in mbpp_tasks("train")]
    ids = [i for s in texts for i in tok.encode(s, bos=True, eos=True)]
    data = torch.tensor(ids[: len(ids) // (seq_len + 1) * (seq_len + 1)]).view(-1, seq_len + 1)
    opt = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=0.0)
    g = torch.Generator().manual_seed(seed)
    model.train()
    loss = torch.tensor(float("nan"))
    for step in range(steps):
        x = data[torch.randint(0, len(data), (batch,), generator=g)]
        logits = model.model(x[:, :-1], return_all_heads=True)  # [B, S, H, V]
        H, S = logits.shape[2], logits.shape[1]
        loss = sum(torch.nn.functional.cross_entropy(logits[:, : S - k, k].flatten(0, 1), x[:, k + 1:].flatten())
                   for k in range(H)) / H
        opt.zero_grad(); loss.backward(); opt.step()
        if step % 50 == 0 or step == steps - 1:
            print(f"  fit step {step:4d}  MTP loss {loss.item():.3f}", flush=True)
    model.eval()
    return loss.item()


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", default=str(project_root() / "storage" / "models_v2" / "micro-mtp"))
    ap.add_argument("--prompts", type=int, default=8, help="HumanEval prompts")
    ap.add_argument("--max_new_tokens", type=int, default=128)
    ap.add_argument("--train_steps", type=int, default=0, help="fit the model to MBPP code first (0: as loaded)")
    ap.add_argument("--tiny_dim", type=int, default=0,
                    help="instead of --model: a random tiny model of this width (6 layers, 4 heads, 512-piece tokenizer)")
    ap.add_argument("--threads", type=int, default=0, help="torch threads (0: torch's default)")
    a = ap.parse_args()
    if a.threads:
        torch.set_num_threads(a.threads)
    torch.manual_seed(0)
    if a.tiny_dim:
        tmp = Path(tempfile.mkdtemp(prefix="bench-generate-"))
        tok_path = train_code_tokenizer(tmp / "tok.model", vocab_size=512, sources=("mbpp", "humaneval"))
        a.model = str(make_tiny_model(tmp / "tiny", tok_path, dim=a.tiny_dim, n_layers=6, n_heads=4, seed=0))
    model, tok = load_policy(a.model)
    print(f"model {a.model}: {sum(p.numel() for p in model.parameters()) / 1e6:.1f} M params, "
          f"{model.n_future_tokens} heads, torch threads {torch.get_num_threads()}")
    if a.train_steps:
        t0 = time.time()
        fit_briefly(model, tok, a.train_steps)
        print(f"fitted {a.train_steps} steps in {time.time() - t0:.0f}s")
    prompts = [tok.encode(t.prompt, bos=True, eos=False) for t in humaneval_tasks()[: a.prompts]]
    # one warm-up each so that lazy allocations do not count
    generate_ids(model, prompts[:1], 4, tok.eos_id); speculative_greedy_ids(model, prompts[0], 4, tok.eos_id)

    t0 = time.perf_counter()
    plain = [generate_ids(model, [p], a.max_new_tokens, tok.eos_id)[0] for p in prompts]
    t_plain = time.perf_counter() - t0
    t0 = time.perf_counter()
    spec = [speculative_greedy_ids(model, p, a.max_new_tokens, tok.eos_id) for p in prompts]
    t_spec = time.perf_counter() - t0

    same = all(o == s for o, (s, _) in zip(plain, spec))
    n_tok = sum(len(o) for o in plain)
    fwd = sum(st.forwards for _, st in spec)
    drafted, accepted = sum(st.drafted for _, st in spec), sum(st.accepted for _, st in spec)
    res = {"prompts": len(prompts), "tokens": n_tok, "plain_tokens_per_s": n_tok / t_plain,
           "speculative_tokens_per_s": n_tok / t_spec, "speedup": t_plain / t_spec,
           "mean_tokens_per_forward": n_tok / fwd, "acceptance_rate": accepted / max(drafted, 1),
           "identical_output": same, "train_steps": a.train_steps}
    print(f"plain greedy      : {res['plain_tokens_per_s']:8.1f} tokens/s  (1 token per forward)")
    print(f"self-speculative  : {res['speculative_tokens_per_s']:8.1f} tokens/s  "
          f"({res['mean_tokens_per_forward']:.2f} tokens per forward, drafts accepted {100 * res['acceptance_rate']:.1f} %)")
    print(f"speed-up          : {res['speedup']:.2f}x   identical output: {same}")
    print(json.dumps(res))
    if not same:
        sys.exit("self-speculative output differs from greedy")


main()
