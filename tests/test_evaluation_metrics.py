"""evaluation/metrics.py: the course's colours at their edges and the metrics, by hand."""
from __future__ import annotations

import math

import pytest

from evaluation.metrics import colour_for, colours_for, compute_metrics


@pytest.mark.parametrize("error, truth, colour", [
    (39.99, 100, "green"),
    (40, 100, "orange"),    # 40 is not < 40 and 40/100 = 0.4 is not < 0.2
    (60, 300, "orange"),    # 60/300 = 0.2 exactly: not < 0.2
    (59.99, 300, "green"),
    (199, 1000, "green"),   # ratio 0.199
    (79.99, 200, "orange"),
    (80, 200, "red"),       # 80 is not < 80 and 80/200 = 0.4 is not < 0.4
    (80, 201, "orange"),    # ratio just under 0.4
    (400, 1000, "red"),     # ratio 0.4 exactly, error far above 80
    (399, 1000, "orange"),
    (0, 0, "green"),
    (50, 0, "orange"),      # a truth of 0 has no ratio; the absolute edges still apply
])
def test_colour_edges(error, truth, colour):
    assert colour_for(error, truth) == colour


def test_compute_metrics_by_hand():
    truths = [100.0, 200.0, 300.0, 5.0]
    guesses = [140.0, None, 360.0, 6.0]   # errors 40 (orange), 200 (red, failure), 60 (orange), 1 (green)
    m = compute_metrics(truths, guesses)
    assert m["n"] == 4 and m["failures"] == 1
    assert m["avg_error"] == pytest.approx((40 + 200 + 60 + 1) / 4)
    sle = [math.log(141 / 101) ** 2, math.log(201) ** 2, math.log(361 / 301) ** 2, math.log(7 / 6) ** 2]
    assert m["rmsle"] == pytest.approx(math.sqrt(sum(sle) / 4))
    assert (m["hit_rate"], m["orange"], m["red"]) == (0.25, 0.5, 0.25)
    buckets = {b["bucket"]: b for b in m["by_bucket"]}
    assert buckets["<$10"]["n"] == 1 and buckets["<$10"]["avg_error"] == pytest.approx(1.0)
    assert buckets["<$10"]["hit_rate"] == 1.0
    assert buckets["$100-300"]["n"] == 2                      # 100 and 200 (300 belongs to the next)
    assert buckets["$100-300"]["avg_error"] == pytest.approx(120.0)
    assert buckets["$100-300"]["rmsle"] == pytest.approx(math.sqrt((sle[0] + sle[1]) / 2))
    assert buckets["$300-1000"]["n"] == 1 and buckets["$300-1000"]["hit_rate"] == 0.0
    assert buckets["$10-50"]["n"] == 0 and buckets["$10-50"]["avg_error"] is None
    assert sum(b["n"] for b in m["by_bucket"]) == 4


def test_compute_metrics_rejects_bad_input():
    with pytest.raises(ValueError, match="no items"):
        compute_metrics([], [])
    with pytest.raises(ValueError, match="2 truths but 1 guesses"):
        compute_metrics([1.0, 2.0], [1.0])


# A failure on a cheap item: as a $0 guess its error (30) would be < $40, a green "hit".
FAIL_TRUTHS = [30.0, 100.0, 50.0, 500.0]
FAIL_GUESSES = [None, 110.0, None, 300.0]   # errors as $0 guesses: 30, 10, 50, 200


def test_failures_are_misses_by_default():
    m = compute_metrics(FAIL_TRUTHS, FAIL_GUESSES)
    assert m["n"] == 4 and m["failures"] == 2 and m["score_failures_as_zero"] is False
    # Colours: failure red, 10 green, failure red, 200 of 500 (ratio 0.4, not < 0.4; 200 >= 80) red.
    assert (m["hit_rate"], m["orange"], m["red"]) == (0.25, 0.0, 0.75)
    # avg_error and RMSLE score a failure as a $0 guess: every report averages over the same items.
    assert m["avg_error"] == pytest.approx((30 + 10 + 50 + 200) / 4)
    sle = [math.log(31) ** 2, math.log(111 / 101) ** 2, math.log(51) ** 2, math.log(301 / 501) ** 2]
    assert m["rmsle"] == pytest.approx(math.sqrt(sum(sle) / 4))
    buckets = {b["bucket"]: b for b in m["by_bucket"]}
    assert buckets["$10-50"]["n"] == 1 and buckets["$10-50"]["hit_rate"] == 0.0 and buckets["$10-50"]["failures"] == 1
    assert buckets["$50-100"]["hit_rate"] == 0.0 and buckets["$100-300"]["hit_rate"] == 1.0


def test_failures_as_zero_is_the_course_s_scoring():
    m = compute_metrics(FAIL_TRUTHS, FAIL_GUESSES, failures_as_zero=True)
    assert m["failures"] == 2 and m["score_failures_as_zero"] is True
    # $0 for 30: error 30 < 40, green; $0 for 50: error 50 < 80, orange; 10 green; 200 of 500 red.
    assert (m["hit_rate"], m["orange"], m["red"]) == (0.5, 0.25, 0.25)
    default = compute_metrics(FAIL_TRUTHS, FAIL_GUESSES)
    assert (m["avg_error"], m["rmsle"]) == (default["avg_error"], default["rmsle"])


def test_all_failures_are_never_green():
    """What an adapter of NaN weights produced: every reply without a price."""
    truths = [5.0, 20.0, 35.0]
    m = compute_metrics(truths, [None, None, None])
    assert (m["hit_rate"], m["orange"], m["red"], m["failures"]) == (0.0, 0.0, 1.0, 3)
    assert compute_metrics(truths, [None, None, None], failures_as_zero=True)["hit_rate"] == 1.0


def test_colours_of_items():
    assert colours_for(FAIL_TRUTHS, FAIL_GUESSES) == ["red", "green", "red", "red"]
    assert colours_for(FAIL_TRUTHS, FAIL_GUESSES, failures_as_zero=True) == ["green", "green", "orange", "red"]
