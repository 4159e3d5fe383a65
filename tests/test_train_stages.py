"""Every stage trains on tiny assets and overfits a repeated batch; the critic leaves the policy untouched; verifiable
starts from the critic's value head (its best/, chosen on validation); every run validates on the held-out split and
names its data condition; rho1 caches reference losses under a key that changes with the reference's weights, and
logs KL(policy ‖ reference) when the reference is loaded; bad configs and missing checkpoints fail clearly."""
import json

import pytest
import torch
from safetensors.torch import load_file

# The data layer (issue 5: wmtp_nb.sampling, wmtp_nb.collate) is built in parallel; until it is merged these
# end-to-end tests are skipped rather than faked.
pytest.importorskip("wmtp_nb.sampling"); pytest.importorskip("wmtp_nb.collate")

from _train_assets import ROOT, build, overrides, run_cli
from wmtp_nb.config import load_config
from wmtp_nb.files import read_jsonl
from wmtp_nb.checkpoint import resolve_checkpoint
from wmtp_nb.train import build_adapter, train

REPEAT = {"data.n_samples": 2, "training.batch_size": 2, "training.grad_accum": 1, "training.max_steps": 20,
          "training.lr": 3e-3, "training.warmup_steps": 2, "training.save_every": 20, "mlflow.enabled": "false",
          "weighting.running_stats": "false"}


@pytest.fixture(scope="module")
def assets(tmp_path_factory):
    root = tmp_path_factory.mktemp("stages")
    return root, build(root)


def _cfg(root, storage, stage, **extra):
    return load_config(ROOT / "configs" / f"{stage}.yaml", overrides=overrides(root, storage, **{**REPEAT, **extra}))


def _series(run_dir, key):
    return [r[key] for r in read_jsonl(run_dir / "metrics.jsonl")]


def test_stages_overfit_a_repeated_batch(assets, capsys):
    root, st = assets
    runs = root / "runs"
    train(_cfg(root, st, "critic", **{"experiment.run_name": "critic", "training.lr": 3e-2, "critic.target": "return",
                                   "training.max_steps": 30, "training.save_every": 30}))
    v = _series(runs / "critic", "train/value_loss")
    assert v[-1] < 0.3 * v[0], v
    assert _series(runs / "critic", "value/accuracy")[-1] == 1.0
    # the trunk and heads are frozen: the critic's policy weights are the initial ones
    init = load_file(str(st / "models_v2" / "tiny-mtp" / "safetensors" / "model.safetensors"))
    after = load_file(str(runs / "critic" / "last" / "policy.safetensors"))
    assert all(torch.equal(init[k], after[k]) for k in init)

    cfg_v = _cfg(root, st, "verifiable", **{"experiment.run_name": "verifiable", "models.init_from": "critic"})
    vh = build_adapter(cfg_v, torch.device("cpu")).value_head.state_dict()
    critic_vh = load_file(str(runs / "critic" / "best" / "value_head.safetensors"))
    assert all(torch.equal(vh[k], critic_vh[k]) for k in critic_vh), "verifiable must start from the critic's value head"

    for stage, cfg in (("baseline", _cfg(root, st, "baseline", **{"experiment.run_name": "baseline"})),
                       ("rho1", _cfg(root, st, "rho1", **{"experiment.run_name": "rho1"})),
                       ("verifiable", cfg_v)):
        final = train(cfg)
        ce = _series(runs / stage, "train/weighted_ce")
        assert ce[-1] < 0.6 * ce[0], (stage, ce)
        assert (runs / stage / "last" / "policy.safetensors").is_file() and (runs / stage / "best").is_dir()
        assert json.loads((runs / stage / "final_metrics.json").read_text())["run_name"] == stage
    rows = read_jsonl(runs / "rho1" / "metrics.jsonl")
    for k in range(4):  # 2 records, per head the top 60 % of valid tokens are selected
        assert abs(rows[0][f"rho1/selection_ratio/head_{k}"] - 0.6) < 0.1
    assert "rho1/kl_policy_ref" not in rows[0]  # cached reference CE: no distribution, no KL (rather than NaN)
    ver = read_jsonl(runs / "verifiable" / "metrics.jsonl")[0]
    assert {"train/value_loss", "td/mean", "weight/entropy", "value/explained_variance"} <= set(ver)
    assert 0 < ver["weight/entropy"] <= 1

    # validation at the last step (eval_every > max_steps), on the 6 held-out records; best/ chosen on it
    want = {"critic": {"valid/value_loss", "valid/value_accuracy", "valid/explained_variance", "valid/loss"},
            "verifiable": {"valid/ce", "valid/ce_correct", "valid/weighted_ce", "valid/value_loss", "valid/loss"},
            "baseline": {"valid/ce", "valid/weighted_ce", "valid/loss"}, "rho1": {"valid/ce", "valid/weighted_ce", "valid/loss"}}
    for stage, keys in want.items():
        last = read_jsonl(runs / stage / "metrics.jsonl")[-1]
        assert keys <= set(last), (stage, sorted(last))
        if stage != "critic":
            assert {f"valid/ce_head_{k}" for k in range(4)} <= set(last)
            assert abs(last["valid/ce"] - sum(last[f"valid/ce_head_{k}"] for k in range(4)) / 4) < 0.5
        assert all(v is not None for k, v in last.items() if k.startswith("valid/")), (stage, last)
        meta = json.loads((runs / stage / "best" / "meta.json").read_text())
        assert meta["best_metric"] == ("valid/value_loss" if stage == "critic" else "valid/ce"), meta
        assert resolve_checkpoint(runs / stage) == runs / stage / "best"
    assert read_jsonl(runs / "baseline" / "metrics.jsonl")[-1]["valid/loss"] == read_jsonl(runs / "baseline" / "metrics.jsonl")[-1]["valid/weighted_ce"]
    v = read_jsonl(runs / "verifiable" / "metrics.jsonl")[-1]
    assert abs(v["valid/loss"] - (v["valid/weighted_ce"] + 0.5 * v["valid/value_loss"])) < 1e-9
    # the data condition of each recipe, in the run's config and final metrics
    for stage, cond in (("baseline", "correct only"), ("rho1", "correct only"), ("verifiable", "correct + incorrect"),
                        ("critic", "balanced 50:50")):
        assert (runs / stage / "config.yaml").read_text().startswith(f"# data condition: {cond}\n")
        assert json.loads((runs / stage / "final_metrics.json").read_text())["data_condition"] == cond


