"""The expected predictor: a point estimate of the model's price distribution after "Price is $".

The distribution is digit_search.py's (`price_distributions`): for tokenizers with one token per
number 0-999 (Llama 3) the course's "improved" predictor, the top-K number tokens of the next-token
distribution; for digit-level tokenizers (SmolLM2) a bounded breadth-first search over digit
strings. The point estimate is the distribution's mean, its mean in log space, its median or the
price most likely to be scored a hit (`point_estimate`); the stated interval is its 10th-90th
percentiles, widened by the adapter's calibrated margin when it has one (interval_margin.py).
"""
from __future__ import annotations

import argparse
import math
import statistics
import sys
from typing import Any, Sequence

from predictors.base import OptionError, Prediction, Predictor
from predictors.digit_search import ACCOUNTING, SEARCH_DIGITS, SEARCH_WIDTH, price_distributions
from predictors.hit_rule import hit_window
from predictors.interval_margin import FILE, load_calibration, search_mismatch, widen
from predictors.registry import register

ESTIMATES = ("mean", "log-mean", "median", "hit")
# The default estimate. The log-mean (what RMSLE rewards) scores as well as the mean for the shipped SmolLM2 adapter,
# but 0.18 RMSLE worse for the CPU demo's briefly trained adapter and 0.28 for the base model: the mean is the one
# that holds for adapters in general (bench/RESULTS.md, "Search width, point estimate and intervals").
ESTIMATE = "mean"
INTERVAL = (0.1, 0.9)     # the quantiles of the stated interval: the central 80% of the distribution


def point_estimate(dist: dict[int, float], how: str = "mean") -> float | None:
    """One price from a {price: probability} distribution renormalised to its mass; None when it is empty.

    - "mean":     sum(p * v) / mass, the expected price (it minimises the expected squared error).
    - "log-mean": exp(sum(p * log(1 + v)) / mass) - 1, the mean in log space (it minimises the
                  expected squared log error, the term RMSLE averages).
    - "median":   the lower weighted median, the smallest price whose cumulative probability
                  reaches half the mass. A tie (exactly half the mass at or below a price, to a
                  relative 1e-9) takes that lower price, not a midpoint: {9: .5, 99: .5} gives 9.
    - "hit":      the price most likely to be scored a hit: the guess g >= 0 that maximises the
                  probability of the prices y it would colour green (`hit_rule.hit_window`); it maximises
                  the expected hit rate, not RMSLE. Among the guesses that reach that probability
                  (to a relative 1e-9) it is the nearest, in log1p distance, to the "log-mean"
                  estimate (see `most_likely_hit`): {100: .5, 130: .5} gives the log-mean, 114.03,
                  which hits both; {500: .3, 600: .3, 1000: .4} gives 599.99, hitting 500 and 600.
    """
    if how not in ESTIMATES:
        raise ValueError(f"unknown estimate {how!r}: pick one of {', '.join(ESTIMATES)}")
    mass = sum(dist.values())
    if mass <= 0:
        return None
    if how == "mean":
        return sum(v * p for v, p in dist.items()) / mass
    if how in ("log-mean", "hit"):
        log_mean = math.expm1(sum(math.log1p(v) * p for v, p in dist.items()) / mass)
        return log_mean if how == "log-mean" else most_likely_hit(dist, log_mean)
    return price_quantile(dist, 0.5)


