"""The course's hit rule: a guess is a hit (green) when it is within $40 or within 20% of the truth.

The expected predictor's "hit" estimate aims at it (`hit_window`, expected.most_likely_hit) and the
harness scores by it (evaluation/metrics.py's colour_for and hit rate), so it is defined here, below both.
"""
from __future__ import annotations

GREEN_ERROR, GREEN_RATIO = 40.0, 0.2


def hit_window(truth: float) -> tuple[float, float]:
    """(low, high): the open interval of guesses the course's metric scores green (a hit) for `truth`.

    A guess g is green when |g - truth| < GREEN_ERROR or < GREEN_RATIO * truth (evaluation.metrics.colour_for),
    so the window is the wider of truth -+ GREEN_ERROR and truth * (1 -+ GREEN_RATIO); for truth 0,
    (-GREEN_ERROR, GREEN_ERROR).
    """
    return (min(truth - GREEN_ERROR, (1 - GREEN_RATIO) * truth),
            max(truth + GREEN_ERROR, (1 + GREEN_RATIO) * truth))
