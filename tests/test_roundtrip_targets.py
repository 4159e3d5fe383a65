"""Issue 12, item 2: a model that reproduces its training targets must pass evaluation exactly where the dataset's
reference passes. The collator's label ids of every MBPP test task and of a CodeContests sample (synthetic problems
in the real schema plus hand-written Python 3 solutions, through the real converter) are replayed through `generate`
(prompt encoding, stop sequences, decoding), `extract_code` and the sandbox, beside the raw references.

Two tokenizers: one with SentencePiece's dummy prefix (as Llama-2's and the micro models') and one without."""
import pytest

from _roundtrip import codecontests_sample, collated_targets, compare_statuses, replay_completions
from wmtp_nb.collate import MTPCollator, alpaca_prompt
from wmtp_nb.datasets import load_mbpp, mbpp_record
from wmtp_nb.evaluate import mbpp_tasks
from wmtp_nb.generate import ALPACA_STOP
from wmtp_nb.tokenizer import encode_prompt, load_tokenizer, mbpp_dir, train_code_tokenizer


@pytest.fixture(scope="module")
def tokenizers(tmp_path_factory):
    d = tmp_path_factory.mktemp("tok")
    return {dp: load_tokenizer(train_code_tokenizer(d / f"dp{int(dp)}.model", vocab_size=4000, sources=("mbpp", "humaneval"),
                                                    add_dummy_prefix=dp))
            for dp in (True, False)}


@pytest.fixture(scope="module")
def mbpp():
    tasks = mbpp_tasks("test")
    records = [mbpp_record(r) for r in load_mbpp(mbpp_dir(), "test")]
    assert len(tasks) == len(records) == 500
    assert [t.task_id for t in tasks] == [f"MBPP/{r['metadata']['mbpp_task_id']}" for r in records]
    return tasks, records


@pytest.fixture(scope="module")
def codecontests(tmp_path_factory):
    tasks, records = codecontests_sample(tmp_path_factory.mktemp("cc"))
    by_name = {t.task_id: t for t in tasks}
    assert len(by_name) == len(tasks), "CodeContests sample: duplicate problem names"
    assert len(records) >= 100 and {r["is_correct"] for r in records} == {True, False}
    return by_name, records


def _round_trip(tok, records, prompts):
    "Completions replayed from the collator's labels; the collator's prompt ids must be those `generate` feeds."
    targets = collated_targets(MTPCollator(tok, max_length=1 << 20), records)
    for (prompt_ids, labels), p in zip(targets, prompts):
        assert prompt_ids == encode_prompt(tok, p)
        assert labels[-1] == tok.eos_id
    return replay_completions(tok, prompts, targets, ALPACA_STOP)


@pytest.mark.parametrize("dummy_prefix", [True, False])
def test_mbpp_targets_decode_to_the_exact_output(tokenizers, mbpp, dummy_prefix):
    tasks, records = mbpp
    assert [t.prompt for t in tasks] == [alpaca_prompt(r) for r in records]  # training and evaluation prompts agree
    comps = _round_trip(tokenizers[dummy_prefix], records, [t.prompt for t in tasks])
    wrong = [(t.task_id, c[:30], r["output"][:30]) for t, c, r in zip(tasks, comps, records) if c != r["output"]]
    assert wrong == [], wrong[:5]


def test_mbpp_targets_pass_where_references_pass(tokenizers, mbpp, capsys):
    tasks, records = mbpp
    comps = _round_trip(tokenizers[True], records, [t.prompt for t in tasks])
    rep = compare_statuses(tasks, [(t.task_id, c, t.reference) for t, c in zip(tasks, comps)])
    with capsys.disabled():
        print(f"\nMBPP test round trip: collator targets pass {rep['roundtrip_passed']}/{rep['n']}, "
              f"raw references {rep['reference_passed']}/{rep['n']}, differing {len(rep['differ'])} "
              f"(pairs run again: {rep['rerun']})")
    assert rep["differ"] == []
    assert rep["roundtrip_passed"] == rep["reference_passed"] == 500


@pytest.mark.parametrize("dummy_prefix", [True, False])
def test_codecontests_targets_pass_where_references_pass(tokenizers, codecontests, dummy_prefix, capsys):
    by_name, records = codecontests
    tasks = [by_name[r["metadata"]["name"]] for r in records]
    assert [t.prompt for t in tasks] == [alpaca_prompt(r) for r in records]
    comps = _round_trip(tokenizers[dummy_prefix], records, [t.prompt for t in tasks])
    wrong = [(r["task_id"], c[:30], r["output"][:30]) for c, r in zip(comps, records) if c != r["output"]]
    assert wrong == [], wrong[:5]
    rep = compare_statuses(list(by_name.values()), [(t.task_id, c, r["output"]) for t, c, r in zip(tasks, comps, records)])
    with capsys.disabled():
        print(f"\nCodeContests sample (dummy prefix {dummy_prefix}): collator targets pass {rep['roundtrip_passed']}/{rep['n']}, "
              f"raw solutions {rep['reference_passed']}/{rep['n']}, differing {len(rep['differ'])} "
              f"(pairs run again: {rep['rerun']})")
    assert rep["differ"] == []
    assert 0 < rep["reference_passed"] < rep["n"]  # both outcomes occur in the sample