def most_likely_hit(dist: dict[int, float], near: float) -> float:
    """The guess g >= 0 with the most probability of prices it hits; of those, the nearest to `near` in log1p.

    The hit mass M(g) is a sum of open intervals (each price's `hit_window`, weighted by its
    probability), so it is constant on each gap between consecutive distinct window ends and no
    larger at an end than on the gaps beside it: a sweep over the sorted ends gives M on every gap
    (g >= 0: 0 is an end too), exactly. Every gap whose M is the maximum (to a relative 1e-9) is a
    candidate; `near` is clamped into each, and the nearest candidate wins (the lower on a tie).
    The gaps are open (a guess on a window's end may hit one price fewer), so the clamp stays a
    cent inside them (a quarter of a gap narrower than 4 cents): reports score guesses rounded to
    the cent (`evaluation.report.cents`), and a guess a hair inside would round onto the end.
    Integer prices put every end on a multiple of $0.2, so the cent survives that rounding. 0 is
    no window's end unless a price of GREEN_ERROR makes it one, so a guess of 0 is allowed.
    Window ends are rounded to 1e-6: in floats the same end may come out a few ulps apart
    (1.2 * 200 and 200 + 40), which would open a gap no guess can use.
    """
    mass = sum(dist.values())
    steps: dict[float, float] = {}   # end -> change of M when g crosses it upwards
    for value, p in dist.items():
        if p > 0:
            low, high = (round(end, 6) for end in hit_window(value))
            steps[low] = steps.get(low, 0.0) + p / mass
            steps[high] = steps.get(high, 0.0) - p / mass
    floor = 0.0 not in steps         # 0 bounds the guesses, not a window: a guess of 0 is allowed
    steps.setdefault(0.0, 0.0)
    ends = sorted(steps)
    gaps, covered = [], 0.0
    for low, high in zip(ends, ends[1:]):
        covered += steps[low]                # M on the gap (low, high)
        if low >= 0:
            gaps.append((covered, low, high))
    best = max(m for m, _, _ in gaps)
    target = math.log1p(near)
    candidates = []
    for m, low, high in gaps:
        if m >= best * (1 - 1e-9):
            inside = min(0.01, (high - low) / 4)
            g = min(max(near, low if low == 0 and floor else low + inside), high - inside)
            candidates.append((abs(math.log1p(g) - target), g))
    return min(candidates)[1]


def price_quantile(dist: dict[int, float], q: float) -> float | None:
    """The smallest price whose cumulative probability reaches q of the distribution's mass; None when empty."""
    mass = sum(dist.values())
    if mass <= 0:
        return None
    cumulative = 0.0
    for value in sorted(dist):
        cumulative += dist[value]
        if cumulative >= q * mass * (1 - 1e-9):
            return float(value)
    return float(max(dist))


def interval(dist: dict[int, float], quantiles: tuple[float, float] = INTERVAL) -> tuple[float | None, float | None]:
    """(low, high): the distribution's INTERVAL quantiles, the central 80% of its probability by default."""
    return price_quantile(dist, quantiles[0]), price_quantile(dist, quantiles[1])


def predict_expected(model: Any, tokenizer: Any, prompts: Sequence[str], batch_size: int = 16,
                     how: str = ESTIMATE, **search: Any) -> list[float | None]:
    """The `how` point estimate per prompt of the model's distribution (see `price_distributions`)."""
    return [point_estimate(d, how) for d in price_distributions(model, tokenizer, prompts, batch_size, **search)]


