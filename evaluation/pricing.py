"""What predict.py says about a priced listing: the price, its interval, and how much to trust it;
and the file it writes for many listings."""
from __future__ import annotations

import csv
import io
import json
import math
import os
from pathlib import Path
from typing import Any, Sequence

from predictors.base import Prediction
from utils.atomic import atomic_write_text
from utils.csv_cells import text_cell

LOW_MASS = 0.5   # below this share of the model's probability searched, a price is called uncertain
FIELDS = ("title", "price", "low", "high", "mass", "truth")


def trust_note(prediction: Prediction) -> str | None:
    """A warning when the predictor's search covered too little of the model's probability, else None."""
    if prediction.mass is not None and prediction.mass < LOW_MASS:
        return (f"uncertain: the search covered only {prediction.mass:.0%} of the model's probability, and the "
                "rest lies in prices it did not reach")
    return None


def describe(prediction: Prediction, quantiles: Sequence[float] | None = None, margin: float = 0.0) -> str:
    """One listing's answer: "$123.45 (80% interval $90.00 to $160.00: ...)", or why there is no price.

    `margin` is the log margin the predictor widened the interval by (predictors/interval_margin.py; fitted by
    evaluation/calibration.py), 0 for none.
    """
    if prediction.price is None:
        return "no price: the model wrote no number after \"Price is $\" (try --predictor expected)"
    line = f"${prediction.price:,.2f}"
    if prediction.low is not None and prediction.high is not None:
        low_q, high_q = quantiles or (0.1, 0.9)
        line += f" ({round((high_q - low_q) * 100)}% interval ${prediction.low:,.2f} to ${prediction.high:,.2f}: "
        line += (f"the model's {low_q:.0%} to {high_q:.0%} quantiles widened x{math.exp(margin):.2f} as calibrated "
                 "on validation" if margin else
                 f"the {low_q:.0%} to {high_q:.0%} quantiles of the model's price distribution")
        line += f"; the search covered {prediction.mass:.0%} of its probability)" if prediction.mass is not None \
            else ")"
    note = trust_note(prediction)
    return line + (f"\n{note}" if note else "")


def _row(listing: Any, p: Prediction) -> dict:
    def money(v: float | None) -> float | None:
        return None if v is None else round(v, 2)
    return {"title": listing.title, "price": money(p.price), "low": money(p.low), "high": money(p.high),
            "mass": None if p.mass is None else round(p.mass, 4), "truth": listing.truth}


def write_priced(path: str | os.PathLike, listings: Sequence[Any], predictions: Sequence[Prediction]) -> Path:
    """Write the listings' prices to a .csv or .jsonl file (by its suffix), atomically; returns the path.

    In a .csv a title a spreadsheet would run as a formula gets a leading ' (utils/csv_cells.py)."""
    path = Path(path)
    rows = [_row(listing, p) for listing, p in zip(listings, predictions)]
    if path.suffix.lower() == ".jsonl":
        text = "".join(json.dumps(r) + "\n" for r in rows)
    else:
        buf = io.StringIO()
        writer = csv.DictWriter(buf, FIELDS)
        writer.writeheader()
        writer.writerows({k: "" if v is None else text_cell(v) if k == "title" else v for k, v in r.items()}
                         for r in rows)
        text = buf.getvalue()
    return atomic_write_text(path, text)


def check_output(path: str | os.PathLike) -> None:
    """ValueError (one line) for an --out that is not a .csv/.jsonl file in a folder that exists."""
    path = Path(path)
    if path.suffix.lower() not in (".csv", ".jsonl"):
        raise ValueError(f"--out {path}: name a .csv or .jsonl file")
    if path.is_dir():
        raise ValueError(f"--out {path} is a folder: name a .csv or .jsonl file")
    if not path.parent.is_dir():
        raise ValueError(f"--out {path}: the folder {path.parent} does not exist")
