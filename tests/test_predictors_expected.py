"""predictors/expected.py: point estimates by hand (the "hit" estimate against a fine grid), quantiles and the
interval, and the predictor on hand-set logits: its masses, interval and report record. The distributions
themselves are test_predictors_digit_search.py's."""
from __future__ import annotations

import math
import random

import pytest

from conftest import DIGIT_DIST, PROMPTS, digit_table, dollar_id, make_bigram
from evaluation.metrics import colour_for
from evaluation.report import cents
from predictors.expected import ESTIMATES, ExpectedPredictor, interval, point_estimate, predict_expected, price_quantile

# ---------------------------------------------------------------- point estimates of a distribution

LOG_MEAN_9_99_999 = 10 ** 1.75 - 1   # exp(.5 ln 10 + .25 ln 100 + .25 ln 1000) - 1 = 55.234...


@pytest.mark.parametrize("scale", [1.0, 0.4])   # 0.4: a search that covered 40% of the mass, renormalised
def test_point_estimates_by_hand(scale):
    dist = {9: 0.5 * scale, 99: 0.25 * scale, 999: 0.25 * scale}
    assert point_estimate(dist, "mean") == pytest.approx(9 * 0.5 + 99 * 0.25 + 999 * 0.25)   # 279
    assert point_estimate(dist, "log-mean") == pytest.approx(LOG_MEAN_9_99_999)
    assert LOG_MEAN_9_99_999 == pytest.approx(55.2341325)
    assert point_estimate(dist, "median") == 9.0   # a tie: exactly half the mass at 9 takes the lower price
    assert point_estimate(dist) == point_estimate(dist, "mean")   # the mean is the default


@pytest.mark.parametrize("dist, median", [
    ({9: 0.3, 99: 0.3, 999: 0.4}, 99.0),
    ({7: 0.6, 2: 0.3, 5: 0.1}, 7.0),          # unsorted keys: cumulative .3, .4, 1.0 over 2, 5, 7
    ({1: 0.1, 2: 0.7, 3: 0.2, 4: 0.6}, 2.0),  # a tie, though .1 + .7 is 0.7999999999999999 < 1.6 / 2 in floats
    ({3: 0.1, 4: 0.3, 5: 0.2}, 4.0),          # mass .6, half .3: .1 + .3 passes it at 4
    ({42: 1e-6}, 42.0),
])
def test_weighted_median(dist, median):
    assert point_estimate(dist, "median") == median


def test_point_estimates_of_zero_and_empty():
    assert point_estimate({0: 0.3, 3: 0.3}, "log-mean") == pytest.approx(1.0)   # exp(.5 ln 1 + .5 ln 4) - 1
    for how in ESTIMATES:
        assert point_estimate({}, how) is None
        assert point_estimate({5: 0.0}, how) is None
    assert point_estimate({}) is None
    with pytest.raises(ValueError, match="unknown estimate 'mode'"):
        point_estimate({1: 1.0}, "mode")


def test_log_mean_at_most_mean_and_median_in_support():
    """Jensen: the log-space mean never exceeds the mean; the median is always a price of the distribution."""
    dist = {3: 0.05, 12: 0.2, 19: 0.3, 25: 0.1, 150: 0.15, 800: 0.05}
    assert point_estimate(dist, "log-mean") < point_estimate(dist, "mean")
    assert point_estimate(dist, "median") == 19.0   # cumulative .05, .25, .55 of .85: half is .425


def hit_mass(guess: float, dist: dict[int, float]) -> float:
    """The share of `dist`'s mass on prices the guess is scored a hit (green) on, by the course's metric."""
    return sum(p for y, p in dist.items() if colour_for(abs(guess - y), y) == "green") / sum(dist.values())


