"""FSDP vs DDP on CPU (two gloo processes, the tiny test model): per-step losses and final weights, float32 and bf16
compute, over 4 steps of 3 accumulated micro-batches; plus the time of each run (a loaded machine: compare, do not quote).

    .venv/bin/python bench/fsdp_vs_ddp.py
"""
import json, sys, tempfile, time
from pathlib import Path

import torch
from safetensors.torch import load_file

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests"))
from _train_assets import build, overrides, run_cli  # noqa: E402

root = Path(tempfile.mkdtemp(prefix="fsdp-bench-"))
st = build(root)
common = {"data.sampling": "all", "data.n_samples": 24, "training.max_steps": 4, "training.grad_accum": 3,
          "training.save_every": 4, "mlflow.enabled": "false", "checkpoint.keep": 0}
runs = {"ddp fp32": {"runtime.strategy": "ddp", "runtime.dtype": "float32"},
        "fsdp fp32": {"runtime.strategy": "fsdp", "runtime.dtype": "float32"},
        "fsdp bf16": {"runtime.strategy": "fsdp", "runtime.dtype": "bfloat16"},
        "fsdp bf16 + act. ckpt": {"runtime.strategy": "fsdp", "runtime.dtype": "bfloat16", "runtime.activation_checkpointing": "true"}}
res = {}
for name, rt in runs.items():
    rn = name.replace(" ", "_").replace(".", "").replace("+", "")
    t0 = time.time()
    r = run_cli(["--config", "configs/baseline.yaml", "--override", *overrides(root, st, **common, **rt, **{"experiment.run_name": rn})],
                torchrun=2, timeout=900)
    if r.returncode: sys.exit(f"{name} failed:\n{r.stderr[-3000:]}")
    d = root / "runs" / rn
    res[name] = ([json.loads(l)["train/loss"] for l in (d / "metrics.jsonl").read_text().splitlines()],
                 load_file(str(d / "last" / "policy.safetensors")), time.time() - t0)
w0 = load_file(str(st / "models_v2" / "tiny-mtp" / "safetensors" / "model.safetensors"))
ref_l, ref_w, _ = res["ddp fp32"]
upd = lambda w: torch.cat([(w[k] - w0[k]).flatten() for k in sorted(w0)])
print(f"{'run':>22} | {'max |Δloss| vs DDP':>18} | {'max |Δw| vs DDP':>15} | {'|Δupdate|/|update|':>18} | wall s")
for name, (l, w, t) in res.items():
    dl = max(abs(a - b) for a, b in zip(l, ref_l))
    dw = max((w[k] - ref_w[k]).abs().max().item() for k in w)
    du = ((upd(w) - upd(ref_w)).norm() / upd(ref_w).norm()).item()
    print(f"{name:>22} | {dl:18.2e} | {dw:15.2e} | {du:18.2e} | {t:6.1f}")
print("DDP losses:", [round(x, 5) for x in ref_l])
