"""Two evaluations of the same items, compared item by item: is the difference more than the luck of which
items the test split holds?

`evaluate.py --compare A B ...` prints each report's metrics side by side; when the folders hold their
predictions.csv it also prints, for each report after the first, its difference from the first on the
items both scored, with a 95% interval from the paired bootstrap: draw the n items with replacement, the
same draw for both reports, recompute each metric for each report and take the difference; the 2.5th and
97.5th percentiles of 2,000 such differences are the interval. An interval that holds 0 says these items
cannot tell the two apart. (It measures the sampling of items only; a second training run with another
seed moves the numbers too, and no interval here can see that.)

Items are matched by title and truth, not by row: predictions.csv follows prompt length, which differs
between tokenizers. Guesses are scored as evaluation.metrics scores them (item_scores), so a difference
of the full sample is exactly the difference of the two reports' numbers when they cover the same items.

    from evaluation.paired import paired_differences
    d = paired_differences(truths, guesses_a, guesses_b)   # {"n", "rmsle": (diff, low, high), ...}
"""
from __future__ import annotations

import os
from collections import defaultdict
from typing import Sequence

import numpy as np

from evaluation.metrics import item_scores
from evaluation.report import ReportError, read_predictions

RESAMPLES = 2000
LEVEL = 0.95
_CHUNK = 250   # resamples drawn at once: 250 x n indices stay small for any test split


def match(rows_a: Sequence[dict], rows_b: Sequence[dict]) -> tuple[list[float], list, list]:
    """(truths, guesses of A, guesses of B) for the items both lists hold, keyed by (title, truth); an item
    listed k times in one and m times in the other is paired min(k, m) times, in file order."""
    waiting: dict[tuple, list] = defaultdict(list)
    for row in rows_b:
        waiting[(row["title"], row["truth"])].append(row["guess"])
    truths, guesses_a, guesses_b = [], [], []
    for row in rows_a:
        queue = waiting.get((row["title"], row["truth"]))
        if queue:
            truths.append(row["truth"])
            guesses_a.append(row["guess"])
            guesses_b.append(queue.pop(0))
    return truths, guesses_a, guesses_b


def paired_differences(truths: Sequence[float], guesses_a: Sequence[float | None],
                       guesses_b: Sequence[float | None], failures_as_zero: bool = False,
                       resamples: int = RESAMPLES, level: float = LEVEL, seed: int = 0) -> dict:
    """B minus A on RMSLE, hit rate and average error, each as (difference, low, high): the difference over all
    items and the central `level` interval of the paired bootstrap (seeded, so the same files give the same
    interval). Raises ValueError when there are no items."""
    if not truths:
        raise ValueError("no items in common to compare")
    per_item = {}
    for name, guesses in (("a", guesses_a), ("b", guesses_b)):
        errors, sles, colours = item_scores(truths, guesses, failures_as_zero)
        per_item[name] = {"rmsle": np.array(sles), "hit_rate": np.array([c == "green" for c in colours], float),
                          "avg_error": np.array(errors)}
    finish = {"rmsle": np.sqrt, "hit_rate": lambda m: m, "avg_error": lambda m: m}
    n, rng = len(truths), np.random.default_rng(seed)
    draws = {k: [] for k in finish}
    for start in range(0, resamples, _CHUNK):
        idx = rng.integers(0, n, size=(min(_CHUNK, resamples - start), n))
        for k, f in finish.items():
            draws[k].append(f(per_item["b"][k][idx].mean(axis=1)) - f(per_item["a"][k][idx].mean(axis=1)))
    tail = (1 - level) / 2 * 100
    out: dict = {"n": n, "resamples": resamples, "level": level}
    for k, f in finish.items():
        low, high = np.percentile(np.concatenate(draws[k]), [tail, 100 - tail])
        out[k] = (float(f(per_item["b"][k].mean()) - f(per_item["a"][k].mean())), float(low), float(high))
    return out


def paired_folders(first: str | os.PathLike, second: str | os.PathLike, failures_as_zero: bool = False) -> dict:
    """paired_differences of two report folders' predictions.csv (second minus first); ReportError when either
    cannot be read, ValueError when they share no items."""
    return paired_differences(*match(read_predictions(first), read_predictions(second)),
                              failures_as_zero=failures_as_zero)


def verdict(difference: tuple[float, float, float], lower_is_better: bool) -> str:
    """"better", "worse" or "not told apart": where the interval of (difference, low, high) lies against 0."""
    _, low, high = difference
    if (high < 0) if lower_is_better else (low > 0):
        return "better"
    if (low > 0) if lower_is_better else (high < 0):
        return "worse"
    return "not told apart"


def format_paired(base: str, comparisons: Sequence[tuple[str, dict | str]]) -> str:
    """Lines for --compare: each report's difference from `base` (a dict from paired_differences), or the
    reason (a str) it has none."""
    lines = [f"paired against {base} (the items both scored; B - A with a {LEVEL:.0%} bootstrap interval):"]
    for name, d in comparisons:
        if isinstance(d, str):
            lines.append(f"  {name}: {d}")
            continue
        r, h, e = d["rmsle"], d["hit_rate"], d["avg_error"]
        lines.append(f"  {name} ({d['n']:,} items): RMSLE {r[0]:+.3f} [{r[1]:+.3f}, {r[2]:+.3f}]  "
                     f"hit rate {h[0] * 100:+.1f} [{h[1] * 100:+.1f}, {h[2] * 100:+.1f}] points  "
                     f"avg error {_dollars(e[0])} [{_dollars(e[1])}, {_dollars(e[2])}]")
    return "\n".join(lines)


def _dollars(value: float) -> str:
    return f"{'-' if value < 0 else '+'}${abs(value):,.2f}"


def compare_folders(folders: Sequence[str | os.PathLike], reports: Sequence[tuple[str, dict]]) -> str | None:
    """The paired block of --compare for report folders (reports: load_reports of the same folders), or None
    when fewer than two are given. A folder whose predictions cannot be paired gets its reason on its line;
    when the first has none, the block is that one line."""
    if len(folders) < 2:
        return None
    try:
        base_rows = read_predictions(folders[0])
    except ReportError as e:
        return f"not paired against {reports[0][0]}: {e}"
    zero = reports[0][1].get("score_failures_as_zero", False)
    comparisons: list[tuple[str, dict | str]] = []
    for folder, (name, report) in zip(folders[1:], reports[1:]):
        if report.get("score_failures_as_zero", False) != zero:
            comparisons.append((name, "not paired: it scores failures otherwise (--score-failures-as-zero)"))
            continue
        try:
            truths, guesses_a, guesses_b = match(base_rows, read_predictions(folder))
        except ReportError as e:
            comparisons.append((name, f"not paired: {e}"))
            continue
        if not truths:
            comparisons.append((name, "not paired: no items in common (another split or seed?)"))
            continue
        comparisons.append((name, paired_differences(truths, guesses_a, guesses_b, failures_as_zero=zero)))
    return format_paired(reports[0][0], comparisons)
