"""Which point estimate and digit-search width serve the expected predictor best.

The model's price distributions (`predictors.digit_search.price_distributions`) are computed once per split
and search width; every point estimate of `predictors.ESTIMATES` (mean, log-mean, median, hit)
is then read off the same distributions, so trying an estimate costs no model time.
--splits picks the splits, drawn exactly as evaluate.py draws them; the default is pool and
balanced, the test splits of the quality table:

    val        the whole validation split  = evaluate.py --split val [--limit N]
    pool       the whole test split        = evaluate.py --split test [--limit N]
    balanced   price-balanced test items   = evaluate.py --split test --sample balanced --limit 400

--limit N caps each, for quick runs (val, pool: N items by hash; balanced: min(N, --balanced-limit)).
Every (width, estimate, split) gets an evaluate.py report folder, so `evaluate.py --compare`
reads them, and each (width, split) keeps its raw distributions; under --out:

    <name>-w<width>-<split>.dists.json.gz     titles, truths, distributions and provenance
    <name>-w<width>-<estimate>-<split>/       report.json, predictions.csv, chart.png
    table.txt                                 the printed table

--reuse reads the .dists.json.gz files of an earlier run instead of loading the model; it refuses
files made with other options (`REUSE_KEYS`: another split, data, holdout source, model, ...).

    python -m bench.estimators --adapter adapters/smollm2-135m-pricer --data data/amazon-prices \\
        --widths 10 30 --out runs/estimators [--splits val] [--limit 100] [--batch-size 64]
"""
from __future__ import annotations

import argparse
import gzip
import json
import sys
import time
from pathlib import Path
from typing import Any, Sequence

from evaluation import (add_model_options, load_model, model_name, pick_items, provenance, resolve_base,
                        with_run_defaults, write_report)
from predictors import ESTIMATES, SEARCH_DIGITS, SEARCH_WIDTH, point_estimate, price_distributions, search_record
from predictors.expected import INTERVAL, interval
from predictors.digit_search import ACCOUNTING
from utils.atomic import atomic_write

