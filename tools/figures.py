"""Copy the demo's plots into nbs/images/, where the docs pages of train, analysis_weights and analysis_passk show them.

    make demo && make figures        # or: python tools/figures.py [--runs runs]

The executed notebooks of a run live under runs/ (not committed); the site shows these few PNGs of the committed demo
run instead. Each figure must stay small (at most 200 KB): a larger one is refused, naming the file.
"""
import argparse, shutil, sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
MAX_BYTES = 200_000
# destination in nbs/images/ <- source under runs/
FIGURES = {
    "train_loss.png": "synth-verifiable-s0/plots/loss.png",
    "train_validation.png": "synth-verifiable-s0/plots/validation.png",
    "train_weight_entropy.png": "synth-verifiable-s0/plots/weight_entropy.png",
    "weights_entropy.png": "analysis/weight_entropy.png",
    "weights_td_histograms.png": "analysis/weights_td_histograms.png",
    "weights_rho1_comparison.png": "analysis/rho1_comparison.png",
    "demo_credit_bug_token.png": "analysis/credit_bug_token.png",
    "demo_passk_synthetic.png": "analysis/passk_synthetic.png",
    "demo_passk_vs_baseline.png": "analysis/passk_vs_baseline.png",
}


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--runs", type=Path, default=ROOT / "runs")
    args = ap.parse_args(argv)
    missing = [str(args.runs / s) for s in FIGURES.values() if not (args.runs / s).is_file()]
    if missing:
        print("figures: missing (run `make demo` first):\n  " + "\n  ".join(missing), file=sys.stderr)
        return 1
    too_big = [f"{args.runs / s}: {(args.runs / s).stat().st_size} bytes" for s in FIGURES.values()
               if (args.runs / s).stat().st_size > MAX_BYTES]
    if too_big:
        print(f"figures: larger than {MAX_BYTES} bytes:\n  " + "\n  ".join(too_big), file=sys.stderr)
        return 1
    out = ROOT / "nbs" / "images"
    out.mkdir(exist_ok=True)
    for dest, src in FIGURES.items():
        tmp = out / f".{dest}.tmp"
        shutil.copyfile(args.runs / src, tmp)
        tmp.replace(out / dest)
        print(f"figures: {src} -> nbs/images/{dest}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
