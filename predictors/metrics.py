"""The course's metrics: absolute error, RMSLE, colours, and the same by truth price bucket.

Colours: green when the error is < $40 or < 20% of the truth, orange when < $80 or < 40%,
red otherwise. A guess of None (no number in the reply) is scored as $0, as the course's
Tester did, and counted in `failures` so it never passes unnoticed.
"""
from __future__ import annotations

import math
from typing import Sequence

GREEN_ERROR, GREEN_RATIO = 40.0, 0.2
ORANGE_ERROR, ORANGE_RATIO = 80.0, 0.4
BUCKETS: tuple[tuple[str, float, float], ...] = (
    ("<$10", 0.0, 10.0), ("$10-50", 10.0, 50.0), ("$50-100", 50.0, 100.0),
    ("$100-300", 100.0, 300.0), ("$300-1000", 300.0, 1000.0), (">=$1000", 1000.0, math.inf),
)


def colour_for(error: float, truth: float) -> str:
    """The course's colour: green, orange or red (strict < at every edge)."""
    ratio = error / truth if truth > 0 else math.inf
    if error < GREEN_ERROR or ratio < GREEN_RATIO:
        return "green"
    if error < ORANGE_ERROR or ratio < ORANGE_RATIO:
        return "orange"
    return "red"


def _scores(truths: Sequence[float], guesses: Sequence[float | None]) -> dict:
    n = len(truths)
    filled = [0.0 if g is None else float(g) for g in guesses]
    errors = [abs(g - t) for g, t in zip(filled, truths)]
    sles = [(math.log1p(g) - math.log1p(t)) ** 2 for g, t in zip(filled, truths)]
    colours = [colour_for(e, t) for e, t in zip(errors, truths)]
    return {
        "n": n,
        "avg_error": sum(errors) / n,
        "rmsle": math.sqrt(sum(sles) / n),
        "hit_rate": colours.count("green") / n,
        "orange": colours.count("orange") / n,
        "red": colours.count("red") / n,
        "failures": sum(g is None for g in guesses),
    }


def compute_metrics(truths: Sequence[float], guesses: Sequence[float | None]) -> dict:
    """The course's metrics over all items plus a breakdown by truth price bucket (None guesses score as $0)."""
    if len(truths) != len(guesses):
        raise ValueError(f"{len(truths)} truths but {len(guesses)} guesses: pass one guess per item")
    if not truths:
        raise ValueError("no items to score: check --split and --limit")
    metrics = _scores(truths, guesses)
    metrics["by_bucket"] = []
    for name, lo, hi in BUCKETS:
        idx = [i for i, t in enumerate(truths) if lo <= t < hi]
        row = {"bucket": name, "n": len(idx), "avg_error": None, "rmsle": None, "hit_rate": None}
        if idx:
            sub = _scores([truths[i] for i in idx], [guesses[i] for i in idx])
            row.update(avg_error=sub["avg_error"], rmsle=sub["rmsle"], hit_rate=sub["hit_rate"])
        metrics["by_bucket"].append(row)
    return metrics
