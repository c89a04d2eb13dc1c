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


def test_priced_rows_carry_the_searched_mass_and_the_uncertain_flag(tmp_path):
    """The rule predict.py prints "uncertain" by (trust_note) is each row's flag: 1/0 in a .csv, true/false in a
    .jsonl, empty/null where the predictor states no mass; the mass is written to 4 places."""
    from evaluation.pricing import FIELDS, trust_note

    listings = [SimpleNamespace(title=t, truth=None) for t in ("sure", "unsure", "greedy")]
    predictions = [Prediction(20.0, 0.81234, 15.0, 30.0), Prediction(900.0, 0.31, 300.0, 2000.0), Prediction(5.0)]
    with write_priced(tmp_path / "p.csv", listings, predictions).open(newline="") as f:
        rows = list(csv.DictReader(f))
    assert tuple(rows[0]) == FIELDS and FIELDS[:5] == ("title", "price", "low", "high", "mass")   # old columns kept
    assert [(r["mass"], r["uncertain"]) for r in rows] == [("0.8123", "0"), ("0.31", "1"), ("", "")]
    lines = write_priced(tmp_path / "p.jsonl", listings, predictions).read_text().splitlines()
    assert [json.loads(line)["uncertain"] for line in lines] == [False, True, None]
    assert [trust_note(p) is not None for p in predictions] == [False, True, False]


def test_describe_names_what_the_margin_was_fitted_on(tmp_path):
    from evaluation.pricing import calibration_basis, describe
    from predictors.interval_margin import FILE

    assert calibration_basis(tmp_path) == "on validation" == calibration_basis(None)
    (tmp_path / FILE).write_text(json.dumps({"margin": 0.5, "held_out": [{"source": "mixed"}]}))
    assert calibration_basis(tmp_path) == "on held-out sources"
    line = describe(Prediction(20.0, 0.4, 10.0, 40.0), (0.1, 0.9), 0.5, calibration_basis(tmp_path))
    assert "widened x1.65 as calibrated on held-out sources; the search covered 40%" in line
    assert line.splitlines()[1].startswith("uncertain: the search covered only 40%")
