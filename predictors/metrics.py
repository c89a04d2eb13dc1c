"""The course's metrics: absolute error, RMSLE, colours, and the same by truth price bucket.

Colours: green when the error is < $40 or < 20% of the truth, orange when < $80 or < 40%,
red otherwise.

A failure is a reply the predictor could not read a price from (a guess of None). It is never
a hit: it is counted in `failures` and coloured red, a miss. Its absolute error and squared
log error are those of a $0 guess, the course's scoring, so that avg_error and RMSLE stay
averages over every item (see `compute_metrics` for why failures are not left out). The
course's Tester also coloured a failure as a $0 guess, which makes a failure on an item
under $40 a green "hit"; `failures_as_zero=True` restores that, for comparing with its numbers.
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


def scored_guess(guess: float | None) -> float:
    """The guess avg_error and RMSLE score: a failure (None) counts as a guess of $0."""
    return 0.0 if guess is None else float(guess)


def colours_for(truths: Sequence[float], guesses: Sequence[float | None], failures_as_zero: bool = False) -> list[str]:
    """Each item's colour; a failure is red (a miss), or with failures_as_zero the colour of a $0 guess."""
    return ["red" if g is None and not failures_as_zero else colour_for(abs(scored_guess(g) - t), t)
            for t, g in zip(truths, guesses)]


def _scores(truths: Sequence[float], guesses: Sequence[float | None], failures_as_zero: bool) -> dict:
    n = len(truths)
    filled = [scored_guess(g) for g in guesses]
    errors = [abs(g - t) for g, t in zip(filled, truths)]
    sles = [(math.log1p(g) - math.log1p(t)) ** 2 for g, t in zip(filled, truths)]
    colours = colours_for(truths, guesses, failures_as_zero)
    return {
        "n": n,
        "avg_error": sum(errors) / n,
        "rmsle": math.sqrt(sum(sles) / n),
        "hit_rate": colours.count("green") / n,
        "orange": colours.count("orange") / n,
        "red": colours.count("red") / n,
        "failures": sum(g is None for g in guesses),
    }


def compute_metrics(truths: Sequence[float], guesses: Sequence[float | None], failures_as_zero: bool = False) -> dict:
    """The course's metrics over all items plus a breakdown by truth price bucket; failures are misses.

    A failure (None) counts in hit_rate, orange and red as a miss (red), unless failures_as_zero
    (the course's Tester: a $0 guess, colour included). In avg_error and RMSLE it always scores
    as a $0 guess rather than being left out: leaving failures out would average each model over
    a different set of items, the ones it answered, so a model that gave up on the hard items
    would look better than one that tried them, and two reports would no longer compare. A $0
    guess costs a failure the whole truth in avg_error and log1p(truth) in RMSLE's terms, which
    the summary states beside the number of failures.
    """
    if len(truths) != len(guesses):
        raise ValueError(f"{len(truths)} truths but {len(guesses)} guesses: pass one guess per item")
    if not truths:
        raise ValueError("no items to score: check --split and --limit")
    metrics = {**_scores(truths, guesses, failures_as_zero), "score_failures_as_zero": failures_as_zero}
    metrics["by_bucket"] = []
    for name, lo, hi in BUCKETS:
        idx = [i for i, t in enumerate(truths) if lo <= t < hi]
        row = {"bucket": name, "n": len(idx), "avg_error": None, "rmsle": None, "hit_rate": None, "failures": 0}
        if idx:
            sub = _scores([truths[i] for i in idx], [guesses[i] for i in idx], failures_as_zero)
            row.update(avg_error=sub["avg_error"], rmsle=sub["rmsle"], hit_rate=sub["hit_rate"],
                       failures=sub["failures"])
        metrics["by_bucket"].append(row)
    return metrics
