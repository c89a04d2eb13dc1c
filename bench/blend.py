"""Two adapters priced together: the weighted geometric mean of their guesses, item by item.

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
from predictors.metrics import MIN_GUESS
from predictors.report import ReportError, read_predictions


def read_keyed(folder: str | Path) -> dict[tuple[str, float], float]:
    """{(title, truth): guess} from a report folder's predictions.csv; failures (no guess) are left out."""
    try:
        rows = read_predictions(folder)
    except ReportError as e:
        raise SystemExit(str(e)) from None
    return {(r["title"], r["truth"]): r["guess"] for r in rows if r["guess"] is not None}


def blend(first: dict, second: dict, w: float) -> tuple[list[float], list[float]]:
    """(truths, blended guesses) over the items both priced: exp((1 - w) ln a + w ln b)."""
    keys = sorted(first.keys() & second.keys())
    return ([k[1] for k in keys],
            [math.exp((1 - w) * math.log(max(first[k], MIN_GUESS)) + w * math.log(max(second[k], MIN_GUESS))) for k in keys])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--split", nargs=3, action="append", metavar=("NAME", "FIRST", "SECOND"), required=True,
                    help="a split's name and the two report folders priced on it")
    ap.add_argument("--weights", default="0,0.25,0.5,0.75,1", help="weights on the second model")
    args = ap.parse_args()
    print(f"{'split':<28} {'w':>4}  {'n':>5}  RMSLE   hits   lean $300-1000")
    for name, a, b in args.split:
        first, second = read_keyed(a), read_keyed(b)
        dropped = len(first.keys() ^ second.keys())
        for w in (float(x) for x in args.weights.split(",")):
            truths, guesses = blend(first, second, w)
            s = summary(truths, guesses)
            print(f"{name:<28} {w:4.2f}  {len(truths):5,}  {s['rmsle']:.3f}  {100 * s['hits']:5.1f}%  "
                  f"{s['lean_dear']:+.2f}" + (f"   ({dropped} items in one file only)" if dropped else ""))


if __name__ == "__main__":
    main()
