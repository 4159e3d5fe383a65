"""Tiny, fast training assets for the issue-7 tests: tokenizer, MTP policy, HF reference, a verifiable dataset."""
import json, os, subprocess, sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
_TOKENIZER: Path | None = None


def build(root: Path) -> Path:
    "storage/ under `root`: models_v2/{tiny-mtp,tiny-ref} (shared tokenizer) and datasets_v2/tiny (24 train, 6 valid records)."
    from wmtp_nb.micro import make_tiny_model
    from wmtp_nb.tokenizer import train_code_tokenizer
    global _TOKENIZER
    storage = root / "storage"
    if _TOKENIZER is None or not _TOKENIZER.is_file():  # trained once per test session (the slow part)
        _TOKENIZER = train_code_tokenizer(root / "tok.model", vocab_size=512, sources=("mbpp",), max_bytes=150_000)
    tok = _TOKENIZER
    make_tiny_model(storage / "models_v2" / "tiny-mtp", tok, dim=64, n_layers=6, n_heads=4, n_future_tokens=4, seed=0)
    make_tiny_model(storage / "models_v2" / "tiny-ref", tok, dim=64, n_layers=2, n_heads=4, seed=1, layout="hf")
    d = storage / "datasets_v2" / "tiny" / "processed"
    d.mkdir(parents=True)
    for split, ids in (("train", range(24)), ("valid", range(100, 106))):
        recs, meta = [], []
        for i in ids:
            ok = i % 2 == 0
            op = "+" if ok else "-"
            recs.append({"instruction": f"Write a function f{i} that adds {i} to x.", "input": "",
                         "output": f"def f{i}(x):\n    return x {op} {i}\n", "task_id": f"t{i}_{'correct' if ok else 'incorrect'}",
                         "is_correct": ok, "metadata": {"source": "test", "difficulty": 1 + i % 11, "has_tests": False}})
            meta.append({"is_correct": ok, "difficulty": 1 + i % 11})
        (d / f"{split}.jsonl").write_text("".join(json.dumps(r) + "\n" for r in recs))
        (d / f"{split}_metadata.json").write_text(json.dumps({"metadata": meta, "stats": {}}))
    return storage


def overrides(root: Path, storage: Path, **extra) -> list[str]:
    "Overrides that point a project recipe at the tiny assets, CPU, short sequences."
    base = {"paths.storage": storage, "paths.runs": root / "runs", "models.policy": "tiny-mtp",
            "models.reference": "tiny-ref", "data.dataset": "tiny", "data.n_samples": 8, "data.max_length": 160,
            "data.replace": "true", "training.batch_size": 2, "training.grad_accum": 2, "training.max_steps": 4,
            "training.warmup_steps": 1, "training.log_every": 1, "training.save_every": 2, "training.lr": 1e-3,
            "training.progress": "false", "runtime.device": "cpu", "runtime.num_threads": 1, "checkpoint.keep": 1, "runtime.dtype": "float32",
            "runtime.strategy": "ddp", "runtime.activation_checkpointing": "false"}  # the 7B defaults shard; tests opt in
    base.update(extra)
    return [f"{k}={v}" for k, v in base.items()]


def run_cli(args: list[str], cwd: Path = ROOT, timeout: int = 300, torchrun: int = 0) -> subprocess.CompletedProcess:
    "python -m wmtp_nb.train ARGS (under torchrun with `torchrun` processes when > 0)."
    pre = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", str(torchrun)] if torchrun else [sys.executable]
    cmd = pre + ["-m", "wmtp_nb.train", *args]
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONUNBUFFERED": "1"}
    return subprocess.run(cmd, cwd=cwd, capture_output=True, text=True, timeout=timeout, env=env)
