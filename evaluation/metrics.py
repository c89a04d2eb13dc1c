"""The course's metrics: absolute error, RMSLE, colours, and the same by truth price bucket.

Colours: green when the error is < $40 or < 20% of the truth (the hit rule, predictors/hit_rule.py, which the
expected predictor's "hit" estimate aims at), orange when < $80 or < 40%, red otherwise.

A failure is a reply the predictor could not read a price from (a guess of None). It is never
a hit: it is counted in `failures` and coloured red, a miss. Its absolute error and squared
log error are those of a $0 guess, the course's scoring, so that avg_error and RMSLE stay
averages over every item (see `compute_metrics` for why failures are not left out). The
course's Tester also coloured a failure as a $0 guess, which makes a failure on an item
under $40 a green "hit"; `failures_as_zero=True` restores that, for comparing with its numbers.
"""
from __future__ import annotations

import math
import statistics
from typing import Sequence

from predictors.hit_rule import GREEN_ERROR, GREEN_RATIO

MIN_GUESS = 0.5   # the lowest price curation keeps: a guess below it counts as this in the log ratio
Interval = tuple[float | None, float | None]

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


def log_ratio(truths: Sequence[float], guesses: Sequence[float | None]) -> float | None:
    """The mean of ln(guess / truth) over the items with a guess: how far, and which way, guesses lean.

    0 is unbiased; -0.69 means guesses at half the truth on average (in log terms), +0.69 at twice
    it. Failures have no guess and are left out; a guess below MIN_GUESS counts as MIN_GUESS.
    """
    ratios = [math.log(max(g, MIN_GUESS) / t) for t, g in zip(truths, guesses) if g is not None and t > 0]
    return statistics.fmean(ratios) if ratios else None


def interval_scores(truths: Sequence[float], intervals: Sequence[Interval | None]) -> dict:
    """{"n", "coverage", "median_width"} of the stated intervals: the share of truths inside [low, high]."""
    pairs = [(t, iv) for t, iv in zip(truths, intervals) if iv is not None and None not in iv]
    if not pairs:
        return {"n": 0, "coverage": None, "median_width": None}
    return {"n": len(pairs), "coverage": sum(lo <= t <= hi for t, (lo, hi) in pairs) / len(pairs),
            "median_width": statistics.median(hi - lo for _, (lo, hi) in pairs)}


def item_scores(truths: Sequence[float], guesses: Sequence[float | None],
                failures_as_zero: bool = False) -> tuple[list[float], list[float], list[str]]:
    """Each item's (absolute error, squared log error, colour): avg_error, RMSLE and the hit rate are their
    means (RMSLE the root of one); a failure scores as a $0 guess, and its colour is red unless failures_as_zero."""
    filled = [scored_guess(g) for g in guesses]
    errors = [abs(g - t) for g, t in zip(filled, truths)]
    sles = [(math.log1p(g) - math.log1p(t)) ** 2 for g, t in zip(filled, truths)]
    return errors, sles, colours_for(truths, guesses, failures_as_zero)


def _scores(truths: Sequence[float], guesses: Sequence[float | None], failures_as_zero: bool) -> dict:
    n = len(truths)
    errors, sles, colours = item_scores(truths, guesses, failures_as_zero)
    return {
        "n": n,
        "avg_error": sum(errors) / n,
        "rmsle": math.sqrt(sum(sles) / n),
        "hit_rate": colours.count("green") / n,
        "orange": colours.count("orange") / n,
        "red": colours.count("red") / n,
        "failures": sum(g is None for g in guesses),
        "log_ratio": log_ratio(truths, guesses),
    }


def compute_metrics(truths: Sequence[float], guesses: Sequence[float | None], failures_as_zero: bool = False,
                    intervals: Sequence[Interval | None] | None = None) -> dict:
    """The course's metrics over all items plus a breakdown by truth price bucket; failures are misses.

    A failure (None) counts in hit_rate, orange and red as a miss (red), unless failures_as_zero
    (the course's Tester: a $0 guess, colour included). In avg_error and RMSLE it always scores
    as a $0 guess rather than being left out: leaving failures out would average each model over
    a different set of items, the ones it answered, so a model that gave up on the hard items
    would look better than one that tried them, and two reports would no longer compare. A $0
    guess costs a failure the whole truth in avg_error and log1p(truth) in RMSLE's terms, which
    the summary states beside the number of failures.

    Every bucket also gets `log_ratio` (the guesses' lean, so that regression to the middle shows:
    cheap items over-priced, dear ones under-priced) and, when the predictor states `intervals`,
    their coverage (report["interval"] over all items).
    """
    if len(truths) != len(guesses):
        raise ValueError(f"{len(truths)} truths but {len(guesses)} guesses: pass one guess per item")
    if not truths:
        raise ValueError("no items to score: check --split and --limit")
    metrics = {**_scores(truths, guesses, failures_as_zero), "score_failures_as_zero": failures_as_zero}
    if intervals is not None:
        metrics["interval"] = interval_scores(truths, intervals)
    metrics["by_bucket"] = []
    for name, lo, hi in BUCKETS:
        idx = [i for i, t in enumerate(truths) if lo <= t < hi]
        row = {"bucket": name, "n": len(idx), "avg_error": None, "rmsle": None, "hit_rate": None, "failures": 0,
               "log_ratio": None}
        if idx:
            sub = _scores([truths[i] for i in idx], [guesses[i] for i in idx], failures_as_zero)
            row.update({k: sub[k] for k in ("avg_error", "rmsle", "hit_rate", "failures", "log_ratio")})
            if intervals is not None:
                row["coverage"] = interval_scores([truths[i] for i in idx], [intervals[i] for i in idx])["coverage"]
        metrics["by_bucket"].append(row)
    return metrics
