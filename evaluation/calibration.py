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

Validation is drawn from the sources the adapter trained on, so its margin holds for listings like those and
not for a source the model never saw (the shipped SmolLM2 margin covers 61% of held-out `mixed`). With
--held-out, the margin is fitted leave-one-source-out instead: given report folders of adapters of the same
recipe each trained without one source and tested on it (evaluate.py --holdout-source S, raw intervals), it
is the margin whose coverage is closest to the target on the held-out source it fits worst (minimax of
|coverage - target| over the sources; the smallest such margin), and the file records each source's coverage
at it and validation's:

    python -m evaluation.calibration --adapter A --held-out HELD_OUT_MIXED HELD_OUT_MUSICAL [--check ...]
"""
from __future__ import annotations

import argparse
import bisect
import json
import math
import sys
from pathlib import Path
from typing import Sequence

from evaluation.metrics import interval_scores
from evaluation.report import ReportError, read_predictions, read_report
from predictors.interval_margin import FILE, MARGIN_RANGE, SEARCH_KEYS, CalibrationError, search_mismatch, widen
from utils.atomic import atomic_write_text

COVERAGE = 0.8
# A leave-one-source-out margin is an item's score plus this, so that the rounding of exp and log in `widen`
# cannot leave out the items on the edge that the search counted in (scores of distinct items differ by far more).
EDGE = 1e-9


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


def covered_share(sorted_scores: Sequence[float], margin: float) -> float:
    """The share of items a margin covers, from their conformity scores sorted ascending (score <= margin)."""
    return bisect.bisect_right(sorted_scores, margin) / len(sorted_scores)


def fit_worst_case(groups: Sequence[tuple[Sequence[float], Sequence[tuple[float, float]]]],
                   coverage: float = COVERAGE) -> tuple[float, float]:
    """(margin, distance): the margin in MARGIN_RANGE whose coverage is closest to `coverage` on the group of
    (truths, intervals) it fits worst, i.e. that minimises max over groups of |coverage_g(margin) - coverage|,
    and that worst distance. Coverage only changes at an item's score, so each score is a candidate; among
    equally good margins the smallest (the narrowest intervals) wins."""
    ordered = [sorted(scores(truths, intervals)) for truths, intervals in groups]
    if not ordered or not all(ordered):
        raise CalibrationError("a leave-one-source-out fit needs at least one held-out group, each with items")
    low, high = MARGIN_RANGE
    candidates = sorted({s for group in ordered for s in group if low < s <= high - EDGE} | {low})
    best, best_worst = low, math.inf
    for margin in candidates:
        worst = max(abs(covered_share(group, margin) - coverage) for group in ordered)
        if worst < best_worst - 1e-12:
            best, best_worst = margin, worst
    return (best if best == low else best + EDGE), best_worst


def _raw(folder: str | Path) -> tuple[list[float], list[tuple[float, float]], dict]:
    """read_intervals of a folder whose intervals are the model's own; CalibrationError for widened ones."""
    truths, intervals, report = read_intervals(folder)
    if report.get("interval_margin"):
        raise CalibrationError(f"{folder}: its intervals were already widened (margin "
                               f"{report['interval_margin']:.3f}); evaluate again with --interval-calibration off")
    return truths, intervals, report


def fit(adapter: str | Path, predictions: str | Path, coverage: float = COVERAGE) -> dict:
    """Fit the margin on a validation report of `adapter`'s raw intervals and write it beside the adapter."""
    truths, intervals, report = _raw(predictions)
    record = _record(margin=fit_margin(truths, intervals, coverage), coverage=coverage, truths=truths,
                     intervals=intervals, report=report, predictions=predictions,
                     method="split-conformal on log interval bounds (CQR)")
    atomic_write_text(Path(adapter) / FILE, json.dumps(record, indent=2) + "\n")
    return record


def _record(*, margin: float, coverage: float, truths: Sequence[float], intervals: Sequence[tuple[float, float]],
            report: dict, predictions: str | Path, method: str) -> dict:
    """The fields every stored fit has: the margin, the target, the validation report's coverage before and
    after it (predictors/interval_margin.py checks them when it reads the file back), and the search settings of
    the evaluation it was fitted on (a margin fitted at one search width does not hold at another)."""
    return {"margin": margin, "coverage": coverage, "n": len(truths), "split": report.get("split"),
            "fitted_on": str(predictions), "raw_coverage": coverage_of(truths, intervals),
            "calibrated_coverage": coverage_of(truths, intervals, margin), "method": method,
            **{key: report[key] for key in SEARCH_KEYS if report.get(key) is not None}}


def fit_margin_or_none(truths: Sequence[float], intervals: Sequence[tuple[float, float]],
                       coverage: float = COVERAGE) -> float | None:
    """fit_margin, or None when there are too few items for a margin of their own."""
    try:
        return fit_margin(truths, intervals, coverage)
    except CalibrationError:
        return None


