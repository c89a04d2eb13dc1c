"""How far a fitted interval margin carries from the split it was fitted on to the others, above all to a source
the model never saw; printed from the committed report folders (raw intervals), on this CPU in seconds.

For each recipe: the split-conformal margin (evaluation/calibration.py) fitted on each split and the coverage
each fit gives on every split (the transfer matrix); the margin that minimises the worst held-out source's
distance from the nominal coverage (calibration.fit_worst_case, what `python -m evaluation.calibration
--held-out` stores) and that distance; the margins, if any, that put every held-out source within
--tolerance of nominal; and by truth price bucket, on pool and each held-out source, the lean (mean
ln(guess / truth)), the coverage at the validation margin and at the worst-case one, and the hit rate.

    python -m bench.interval_transfer                          # the shipped recipes at width 100, then 30
    python -m bench.interval_transfer --recipe smol-w100 gemma-w100  # what the shipped margins are fitted from
    python -m bench.interval_transfer --recipe mine --folder mine:val=runs/mine/eval-val

A recipe's folders are ROOT/RECIPE-SPLIT for SPLIT in val, pool, balanced, loso-<source> (those that hold a
predictions.csv), then any --folder RECIPE:SPLIT=DIR. A held-out split is one whose report.json names a
holdout_source: an adapter of the same recipe trained without that source and tested on all of its listings.
"""
from __future__ import annotations

import argparse
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

from evaluation.calibration import COVERAGE, covered_share, coverage_of, fit_margin_or_none, fit_worst_case, scores
from evaluation.metrics import BUCKETS, compute_metrics
from evaluation.report import ReportError, read_predictions, read_report
from predictors.interval_margin import widen

ROOT = Path(__file__).resolve().parent.parent
SPLITS = ("val", "pool", "balanced")
RECIPES = {"smol-w100": "SmolLM2 135M, shipped recipe (answers padded to 4 digits), search width 100",
           "gemma-w100": "Gemma 3 270M, shipped recipe, search width 100",
           "smol-w4": "SmolLM2 135M, shipped recipe, search width 30 (2026-12-02)",
           "gemma-lr2e-4": "Gemma 3 270M, shipped recipe, search width 30 (2026-12-02)",
           "gemma-w4": "Gemma 3 270M, answers padded to 4 digits (not shipped), search width 30"}
# The shipped adapters' validation, pool and balanced predictions (today's search) live beside them, and the held-out
# adapters' at the same search in bench/results/search-width, not under ROOT.
SHIPPED = {"smol-w100": "adapters/smollm2-135m-pricer", "gemma-w100": "adapters/gemma3-270m-pricer"}
FOLDERS = tuple([f"{recipe}:{s}={adapter}/eval-{s}" for recipe, adapter in SHIPPED.items() for s in SPLITS]
                + [f"{recipe}:loso-{source}=bench/results/search-width/{recipe}-loso-{source}"
                   for recipe in SHIPPED for source in ("mixed", "musical-appliances")])
# The metrics' buckets, $300-1000 and >=$1000 as one: the held-out sources have no listing at $1000 or more.
TRUST_BUCKETS = BUCKETS[:4] + (("$300+", BUCKETS[4][1], math.inf),)
TOLERANCE = 0.05


@dataclass
class Split:
    """One report folder's items with a stated (raw) interval."""
    label: str                      # "val", "pool", "balanced", "held-out mixed"
    folder: Path
    truths: list[float]
    guesses: list[float | None]
    intervals: list[tuple[float, float]]
    held_out: bool

    def coverage(self, margin: float) -> float:
        """Share of truths inside the intervals widened by `margin` (calibration.coverage_of)."""
        return coverage_of(self.truths, self.intervals, margin)


