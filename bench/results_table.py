"""The results table from evaluate.py (and bench.ridge) report folders: one row per model and stack,
one column per split, each cell RMSLE / hit rate; or, with --long, one line per report with the lean
above $300, the interval coverage and the comparison with the baseline on the same split; or, with
--buckets, one line per report with the hit rate, lean and interval coverage of each truth price bucket.

    python -m bench.results_table "SmolLM2 base=runs/eval/base-pool" "SmolLM2 base=runs/eval/base-balanced" \
        --baseline runs/baselines/ridge-pool runs/baselines/ridge-balanced [--long]

A report's split is read from its report.json: the held-out source when there is one, else the
balanced sample, else the split (pool test, validation). Give LABEL=DIR to name the row a report
belongs to (several reports may share a label); a bare DIR is labelled by its report's name.
"""
from __future__ import annotations

import argparse
from pathlib import Path

from evaluation.metrics import BUCKETS, compute_metrics
from evaluation.report import ReportError, read_predictions
from evaluation.report import read_report as read_report_json

SPLIT_ORDER = ("validation", "pool", "balanced")


def split_label(report: dict) -> str:
    if report.get("holdout_source"):
        return f"held-out {report['holdout_source']}"
    if report.get("sample") == "balanced":
        return "balanced"
    return "validation" if report.get("split") == "val" else "pool"


def read_report(folder: str | Path) -> dict:
    """report.json; one written before reports had a lean per bucket gets it from predictions.csv beside it."""
    try:
        report = read_report_json(Path(folder) / "report.json")
        stale = any("log_ratio" not in b for b in report.get("by_bucket", [{}]))
        if stale and (Path(folder) / "predictions.csv").is_file():
            rows = read_predictions(folder)
            again = compute_metrics([r["truth"] for r in rows], [r["guess"] for r in rows])
            report.update(by_bucket=again["by_bucket"], log_ratio=again["log_ratio"])
    except ReportError as e:
        raise SystemExit(str(e)) from None
    return report


def dear_lean(report: dict) -> float | None:
    return next((b.get("log_ratio") for b in report.get("by_bucket", []) if b["bucket"] == "$300-1000"), None)


def against(report: dict, base: dict | None) -> str:
    """'-18% / +2.5' : RMSLE change relative to the baseline, hit-rate difference in points."""
    if base is None:
        return ""
    return (f"{100 * (report['rmsle'] / base['rmsle'] - 1):+.0f}% / "
            f"{100 * (report['hit_rate'] - base['hit_rate']):+.1f}")


def parse_entries(entries: list[str]) -> list[tuple[str, dict]]:
    out = []
    for entry in entries:
        label, sep, folder = entry.partition("=")
        if not sep:
            label, folder = "", entry
        report = read_report(folder)
        out.append((label or report.get("name", folder), report))
    return out


def columns_of(reports: list[dict]) -> list[str]:
    found = {split_label(r) for r in reports}
    return [c for c in SPLIT_ORDER if c in found] + sorted(found - set(SPLIT_ORDER))


def matrix(rows: list[tuple[str, dict]], baselines: dict[str, dict]) -> str:
    cols = columns_of([r for _, r in rows])
    labels = list(dict.fromkeys(label for label, _ in rows))
    cell = {(label, split_label(r)): r for label, r in rows}
    lines = ["| model | " + " | ".join(cols) + " |", "|---|" + "---:|" * len(cols)]
    for label in labels:
        lines.append(f"| {label} | " + " | ".join(
            f"{cell[label, c]['rmsle']:.3f} / {100 * cell[label, c]['hit_rate']:.1f}%" if (label, c) in cell else "-"
            for c in cols) + " |")
    if baselines:
        lines.append("| TF-IDF + ridge | " + " | ".join(
            f"{baselines[c]['rmsle']:.3f} / {100 * baselines[c]['hit_rate']:.1f}%" if c in baselines else "-"
            for c in cols) + " |")
    return "\n".join(lines)


def long_table(rows: list[tuple[str, dict]], baselines: dict[str, dict]) -> str:
    fmt = lambda v, f: "-" if v is None else format(v, f)  # noqa: E731
    lines = ["| model | split | n | RMSLE | hits | lean | lean $300-1000 | interval coverage "
             "| vs ridge (RMSLE / hits) |",
             "|---|---|---:|---:|---:|---:|---:|---:|---:|"]
    for label, r in rows + [("TF-IDF + ridge", b) for b in baselines.values()]:
        coverage = (r.get("interval") or {}).get("coverage")
        lines.append(f"| {label} | {split_label(r)} | {r['n']:,} | {r['rmsle']:.3f} | {100 * r['hit_rate']:.1f}% | "
                     f"{fmt(r.get('log_ratio'), '+.2f')} | {fmt(dear_lean(r), '+.2f')} | "
                     f"{fmt(coverage and 100 * coverage, '.1f')}{'%' if coverage is not None else ''} | "
                     f"{against(r, None if label == 'TF-IDF + ridge' else baselines.get(split_label(r)))} |")
    return "\n".join(lines)


def bucket_cell(b: dict) -> str:
    """'77% / -0.85 / 50% (82)': hit rate / lean / interval coverage (when the predictor states intervals) (n)."""
    if not b.get("n") or b.get("log_ratio") is None:
        return "-"
    covered = f" / {100 * b['coverage']:.0f}%" if b.get("coverage") is not None else ""
    return f"{100 * b['hit_rate']:.0f}% / {b['log_ratio']:+.2f}{covered} ({b['n']})"


def bucket_table(rows: list[tuple[str, dict]], baselines: dict[str, dict]) -> str:
    """Hit rate, lean and interval coverage per price bucket of every report: where each model wins and loses its
    hits, and how often its interval holds the truth there."""
    names = [name for name, *_ in BUCKETS]
    lines = ["| model | split | " + " | ".join(names) + " |", "|---|---|" + "---:|" * len(names)]
    reports = rows + [("TF-IDF + ridge", b) for b in baselines.values()]
    for label, r in reports:
        by = {b["bucket"]: b for b in r.get("by_bucket", [])}
        lines.append(f"| {label} | {split_label(r)} | " + " | ".join(bucket_cell(by.get(n, {})) for n in names) + " |")
    lines.append("\nhit rate / lean (mean ln(guess / truth)) / interval coverage (n)"
                 + ("; coverage of the interval as evaluated, raw when its report's interval_margin is 0 or absent "
                    "(python -m bench.interval_transfer: calibrated)" if any(
                        b.get("coverage") is not None for _, r in reports for b in r.get("by_bucket", [])) else ""))
    return "\n".join(lines)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("reports", nargs="+", help="LABEL=DIR or DIR: evaluate.py report folders")
    ap.add_argument("--baseline", nargs="*", default=[],
                    help="report folders of the baseline (bench.ridge), one per split")
    ap.add_argument("--long", action="store_true", help="one line per report, with lean, coverage and the baseline")
    ap.add_argument("--buckets", action="store_true",
                    help="one line per report: hit rate / lean / interval coverage (n) per price bucket")
    args = ap.parse_args()
    rows = parse_entries(args.reports)
    baselines = {split_label(r): r for _, r in parse_entries(args.baseline)}
    print(bucket_table(rows, baselines) if args.buckets else long_table(rows, baselines) if args.long
          else matrix(rows, baselines))


if __name__ == "__main__":
    main()
