"""Two models priced together (two adapters, or an adapter and bench.ridge): the weighted geometric mean of
their guesses, item by item.

Each report folder's predictions.csv is joined with the other's on (title, truth), so two evaluate.py
runs over the same split may list their items in any order. For every weight w on the second model
(0: the first alone, 1: the second alone) it prints RMSLE, hit rate and the lean of items at
$300-1000, split by split:

    python -m bench.blend --split pool SMOL/eval-pool GEMMA/eval-pool --split balanced A B ...
"""
from __future__ import annotations

import argparse
import math
from pathlib import Path

from bench.shrinkage import summary
from evaluation.metrics import MIN_GUESS
from evaluation.paired import match
from evaluation.report import ReportError, read_predictions


def read_pairs(first: str | Path, second: str | Path) -> tuple[list[float], list[float], list[float], int]:
    """(truths, first's guesses, second's guesses, rows left out) over the items both priced: the two
    predictions.csv joined on title and truth (evaluation.paired.match), failures (no guess) left out."""
    try:
        rows_a, rows_b = read_predictions(first), read_predictions(second)
    except ReportError as e:
        raise SystemExit(str(e)) from None
    kept = [(t, a, b) for t, a, b in zip(*match(rows_a, rows_b)) if a is not None and b is not None]
    left_out = len(rows_a) + len(rows_b) - 2 * len(kept)
    return [k[0] for k in kept], [k[1] for k in kept], [k[2] for k in kept], left_out


def blend(first: list[float], second: list[float], w: float) -> list[float]:
    """The guesses blended item by item: exp((1 - w) ln a + w ln b)."""
    return [math.exp((1 - w) * math.log(max(a, MIN_GUESS)) + w * math.log(max(b, MIN_GUESS)))
            for a, b in zip(first, second)]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--split", nargs=3, action="append", metavar=("NAME", "FIRST", "SECOND"), required=True,
                    help="a split's name and the two report folders priced on it")
    ap.add_argument("--weights", default="0,0.25,0.5,0.75,1", help="weights on the second model")
    args = ap.parse_args()
    print(f"{'split':<28} {'w':>4}  {'n':>5}  RMSLE   hits   lean $300-1000")
    for name, a, b in args.split:
        truths, first, second, dropped = read_pairs(a, b)
        for w in (float(x) for x in args.weights.split(",")):
            s = summary(truths, blend(first, second, w))
            print(f"{name:<28} {w:4.2f}  {len(truths):5,}  {s['rmsle']:.3f}  {100 * s['hits']:5.1f}%  "
                  f"{s['lean_dear']:+.2f}" + (f"   ({dropped} rows left out: one file or no guess)" if dropped else ""))


if __name__ == "__main__":
    main()
