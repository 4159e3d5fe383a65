"""The papermill notebooks (evaluate, analysis_passk, analysis_weights) run end to end on a small fake-but-realistic
runs/ layout: three experiments (+ critic) with config.yaml, metrics.jsonl in training's format, tiny checkpoints
(the verifiable one with a value head), evaluation reports; each must write its PNGs."""
import json, os, subprocess, sys
from pathlib import Path

import numpy as np
import pytest
import torch

from wmtp_nb.datasets import mbpp_record
from wmtp_nb.evaluate import build_report, humaneval_tasks
from wmtp_nb.files import write_jsonl
from wmtp_nb.micro import make_tiny_model
from wmtp_nb.model import MetaLlamaMTPAdapter
from wmtp_nb.tokenizer import mbpp_dir, train_code_tokenizer


def _papermill(root, nb, out, **params):
    args = [sys.executable, "-m", "papermill", str(root / "nbs" / nb), str(out), "-k", "python3", "--cwd", str(root)]
    for k, v in params.items():
        args += ["-p", k, str(v)]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}  # tiny models: threads only spin on a busy machine
    r = subprocess.run(args, capture_output=True, text=True, timeout=600, env=env)
    assert r.returncode == 0, (r.stdout + r.stderr)[-4000:]
    return json.loads(Path(out).read_text())


@pytest.fixture(scope="module")
def fake_runs(tmp_path_factory):
    d = tmp_path_factory.mktemp("analysis")
    tok = train_code_tokenizer(d / "tok.model", vocab_size=512, sources=("humaneval",))
    pol_dir = make_tiny_model(d / "tiny-mtp", tok, dim=64, n_layers=6, seed=0)
    ref_dir = make_tiny_model(d / "tiny-ref", tok, dim=64, n_layers=3, seed=1, layout="hf")
    rng = np.random.default_rng(0)
    runs = d / "runs"
    steps = range(1, 13)
    for stage in ("baseline", "critic", "verifiable", "rho1"):
        rd = runs / f"{stage}-local"
        rd.mkdir(parents=True)
        (rd / "config.yaml").write_text(
            f"experiment:\n  stage: {stage}\nmodels:\n  reference: {ref_dir}\n"
            "weighting:\n  gamma: 0.99\n  lam: 0.95\n  normalize: zscore\n  temperature: 1.0\n  w_min: 0.1\n  w_max: 5.0\n"
            "  entropy_floor: 0.01\n  mode: softmax\n")
        rows = []
        for s in steps:
            r = {"step": s, "train/loss": 4.0 - 0.1 * s + 0.05 * rng.standard_normal(), "lr": 3e-4}
            if stage in ("critic", "verifiable"):
                r |= {"td/mean": 0.1 * rng.standard_normal(), "td/std": 0.3 + 0.02 * s, "value/explained_variance": None}
            if stage in ("verifiable", "rho1"):
                r |= {"weight/entropy": 0.98 - 0.01 * s, "weight/mean": 1.0, "weight/std": 0.2 + 0.01 * s,
                      "weight/min": 0.1, "weight/max": 2.0 + 0.1 * s, "weight/clip_ratio": 0.0}
            if stage == "rho1":
                r |= {f"rho1/selection_ratio/head_{k}": 0.6 for k in range(4)} | {"rho1/excess_loss_mean": 0.1}
            rows.append(r)
        write_jsonl(rd / "metrics.jsonl", rows)
        ad = MetaLlamaMTPAdapter.from_pretrained(pol_dir, device="cpu", initialize_value_head=stage in ("critic", "verifiable"))
        if ad.value_head is not None:
            with torch.no_grad():
                for p in ad.value_head.parameters():
                    p.normal_(0, 0.05)
        ad.save_checkpoint(rd / "last")           # a run without validation: evaluation and analysis read last/
        if stage != "critic":
            tasks = humaneval_tasks()[:20]
            for ds, ids in (("humaneval", [t.task_id for t in tasks]), ("mbpp", [f"MBPP/{i}" for i in range(11, 41)])):
                res = []
                for tid in ids:
                    c = int(rng.binomial(10, {"baseline": 0.2, "verifiable": 0.3, "rho1": 0.25}[stage]))
                    res.append({"task_id": tid, "dataset": ds, "prompt": "", "n": 10, "c": c, "exact_match": 0,
                                "samples": [{"completion": "", "status": "passed" if j < c else "failed", "reason": "", "duration": 0.1}
                                            for j in range(10)]})
                (rd / "eval" / ds).mkdir(parents=True)
                write_jsonl(rd / "eval" / ds / "results.jsonl", res)
                (rd / "eval" / ds / "report.json").write_text(json.dumps(build_report(res, meta={"model": str(rd / "last")})))
    rows = json.loads((mbpp_dir() / "validation.json").read_text())[:8]
    recs = [mbpp_record(r) for r in rows]
    recs[2]["is_correct"] = recs[5]["is_correct"] = False
    write_jsonl(d / "heldout.jsonl", recs)
    return {"dir": d, "runs": runs, "heldout": d / "heldout.jsonl", "policy": pol_dir, "reference": ref_dir}


def test_analysis_passk(fake_runs, root):
    out = fake_runs["dir"] / "out_passk"
    _papermill(root, "analysis_passk.ipynb", fake_runs["dir"] / "passk.ipynb", runs_root=fake_runs["runs"], out_dir=out, n_boot=300)
    assert sorted(p.name for p in out.glob("*.png")) == ["passk_humaneval.png", "passk_mbpp.png", "passk_vs_baseline.png"]


def test_analysis_weights(fake_runs, root):
    out = fake_runs["dir"] / "out_weights"
    nb = _papermill(root, "analysis_weights.ipynb", fake_runs["dir"] / "weights.ipynb", runs_root=fake_runs["runs"],
                    out_dir=out, heldout_path=fake_runs["heldout"], heldout_limit=8, max_length=512)
    assert sorted(p.name for p in out.glob("*.png")) == sorted([
        "weight_entropy.png", "weight_stats.png", "rho1_selection_ratio.png", "td_errors_training.png",
        "weights_td_histograms.png", "rho1_comparison.png"])
    text = "".join("".join(o["text"]) for c in nb["cells"] for o in c.get("outputs", []) if o.get("output_type") == "stream")
    assert "head 3: policy" in text and "'weight': {'mean'" in text  # comparison and weight statistics printed


def test_evaluate_notebook(fake_runs, root):
    out = fake_runs["dir"] / "eval_nb"
    _papermill(root, "evaluate.ipynb", fake_runs["dir"] / "evaluate.ipynb", model_path=fake_runs["policy"], datasets="humaneval,mbpp",
               n=2, limit=2, max_new_tokens=12, ks="1,2", out_root=out, log_mlflow=False,
               reference_path=fake_runs["reference"], heldout_path=fake_runs["heldout"], heldout_limit=4)
    for ds in ("humaneval", "mbpp"):
        rep = json.loads((out / ds / "report.json").read_text())
        assert rep["n_tasks"] == 2 and rep["samples_per_task"] == [2, 2] and set(rep["pass_at_k"]) == {"pass@1", "pass@2"}
    assert (out / "passk.png").is_file()
    assert len(json.loads((out / "rho1_comparison.json").read_text())["heads"]) == 4