@pytest.mark.parametrize("scale", [1.0, 0.4])   # renormalised: the same guesses at 40% of the mass
def test_hit_estimate_by_hand(scale):
    def hit(dist):
        return point_estimate({v: p * scale for v, p in dist.items()}, "hit")

    # 100 is hit by guesses in (60, 140), 130 by (90, 170): the log-mean sqrt(101 * 131) - 1 hits both.
    dist = {100: 0.5, 130: 0.5}
    assert hit(dist) == pytest.approx(math.sqrt(101 * 131) - 1) and hit(dist) == pytest.approx(114.026084)
    assert hit(dist) == pytest.approx(point_estimate(dist, "log-mean")) and hit_mass(hit(dist), dist) == 1
    # (-30, 50) and (400, 600): the cheap .6 wins, and the log-mean 11^.6 * 501^.4 - 1 = 49.67 is in it.
    dist = {10: 0.6, 500: 0.4}
    assert hit(dist) == pytest.approx(11 ** 0.6 * 501 ** 0.4 - 1) and hit(dist) == pytest.approx(49.672310)
    assert colour_for(hit(dist) - 10, 10) == "green" and hit_mass(hit(dist), dist) == pytest.approx(0.6)
    # (400, 600), (480, 720) and (800, 1200): (480, 600) hits .6, more than 1000's .4. The log-mean,
    # 696.9, is clamped to a cent under 600: the window is open, and a guess of 600 misses 500 by exactly
    # 20%. A cent, not less: reports score the guess rounded to the cent.
    dist = {500: 0.3, 600: 0.3, 1000: 0.4}
    assert point_estimate(dist, "log-mean") == pytest.approx(696.890506)
    assert hit(dist) == cents(hit(dist)) == 599.99 and colour_for(600 - 500, 500) == "orange"
    assert [colour_for(abs(hit(dist) - y), y) for y in dist] == ["green", "green", "red"]
    assert hit_mass(hit(dist), dist) == pytest.approx(0.6)
    # (-20, 60), (10, 90) and (50, 130): only (50, 60) hits all three; the log-mean, 48.27, is below it.
    dist = {20: 0.3, 50: 0.3, 90: 0.4}
    assert point_estimate(dist, "log-mean") == pytest.approx(48.266691) and hit_mass(48.266691, dist) == 0.6
    assert hit(dist) == 50.01 and hit_mass(hit(dist), dist) == 1
    # A tie, (-30, 50) and (800, 1200) at .5 each: the log-mean sqrt(11 * 1001) - 1 = 103.9 is nearer
    # (in log1p) to 50 than to 800, so the guess is a cent under 50.
    dist = {10: 0.5, 1000: 0.5}
    assert hit(dist) == 49.99 and colour_for(hit(dist) - 10, 10) == "green"
    # 0 bounds the guesses but is no window's end (a price of 0 is hit by (-40, 40)): a guess of 0 stands.
    assert hit({0: 1.0}) == 0.0 and hit({0: 0.5, 3: 0.5}) == pytest.approx(1.0)   # the log-mean


def test_hit_estimate_is_the_best_guess_on_a_fine_grid():
    """Integer prices put every window end on a multiple of $0.2, so a $0.1 grid meets every gap between them."""
    rng = random.Random(0)
    for _ in range(20):
        dist = {rng.randint(0, 300): rng.random() for _ in range(rng.randint(1, 6))}
        best = max(hit_mass(k / 10, dist) for k in range(0, 4010))   # beyond 1.2 * 300 + 40 nothing is hit
        guess = point_estimate(dist, "hit")
        assert guess >= 0 and hit_mass(guess, dist) == pytest.approx(best, rel=1e-9)
        assert hit_mass(cents(guess), dist) == pytest.approx(best, rel=1e-9)   # as a report scores it


# ---------------------------------------------------------------- hand-set next-token distributions

def test_expected_none_when_no_price(tiny_llama, tiny_tokenizer):
    model = make_bigram(tiny_llama, {dollar_id(tiny_tokenizer): {tiny_tokenizer.eos_token_id: 1.0}})
    assert predict_expected(model, tiny_tokenizer, PROMPTS[:2]) == [None, None]


