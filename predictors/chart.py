"""The course's chart: truth against estimate, one point per item in its colour, and the line y = x."""
from __future__ import annotations

from typing import Any, Sequence

from predictors.metrics import colours_for, scored_guess


def chart_title(title: str, metrics: dict) -> str:
    """The course's chart title: name, average error, RMSLE and hit rate."""
    return (f"{title}: Error=${metrics['avg_error']:,.2f} RMSLE={metrics['rmsle']:,.2f} "
            f"Hits={metrics['hit_rate'] * 100:.1f}%")


def plot_chart(truths: Sequence[float], guesses: Sequence[float | None], title: str,
               failures_as_zero: bool = False, log_axes: bool = True) -> Any:
    """Truth against estimate as a matplotlib Figure (no pyplot state), one point per item in its colour.

    Log-price axes by default: prices span three decades and most items are cheap, so linear axes
    pile them into one corner. log_axes=False draws the course's linear chart. A failure is drawn
    at $0 on linear axes and at the bottom edge on log axes, in its metrics colour.
    """
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    filled = [scored_guess(g) for g in guesses]
    colours = colours_for(truths, guesses, failures_as_zero)
    top = max(max(truths), max(filled)) or 1.0
    bottom = 0.0
    fig = Figure(figsize=(12, 8))
    FigureCanvasAgg(fig)
    ax = fig.add_subplot()
    if log_axes:
        bottom, top = min(min(truths), min(g for g in filled if g > 0) if any(filled) else 1.0) / 1.5, top * 1.5
        filled = [max(g, bottom) for g in filled]
        ax.set_xscale("log")
        ax.set_yscale("log")
    ax.plot([bottom, top], [bottom, top], color="deepskyblue", lw=2, alpha=0.6)
    ax.scatter(truths, filled, s=3 if len(truths) > 300 else 8, c=colours)
    ax.set(xlabel="Ground Truth ($)", ylabel="Model Estimate ($)", xlim=(bottom, top), ylim=(bottom, top), title=title)
    return fig


def redraw(folder: Any, log_axes: bool = True) -> Any:
    """Draw a report folder's chart.png again from its report.json and predictions.csv (for reports that
    travelled without their charts); returns the chart's path. ReportError when the folder is not a report."""
    from pathlib import Path

    from predictors.report import read_predictions, read_report
    from utils.atomic import atomic_write

    folder = Path(folder)
    report, rows = read_report(folder / "report.json"), read_predictions(folder)
    fig = plot_chart([r["truth"] for r in rows], [r["guess"] for r in rows], chart_title(report.get("name") or folder.name, report),
                     bool(report.get("score_failures_as_zero")), log_axes)
    atomic_write(folder / "chart.png", lambda f: fig.savefig(f, format="png", dpi=100), mode="wb")
    return folder / "chart.png"


def main(argv: Sequence[str] | None = None) -> int:
    """python -m predictors.chart FOLDER ... [--linear]: redraw each report folder's chart.png."""
    import argparse
    import sys

    from predictors.report import ReportError

    p = argparse.ArgumentParser(prog="python -m predictors.chart", description=main.__doc__)
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
