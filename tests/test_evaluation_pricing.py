"""evaluation/pricing.py: predict.py's file of prices is safe to open in a spreadsheet."""
from __future__ import annotations

import csv
import json
from types import SimpleNamespace

from evaluation.pricing import write_priced
from predictors import Prediction


def test_priced_csv_escapes_formula_titles_and_jsonl_keeps_them(tmp_path):
    listings = [SimpleNamespace(title="=HYPERLINK(\"http://x\")", truth=None),
                SimpleNamespace(title="@kettle", truth=-2.0), SimpleNamespace(title="A kettle", truth=12.5)]
    predictions = [Prediction(9.99, 0.9, 8.0, 12.0), Prediction(None), Prediction(-1.0)]
    with write_priced(tmp_path / "p.csv", listings, predictions).open(newline="") as f:
        rows = list(csv.DictReader(f))
    assert [r["title"] for r in rows] == ["'=HYPERLINK(\"http://x\")", "'@kettle", "A kettle"]
    assert (rows[1]["truth"], rows[2]["price"]) == ("-2.0", "-1.0")   # numbers stay numbers
    lines = write_priced(tmp_path / "p.jsonl", listings, predictions).read_text().splitlines()
    assert json.loads(lines[0])["title"] == "=HYPERLINK(\"http://x\")"   # JSON is not a spreadsheet
