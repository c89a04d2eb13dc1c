"""An evaluation's files (report.json, predictions.csv, chart.png), the summaries printed from them, and reading
reports back.

A report is a function of predictions.csv: each guess is scored as the file holds it, to the
cent, so the report can be recomputed from the file, and a run resumed from the rows already
written (evaluate.py --resume) ends with the numbers an uninterrupted run gives.
"""
from __future__ import annotations

import csv
import io
import json
import os
from pathlib import Path
from typing import Any, Sequence

from evaluation.chart import chart_title, plot_chart
from evaluation.metrics import Interval, colours_for, compute_metrics, scored_guess
from evaluation.pricing import mass_cell, uncertain
from utils.atomic import atomic_write, atomic_write_text
from utils.csv_cells import read_text_cell, text_cell

COLUMNS = ("title", "truth", "guess", "error", "colour", "low", "high", "mass", "uncertain")
# The columns before each row said how much of the model's probability the search reached: such a file still
# reads (read_predictions), and an evaluation written so resumes (its earlier rows then get empty mass cells).
OLD_COLUMNS = COLUMNS[:7]


class ReportError(ValueError):
    """A report.json or predictions.csv that evaluate.py did not write as it is (one line naming the file)."""


def cents(guess: float | None) -> float | None:
    """The guess as predictions.csv holds it: rounded to the cent; a failure (None) stays None."""
    return None if guess is None else float(f"{guess:.2f}")


def _money(value: float | None) -> str:
    return "" if value is None else f"{value:.2f}"


def prediction_rows(titles: Sequence[str], truths: Sequence[float], guesses: Sequence[float | None],
                    failures_as_zero: bool = False, header: bool = False,
                    intervals: Sequence[Interval | None] | None = None,
                    masses: Sequence[float | None] | None = None) -> str:
    """predictions.csv rows as CSV text: title, truth, guess (empty for a failure), error, colour, the
    interval's low and high (empty when the predictor states none), the share of the model's probability the
    search reached (`mass`, 4 decimals; report.json's search_mass is its mean) and whether that is too little
    to trust the price (`uncertain` 1 or 0: predict.py's "uncertain" note, evaluation/pricing.py), both empty
    for a predictor that states no mass. A title a spreadsheet would run as a formula is written with a
    leading ' (utils/csv_cells.py); the numbers are written as numbers."""
    buf = io.StringIO()
    writer = csv.writer(buf)
    if header:
        writer.writerow(COLUMNS)
    intervals = intervals if intervals is not None else [None] * len(truths)
    masses = masses if masses is not None else [None] * len(truths)
    for title, t, g, colour, iv, m in zip(titles, truths, guesses, colours_for(truths, guesses, failures_as_zero),
                                          intervals, masses):
        low, high = iv if iv is not None else (None, None)
        m = mass_cell(m)
        writer.writerow([text_cell(title), f"{t:.2f}", _money(g), f"{abs(scored_guess(g) - t):.2f}", colour,
                         _money(low), _money(high), "" if m is None else f"{m:.4f}",
                         "" if m is None else int(uncertain(m))])
    return buf.getvalue()


def cents_interval(interval: Interval | None) -> Interval | None:
    """An interval as predictions.csv holds it: both ends to the cent."""
    return None if interval is None else (cents(interval[0]), cents(interval[1]))


def build_report(truths: Sequence[float], guesses: Sequence[float | None], provenance: dict,
                 failures_as_zero: bool = False, total: int | None = None,
                 intervals: Sequence[Interval | None] | None = None) -> dict:
    """report.json's content: the metrics of the guesses (to the cent), whether all `total` items are in, provenance."""
    total = len(truths) if total is None else total
    if intervals is not None:
        intervals = [cents_interval(iv) for iv in intervals]
    metrics = compute_metrics(truths, [cents(g) for g in guesses], failures_as_zero, intervals) if truths else {"n": 0}
    return {**metrics, "complete": len(truths) == total, "total": total, **provenance}


def write_report(out_dir: str | os.PathLike, titles: Sequence[str], truths: Sequence[float],
                 guesses: Sequence[float | None], provenance: dict, name: str, failures_as_zero: bool = False,
                 intervals: Sequence[Interval | None] | None = None, log_axes: bool = True,
                 masses: Sequence[float | None] | None = None) -> dict:
    """Write report.json, predictions.csv and chart.png into out_dir; return the report (metrics, then provenance).

    `intervals` are the predictor's (low, high) per item, when it states them, `masses` the share of the
    model's probability its search reached per item; `log_axes` False draws the course's linear chart.
    """
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    guesses = [cents(g) for g in guesses]
    report = build_report(truths, guesses, provenance, failures_as_zero, intervals=intervals)
    atomic_write_text(out / "predictions.csv", prediction_rows(titles, truths, guesses, failures_as_zero, header=True,
                                                               intervals=intervals, masses=masses))
    write_chart(out, truths, guesses, chart_title(name, report), failures_as_zero, log_axes)
    atomic_write_text(out / "report.json", json.dumps(report, indent=2) + "\n")
    return report


