"""The quality table on every split, printed from the committed reports: both embedded models (base,
reference stack, pricer) and TF-IDF + ridge on the pool and balanced test splits and on each held-out
source. The reports are evaluate.py's (and bench.ridge's) folders in bench/results/quality/, all at search width 30
and the mean (the defaults until 2026-12-06; the shipped adapters' eval-* folders hold today's search, and
`python -m bench.interval_transfer` reads those); nothing is trained or priced again.

    python -m bench.quality_table              # RMSLE / hit rate, one row per model (bench/RESULTS.md)
    python -m bench.quality_table --long       # one line per report: lean, interval coverage, vs ridge
    python -m bench.quality_table --buckets    # hit rate / lean / raw interval coverage per truth price bucket
    python -m bench.quality_table --recipes    # the recipe changes tried, chosen on validation
    python -m bench.quality_table --paired     # item by item with 95% intervals (evaluate.py --compare)
    python -m bench.quality_table --blend      # the two adapters' guesses blended (bench.blend)

To make the reports again on a GPU, `python -m bench.quality_runs` trains and scores one recipe on every split.
"""
from __future__ import annotations

import argparse
import os
import subprocess
import sys
from pathlib import Path

from bench.results_table import bucket_table, long_table, matrix, parse_entries, split_label

ROOT = Path(__file__).resolve().parent.parent
D = "bench/results/quality"
SPLITS = ("pool", "balanced", "loso-mixed", "loso-musical-appliances")
HELD_OUT = SPLITS[2:]
SHIPPED_SMOL = "SmolLM2 pricer, answer padded (shipped)"


def main_rows() -> list[str]:
    """LABEL=DIR for the main table: base, reference stack and pricer of both models."""
    rows = [f"SmolLM2 base={D}/smol-base-{s}" for s in SPLITS]
    rows += [f"SmolLM2 reference stack (peft), unpadded recipe={D}/smol-ref-{s}" for s in SPLITS]
    rows += [f"SmolLM2 pricer, unpadded recipe={D}/smol-pricer-{s}" for s in SPLITS]
    rows += [f"{SHIPPED_SMOL}={D}/smol-w4-{s}" for s in SPLITS]
    rows += [f"Gemma 3 270M base={D}/gemma-base-{s}" for s in SPLITS]
    rows += [f"Gemma 3 270M reference stack (peft)={D}/gemma-ref-{s}" for s in SPLITS]
    rows += [f"Gemma 3 270M pricer={D}/gemma-lr2e-4-{s}" for s in SPLITS]
    return rows


def recipe_rows() -> list[str]:
    """LABEL=DIR for the recipe changes, each beside the recipe it changes, validation first."""
    rows = [f"SmolLM2 unpadded (QLoRA, 3 epochs)={D}/smol-pricer-{s}" for s in ("val",) + SPLITS]
    for run, label in (("p10", "data.resample_power 1"), ("e6best", "6 epochs, best epoch kept"),
                       ("bf16", "16-bit base"), ("w4", "answer padded to 4 digits (shipped)"),
                       ("r64lr2", "rank 64, lr 2e-4")):
        rows += [f"SmolLM2 {label}={D}/smol-{run}-{s}" for s in ("val",) + SPLITS
                 if (ROOT / D / f"smol-{run}-{s}").is_dir()]
    rows += [f"Gemma shipped (QLoRA, lr 2e-4)={D}/gemma-lr2e-4-{s}" for s in ("val",) + SPLITS]
    for run, label in (("bf16", "16-bit base"), ("e4best", "4 epochs, best epoch kept"),
                       ("w4", "answer padded to 4 digits")):
        rows += [f"Gemma {label}={D}/gemma-{run}-{s}" for s in ("val",) + SPLITS]
    return rows


def shipped(split: str) -> tuple[str, str, str]:
    """(SmolLM2 shipped, Gemma shipped, SmolLM2 unpadded) report folders of a split; held out: trained without it."""
    return f"{D}/smol-w4-{split}", f"{D}/gemma-lr2e-4-{split}", f"{D}/smol-pricer-{split}"


def compare(*folders: str) -> None:
    """evaluate.py --compare on these folders, from its paired section on: each against the first."""
    out = subprocess.run([sys.executable, "evaluate.py", "--compare", *folders], cwd=ROOT, capture_output=True,
                         text=True)
    if out.returncode:
        raise SystemExit(out.stderr.strip().splitlines()[-1] if out.stderr.strip() else "evaluate.py --compare failed")
    text = out.stdout
    print(text[text.find("paired"):] if "paired" in text else text, flush=True)


def paired() -> None:
    """Each shipped adapter against ridge; the best-epoch and padded runs against the recipes they change;
    each point estimate on held-out musical-appliances against the mean."""
    for s in SPLITS:
        smol, gemma, unpadded = shipped(s)
        print(f"== {s}", flush=True)
        compare(f"{D}/ridge-{s}", unpadded, smol, gemma)
    for label, smol_run, gemma_run in (("best epoch kept", "e6best", "e4best"), ("answer padded", "w4", "w4")):
        for s in ("val",) + SPLITS:
            _, gemma, unpadded = shipped(s)
            print(f"== {s}, {label} against the recipe it changes", flush=True)
            compare(unpadded, f"{D}/smol-{smol_run}-{s}")
            compare(gemma, f"{D}/gemma-{gemma_run}-{s}")
    print("== held-out musical-appliances, each estimate against the mean", flush=True)
    compare(*(f"{D}/smol-estimate-{e}-loso-musical-appliances" for e in ("mean", "log-mean", "median", "hit")),
            f"{D}/ridge-loso-musical-appliances")


def blend() -> None:
    """The unpadded SmolLM2 recipe and Gemma's, geometric mean of the two guesses, on every split."""
    pairs = [(name, f"{D}/smol-pricer-{s}", f"{D}/gemma-lr2e-4-{s}")
             for name, s in (("validation", "val"), ("pool", "pool"), ("balanced", "balanced"))]
    pairs += [(f"held-out-{s[5:]}", f"{D}/smol-pricer-{s}", f"{D}/gemma-lr2e-4-{s}") for s in HELD_OUT]
    args = [a for name, first, second in pairs for a in ("--split", name, first, second)]
    subprocess.run([sys.executable, "-m", "bench.blend", "--weights", "0,0.5,1", *args], cwd=ROOT, check=True)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    mode = ap.add_mutually_exclusive_group()
    for flag, what in (("--paired", "item by item with 95%% intervals"), ("--blend", "the two adapters blended")):
        mode.add_argument(flag, action="store_true", help=what)
    ap.add_argument("--recipes", action="store_true", help="the recipe changes tried instead of the main rows")
    ap.add_argument("--long", action="store_true", help="one line per report: lean, interval coverage, vs ridge")
    ap.add_argument("--buckets", action="store_true",
                    help="hit rate / lean / interval coverage as evaluated (n) per truth price bucket")
    args = ap.parse_args()
    if args.paired:
        return paired()
    if args.blend:
        return blend()
    os.chdir(ROOT)
    rows = parse_entries(recipe_rows() if args.recipes else main_rows())
    baselines = {split_label(r): r for _, r in parse_entries([f"{D}/ridge-{s}" for s in SPLITS])}
    print(bucket_table(rows, baselines) if args.buckets else long_table(rows, baselines) if args.long
          else matrix(rows, baselines))


if __name__ == "__main__":
    main()
