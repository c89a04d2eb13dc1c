"""predictors/report.py: the three files of a report, written whole."""
from __future__ import annotations

import json

from predictors.report import write_report

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


def test_write_report_files(tmp_path):
    truths = [10.0, 100.0, 500.0, 40.0, 900.0]
    guesses = [12.0, None, 100.0, 45.0, 1200.0]
    report = write_report(tmp_path, ["a", "b", "c", "d", "e"], truths, guesses, {"name": "t"}, "t")
    assert (tmp_path / "chart.png").read_bytes().startswith(PNG_SIGNATURE)
    assert report["failures"] == 1 and report["n"] == 5
    assert json.loads((tmp_path / "report.json").read_text()) == report
    lines = (tmp_path / "predictions.csv").read_text().splitlines()
    assert lines[0] == "title,truth,guess,error,colour"
    assert lines[2] == "b,100.00,,100.00,red" and lines[1] == "a,10.00,12.00,2.00,green"
    assert not [p for p in tmp_path.iterdir() if p.name.endswith(".tmp")]
