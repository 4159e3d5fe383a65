"""The storage commands as a user runs them (subprocesses): convert a Meta-format directory, verify, inspect."""
import json, subprocess, sys
from pathlib import Path

import torch


SCRIPTS = {"convert_meta_cli": "wmtp_convert_meta", "verify_storage_cli": "wmtp_verify_storage",
           "inspect_model_cli": "wmtp_inspect_model"}


def _cli(func, *args):
    "Run the installed console script (the file setuptools wrote beside this interpreter), as a user would."
    script = Path(sys.executable).parent / SCRIPTS[func]
    return subprocess.run([sys.executable, str(script), *map(str, args)], capture_output=True, text=True)


def test_convert_verify_inspect_commands(tmp_path):
    from vendor.meta_llama.model import ModelArgs, Transformer
    from wmtp_nb.storage import write_raw_meta_checkpoint
    from wmtp_nb.tokenizer import train_code_tokenizer
    tok = train_code_tokenizer(tmp_path / "tok.model", vocab_size=512, sources=("humaneval",), max_bytes=200_000)
    params = {"dim": 32, "n_layers": 3, "n_heads": 4, "vocab_size": 512, "multiple_of": 16, "norm_eps": 1e-5, "n_future_tokens": 2}
    sd = {k: v.bfloat16() for k, v in Transformer(ModelArgs.from_params(params)).init_weights(0).state_dict().items()}
    raw = write_raw_meta_checkpoint(tmp_path / "raw", params, sd, tok)
    out = tmp_path / "store" / "models_v2" / "tiny"
    r = _cli("convert_meta_cli", raw, out)
    assert r.returncode == 0, r.stderr
    assert "bfloat16" in r.stdout and json.loads((out / "metadata.json").read_text())["dtype"] == "bfloat16"
    r = _cli("verify_storage_cli", "--root", tmp_path / "store")
    assert r.returncode == 0 and "ok  tiny" in r.stdout, r.stdout + r.stderr
    r = _cli("inspect_model_cli", out)
    assert r.returncode == 0 and "layout meta" in r.stdout and "loss" in r.stdout, r.stderr
    (out / "metadata.json").write_text("{}")  # tampering is caught by SHA256SUMS
    r = _cli("verify_storage_cli", "--root", tmp_path / "store")
    assert r.returncode == 1 and "SHA256SUMS mismatch: metadata.json" in r.stdout
    r = _cli("convert_meta_cli", tmp_path / "nowhere", tmp_path / "x")
    assert r.returncode != 0 and "params.json not found" in r.stderr
