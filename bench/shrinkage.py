"""Regression to the middle, measured: what stretching a model's guesses away from the middle price
buys on the dear items and costs everywhere else.

A predictor that is right on average for each listing it reads (E[price | text], which is what
training on squared log error aims at) must, sorted by the truth, over-price the cheap items and
under-price the dear ones: the less it knows, the more. The quality goal asks for a lean above $300 no
worse than -0.40 with the pool split no worse. This script puts a number on that trade: it
stretches the guesses around a centre c (the mean log truth of the fitting file),

    ln g' = c + k (ln g - c),     k = 1 (as guessed), 1.1, 1.2, ...

scores every k on the fitting file (validation: RMSLE, hit rate, lean above $300), picks the
smallest k whose validation lean above $300 reaches the goal, and applies that k, with the same c,
to each test file. It also prints the slope of ln guess on ln truth (1 would be no regression), and
for each file how far the lean is a matter of information (`information_bound`): the slope of ln
truth on ln guess (1: the guesses are calibrated, right on average for what they say), the lean
above $300 that calibrated guesses with the file's error would have, and the error that would bring
that lean to the goal.

    python -m bench.shrinkage --fit VAL/predictions.csv --test POOL/predictions.csv BAL/predictions.csv
"""
from __future__ import annotations

import argparse
import math
import statistics
from pathlib import Path

from evaluation import report
from evaluation.metrics import MIN_GUESS, compute_metrics

GOAL = -0.40   # the quality goal: mean ln(guess / truth) of items at $300-1000 no worse than this


def read_predictions(path: str | Path) -> tuple[list[float], list[float | None]]:
    """(truths, guesses) from an evaluate.py predictions.csv or its folder; a failure's guess is None."""
    try:
        rows = report.read_predictions(path)
    except report.ReportError as e:
        raise SystemExit(str(e)) from None
    return [r["truth"] for r in rows], [r["guess"] for r in rows]


def stretch(guesses: list[float | None], centre: float, k: float) -> list[float | None]:
    """Each guess moved k times as far from exp(centre) in log terms (failures stay failures)."""
    return [None if g is None else math.exp(centre + k * (math.log(max(g, MIN_GUESS)) - centre)) for g in guesses]


def slope(truths: list[float], guesses: list[float | None]) -> float:
    """Least-squares slope of ln guess on ln truth."""
    pairs = [(math.log(t), math.log(max(g, MIN_GUESS))) for t, g in zip(truths, guesses) if g is not None]
    mt = statistics.fmean(p[0] for p in pairs)
    mg = statistics.fmean(p[1] for p in pairs)
    return sum((a - mt) * (b - mg) for a, b in pairs) / sum((a - mt) ** 2 for a, _ in pairs)


def information_bound(truths: list[float], guesses: list[float | None], lo: float = 300.0, hi: float = 1000.0,
                      goal: float = GOAL) -> dict:
    """Why the lean above $300 is what it is, in the natural log of the price (items with a guess):

    - `calibration`: the slope of ln truth on ln guess. Near 1, the guesses are right on average for what
      they say (E[ln truth | ln guess] = ln guess), so no read-out of them can lower the error.
    - `lean_if_calibrated`: the lean on truths in [lo, hi) that any such calibrated guesses with this error
      have when guess and truth are jointly normal: E[ln g - ln y | y] = -(MSE / Var ln y) (ln y - mean),
      averaged over the bucket's truths. The rest of the observed lean is the bucket being priced worse
      than the average item.
    - `rmse_for_goal`: the error (RMSE of ln guess - ln truth) at which that lean would reach `goal`.
    """
    pairs = [(math.log(t), math.log(max(g, MIN_GUESS))) for t, g in zip(truths, guesses) if g is not None]
    ly, lg = [a for a, _ in pairs], [b for _, b in pairs]
    mse = statistics.fmean((b - a) ** 2 for a, b in pairs)
    var, mean = statistics.pvariance(ly), statistics.fmean(ly)
    dear = [a for a in ly if math.log(lo) <= a < math.log(hi)]
    gap = statistics.fmean(dear) - mean if dear else None
    return {"calibration": statistics.covariance(lg, ly) / statistics.variance(lg), "rmse": math.sqrt(mse),
            "lean_if_calibrated": None if gap is None else -mse / var * gap,
            "rmse_for_goal": None if not gap or gap <= 0 else math.sqrt(-goal * var / gap)}


