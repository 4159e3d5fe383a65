"""Round trip of training targets (issue 12, item 2): how many collator targets pass evaluation, beside the references.

    python bench/roundtrip_targets.py                                  # storage/models_v2/micro-mtp's tokenizer
    python bench/roundtrip_targets.py --tokenizer path/to/tok.model    # any SentencePiece model
    PYTHONPATH=/path/to/other/checkout python bench/roundtrip_targets.py   # another version of wmtp_nb (e.g. main)

For every MBPP test task and a CodeContests sample (synthetic problems in the real schema plus hand-written Python 3
solutions, through the real converter), the collator's label ids are replayed as a model's output through `generate`,
`extract_code` and the sandbox (`tests/_roundtrip.py`, public API only, so it runs against older versions too).
Prints how many round-tripped texts equal the output exactly and how many pass, beside the raw references.
"""
import argparse, sys, tempfile, time
from pathlib import Path

sys.path.append(str(Path(__file__).resolve().parents[1] / "tests"))  # after PYTHONPATH: another wmtp_nb may win

from _roundtrip import codecontests_sample, collated_targets, compare_statuses, replay_completions
import wmtp_nb
from wmtp_nb.collate import MTPCollator
from wmtp_nb.datasets import load_mbpp, mbpp_record
from wmtp_nb.evaluate import mbpp_tasks
from wmtp_nb.generate import ALPACA_STOP
from wmtp_nb.tokenizer import load_tokenizer, mbpp_dir


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--tokenizer", default=str(Path(__file__).resolve().parents[1] / "storage/models_v2/micro-mtp"))
    ap.add_argument("--workers", type=int, default=2)
    a = ap.parse_args()
    tok = load_tokenizer(a.tokenizer)
    coll = MTPCollator(tok, max_length=1 << 20)
    print(f"wmtp_nb from {Path(wmtp_nb.__file__).parent}; tokenizer {a.tokenizer} ({tok.n_words} pieces)")
    t0 = time.time()
    tasks, recs = mbpp_tasks("test"), [mbpp_record(r) for r in load_mbpp(mbpp_dir(), "test")]
    comps = replay_completions(tok, [t.prompt for t in tasks], collated_targets(coll, recs), ALPACA_STOP)
    rep = compare_statuses(tasks, [(t.task_id, c, t.reference) for t, c in zip(tasks, comps)], workers=a.workers)
    exact = sum(c == r["output"] for c, r in zip(comps, recs))
    print(f"MBPP test: exact text {exact}/{len(recs)}; targets pass {rep['roundtrip_passed']}/{rep['n']}, references "
          f"{rep['reference_passed']}/{rep['n']}, differing {len(rep['differ'])}  ({time.time() - t0:.0f}s)")
    t0 = time.time()
    ctasks, crecs = codecontests_sample(Path(tempfile.mkdtemp()))
    by = {t.task_id: t for t in ctasks}
    ct = [by[r["metadata"]["name"]] for r in crecs]
    cc = replay_completions(tok, [t.prompt for t in ct], collated_targets(coll, crecs), ALPACA_STOP)
    rep = compare_statuses(ctasks, [(t.task_id, c, r["output"]) for t, c, r in zip(ct, cc, crecs)], workers=a.workers)
    exact = sum(c == r["output"] for c, r in zip(cc, crecs))
    print(f"CodeContests sample: exact text {exact}/{len(crecs)}; targets pass {rep['roundtrip_passed']}/{rep['n']}, "
          f"raw solutions {rep['reference_passed']}/{rep['n']}, differing {len(rep['differ'])}  ({time.time() - t0:.0f}s)")


if __name__ == "__main__":
    main()