@register
class ExpectedPredictor(Predictor):
    """A point estimate (--estimate) of the model's price distribution after "Price is $", with an 80% interval."""

    name = "expected"
    flags = ("--estimate", "--search-width", "--search-digits", "--search-accounting", "--interval-calibration")

    def __init__(self, estimate: str = ESTIMATE, search_width: int = SEARCH_WIDTH, search_digits: int = SEARCH_DIGITS,
                 accounting: str = "none", interval_margin: float = 0.0):
        if estimate not in ESTIMATES:
            raise ValueError(f"unknown estimate {estimate!r}: pick one of {', '.join(ESTIMATES)}")
        if search_width <= 0 or search_digits <= 0:
            raise ValueError(f"search_width and search_digits must be positive, not {search_width}, {search_digits}")
        if accounting not in ACCOUNTING:
            raise ValueError(f"unknown search accounting {accounting!r}: pick one of {', '.join(ACCOUNTING)}")
        self.estimate, self.search_width, self.search_digits = estimate, search_width, search_digits
        self.accounting = accounting
        self.interval_margin = interval_margin            # log margin the interval is widened by (interval_margin.py)
        self.distributions: list[dict[int, float]] = []   # the last predict()'s, for record() and callers
        self.searched: list[float] = []                   # their masses as searched, before any accounting

    @classmethod
    def add_options(cls, parser: Any) -> None:
        """--estimate, --search-width, --search-digits, --search-accounting (unset: None, so that other
        predictors can refuse them)."""
        parser.add_argument("--estimate", choices=ESTIMATES,
                            help=f"the distribution's point estimate (default {ESTIMATE})")
        parser.add_argument("--search-width", type=int,
                            help="digit tokenizers: prefixes kept per digit (default: the width the adapter's "
                                 f"interval margin was fitted at, else {SEARCH_WIDTH})")
        parser.add_argument("--search-digits", type=int,
                            help="digit tokenizers: digits of the longest price (default: as the margin was "
                                 f"fitted, else {SEARCH_DIGITS})")
        parser.add_argument("--search-accounting", choices=ACCOUNTING,
                            help="digit tokenizers: give the mass the search prunes back to prices of its length "
                                 "(by-length), to the middle of each pruned prefix's range (by-prefix: padded answers "
                                 "only) or leave it out (none, the default)")
        parser.add_argument("--interval-calibration", choices=("auto", "off"),
                            help="auto (default): widen the interval by the margin stored beside the adapter (fitted "
                                 "on validation or leave-one-source-out by python -m evaluation.calibration), if "
                                 "there is one; off: the model's raw 10%%-90%% quantiles")

    @classmethod
    def from_args(cls, args: argparse.Namespace) -> ExpectedPredictor:
        """The predictor --estimate, --search-width and --search-digits describe, defaults filled in."""
        for flag, value in (("--search-width", args.search_width), ("--search-digits", args.search_digits)):
            if value is not None and value <= 0:
                raise OptionError(f"{flag} must be positive")
        calibrate = (getattr(args, "interval_calibration", None) or "auto") == "auto"
        # The margin beside the adapter; without one, beside a --base folder (a merged export carries its adapter's).
        folder = getattr(args, "adapter", None) or getattr(args, "base", None)
        fit = load_calibration(folder) if calibrate else None
        # Unset search options take the search the margin was fitted on, so that its intervals stay calibrated.
        fitted = fit or {}
        predictor = cls(args.estimate or ESTIMATE, args.search_width or fitted.get("search_width") or SEARCH_WIDTH,
                        args.search_digits or fitted.get("search_digits") or SEARCH_DIGITS,
                        getattr(args, "search_accounting", None) or fitted.get("search_accounting") or "none",
                        fitted.get("margin", 0.0))
        differ = search_mismatch(fit, predictor.record())
        if differ:
            print(f"note: the interval margin in {folder}/{FILE} was fitted on a search with {differ}: these 80% "
                  "intervals are not calibrated for this search (refit with python -m evaluation.calibration on an "
                  "evaluation made with it, or pass --interval-calibration off)", file=sys.stderr)
        return predictor

    def predict(self, prompts: Sequence[str], *, model: Any = None, tokenizer: Any = None, batch_size: int = 16,
                train_prices: Sequence[float] = (), answer_width: int = 0) -> list[Prediction]:
        """Each prompt's point estimate, the INTERVAL quantiles around it and the probability mass searched."""
        self.check_model(model, tokenizer)
        searched: list[float] = []
        self.distributions = price_distributions(model, tokenizer, prompts, batch_size, max_digits=self.search_digits,
                                                 top_m=self.search_width, accounting=self.accounting, searched=searched,
                                                 answer_width=answer_width)
        self.searched = searched
        intervals = [self.stated_interval(d) for d in self.distributions]
        return [Prediction(point_estimate(d, self.estimate), mass=m, low=low, high=high)
                for d, m, (low, high) in zip(self.distributions, searched, intervals)]

    def stated_interval(self, dist: dict[int, float]) -> tuple[float | None, float | None]:
        """The INTERVAL quantiles of `dist`, widened by interval_margin when the adapter's calibration gives one."""
        low, high = interval(dist)
        if low is None or high is None or not self.interval_margin:
            return low, high
        return widen(low, high, self.interval_margin)

    def record(self) -> dict:
        """estimate, search settings, and (after predict) search_mass, the mean mass covered."""
        settings = {"estimate": self.estimate, "search_width": self.search_width, "search_digits": self.search_digits,
                    "search_accounting": self.accounting, "interval_quantiles": list(INTERVAL),
                    "interval_margin": self.interval_margin}
        if not self.searched:
            return settings
        return {**settings, "search_mass": statistics.fmean(self.searched)}   # as searched, before accounting
