"""Interval coverage by true price: one calibration margin for all items (evaluation/calibration.py, what
ships) against one margin per band of the predicted price (Mondrian conformal: terciles of the fitting
file's point estimates), both fitted on validation and scored on test report folders.

    python -m bench.interval_by_price --fit A/eval-val --test A/eval-pool A/eval-balanced
"""
from __future__ import annotations

import argparse
import statistics
from pathlib import Path

from evaluation.calibration import COVERAGE, fit_margin
from evaluation.metrics import BUCKETS, interval_scores
from evaluation.report import read_predictions
from predictors.interval_margin import widen


def read(folder: str | Path) -> list[tuple[float, float, float, float]]:
    """(truth, guess, low, high) of the items of a report folder that state an interval."""
    return [(r["truth"], r["guess"], r["low"], r["high"]) for r in read_predictions(folder)
            if r["low"] is not None and r["guess"] is not None]


def band_margins(items, bands: int = 3) -> tuple[list[float], list[float]]:
    """Upper edges of the point-estimate bands (quantiles of the guesses) and each band's margin."""
    edges = statistics.quantiles([g for _, g, _, _ in items], n=bands) + [float("inf")]
    margins, lower = [], 0.0
    for upper in edges:
        band = [x for x in items if lower <= x[1] < upper]
        margins.append(fit_margin([t for t, *_ in band], [(lo, hi) for *_, lo, hi in band], COVERAGE))
        lower = upper
    return edges, margins


def coverage_by_bucket(items, margin_of) -> dict[str, float]:
    out = {}
    for name, lo, hi in BUCKETS + (("all", 0.0, float("inf")),):
        sub = [(t, widen(low, high, margin_of(g))) for t, g, low, high in items if lo <= t < hi]
        if sub:
            out[name] = interval_scores([t for t, _ in sub], [iv for _, iv in sub])["coverage"]
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--fit", required=True, help="report folder with raw intervals (validation)")
    ap.add_argument("--test", nargs="+", required=True, help="report folders with raw intervals")
    args = ap.parse_args()
    fit = read(args.fit)
    one = fit_margin([t for t, *_ in fit], [(lo, hi) for *_, lo, hi in fit])
    edges, margins = band_margins(fit)
    print(f"one margin {one:+.3f}; by predicted price: " + ", ".join(
        f"<${e:,.0f}: {m:+.3f}" if e != float("inf") else f"rest: {m:+.3f}" for e, m in zip(edges, margins)))
    ways = {"one margin": lambda g: one,
            "by predicted price": lambda g: next(m for e, m in zip(edges, margins) if g < e)}
    for folder in args.test:
        items = read(folder)
        for label, margin_of in ways.items():
            cov = coverage_by_bucket(items, margin_of)
            widths = [widen(lo, hi, margin_of(g)) for _, g, lo, hi in items]
            ratio = statistics.median(b / max(a, 0.5) for a, b in widths)
            print(f"{folder} [{label}]: " + "  ".join(f"{k} {100 * v:.0f}%" for k, v in cov.items())
                  + f"  (median high/low {ratio:.1f})")


if __name__ == "__main__":
    main()
