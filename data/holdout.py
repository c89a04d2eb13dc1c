"""Leave-one-source-out splits: train on every bundled source but one, test on that one.

The pool split measures how well a model prices listings like the ones it trained on; a held-out
source (another category mix, another price range, another curation) measures how it holds up
off that distribution. Duplicates are resolved across sources first: a product that appears in
the held-out source and elsewhere belongs to the test side only, so nothing of the test set is
ever trained on.
"""
from __future__ import annotations

from data.items import DataError, Item
from data.splits import Splits, _canonical, _hash_order, dedup_key, duplicate_groups, unit_hash


def from_source(item: Item, source: str) -> bool:
    """Whether `item` came from `source`, a file name with or without its extensions ("mixed", "mixed.jsonl.gz")."""
    name = item.source or ""
    return name == source or name.split(".")[0] == source


def leave_source_out(items: list[Item], source: str, seed: int = 42, val_fraction: float = 0.05) -> Splits:
    """Test: one item per duplicate group that holds an item of `source`; train/val: the other groups.

    Validation is drawn from the training sources by hash, as split_items draws it; DataError when
    no item comes from `source` or nothing is left to train on.
    """
    groups = duplicate_groups(items)
    held = [g for g in groups if any(from_source(it, source) for it in g)]
    if not held:
        names = sorted({(it.source or "?").split(".")[0] for it in items})
        raise DataError(f"no item comes from source {source!r}; the sources are {', '.join(names)}")
    test = [min((it for it in g if from_source(it, source)), key=_canonical) for g in held]
    rest = [min(g, key=_canonical) for g in groups if not any(from_source(it, source) for it in g)]
    if not rest:
        raise DataError(f"leaving out {source!r} leaves nothing to train on")
    train, val = [], []
    for item in _hash_order(rest, seed, "order"):
        (val if unit_hash(seed, dedup_key(item)) < val_fraction else train).append(item)
    return Splits(train, val, _hash_order(test, seed, "order"), duplicates=len(items) - len(groups))