def load_split(name: str, folder: Path) -> Split:
    """A report folder as a Split; SystemExit (one line) when it is missing, unreadable or already widened."""
    try:
        report = read_report(folder / "report.json")
        rows = read_predictions(folder)
    except ReportError as e:
        raise SystemExit(f"error: {e}") from None
    if report.get("interval_margin"):
        raise SystemExit(f"error: {folder}: its intervals were widened (margin {report['interval_margin']:.3f}); "
                         "this compares raw intervals (evaluate.py --interval-calibration off)")
    rows = [r for r in rows if r["low"] is not None and r["high"] is not None and r["low"] > 0 and r["truth"] > 0]
    if not rows:
        raise SystemExit(f"error: {folder}: no item states an interval (evaluate with --predictor expected)")
    source = report.get("holdout_source")
    return Split(f"held-out {source}" if source else name, folder, [r["truth"] for r in rows],
                 [r["guess"] for r in rows], [(r["low"], r["high"]) for r in rows], bool(source))


def recipe_folders(root: Path, recipe: str, extra: Sequence[str]) -> dict[str, Path]:
    """SPLIT -> folder of a recipe: ROOT/RECIPE-SPLIT for the splits with predictions, then --folder
    RECIPE:SPLIT=DIR."""
    found = {s: root / f"{recipe}-{s}" for s in SPLITS if (root / f"{recipe}-{s}" / "predictions.csv").is_file()}
    found.update({p.name[len(recipe) + 1:]: p for p in sorted(root.glob(f"{recipe}-loso-*"))
                  if (p / "predictions.csv").is_file()})
    for entry in extra:
        key, sep, folder = entry.partition("=")
        name, colon, split = key.partition(":")
        if not sep or not colon:
            raise SystemExit(f"error: --folder {entry}: write RECIPE:SPLIT=DIR")
        if name == recipe:
            found[split] = Path(folder) if Path(folder).is_absolute() else ROOT / folder
    order = [s for s in SPLITS if s in found] + sorted(s for s in found if s not in SPLITS)
    return {s: found[s] for s in order}


def fitted(split: Split, coverage: float) -> float | None:
    """The split-conformal margin of one split, None when it has too few items."""
    return fit_margin_or_none(split.truths, split.intervals, coverage)


def within(held: Sequence[Split], coverage: float, tolerance: float) -> tuple[float, float] | None:
    """(smallest, largest) item score at which every held-out split's coverage is within `tolerance` of
    `coverage`, None when no margin does that. Coverage only changes at a score, so the scores are the margins
    to try (the largest holds until the next score up)."""
    ordered = [sorted(scores(s.truths, s.intervals)) for s in held]
    ok = [q for q in sorted({q for group in ordered for q in group})
          if all(abs(covered_share(g, q) - coverage) <= tolerance + 1e-12 for g in ordered)]
    return (ok[0], ok[-1]) if ok else None


def margin_text(margin: float | None) -> str:
    return "-" if margin is None else f"{margin:+.3f} (x{math.exp(margin):.2f})"


