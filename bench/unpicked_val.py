"""Validation scores on the items an epoch was not picked on.

`train.keep_best` picks the epoch by pricing the first `train.price_eval_items` items of the validation split,
so the picked adapter's report on the whole validation split is optimistic: part of it chose the adapter. This
splits each validation predictions.csv into the items the pick saw and the ones it did not, and scores both:

    python -m bench.unpicked_val --picked 300 A/eval-val B/eval-val [--data data/amazon-prices]
                                 [--holdout-source S]    # a run trained with data.holdout_source S

Items are matched to the split by title and price; the split is train.py's (training.batches.load_splits) with
the default data.val_fraction and data.test_fraction. Compare adapters on the "not picked on" rows.
"""
from __future__ import annotations

import argparse

from data import DataError
from evaluation.metrics import compute_metrics
from evaluation.report import ReportError, read_predictions
from training.batches import load_splits
from training.config import DataConfig


def picked_keys(data: str, picked: int, seed: int = 42, holdout_source: str | None = None) -> set[tuple[str, float]]:
    """(title, price) of the first `picked` validation items, as train.py's price evaluation takes them (its
    own load_splits, with the default data.val_fraction and data.test_fraction)."""
    splits, _ = load_splits(DataConfig(source=data, seed=seed, holdout_source=holdout_source), verbose=False)
    return {(it.title, round(it.price, 2)) for it in splits.val[:picked]}


def split_scores(path: str, keys: set[tuple[str, float]]) -> dict[str, dict]:
    """{"picked on": metrics, "not picked on": metrics} of one predictions file (a part with no items: None)."""
    rows = read_predictions(path)
    out = {}
    for name, inside in (("picked on", True), ("not picked on", False)):
        part = [r for r in rows if ((r["title"], round(r["truth"], 2)) in keys) == inside]
        out[name] = compute_metrics([r["truth"] for r in part], [r["guess"] for r in part]) if part else None
    return out


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m bench.unpicked_val", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("predictions", nargs="+", help="validation predictions.csv files or their report folders")
    ap.add_argument("--picked", type=int, required=True, help="train.price_eval_items of the picking run")
    ap.add_argument("--data", default="data/amazon-prices")
    ap.add_argument("--seed", type=int, default=42)
    ap.add_argument("--holdout-source")
    args = ap.parse_args(argv)
    if args.picked < 1:
        ap.error("--picked must be at least 1")
    try:
        keys = picked_keys(args.data, args.picked, args.seed, args.holdout_source)
    except (DataError, OSError) as e:
        raise SystemExit(f"error: {e}") from None
    print(f"{'predictions':<50} {'items':<14} {'n':>5}  {'RMSLE':>6}  {'hits':>6}")
    for path in args.predictions:
        try:
            scores = split_scores(path, keys)
        except ReportError as e:
            raise SystemExit(f"error: {e}") from None
        for name, m in scores.items():
            print(f"{path:<50} {name:<14} " + ("    0" if m is None else
                                                 f"{m['n']:>5}  {m['rmsle']:.3f}  {m['hit_rate'] * 100:5.1f}%"))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