def write_chart(out: Path, truths: Sequence[float], guesses: Sequence[float | None], title: str,
                failures_as_zero: bool = False, log_axes: bool = True) -> Path:
    """Draw the course's chart (`plot_chart`) into out/chart.png, atomically; return its path."""
    fig = plot_chart(truths, guesses, title, failures_as_zero, log_axes)
    atomic_write(out / "chart.png", lambda f: fig.savefig(f, format="png", dpi=100), mode="wb")
    return out / "chart.png"


def format_summary(report: dict) -> str:
    """The printed summary: one line per price bucket, a total line, the colours, and the failures on their own."""
    covered = "interval" in report
    lines = [f"{'bucket':<10} {'n':>6} {'avg error':>10} {'RMSLE':>7} {'hits':>7} {'lean':>7}"
             + (f" {'covered':>8}" if covered else "")]
    for b in report["by_bucket"] + [{**report, "bucket": "all", "coverage": report.get("interval", {}).get("coverage")}]:
        if b["n"]:
            lines.append(f"{b['bucket']:<10} {b['n']:>6,} {b['avg_error']:>10,.2f} {b['rmsle']:>7.2f} "
                         f"{b['hit_rate'] * 100:>6.1f}% {_signed(b.get('log_ratio')):>7}"
                         + (f" {_percent(b.get('coverage')):>8}" if covered else ""))
    lines.append("lean: mean ln(guess / truth), 0 unbiased, -0.69 = half the truth"
                 + (f"; covered: share of truths inside the predictor's {_level(report)} interval "
                    f"(median width ${report['interval']['median_width']:,.2f})" if covered and
                    report["interval"]["n"] else ""))
    lines.append(f"green {report['hit_rate'] * 100:.1f}%  orange {report['orange'] * 100:.1f}%  "
                 f"red {report['red'] * 100:.1f}%")
    line = f"failures {report['failures']:,} of {report['n']:,}"
    if report["failures"] and report.get("score_failures_as_zero"):
        line += " (no price in the reply): scored as a $0 guess, colours included (--score-failures-as-zero)"
    elif report["failures"]:
        line += " (no price in the reply): counted as misses; avg error and RMSLE score them as a $0 guess"
    return "\n".join(lines + [line])


def _signed(value: float | None) -> str:
    return "" if value is None else f"{value:+.2f}"


def _percent(value: float | None) -> str:
    return "" if value is None else f"{value * 100:.1f}%"


def _level(report: dict) -> str:
    quantiles = report.get("interval_quantiles")
    return f"{round((quantiles[1] - quantiles[0]) * 100)}%" if isinstance(quantiles, list) else "stated"


def _label(name: str, report: dict) -> str:
    """A report's name in --compare, marked when the report covers only part of its items."""
    if report.get("complete", True):
        return name
    return f"{name} (partial: {report['n']:,} of {report.get('total', '?'):,})"


def format_compare(reports: Sequence[tuple[str, dict]]) -> str:
    """Several reports side by side: name, n, average error, RMSLE, hit rate, failures."""
    labels = [_label(name, r) for name, r in reports]
    width = max([len("name")] + [len(label) for label in labels])
    lines = [f"{'name':<{width}}  {'n':>6}  {'avg error':>10}  {'RMSLE':>6}  {'hit rate':>8}  {'failures':>8}"]
    for label, (_, r) in zip(labels, reports):
        lines.append(f"{label:<{width}}  {r['n']:>6,}  {'$' + format(r['avg_error'], ',.2f'):>10}  "
                     f"{r['rmsle']:>6.2f}  {r['hit_rate'] * 100:>7.1f}%  {r['failures']:>8,}")
    return "\n".join(lines)


def read_report(path: Path) -> dict:
    """The JSON object in report.json; ReportError naming the file when it is unreadable or not an object."""
    redo = f"run evaluate.py --out {path.parent} again"
    try:
        report = json.loads(path.read_bytes().decode("utf-8"))
    except OSError as e:
        raise ReportError(f"{path}: cannot be read ({e.strerror})") from None
    except UnicodeDecodeError:
        raise ReportError(f"{path}: not UTF-8 text, so not a report evaluate.py wrote; {redo}") from None
    except RecursionError:
        raise ReportError(f"{path}: not valid JSON (nested too deeply); {redo}") from None
    except ValueError as e:
        raise ReportError(f"{path}: not valid JSON ({str(e)[:80]}); {redo}") from None
    if not isinstance(report, dict):
        raise ReportError(f"{path}: holds a {type(report).__name__}, not a report object; {redo}")
    return report