def transfer_table(splits: Sequence[Split], margins: dict[str, float | None]) -> str:
    """Markdown: one row per margin (fitted on a split, or named), its coverage on every split."""
    lines = ["| margin fitted on | margin | " + " | ".join(s.label for s in splits) + " |",
             "|---|---:|" + "---:|" * len(splits)]
    for name, margin in margins.items():
        cells = ["-" if margin is None else f"{100 * s.coverage(margin):.1f}%" for s in splits]
        lines.append(f"| {name} | {margin_text(margin)} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def bucket_rows(split: Split, margins: Sequence[float]) -> list[tuple[str, int, float | None, list, float]]:
    """(bucket, n, lean, [coverage at each margin], hit rate) per TRUST_BUCKET with items; the metrics are
    evaluation.metrics.compute_metrics' on the bucket's items, intervals widened by each margin."""
    out = []
    for name, lo, hi in TRUST_BUCKETS:
        idx = [i for i, t in enumerate(split.truths) if lo <= t < hi]
        if not idx:
            continue
        truths, guesses = [split.truths[i] for i in idx], [split.guesses[i] for i in idx]
        covered = [compute_metrics(truths, guesses, intervals=[widen(*split.intervals[i], m) for i in idx])
                   ["interval"]["coverage"] for m in margins]
        plain = compute_metrics(truths, guesses)
        out.append((name, len(idx), plain["log_ratio"], covered, plain["hit_rate"]))
    return out


def bucket_table(splits: Sequence[Split], margins: dict[str, float]) -> str:
    """Markdown: per split and truth bucket, n, lean, the coverage at each named margin and the hit rate."""
    lines = ["| split | bucket | n | lean | " + " | ".join(f"covered at {k}" for k in margins) + " | hit rate |",
             "|---|---|---:|---:|" + "---:|" * len(margins) + "---:|"]
    for split in splits:
        for name, n, lean, covered, hits in bucket_rows(split, list(margins.values())):
            lines.append(f"| {split.label} | {name} | {n:,} | {'-' if lean is None else format(lean, '+.2f')} | "
                         + " | ".join(f"{100 * c:.0f}%" for c in covered) + f" | {100 * hits:.0f}% |")
    return "\n".join(lines)


def recipe_report(recipe: str, splits: Sequence[Split], coverage: float, tolerance: float) -> str:
    """One recipe's section: the fits, the transfer matrix, the worst-case margin, and the buckets."""
    held = [s for s in splits if s.held_out]
    margins = {f"{s.label}": fitted(s, coverage) for s in splits}
    lines = [f"## {recipe}: {RECIPES.get(recipe, 'reports in ' + str(splits[0].folder.parent))}", "",
             f"Coverage of the raw {coverage:.0%} intervals widened by each margin (split-conformal, "
             "evaluation/calibration.py):", ""]
    named = {"(raw)": 0.0, **margins}
    worst_case = None
    if held:
        worst_case, distance = fit_worst_case([(s.truths, s.intervals) for s in held], coverage)
        named["worst held-out source (minimax)"] = worst_case
    lines += [transfer_table(splits, named), ""]
    if held:
        worst = max(held, key=lambda s: abs(s.coverage(worst_case) - coverage))
        band = within(held, coverage, tolerance)
        lines.append(f"The minimax margin {margin_text(worst_case)} leaves the worst held-out source "
                     f"{100 * distance:.1f} points from {coverage:.0%} ({worst.label} "
                     f"{100 * worst.coverage(worst_case):.1f}%). Margins putting every held-out source within "
                     f"{100 * tolerance:.0f} points: " + (f"{band[0]:+.3f} to {band[1]:+.3f}." if band else "none."))
        lines.append("")
    shown = [s for s in splits if s.label == "pool" or s.held_out]
    at = {k: v for k, v in (("the validation margin", margins.get("val")), ("the minimax margin", worst_case))
          if v is not None}
    if shown and at:
        lines += ["By truth price (lean: mean ln(guess / truth); hit rate: the course's green):", "",
                  bucket_table(shown, at), ""]
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m bench.interval_transfer", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--recipe", nargs="+", default=list(RECIPES), help="recipe names (default: %(default)s)")
    ap.add_argument("--root", default=str(ROOT / "bench/results/quality"), help="where RECIPE-SPLIT folders are")
    ap.add_argument("--folder", nargs="*", default=list(FOLDERS), metavar="RECIPE:SPLIT=DIR",
                    help="a split's folder outside ROOT (default: %(default)s)")
    ap.add_argument("--coverage", type=float, default=COVERAGE, help="the nominal coverage (default 0.8)")
    ap.add_argument("--tolerance", type=float, default=TOLERANCE, help="the band to look for (default 0.05)")
    args = ap.parse_args(argv)
    if not 0 < args.coverage < 1:
        raise SystemExit(f"error: --coverage must be between 0 and 1, not {args.coverage}")
    sections = []
    for recipe in args.recipe:
        folders = recipe_folders(Path(args.root), recipe, args.folder)
        if not folders:
            raise SystemExit(f"error: no {recipe}-<split> folder in {args.root}")
        sections.append(recipe_report(recipe, [load_split(s, f) for s, f in folders.items()], args.coverage,
                                      args.tolerance))
    print("\n".join(sections).rstrip())
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
