"""An evaluation's files (report.json, predictions.csv, chart.png) and the summaries printed from them."""
from __future__ import annotations

import csv
import json
import os
from pathlib import Path
from typing import IO, Any, Sequence

from predictors.chart import chart_title, plot_chart
from predictors.metrics import colour_for, compute_metrics
from utils.atomic import atomic_write


def write_report(out_dir: str | os.PathLike, titles: Sequence[str], truths: Sequence[float],
                 guesses: Sequence[float | None], provenance: dict, name: str) -> dict:
    """Write report.json, predictions.csv and chart.png into out_dir; return the report (metrics, then provenance)."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    metrics = compute_metrics(truths, guesses)
    report = {**metrics, **provenance}
    atomic_write(out / "report.json", lambda f: f.write(json.dumps(report, indent=2) + "\n"))

    def rows(f: IO[Any]) -> None:
        """predictions.csv: one row per item, a failure's guess left empty."""
        writer = csv.writer(f)
        writer.writerow(["title", "truth", "guess", "error", "colour"])
        for title, t, g in zip(titles, truths, guesses):
            error = abs((g or 0.0) - t)
            writer.writerow([title, f"{t:.2f}", "" if g is None else f"{g:.2f}", f"{error:.2f}",
                             colour_for(error, t)])
    atomic_write(out / "predictions.csv", rows)
    fig = plot_chart(truths, guesses, chart_title(name, metrics))
    atomic_write(out / "chart.png", lambda f: fig.savefig(f, format="png", dpi=100), mode="wb")
    return report


def format_summary(report: dict) -> str:
    """The printed summary: one line per price bucket and a total line."""
    lines = [f"{'bucket':<10} {'n':>6} {'avg error':>10} {'RMSLE':>7} {'hits':>7}"]
    for b in report["by_bucket"]:
        if b["n"]:
            lines.append(f"{b['bucket']:<10} {b['n']:>6,} {b['avg_error']:>10,.2f} {b['rmsle']:>7.2f} "
                         f"{b['hit_rate'] * 100:>6.1f}%")
    lines.append(f"{'all':<10} {report['n']:>6,} {report['avg_error']:>10,.2f} {report['rmsle']:>7.2f} "
                 f"{report['hit_rate'] * 100:>6.1f}%")
    lines.append(f"green {report['hit_rate'] * 100:.1f}%  orange {report['orange'] * 100:.1f}%  "
                 f"red {report['red'] * 100:.1f}%  failures {report['failures']:,} of {report['n']:,}")
    return "\n".join(lines)


def format_compare(reports: Sequence[tuple[str, dict]]) -> str:
    """Several reports side by side: name, n, average error, RMSLE, hit rate, failures."""
    width = max([len("name")] + [len(name) for name, _ in reports])
    lines = [f"{'name':<{width}}  {'n':>6}  {'avg error':>10}  {'RMSLE':>6}  {'hit rate':>8}  {'failures':>8}"]
    for name, r in reports:
        lines.append(f"{name:<{width}}  {r['n']:>6,}  {'$' + format(r['avg_error'], ',.2f'):>10}  "
                     f"{r['rmsle']:>6.2f}  {r['hit_rate'] * 100:>7.1f}%  {r['failures']:>8,}")
    return "\n".join(lines)


def load_reports(dirs: Sequence[str]) -> list[tuple[str, dict]]:
    """(name, report) for each folder holding a report.json; the name is the folder's own name."""
    reports = []
    for d in dirs:
        path = Path(d) / "report.json"
        if not path.is_file():
            raise FileNotFoundError(f"no report.json in {d}: pass folders written by evaluate.py --out")
        reports.append((Path(d).resolve().name, json.loads(path.read_text())))
    return reports
