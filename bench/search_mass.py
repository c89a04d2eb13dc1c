"""How much of the model's price distribution the digit search covered, by the item's true price: does the
coverage fall on dear listings (where the pruned mass sits in longer numbers) or hold across prices?

    python -m bench.search_mass RUN/NAME-w30-val.dists.json.gz [...]     # files bench.estimators saved

One line per file: the items, the mean and median mass covered, the share of items predict.py would call
uncertain (mass under evaluation.pricing.LOW_MASS), and the mean mass of the items in each truth bucket
(evaluation.metrics.BUCKETS), n in brackets.
"""
from __future__ import annotations

import argparse
import statistics
from pathlib import Path
from typing import Sequence

from bench.common.cli import print_or_fail
from bench.estimators import load_distributions
from evaluation.metrics import BUCKETS
from evaluation.pricing import LOW_MASS


def mass_by_bucket(truths: Sequence[float], dists: Sequence[dict[int, float]]) -> list[tuple[str, int, float | None]]:
    """(bucket, n, mean covered mass) per truth bucket; None for a bucket without items."""
    rows = []
    for name, lo, hi in BUCKETS:
        masses = [sum(d.values()) for t, d in zip(truths, dists) if lo <= t < hi]
        rows.append((name, len(masses), statistics.fmean(masses) if masses else None))
    return rows


def describe(record: dict) -> str:
    """Which model, split and search a saved record is of: "smol-w4 held-out mixed, width 30"."""
    split = (f"held-out {record['holdout_source']}" if record.get("holdout_source")
             else "balanced" if record.get("sample") == "balanced" else record.get("split"))
    accounting = record.get("search_accounting", "none")
    return (f"{record.get('name')} {split}, width {record.get('search_width')}"
            + ("" if accounting == "none" else f", accounting {accounting}"))


def main(argv: Sequence[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m bench.search_mass", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("files", nargs="+", help="<name>-w<width>-<split>.dists.json.gz files of bench.estimators")
    return print_or_fail(summary(path) for path in p.parse_args(argv).files)


def summary(path: str) -> str:
    """One saved file's line: what it is, its items, its mean and median mass, the uncertain share, the mass by
    truth bucket."""
    if not Path(path).is_file():
        raise FileNotFoundError(f"no {path}: give .dists.json.gz files that bench.estimators saved")
    body = load_distributions(path)
    masses = [sum(d.values()) for d in body["dists"]]
    below = sum(m < LOW_MASS for m in masses) / len(masses)
    cells = "  ".join(f"{name} {m:.2f} ({n})" for name, n, m in mass_by_bucket(body["truths"], body["dists"])
                      if m is not None)
    return (f"{describe(body['record'])}: {len(masses)} items, mass {statistics.fmean(masses):.3f} (median "
            f"{statistics.median(masses):.3f}, under {LOW_MASS:g}: {below:.1%}); {cells}")


if __name__ == "__main__":
    raise SystemExit(main())