def bound_line(truths: list[float], guesses: list[float | None]) -> str:
    b = information_bound(truths, guesses)
    if b["lean_if_calibrated"] is None or b["rmse_for_goal"] is None:
        return f"slope of ln truth on ln guess {b['calibration']:.2f} (no items at $300-1000 above the mean)"
    return (f"slope of ln truth on ln guess {b['calibration']:.2f}; calibrated guesses with this error (RMSE of ln "
            f"{b['rmse']:.3f}) would lean {b['lean_if_calibrated']:+.2f} above $300; {GOAL:+.2f} needs "
            f"{b['rmse_for_goal']:.3f}")


def summary(truths: list[float], guesses: list[float | None]) -> dict:
    m = compute_metrics(truths, guesses)
    dear = next(b for b in m["by_bucket"] if b["bucket"] == "$300-1000")
    cheap = next(b for b in m["by_bucket"] if b["bucket"] == "<$10")
    return {"rmsle": m["rmsle"], "hits": m["hit_rate"], "lean": m["log_ratio"], "lean_dear": dear["log_ratio"],
            "lean_cheap": cheap["log_ratio"], "n_dear": dear["n"]}


def row(label: str, s: dict) -> str:
    fmt = lambda v, f: "-" if v is None else format(v, f)  # noqa: E731
    return (f"{label:<34} {s['rmsle']:.3f}  {100 * s['hits']:5.1f}%  {fmt(s['lean'], '+.2f'):>6}  "
            f"{fmt(s['lean_cheap'], '+.2f'):>6}  {fmt(s['lean_dear'], '+.2f'):>6} ({s['n_dear']})")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--fit", required=True, help="predictions.csv that picks k (validation)")
    ap.add_argument("--test", nargs="*", default=[], help="predictions.csv files the picked k is applied to")
    ap.add_argument("--ks", default="1,1.1,1.2,1.3,1.4,1.5,1.6,1.8,2.0", help="stretch factors to score on --fit")
    args = ap.parse_args()
    truths, guesses = read_predictions(args.fit)
    centre = statistics.fmean(math.log(t) for t in truths)
    ks = [float(k) for k in args.ks.split(",")]
    head = f"{'':<34} RMSLE   hits    lean   <$10  $300-1000 (n)"
    print(f"fit on {args.fit} ({len(truths)} items), centre ${math.exp(centre):.2f}, "
          f"slope of ln guess on ln truth {slope(truths, guesses):.2f}\n{bound_line(truths, guesses)}\n{head}")
    scored = []
    for k in ks:
        s = summary(truths, stretch(guesses, centre, k))
        scored.append((k, s))
        print(row(f"k = {k:g}", s))
    meets = [k for k, s in scored if s["lean_dear"] is not None and s["lean_dear"] >= GOAL]
    pick = min(meets) if meets else max(ks)
    print(f"\nsmallest k whose lean above $300 reaches {GOAL}: "
          + (f"{pick:g}" if meets else f"none up to {max(ks):g}; applying {pick:g}"))
    for path in args.test:
        t, g = read_predictions(path)
        print(f"\n{path} ({len(t)} items), slope {slope(t, g):.2f}\n{bound_line(t, g)}\n{head}")
        print(row("as guessed (k = 1)", summary(t, g)))
        print(row(f"stretched (k = {pick:g})", summary(t, stretch(g, centre, pick))))


if __name__ == "__main__":
    main()