SPLITS = ("val", "pool", "balanced")   # --splits' choices
DEFAULT_SPLITS = ("pool", "balanced")   # the test splits of the quality table


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    """The command line (see the module docstring); unset model options default as in evaluate.py."""
    p = argparse.ArgumentParser(prog="python -m bench.estimators", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    add_model_options(p)
    p.add_argument("--widths", type=int, nargs="+", default=[SEARCH_WIDTH],
                   help=f"digit-search widths (top_m) to measure (default {SEARCH_WIDTH})")
    p.add_argument("--search-digits", type=int, default=SEARCH_DIGITS,
                   help=f"digits of the longest price searched (default {SEARCH_DIGITS})")
    p.add_argument("--search-accounting", choices=ACCOUNTING, default="none",
                   help="what the digit search does with the mass it prunes (evaluate.py's option; default none)")
    p.add_argument("--estimates", nargs="+", choices=ESTIMATES, default=list(ESTIMATES))
    p.add_argument("--splits", nargs="+", choices=SPLITS, default=list(DEFAULT_SPLITS),
                   help=f"splits to measure, in this order (default {' '.join(DEFAULT_SPLITS)}; see above)")
    p.add_argument("--limit", type=int, help="at most N items per split (a deterministic sample), for quick runs")
    p.add_argument("--balanced-limit", type=int, default=400, help="items in the balanced split (default 400)")
    p.add_argument("--reuse", action="store_true",
                   help="read the distributions saved in --out by an earlier run; the model is not loaded")
    p.add_argument("--out", required=True, help="folder for the report folders, distributions and table")
    args = p.parse_args(argv)
    if not args.data:
        p.error("--data is required")
    for flag in ("limit", "balanced_limit", "batch_size", "search_digits"):
        if getattr(args, flag) is not None and getattr(args, flag) <= 0:
            p.error(f"--{flag.replace('_', '-')} must be positive")
    if min(args.widths) <= 0:
        p.error("--widths must be positive")
    args.widths = sorted(set(args.widths))
    args.splits = list(dict.fromkeys(args.splits))
    return with_run_defaults(args)


def split_args(args: argparse.Namespace, split: str) -> argparse.Namespace:
    """evaluate.py's arguments for one split: what `pick_items` and `provenance` read."""
    if split == "val":
        return argparse.Namespace(**{**vars(args), "split": "val", "sample": "pool", "predictor": "expected"})
    limit = args.limit if split == "pool" else min(args.limit or args.balanced_limit, args.balanced_limit)
    return argparse.Namespace(**{**vars(args), "split": "test", "sample": split, "limit": limit,
                                 "predictor": "expected"})


def split_of(report: dict) -> str:
    """The --splits name a report was made for: val, or the test split's sample (pool, balanced)."""
    return report["sample"] if report["split"] == "test" else report["split"]


def dists_path(out: Path, name: str, width: int, split: str) -> Path:
    """Where the distributions of one (width, split) are saved."""
    return out / f"{name}-w{width}-{split}.dists.json.gz"


def save_distributions(path: Path, saved: dict) -> None:
    """Write {record, titles, truths, dists} as gzip JSON; each distribution as [[price, p], ...] in its order."""
    body = {**saved, "dists": [list(d.items()) for d in saved["dists"]]}
    atomic_write(path, lambda f: f.write(gzip.compress(json.dumps(body).encode())), mode="wb")


def load_distributions(path: str | Path) -> dict:
    """What `save_distributions` wrote: record, titles, truths and dists ({price: probability} each)."""
    if not Path(path).is_file():
        raise FileNotFoundError(f"no {path}: run once without --reuse (same --out, widths and model)")
    body = json.loads(gzip.decompress(Path(path).read_bytes()))
    body["dists"] = [{int(v): p for v, p in pairs} for pairs in body["dists"]]
    return body


# What must match for saved distributions to stand for this command line.
REUSE_KEYS = ("base", "adapter", "data", "split", "holdout_source", "seed", "val_fraction", "test_fraction", "limit",
              "bits", "max_text_tokens", "search_digits", "answer_width", "search_accounting")
# what a saved record that lacks the key means (evaluation.run_settings; files from before the accounting option)
OMITTED_AT = {"answer_width": 0, "search_accounting": "none"}


def check_reused(record: dict, sargs: argparse.Namespace, path: Path) -> None:
    """Refuse saved distributions made with other options than this command line's (ValueError)."""
    wanted = {**vars(sargs), "base": resolve_base(sargs.adapter, sargs.base)}
    saved = {k: record.get(k, OMITTED_AT.get(k)) for k in REUSE_KEYS}
    differ = [f"{k} {saved[k]!r} (now {wanted[k]!r})" for k in REUSE_KEYS if saved[k] != wanted[k]]
    if differ:
        raise ValueError(f"{path} was made with other options: {', '.join(differ)}; rerun without --reuse")


def measure(model: Any, tokenizer: Any, args: argparse.Namespace, base: str, split: str, items: list,
            width: int) -> dict:
    """The distributions of one split at one width, with the provenance every report of it shares."""
    from data import test_prompt

    prompts = [test_prompt(it, tokenizer, args.max_text_tokens) for it in items]
    start = time.perf_counter()
    # The whole split at once: the predictor groups prompts by length into the batches evaluate.py
    # forms too (evaluation.in_length_order), so these reports are the ones evaluate.py writes.
    searched: list[float] = []
    dists = price_distributions(model, tokenizer, prompts, args.batch_size, max_digits=args.search_digits, top_m=width,
                                answer_width=args.answer_width, accounting=args.search_accounting, searched=searched)
    seconds = time.perf_counter() - start
    dists = [dict(sorted(d.items())) for d in dists]   # as load_distributions reads them: same sums, same bits
    record = provenance(split_args(args, split), model_name(args.adapter, base), base, model, len(items),
                        seconds, search_record(searched, width, args.search_digits, args.search_accounting))
    return {"record": record, "titles": [it.title for it in items], "truths": [it.price for it in items],
            "dists": dists}


def report_for(out: Path, saved: dict, how: str, split: str) -> dict:
    """Write the evaluate.py report folder of one estimate over saved distributions; return the report."""
    record = {**saved["record"], "estimate": how, "interval_quantiles": list(INTERVAL), "interval_margin": 0.0}
    name, width = record["name"], record["search_width"]
    guesses = [point_estimate(d, how) for d in saved["dists"]]
    # The raw 80% intervals (record: interval_margin 0) and, where the search's mass is the distribution's own
    # (no accounting), each item's mass: the columns evaluate.py writes, for calibration and bench.interval_transfer.
    intervals = [interval(d) for d in saved["dists"]]
    masses = ([sum(d.values()) for d in saved["dists"]] if record.get("search_accounting", "none") == "none"
              else None)
    return write_report(out / f"{name}-w{width}-{how}-{split}", saved["titles"], saved["truths"], guesses,
                        record, f"{name} w{width} {how} ({split})",
                        intervals=[iv if None not in iv else None for iv in intervals], masses=masses)


def format_table(reports: Sequence[dict]) -> str:
    """One line per (width, estimate, split): metrics, mean search mass and the distributions' seconds."""
    lines = [f"{'width':>5}  {'estimate':<8}  {'split':<8}  {'n':>5}  {'RMSLE':>6}  {'hit rate':>8}  "
             f"{'avg error':>9}  {'mass':>5}  {'seconds':>8}  {'s/item':>6}"]
    for r in reports:
        lines.append(f"{r['search_width']:>5}  {r['estimate']:<8}  {split_of(r):<8}  {r['n']:>5}  "
                     f"{r['rmsle']:>6.3f}  {r['hit_rate'] * 100:>7.1f}%  {r['avg_error']:>9.2f}  "
                     f"{r['search_mass']:>5.3f}  {r['seconds']:>8.1f}  {r['seconds'] / r['n']:>6.3f}")
    return "\n".join(lines)


def run(args: argparse.Namespace) -> list[dict]:
    """Measure (or reload) every (split, width), write every report; return the reports in table order."""
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    base = resolve_base(args.adapter, args.base)
    name = model_name(args.adapter, base)
    model = tokenizer = None
    reports = []
    for split in args.splits:
        items = None
        for width in args.widths:
            path = dists_path(out, name, width, split)
            if args.reuse:
                saved = load_distributions(path)
                check_reused(saved["record"], split_args(args, split), path)
            else:
                if model is None:
                    model, tokenizer = load_model(base, args.adapter, args.bits, args.quant_type,
                                                  args.compute_dtype)
                items = items if items is not None else pick_items(split_args(args, split))[0]
                saved = measure(model, tokenizer, args, base, split, items, width)
                save_distributions(path, saved)
            reports += [report_for(out, saved, how, split) for how in args.estimates]
    return reports


def main(argv: Sequence[str] | None = None) -> int:
    """Run, print the table and save it as <out>/table.txt; user errors print `error: ...` and return 2."""
    args = parse_args(argv)
    try:
        reports = run(args)
    except (ValueError, FileNotFoundError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    table = format_table(reports)
    (Path(args.out) / "table.txt").write_text(table + "\n")
    print(table)
    return 0


if __name__ == "__main__":
    sys.exit(main())
