"""Conversion streams: peak RSS of a conversion stays about one checkpoint above the process baseline (a naive
load-everything-then-serialise conversion needs two or more)."""
import json, subprocess, sys, textwrap

import torch

PROBE = textwrap.dedent("""
    import resource, sys
    import torch
    from wmtp_nb.storage import convert_meta_checkpoint
    from wmtp_nb.model import expected_shapes
    from vendor.meta_llama.model import ModelArgs
    expected_shapes(ModelArgs(dim=64, n_layers=2, n_heads=4, vocab_size=300))  # warm the same code paths
    base = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    if sys.argv[1] == "convert":
        convert_meta_checkpoint(sys.argv[2], sys.argv[3])
    print(base, resource.getrusage(resource.RUSAGE_SELF).ru_maxrss)
""")


def test_conversion_peak_memory(tmp_path):
    from wmtp_nb.tokenizer import train_code_tokenizer
    from wmtp_nb.model import expected_shapes
    from vendor.meta_llama.model import ModelArgs
    raw = tmp_path / "raw"; raw.mkdir()
    tok = train_code_tokenizer(raw / "tokenizer.model", vocab_size=512, sources=("humaneval",), max_bytes=300_000)
    params = {"dim": 1024, "n_layers": 10, "n_heads": 8, "vocab_size": 512, "multiple_of": 256, "norm_eps": 1e-5, "n_future_tokens": 2}
    sd = {k: torch.full(s, 0.5, dtype=torch.float16) for k, s in expected_shapes(ModelArgs.from_params(params)).items()}
    size_kb = sum(v.numel() * 2 for v in sd.values()) / 1024
    (raw / "params.json").write_text(json.dumps(params))
    torch.save(sd, raw / "consolidated.pth")
    del sd
    run = subprocess.run([sys.executable, "-c", PROBE, "convert", str(raw), str(tmp_path / "out")],
                         capture_output=True, text=True, check=True)
    base, peak = map(int, run.stdout.split()[-2:])
    growth = (peak - max(base, 0)) / size_kb
    assert size_kb > 200_000  # a checkpoint large enough to dominate the baseline (~250 MB)
    assert growth < 1.4, f"conversion peak RSS grew by {growth:.2f}x the checkpoint size"
    from wmtp_nb.model_io import load_safetensors
    out = load_safetensors(tmp_path / "out" / "safetensors" / "model.safetensors")
    assert out["output.weight"].dtype == torch.float16 and float(out["output.weight"][0, 0]) == 0.5