def test_rho1_reference_cache_scores_once(assets, capsys):
    root, st = assets
    cfg = _cfg(root, st, "rho1", **{"experiment.run_name": "rho1-cache-a", "training.max_steps": 2})
    train(cfg)
    out = capsys.readouterr().out
    assert "scored now" in out and "train records" in out and "valid records" in out, out
    train(_cfg(root, st, "rho1", **{"experiment.run_name": "rho1-cache-b", "training.max_steps": 2}))
    out = capsys.readouterr().out
    assert "(0 scored now)" in out and "scored now) cached" in out and out.count("(0 scored now)") == 2, out
    # the cached path and on-the-fly scoring give the same run
    train(_cfg(root, st, "rho1", **{"experiment.run_name": "rho1-live", "training.max_steps": 2, "rho1.reference_cache": "false"}))
    a = load_file(str(root / "runs" / "rho1-cache-b" / "last" / "policy.safetensors"))
    b = load_file(str(root / "runs" / "rho1-live" / "last" / "policy.safetensors"))
    assert all(torch.allclose(a[k], b[k], atol=1e-3) for k in a)  # float16 cache vs float32 live
    # with the reference loaded, KL(policy ‖ reference) per token is logged: finite and non-negative
    live = read_jsonl(root / "runs" / "rho1-live" / "metrics.jsonl")
    assert all(r["rho1/kl_policy_ref"] is not None and r["rho1/kl_policy_ref"] >= 0 for r in live), live
    c = read_jsonl(root / "runs" / "rho1-cache-b" / "metrics.jsonl")[-1]
    assert abs(c["valid/weighted_ce"] - live[-1]["valid/weighted_ce"]) < 1e-2   # validation scored from the cache too


def test_rho1_changed_reference_is_rescored(tmp_path, capsys):
    root, st = tmp_path, build(tmp_path)
    train(_cfg(root, st, "rho1", **{"experiment.run_name": "ref-a", "training.max_steps": 1}))
    assert "(0 scored now)" not in capsys.readouterr().out
    w = st / "models_v2" / "tiny-ref" / "safetensors" / "model.safetensors"
    sd = load_file(str(w))
    from safetensors.torch import save_file
    save_file({k: v * 1.5 for k, v in sd.items()}, str(w) + ".tmp")       # the reference is retrained, replaced atomically
    (st / "models_v2" / "tiny-ref" / "safetensors" / "model.safetensors.tmp").replace(w)
    train(_cfg(root, st, "rho1", **{"experiment.run_name": "ref-b", "training.max_steps": 1}))
    out = capsys.readouterr().out
    assert "(0 scored now)" not in out, out                                # no stale CE: everything scored again
    cached = sorted((root / "runs" / "cache" / "rho1").glob("*.pt"))
    assert len(cached) == 4, cached                                        # train + valid, for each reference


def test_train_applies_the_cpu_heap_policy(assets, monkeypatch):
    "runtime.release_cpu_heap reaches the loss: on, the freed heap goes back to the system after each head's backward; off, never."
    import wmtp_nb.mtp_loss as mtp_loss_module
    from wmtp_nb.cpu_heap import configure_cpu_heap, glibc
    if glibc() is None: pytest.skip("no glibc malloc_trim here: the policy is a no-op")
    root, st = assets
    real, trims = mtp_loss_module.release_freed_heap, []
    monkeypatch.setattr(mtp_loss_module, "release_freed_heap", lambda device: trims.append(real(device)) or trims[-1])
    try:
        for on in (True, False):
            trims.clear()
            train(_cfg(root, st, "baseline", **{"experiment.run_name": f"heap-{on}", "training.max_steps": 1,
                                                "runtime.release_cpu_heap": str(on).lower()}))
            # one step of one micro-batch (REPEAT: grad_accum 1), 4 heads: one call per head's backward, trimmed only
            # when on; validation runs no backward and releases nothing
            assert trims == [on] * 4, (on, trims)
    finally:
        configure_cpu_heap(False)                                          # process-wide: leave the default behind


def test_bad_config_and_missing_checkpoint(assets):
    root, st = assets
    r = run_cli(["--config", "configs/baseline.yaml", "--override", "training.lrr=1"])
    assert r.returncode == 2 and "unknown key 'training.lrr'; did you mean 'training.lr'?" in r.stderr, r.stderr
    r = run_cli(["--config", "configs/baseline.yaml", "--preset", "local-light", "--override", "training.lr=1e-4", "--dry_run"])
    assert r.returncode == 0 and "lr: 0.0001" in r.stdout and "policy: micro-mtp" in r.stdout, r.stderr
    cfg = _cfg(root, st, "verifiable", **{"experiment.run_name": "orphan", "models.init_from": "no-such-critic"})
    with pytest.raises(FileNotFoundError, match="models.init_from='no-such-critic': no checkpoint found"):
        train(cfg)
