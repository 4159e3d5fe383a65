"""The loss of an optimiser step is normalised over the whole step (all micro-batches and ranks), so the batch layout
never changes the gradient: 8 records as one micro-batch, as 4 accumulated micro-batches of 2, and over 2 gloo ranks
× 2 micro-batches of 2 give the same gradients (within 1e-6) for every stage (Rho-1 with k = 100 %, whose top-k is per
micro-batch by design; the verifiable weights without the batch-wide z-score)."""
import os, subprocess, sys

import torch

from _train_assets import ROOT

SCRIPT = ROOT / "tests" / "_step_grads.py"


def _run(out, micro, nproc=0):
    pre = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", str(nproc)] if nproc else [sys.executable]
    r = subprocess.run(pre + [str(SCRIPT), str(out), str(micro)], cwd=ROOT, capture_output=True, text=True, timeout=600,
                       env={**os.environ, "OMP_NUM_THREADS": "1"})
    assert r.returncode == 0, (r.stdout + r.stderr)[-4000:]
    return torch.load(out)


def test_layouts_give_equal_gradients(tmp_path):
    one = _run(tmp_path / "one.pt", 8)                  # 1 rank × 1 micro-batch of 8
    acc = _run(tmp_path / "acc.pt", 2)                  # 1 rank × 4 accumulated micro-batches of 2
    ddp = _run(tmp_path / "ddp.pt", 2, nproc=2)         # 2 gloo ranks × 2 micro-batches of 2
    for stage in ("baseline", "critic", "verifiable", "rho1"):
        ref = one[stage]
        assert ref and all(g.abs().max() > 0 for g in ref.values()), stage
        if stage == "critic":                           # the trunk is frozen: only the value head learns
            assert all(n.startswith("value_head") for n in ref)
        for name, other in (("4x2 accumulated", acc), ("2 ranks x 2 x 2", ddp)):
            assert set(other[stage]) == set(ref), (stage, name)
            diff = max((other[stage][n] - ref[n]).abs().max().item() for n in ref)
            scale = max(g.abs().max().item() for g in ref.values())
            print(f"{stage:10s} 1x8 vs {name}: max |dgrad| = {diff:.2e} (largest gradient {scale:.2e})")
            assert diff < 1e-6, (stage, name, diff)
