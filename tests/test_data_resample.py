"""data.resample: log-price buckets' shares by count ** (1 - power), by hand."""
from __future__ import annotations

from collections import Counter

import pytest

from data import Item
from data.resample import log_price_bucket, resample_log_price


def items(prices):
    return [Item(title=f"item {i}", text=f"item {i} text", price=p) for i, p in enumerate(prices)]


def test_buckets_are_equal_in_log_price():
    # edges at 10 ** (3k / 8): $2.37, $5.62, $13.3, ...
    assert [log_price_bucket(p) for p in (0.5, 1.0, 2.3, 2.4, 5.7, 1000.0, 5000.0)] == [0, 0, 0, 1, 2, 7, 7]


def test_shares_follow_the_power_by_hand():
    pool = items([5.0] * 90 + [500.0] * 10)          # buckets 1 and 7: counts 90 and 10
    assert resample_log_price(pool, 0.0) == pool
    full = Counter(log_price_bucket(it.price) for it in resample_log_price(pool, 1.0))
    assert full == {1: 50, 7: 50}
    half = Counter(log_price_bucket(it.price) for it in resample_log_price(pool, 0.5))
    # sqrt(90) : sqrt(10) = 3 : 1 of 100 items
    assert half == {1: 75, 7: 25}
    repeated = Counter(id(it) for it in resample_log_price(pool, 1.0) if it.price == 500.0)
    assert sorted(repeated.values()) == [5] * 10     # each rare item five times, none dropped


def test_resampling_is_seeded_and_order_free():
    pool = items([3.0, 30.0, 300.0] * 20 + [7.0] * 40)
    a = resample_log_price(pool, 0.7, seed=1)
    assert a == resample_log_price(list(reversed(pool)), 0.7, seed=1)
    assert len(a) == pytest.approx(len(pool), abs=2)