# ---------------------------------------------------------------- the predictor

def test_expected_predictor_masses_and_record(tiny_llama, tiny_tokenizer):
    """Each Prediction carries the mass its search covered; record() is what report.json says of the settings."""
    model = make_bigram(tiny_llama, digit_table(tiny_tokenizer))
    predictor = ExpectedPredictor(estimate="median", search_width=2, search_digits=3)
    assert predictor.record() == {"estimate": "median", "search_width": 2, "search_digits": 3,
                                  "search_accounting": "none", "interval_quantiles": [0.1, 0.9],
                                  "interval_margin": 0.0}   # before predict
    predictions = predictor.predict(PROMPTS, model=model, tokenizer=tiny_tokenizer, batch_size=2)
    # top_m=2 keeps "1" and "2" at the first digit (not "0"): 1, 15, 2, 23, 233 of DIGIT_DIST.
    mass = 0.3 + 0.2 + 0.27 + 0.015 + 0.0075
    assert [p.price for p in predictions] == [2.0] * 3   # cumulative .3 at 1, .57 at 2 >= half of .7925
    assert [p.mass for p in predictions] == pytest.approx([mass] * 3, rel=1e-5)
    # The 80% interval: 10% of .7925 is reached at 1, 90% (.713) at 15 (cumulative .3, .57, .77).
    assert [(p.low, p.high) for p in predictions] == [(1.0, 15.0)] * 3
    record = predictor.record()
    assert list(record) == ["estimate", "search_width", "search_digits", "search_accounting", "interval_quantiles",
                            "interval_margin", "search_mass"]
    assert record["search_mass"] == pytest.approx(mass, rel=1e-5)


@pytest.mark.parametrize("options, message", [
    ({"estimate": "mode"}, "unknown estimate 'mode'"),
    ({"search_width": 0}, "must be positive"),
    ({"search_digits": -1}, "must be positive"),
])
def test_expected_predictor_refuses_bad_settings(options, message):
    with pytest.raises(ValueError, match=message):
        ExpectedPredictor(**options)


def test_quantiles_and_interval_by_hand():
    # DIGIT_DIST sorted: 0 (.1), 1 (.4), 2 (.67), 15 (.87), 23, 233, 2333 of .89625.
    assert price_quantile(DIGIT_DIST, 0.1) == 0.0          # .1 >= .0896
    assert price_quantile(DIGIT_DIST, 0.5) == 2.0          # .67 >= .448
    assert interval(DIGIT_DIST) == (0.0, 15.0)            # 90% is .8066, first reached at 15 (.87)
    assert interval(DIGIT_DIST, (0.45, 0.99)) == (2.0, 233.0)   # 99% is .8873: 23 has .885, 233 .8925
    assert price_quantile({}, 0.5) is None and interval({}) == (None, None)


def test_the_stated_mass_is_what_the_search_covered_not_the_accounted_total(tiny_llama, tiny_tokenizer):
    """With by-length accounting the distribution sums to more than the search found; the mass a
    prediction states (and predict.py's trust note reads) stays the mass found."""
    model = make_bigram(tiny_llama, digit_table(tiny_tokenizer))
    plain = ExpectedPredictor(search_width=2).predict(PROMPTS[:1], model=model, tokenizer=tiny_tokenizer)
    accounting = ExpectedPredictor(search_width=2, accounting="by-length")
    accounted = accounting.predict(PROMPTS[:1], model=model, tokenizer=tiny_tokenizer)
    assert accounted[0].mass == pytest.approx(plain[0].mass) and plain[0].mass < 0.95
    assert sum(accounting.distributions[0].values()) > plain[0].mass + 0.1
    assert accounting.record()["search_mass"] == pytest.approx(plain[0].mass)