def fit_held_out(adapter: str | Path, predictions: str | Path, held_out: Sequence[str | Path],
                 coverage: float = COVERAGE) -> dict:
    """Fit the margin leave-one-source-out (fit_worst_case over the `held_out` report folders) and write it
    beside the adapter, with each held-out source's coverage at it and the validation report's."""
    truths, intervals, report = _raw(predictions)
    groups = []
    for folder in held_out:
        group = _raw(folder)
        if not group[2].get("holdout_source"):
            raise CalibrationError(f"{folder}: its report.json names no held-out source; pass evaluations of "
                                   "adapters trained without a source (evaluate.py --holdout-source S)")
        if report.get("base") and group[2].get("base") and group[2]["base"] != report["base"]:
            raise CalibrationError(f"{folder}: evaluates a {group[2]['base']} adapter, {predictions} a "
                                   f"{report['base']} one; pass held-out runs of the adapter's own recipe")
        differ = search_mismatch(group[2], report)
        if differ:
            raise CalibrationError(f"{folder}: searched otherwise than {predictions} "
                                   f"({differ.replace('now', 'there')}); evaluate the held-out sources with the "
                                   "validation run's search settings")
        groups.append(group)
    margin, worst = fit_worst_case([(t, iv) for t, iv, _ in groups], coverage)
    record = _record(margin=margin, coverage=coverage, truths=truths, intervals=intervals, report=report,
                     predictions=predictions,
                     method="leave-one-source-out: the margin minimising the worst held-out source's distance from "
                            "the target coverage (split-conformal scores on log interval bounds)")
    record.update(validation_margin=fit_margin_or_none(truths, intervals, coverage), worst_distance=worst,
                  held_out=[{"folder": str(folder), "source": r["holdout_source"], "n": len(t),
                             "raw_coverage": coverage_of(t, iv), "coverage": coverage_of(t, iv, margin)}
                            for folder, (t, iv, r) in zip(held_out, groups)])
    atomic_write_text(Path(adapter) / FILE, json.dumps(record, indent=2) + "\n")
    return record


def main(argv: Sequence[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m evaluation.calibration", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--adapter", required=True, help="the adapter folder; the margin is written beside its weights")
    ap.add_argument("--predictions",
                    help="evaluate.py report folder of the validation split (default ADAPTER/eval-val)")
    ap.add_argument("--coverage", type=float, default=COVERAGE, help="the coverage to reach (default 0.8)")
    ap.add_argument("--held-out", nargs="+", metavar="DIR",
                    help="report folders of adapters of the same recipe each trained without one source and tested "
                         "on it: fit the margin leave-one-source-out (the worst source closest to --coverage)")
    ap.add_argument("--check", nargs="*", default=[], help="other report folders: coverage before and after")
    args = ap.parse_args(argv)
    try:
        if not 0 < args.coverage < 1:
            raise CalibrationError(f"--coverage must be between 0 and 1, not {args.coverage}")
        predictions = args.predictions or Path(args.adapter) / "eval-val"
        if args.held_out:
            record = fit_held_out(args.adapter, predictions, args.held_out, args.coverage)
        else:
            record = fit(args.adapter, predictions, args.coverage)
        if record["split"] != "val":
            print(f"note: fitted on the {record['split']} split; fit on validation to keep test splits honest")
        print(describe_fit(record, Path(args.adapter) / FILE))
        for folder in args.check:
            truths, intervals, _ = read_intervals(folder)
            print(f"{folder}: {len(truths)} items, coverage {coverage_of(truths, intervals):.1%} -> "
                  f"{coverage_of(truths, intervals, record['margin']):.1%}")
    except (CalibrationError, ReportError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    return 0


def describe_fit(record: dict, path: Path) -> str:
    """What the CLI prints of a fit: the margin, and each fitting report's coverage before and after it."""
    margin = f"margin {record['margin']:+.3f} (x{math.exp(record['margin']):.2f} outward)"
    validation = (f"{record['n']} items: coverage {record['raw_coverage']:.1%} -> "
                  f"{record['calibrated_coverage']:.1%}")
    if "held_out" not in record:
        return f"{margin} from {validation}; wrote {path}"
    lines = [f"{margin}, leave-one-source-out: the worst of {len(record['held_out'])} held-out sources is "
             f"{record['worst_distance'] * 100:.1f} points from {record['coverage']:.0%}; wrote {path}"]
    lines += [f"  held-out {h['source']} ({h['folder']}): {h['n']} items, coverage {h['raw_coverage']:.1%} -> "
              f"{h['coverage']:.1%}" for h in record["held_out"]]
    own = record["validation_margin"]
    lines.append(f"  {record['split']} ({record['fitted_on']}): {validation}"
                 + ("" if own is None else f" (its own fit: margin {own:+.3f})"))
    return "\n".join(lines)


if __name__ == "__main__":
    sys.exit(main())
