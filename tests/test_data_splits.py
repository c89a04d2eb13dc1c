"""Splits: deterministic, order- and subset-independent, duplicates collapsed; balancing and samples."""
import random
from collections import Counter

import pytest

from data import DataError, Item, balance, dedup, dedup_key, load_items, price_balanced_sample, sample, split_items
from data.splits import COURSE_CATEGORY_WEIGHTS


@pytest.fixture(scope="module")
def bundled(bundled_data_dir):
    return load_items(bundled_data_dir, verbose=False)


def _ids(items):
    return sorted((it.title, it.text, it.price) for it in items)


def test_same_split_for_shuffled_input(bundled):
    shuffled = bundled[:]
    random.Random(0).shuffle(shuffled)
    a, b = split_items(bundled, seed=42), split_items(shuffled, seed=42)
    for part_a, part_b in zip(a, b):
        assert part_a == part_b  # same items in the same (hash) order


def test_subset_keeps_each_items_split(bundled):
    full = split_items(bundled, seed=42)
    where = {dedup_key(it): name for name, part in zip("train val test".split(), full) for it in part}
    subset = random.Random(1).sample(bundled, 3000)
    for name, part in zip("train val test".split(), split_items(subset, seed=42)):
        assert all(where[dedup_key(it)] == name for it in part)


def test_no_overlap_and_sizes(bundled):
    splits = split_items(bundled, seed=42, val_fraction=0.05, test_fraction=0.1)
    keys = [{dedup_key(it) for it in part} for part in splits]
    assert not (keys[0] & keys[1] or keys[0] & keys[2] or keys[1] & keys[2])
    n = sum(len(k) for k in keys)
    assert n == len(bundled) - splits.duplicates == len(dedup(bundled))
    assert abs(len(splits.test) / n - 0.1) < 0.015 and abs(len(splits.val) / n - 0.05) < 0.01
    other = split_items(bundled, seed=7)
    assert {dedup_key(it) for it in other.test} != keys[2]


def test_duplicates_collapse_to_one_copy_in_one_split():
    base = [Item(f"Product {i} widget", f"Product {i} widget\nbody {i}", 10.0 + i, source="a") for i in range(200)]
    # Same product elsewhere: other case, punctuation and a part number (dropped by the key), other text.
    copies = [Item(f"PRODUCT {i}: Widget XK12345Z!", f"summary of product {i}", 11.0 + i, source="b")
              for i in range(0, 200, 2)]
    # Same text, unrelated title: joined through the text key.
    text_twins = [Item(f"Other name {i}", f"Product {i} widget\nbody {i}", 10.0 + i, source="c") for i in range(1, 40, 2)]
    splits = split_items(base + copies + text_twins, seed=3)
    assert splits.duplicates == len(copies) + len(text_twins)
    kept = [it for part in splits for it in part]
    assert len(kept) == 200
    # A group keeps its copy with the smallest key: "other name i" beats "product i widget".
    assert Counter(it.source for it in kept) == {"a": 180, "c": 20}
    reordered = split_items(text_twins + copies[::-1] + base, seed=3)
    assert [_ids(p) for p in reordered] == [_ids(p) for p in splits]


def test_bad_fractions():
    with pytest.raises(DataError, match="sum to less than 1"):
        split_items([], val_fraction=0.5, test_fraction=0.5)


def test_sample_is_order_independent_and_nested(bundled):
    s = sample(bundled, 50, seed=1)
    assert len(s) == 50 and s == sample(bundled[::-1], 50, seed=1)
    superset = s + random.Random(2).sample(bundled, 500)
    assert sample(superset, 50, seed=1) == s
    assert sample(bundled, 50, seed=2) != s


def _items(prices, category=None):
    return [Item(f"item {i} {p}", f"text {i}", p, category) for i, p in enumerate(prices)]


def test_balance_caps_buckets_and_keeps_expensive():
    items = _items([5.0] * 30 + [5.3] * 5 + [7.0] * 3 + [300.0] * 20)
    kept = balance(items, cap=10, keep_all_above=240)
    counts = Counter(round(it.price) for it in kept)
    assert counts == {5: 10, 7: 3, 300: 20}
    assert kept == balance(items[::-1], cap=10, keep_all_above=240)[::-1]  # input order, same members
    wide = Counter(round(it.price) > 100 for it in balance(items, cap=10, bucket_width=50.0))
    assert wide == {False: 10, True: 20}  # $5-$7 share the $0 bucket of width 50


def test_balance_category_weights():
    items = [Item(f"auto {i}", "x", 20.0, "Automotive") for i in range(100)] + \
            [Item(f"toy {i}", "x", 20.0, "Toys_and_Games") for i in range(100)]
    kept = Counter(it.category for it in balance(items, cap=50, category_weights=COURSE_CATEGORY_WEIGHTS))
    assert sum(kept.values()) == 50 and kept["Automotive"] < 15 < kept["Toys_and_Games"]
    unweighted = Counter(it.category for it in balance(items, cap=50))
    assert 15 <= unweighted["Automotive"] <= 35
    none = Counter(it.category for it in balance(items, cap=50, category_weights={"toys and games": 0}))
    assert none == {"Automotive": 50}


def test_price_balanced_sample_spreads_over_log_buckets():
    prices = [1.5] * 5 + [3.0 + i * 0.01 for i in range(300)] + [40.0] * 100 + [600.0] * 100
    items = _items(prices)
    picked = price_balanced_sample(items, 40, seed=0, buckets=3, low=1.0, high=1000.0)
    # Buckets [1, 10), [10, 100), [100, 1000): 13/13/14 of 40 -- the cheap bucket is full enough.
    counts = Counter(0 if it.price < 10 else 1 if it.price < 100 else 2 for it in picked)
    assert sorted(counts.values()) == [13, 13, 14] and len(set(map(id, picked))) == 40
    scarce = price_balanced_sample(_items([2.0] * 3 + [50.0] * 50 + [500.0] * 50), 30, buckets=3)
    assert Counter(0 if it.price < 10 else 1 if it.price < 100 else 2 for it in scarce) == {0: 3, 1: 14, 2: 13}
    assert price_balanced_sample(items, 40, seed=0, buckets=3) == \
        price_balanced_sample(items[::-1], 40, seed=0, buckets=3)
