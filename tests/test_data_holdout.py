"""data.holdout: leave-one-source-out splits never train on the held-out source or its duplicates."""
from __future__ import annotations

import pytest

from data import DataError, Item, dedup_key, load_items
from data.holdout import from_source, leave_source_out


def item(title: str, source: str, price: float = 10.0) -> Item:
    return Item(title=title, text=f"{title}\nsome words about it", price=price, source=source)


def test_a_product_in_the_held_out_source_and_elsewhere_is_test_only():
    items = [item("Cordless drill", "mixed.jsonl.gz", 90), item("Cordless Drill!", "fragments.jsonl.gz", 85),
             item("Guitar strings", "fragments.jsonl.gz"), item("Photo editor", "software.jsonl.gz"),
             item("Desk organizer", "mixed.jsonl.gz", 30)]
    splits = leave_source_out(items, "mixed", val_fraction=0.0)
    assert sorted(it.title for it in splits.test) == ["Cordless drill", "Desk organizer"]
    assert sorted(it.title for it in splits.train) == ["Guitar strings", "Photo editor"]  # not the fragments drill
    assert splits.val == [] and splits.duplicates == 1
    assert from_source(items[0], "mixed") and from_source(items[0], "mixed.jsonl.gz") and not from_source(items[0], "mix")


def test_unknown_source_and_nothing_left_are_one_line_errors():
    items = [item("A", "mixed.jsonl.gz"), item("B", "software.jsonl.gz")]
    with pytest.raises(DataError, match="no item comes from source 'toys'; the sources are mixed, software"):
        leave_source_out(items, "toys")
    with pytest.raises(DataError, match="leaves nothing to train on"):
        leave_source_out(items[:1], "mixed")


@pytest.mark.parametrize("source", ["mixed", "musical-appliances"])
def test_bundled_sources_held_out_share_no_key_with_training(bundled_data_dir, source):
    items = load_items(bundled_data_dir, verbose=False)
    splits = leave_source_out(items, source)
    train_keys = {dedup_key(it) for it in splits.train + splits.val}
    assert splits.test and all(from_source(it, source) for it in splits.test)
    assert not train_keys & {dedup_key(it) for it in splits.test}
    assert not any(from_source(it, source) for it in splits.train + splits.val)
    assert splits == leave_source_out(list(reversed(items)), source)  # independent of load order
