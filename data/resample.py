"""Price-balanced resampling of the training items over log-price buckets.

Listings are mostly cheap (the bundled pool's median is about $30), so a model trained on them
learns a prior that pulls expensive items down. `resample_log_price` keeps the number of
training items but changes how often each log-price bucket is seen: bucket b's share becomes
proportional to count_b ** (1 - power). power 0 leaves the data as it is, power 1 gives every
bucket the same share (rare expensive items repeated, common cheap ones thinned), values between
temper the change. Items of a bucket are taken in a seeded hash order, cycling when repeated.
"""
from __future__ import annotations

import math

from data.items import Item
from data.splits import _hash_order

BUCKETS = 8  # log-price buckets between $1 and $1,000, as evaluate.py's balanced sample uses


def log_price_bucket(price: float, buckets: int = BUCKETS, low: float = 1.0, high: float = 1000.0) -> int:
    """Which of `buckets` equal log-width buckets between low and high the price falls in (ends clamp)."""
    span = math.log(high) - math.log(low)
    return min(max(int((math.log(max(price, 1e-9)) - math.log(low)) / span * buckets), 0), buckets - 1)


def resample_log_price(items: list[Item], power: float, seed: int = 42, buckets: int = BUCKETS) -> list[Item]:
    """As many items as given, each log-price bucket's share proportional to its count ** (1 - power)."""
    if power == 0 or not items:
        return list(items)
    by_bucket: dict[int, list[Item]] = {}
    for item in _hash_order(items, seed, "resample"):
        by_bucket.setdefault(log_price_bucket(item.price, buckets), []).append(item)
    weights = {b: len(members) ** (1 - power) for b, members in by_bucket.items()}
    total = sum(weights.values())
    shares = {b: round(len(items) * w / total) for b, w in weights.items()}
    out = []
    for b, members in sorted(by_bucket.items()):
        out += [members[i % len(members)] for i in range(shares[b])]
    return out
