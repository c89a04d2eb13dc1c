"""Intervals that cover what they say: widening the expected predictor's 80% interval by a margin fitted
on validation (conformalized quantile regression, Romano, Patterson and Candes 2019, in log price).

The model's own 10th-90th percentiles are too narrow for a fine-tuned pricer (the shipped SmolLM2
adapter's cover 50% of validation truths, not 80%). For each validation item the conformity score is
how far the truth falls outside its interval in log terms, negative inside:

    E_i = max(ln low_i - ln y_i, ln y_i - ln high_i)

and the margin q is the ceil((n + 1) * 0.8)-th smallest score. Every later interval becomes
(low * e^-q, high * e^q); on items exchangeable with the validation ones at least 80% are then
covered. The margin is fitted once per adapter and stored beside it:

    python evaluate.py --adapter A --split val --predictor expected --interval-calibration off --out A/eval-val
    python -m evaluation.calibration --adapter A [--predictions A/eval-val] [--check OTHER_EVAL ...]

after which predict.py and evaluate.py widen that adapter's intervals (--interval-calibration off
shows the model's raw quantiles). Reading the stored margin back and widening by it are the predictor's
(predictors/interval_margin.py); fitting it is here.
"""
from __future__ import annotations

import argparse
import json
import math
import sys
from pathlib import Path
from typing import Sequence

from evaluation.metrics import interval_scores
from evaluation.report import ReportError, read_predictions, read_report
from predictors.interval_margin import FILE, CalibrationError, widen
from utils.atomic import atomic_write_text

COVERAGE = 0.8


def scores(truths: Sequence[float], intervals: Sequence[tuple[float, float]]) -> list[float]:
    """Each item's conformity score: how far (in log price) the truth lies outside its interval, negative inside."""
    return [max(math.log(lo / y), math.log(y / hi)) for y, (lo, hi) in zip(truths, intervals)]


def fit_margin(truths: Sequence[float], intervals: Sequence[tuple[float, float]], coverage: float = COVERAGE) -> float:
    """The log margin q whose widened intervals cover `coverage` of exchangeable items (the split-conformal rank)."""
    n = len(truths)
    rank = math.ceil((n + 1) * coverage)
    if n == 0 or rank > n:
        raise CalibrationError(f"{n} items with intervals cannot calibrate {coverage:.0%} coverage "
                               f"(needs at least {math.ceil(coverage / (1 - coverage))})")
    return sorted(scores(truths, intervals))[rank - 1]


def coverage_of(truths: Sequence[float], intervals: Sequence[tuple[float, float]], margin: float = 0.0) -> float:
    """The share of truths inside their intervals widened by `margin` (metrics.interval_scores)."""
    return interval_scores(truths, [widen(lo, hi, margin) for lo, hi in intervals])["coverage"]


def read_intervals(folder: str | Path) -> tuple[list[float], list[tuple[float, float]], dict]:
    """(truths, intervals, report) of an evaluate.py report folder, over the items whose interval is stated."""
    folder = Path(folder)
    report = read_report(folder / "report.json")
    rows = read_predictions(folder)
    if rows and all(r["low"] is None for r in rows):
        raise CalibrationError(f"{folder}/predictions.csv states no intervals: evaluate with --predictor expected")
    kept = [(r["truth"], (r["low"], r["high"])) for r in rows
            if r["low"] is not None and r["high"] is not None and r["low"] > 0 and (r["truth"] or 0) > 0]
    if not kept:
        raise CalibrationError(f"{folder}/predictions.csv has no item with a stated interval and a positive truth")
    return [t for t, _ in kept], [iv for _, iv in kept], report


def fit(adapter: str | Path, predictions: str | Path, coverage: float = COVERAGE) -> dict:
    """Fit the margin on a validation report of `adapter`'s raw intervals and write it beside the adapter."""
    truths, intervals, report = read_intervals(predictions)
    if report.get("interval_margin"):
        raise CalibrationError(f"{predictions}: its intervals were already widened (margin "
                               f"{report['interval_margin']:.3f}); evaluate again with --interval-calibration off")
    margin = fit_margin(truths, intervals, coverage)
    record = {"margin": margin, "coverage": coverage, "n": len(truths), "split": report.get("split"),
              "fitted_on": str(predictions), "raw_coverage": coverage_of(truths, intervals),
              "calibrated_coverage": coverage_of(truths, intervals, margin),
              "method": "split-conformal on log interval bounds (CQR)"}
    atomic_write_text(Path(adapter) / FILE, json.dumps(record, indent=2) + "\n")
    return record


def main(argv: Sequence[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m evaluation.calibration", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--adapter", required=True, help="the adapter folder; the margin is written beside its weights")
    ap.add_argument("--predictions",
                    help="evaluate.py report folder of the validation split (default ADAPTER/eval-val)")
    ap.add_argument("--coverage", type=float, default=COVERAGE, help="the coverage to reach (default 0.8)")
    ap.add_argument("--check", nargs="*", default=[], help="other report folders: coverage before and after")
    args = ap.parse_args(argv)
    try:
        if not 0 < args.coverage < 1:
            raise CalibrationError(f"--coverage must be between 0 and 1, not {args.coverage}")
        record = fit(args.adapter, args.predictions or Path(args.adapter) / "eval-val", args.coverage)
        if record["split"] != "val":
            print(f"note: fitted on the {record['split']} split; fit on validation to keep test splits honest")
        print(f"margin {record['margin']:+.3f} (x{math.exp(record['margin']):.2f} outward) from {record['n']} items: "
              f"coverage {record['raw_coverage']:.1%} -> {record['calibrated_coverage']:.1%}; "
              f"wrote {Path(args.adapter) / FILE}")
        for folder in args.check:
            truths, intervals, _ = read_intervals(folder)
            print(f"{folder}: {len(truths)} items, coverage {coverage_of(truths, intervals):.1%} -> "
                  f"{coverage_of(truths, intervals, record['margin']):.1%}")
    except (CalibrationError, ReportError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