def read_predictions(path: str | os.PathLike) -> list[dict[str, Any]]:
    """The rows of a predictions.csv (or of the one in a report folder): title, and truth, guess, low, high and
    mass as floats, None where empty (a failure; no interval or mass, or a file from before either), and
    uncertain as True, False or None (no mass stated). For tools that read evaluations back
    (evaluation.calibration, bench/); ReportError naming the file when it is not one."""
    path = Path(path)
    path = path / "predictions.csv" if path.is_dir() else path
    try:
        with path.open(newline="", encoding="utf-8") as f:
            rows = list(csv.DictReader(f))
    except OSError as e:
        raise ReportError(f"{path}: cannot be read ({e.strerror})") from None
    except (UnicodeDecodeError, csv.Error) as e:
        raise ReportError(f"{path}: not a predictions file evaluate.py wrote ({e})") from None
    if rows and not {"title", "truth", "guess"} <= set(rows[0]):
        raise ReportError(f"{path}: lacks the title, truth and guess columns evaluate.py writes")

    def price(row: dict, i: int, key: str) -> float | None:
        try:
            return float(row[key]) if row.get(key) else None
        except ValueError:
            raise ReportError(f"{path}: row {i} has {row[key]!r:.20} where a price goes") from None

    def flag(row: dict, i: int) -> bool | None:
        cell = row.get("uncertain") or ""
        if cell not in ("", "0", "1"):
            raise ReportError(f"{path}: row {i} has {cell!r:.20} where 1 or 0 (uncertain) goes")
        return None if not cell else cell == "1"

    return [{"title": read_text_cell(r["title"]), **{k: price(r, i, k) for k in ("truth", "guess", "low", "high")},
             "mass": price(r, i, "mass"), "uncertain": flag(r, i)} for i, r in enumerate(rows, 1)]


def _is_count(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and value >= 0


def check_metrics(path: Path, report: dict) -> dict:
    """The report itself when it holds the metrics --compare prints; ReportError naming the file otherwise."""
    for key in ("n", "avg_error", "rmsle", "hit_rate", "failures"):
        if key not in report:
            raise ReportError(f"{path}: lacks {key}, so it is not a report evaluate.py wrote; "
                              f"run evaluate.py --out {path.parent} again")
        value = report[key]
        if key in ("n", "failures") and not _is_count(value):
            raise ReportError(f"{path}: {key} is {value!r:.40}, not a count; it is damaged")
        if key not in ("n", "failures") and (isinstance(value, bool) or not isinstance(value, (int, float))):
            raise ReportError(f"{path}: {key} is {value!r:.40}, not a number; it is damaged")
        if key == "n" and value == 0:
            raise ReportError(f"{path}: scored no items yet (interrupted before its first batch); "
                              f"finish it with evaluate.py --resume --out {path.parent}")
    return report


def load_reports(dirs: Sequence[str]) -> list[tuple[str, dict]]:
    """(name, report) for each folder holding a report.json; the name is the folder's own name, with its parent's
    in front when two folders share a name (adapters/a/eval-pool and adapters/b/eval-pool: a/eval-pool, b/eval-pool)."""
    reports = []
    for d in dirs:
        path = Path(d) / "report.json"
        if not path.is_file():
            raise FileNotFoundError(f"no report.json in {d}: pass folders written by evaluate.py --out")
        reports.append(check_metrics(path, read_report(path)))
    folders = [Path(d).resolve() for d in dirs]
    names = [f.name for f in folders]
    names = [f"{f.parent.name}/{f.name}" if names.count(f.name) > 1 else f.name for f in folders]
    return list(zip(names, reports))


def append_to_model_card(adapter: str | os.PathLike, report: dict) -> Path | None:
    """Add this evaluation's metrics under the "## Evaluations" of the adapter's README.md (train.py's model card),
    opening that section when the card has none; returns the card, or None when the adapter has none."""
    card = Path(adapter) / "README.md"
    if not card.is_file():
        return None
    data = report.get("data", "?") + (f", held-out source {report['holdout_source']}" if report.get("holdout_source")
                                      else "")
    lines = [f"### {report.get('time', '')[:10]}: {report.get('split')} split of {data}, {report['n']:,} items"
             + (f" ({report['sample']} sample)" if report.get("limit") else ""),
             f"predictor {report.get('predictor')}" + (f", estimate {report['estimate']}" if "estimate" in report
                                                        else "")
             + (f", search width {report['search_width']}" if report.get("search_width") else "")
             + f", device {report.get('device')}", "",
             "| metric | value |", "|---|---|", f"| RMSLE | {report['rmsle']:.3f} |",
             f"| hit rate | {report['hit_rate'] * 100:.1f}% |", f"| average error | ${report['avg_error']:,.2f} |",
             f"| failures | {report['failures']:,} |"]
    if report.get("interval", {}).get("n"):
        lines.append(f"| interval coverage | {report['interval']['coverage'] * 100:.1f}% |")
    text = card.read_text().rstrip("\n")
    if "\n## Evaluations" not in text:
        text += "\n\n## Evaluations\n\nAdded by `evaluate.py --update-card`."
    atomic_write_text(card, text + "\n\n" + "\n".join(lines) + "\n")
    return card
