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
from predictors.interval_margin import CalibrationError, load_calibration
from utils.atomic import atomic_write_text
from utils.csv_cells import text_cell

LOW_MASS = 0.5   # below this share of the model's probability searched, a price is called uncertain
FIELDS = ("title", "price", "low", "high", "mass", "uncertain", "truth")


def mass_cell(mass: float | None) -> float | None:
    """The searched mass as the files of rows hold it (predict.py's --out, evaluate.py's predictions.csv): to
    4 decimals, so that a row read back says what the row written did."""
    return None if mass is None else round(mass, 4)


def uncertain(mass: float | None) -> bool:
    """The rule behind predict.py's "uncertain" note and the rows' `uncertain` flag: the search reached less than
    LOW_MASS of the model's probability (the mass as the rows hold it), so the price ignores much of what the
    model would say. No mass stated (a predictor without a search) is not uncertain."""
    m = mass_cell(mass)
    return m is not None and m < LOW_MASS


def trust_note(prediction: Prediction) -> str | None:
    """A warning when the predictor's search covered too little of the model's probability, else None."""
    if uncertain(prediction.mass):
        return (f"uncertain: the search covered only {prediction.mass:.0%} of the model's probability, and the "
                "rest lies in prices it did not reach")
    return None


def calibration_basis(folder: str | os.PathLike | None) -> str:
    """What the margin stored beside `folder` was fitted on, as describe() says it: "on held-out sources" for a
    leave-one-source-out fit (python -m evaluation.calibration --held-out), else "on validation"."""
    try:
        record = load_calibration(folder)
    except CalibrationError:
        record = None   # the predictor has read the margin already; a file it could not read never gets here
    return "on held-out sources" if record is not None and "held_out" in record else "on validation"


def describe(prediction: Prediction, quantiles: Sequence[float] | None = None, margin: float = 0.0,
             basis: str = "on validation") -> str:
    """One listing's answer: "$123.45 (80% interval $90.00 to $160.00: ...)", or why there is no price.

    `margin` is the log margin the predictor widened the interval by (predictors/interval_margin.py; fitted by
    evaluation/calibration.py), 0 for none; `basis` what it was fitted on (calibration_basis).
    """
    if prediction.price is None:
        return "no price: the model wrote no number after \"Price is $\" (try --predictor expected)"
    line = f"${prediction.price:,.2f}"
    if prediction.low is not None and prediction.high is not None:
        low_q, high_q = quantiles or (0.1, 0.9)
        line += f" ({round((high_q - low_q) * 100)}% interval ${prediction.low:,.2f} to ${prediction.high:,.2f}: "
        line += (f"the model's {low_q:.0%} to {high_q:.0%} quantiles widened x{math.exp(margin):.2f} as calibrated "
                 f"{basis}" if margin else
                 f"the {low_q:.0%} to {high_q:.0%} quantiles of the model's price distribution")
        line += f"; the search covered {prediction.mass:.0%} of its probability)" if prediction.mass is not None \
            else ")"
    note = trust_note(prediction)
    return line + (f"\n{note}" if note else "")


def _row(listing: Any, p: Prediction) -> dict:
    def money(v: float | None) -> float | None:
        return None if v is None else round(v, 2)
    return {"title": listing.title, "price": money(p.price), "low": money(p.low), "high": money(p.high),
            "mass": mass_cell(p.mass), "uncertain": None if p.mass is None else uncertain(p.mass),
            "truth": listing.truth}


def write_priced(path: str | os.PathLike, listings: Sequence[Any], predictions: Sequence[Prediction]) -> Path:
    """Write the listings' prices to a .csv or .jsonl file (by its suffix), atomically; returns the path.

    Each row: title, price, the interval's low and high, `mass` (the share of the model's probability the search
    reached) and `uncertain` (the rule of the printed "uncertain" note: true/false in .jsonl, 1/0 in .csv, empty
    when the predictor states no mass), and the listing's own price as `truth` when it had one. In a .csv a title
    a spreadsheet would run as a formula gets a leading ' (utils/csv_cells.py)."""
    path = Path(path)
    rows = [_row(listing, p) for listing, p in zip(listings, predictions)]
    if path.suffix.lower() == ".jsonl":
        text = "".join(json.dumps(r) + "\n" for r in rows)
    else:
        buf = io.StringIO()
        writer = csv.DictWriter(buf, FIELDS)
        writer.writeheader()
        writer.writerows({k: "" if v is None else text_cell(v) if k == "title" else int(v) if k == "uncertain"
                          else v for k, v in r.items()} for r in rows)
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
