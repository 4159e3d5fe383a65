"""`python -m wmtp_nb.evaluate` end to end on a tiny model (the module's single call_parse command), and
self-speculative decoding equal to greedy through the command's `--speculative` flag."""
import json, os, subprocess, sys

from wmtp_nb.files import read_jsonl
from wmtp_nb.micro import make_tiny_model
from wmtp_nb.tokenizer import train_code_tokenizer


def _run(args, env):
    r = subprocess.run([sys.executable, "-m", "wmtp_nb.evaluate", *map(str, args)], capture_output=True, text=True,
                       timeout=300, env=env)
    assert r.returncode == 0, (r.stdout + r.stderr)[-3000:]
    return r.stdout


def test_python_m_evaluate(tmp_path):
    tok = train_code_tokenizer(tmp_path / "tok.model", vocab_size=512, sources=("humaneval",))
    model = make_tiny_model(tmp_path / "tiny-mtp", tok, dim=64, n_layers=6)
    env = {**os.environ, "MLFLOW_TRACKING_URI": f"sqlite:///{tmp_path / 'mlflow.db'}", "OMP_NUM_THREADS": "1"}
    out = _run([model, "--dataset", "humaneval", "--limit", "3", "--n", "3", "--max_new_tokens", "16", "--ks", "1,3",
                "--out_dir", tmp_path / "he"], env)
    rep = json.loads((tmp_path / "he" / "report.json").read_text())
    assert rep["n_tasks"] == 3 and rep["n_samples"] == 9 and rep["mlflow_run_id"]
    assert rep["prompt_convention"] == "humaneval-raw" and rep["sampling"]["temperature"] == 0.8
    assert '"pass@3"' in out and str(tmp_path / "he" / "report.json") in out
    assert (tmp_path / "mlflow.db").is_file() and (tmp_path / "mlartifacts" / rep["mlflow_run_id"]).is_dir()
    # greedy, plain vs self-speculative: identical completions
    common = [model, "--dataset", "mbpp", "--task_ids", "MBPP/11,MBPP/12", "--n", "1", "--temperature", "0",
              "--max_new_tokens", "24", "--ks", "1", "--no_mlflow"]
    _run(common + ["--out_dir", tmp_path / "plain"], env)
    _run(common + ["--out_dir", tmp_path / "spec", "--speculative"], env)
    comps = lambda d: [s["completion"] for r in read_jsonl(tmp_path / d / "results.jsonl") for s in r["samples"]]
    assert comps("plain") == comps("spec") and len(comps("plain")) == 2
    assert json.loads((tmp_path / "spec" / "report.json").read_text())["speculative"] is True
