"""`python -m evaluation.redraw FOLDER ...`: draw a report folder's chart.png again from its report.json and
predictions.csv, for reports that travelled without their charts (a GPU machine returns few files)."""
from __future__ import annotations

from pathlib import Path
from typing import Any, Sequence

from evaluation.chart import chart_title
from evaluation.report import ReportError, read_predictions, read_report, write_chart


def redraw(folder: Any, log_axes: bool = True) -> Path:
    """Draw a report folder's chart.png again from its report.json and predictions.csv (for reports that
    travelled without their charts); returns the chart's path. ReportError when the folder is not a report."""
    folder = Path(folder)
    report, rows = read_report(folder / "report.json"), read_predictions(folder)
    return write_chart(folder, [r["truth"] for r in rows], [r["guess"] for r in rows],
                       chart_title(report.get("name") or folder.name, report),
                       bool(report.get("score_failures_as_zero")), log_axes)


def main(argv: Sequence[str] | None = None) -> int:
    """python -m evaluation.redraw FOLDER ... [--linear]: redraw each report folder's chart.png."""
    import argparse
    import sys

    p = argparse.ArgumentParser(prog="python -m evaluation.redraw", description=main.__doc__)
    p.add_argument("folders", nargs="+", help="evaluate.py report folders (report.json and predictions.csv)")
    p.add_argument("--linear", action="store_true", help="the course's linear axes instead of log-price axes")
    args = p.parse_args(argv)
    try:
        for folder in args.folders:
            print(f"wrote {redraw(folder, log_axes=not args.linear)}")
    except ReportError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
