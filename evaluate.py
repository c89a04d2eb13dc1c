"""Evaluate a base model (and optionally an adapter) on a price split, as the course's Tester did.

    base (+ adapter) -> prompts of a split -> predictor -> metrics -> report.json, predictions.csv, chart.png

The predictors come from predictors' registry (`python evaluate.py --help` lists them with their
options); all are batched with left padding and the KV cache, and deterministic:
- greedy:    generate a few tokens after "Price is $" and read the first number.
- expected:  a point estimate (--estimate: mean, log-mean or median) of the model's price
             distribution after "Price is $"; see predictors/expected.py for the digit search.
- mean / median: constant baselines from the training split's prices.

Metrics follow the course's Tester (predictors/metrics.py): absolute error, RMSLE, and colours
green, orange and red. A reply with no number is scored as a guess of $0 and counted in `failures`.

    python evaluate.py --adapter runs/demo/adapter --data data/amazon-prices --out runs/demo/eval
    python evaluate.py --compare runs/base-eval runs/demo/eval
"""
from __future__ import annotations

import argparse
import sys
import time
from typing import Sequence

from predictors import (OptionError, add_model_options, add_predictor_options, format_compare, format_summary,
                        load_model, load_reports, model_name, pick_items, predictor_from_args, provenance, resolve_base,
                        with_run_defaults, write_report)


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    """The command line (see the module docstring)."""
    p = argparse.ArgumentParser(prog="evaluate.py", description="Evaluate a base model (+ adapter) on prices.")
    p.add_argument("--compare", nargs="+", metavar="DIR", help="print these report folders side by side and exit")
    add_model_options(p)
    p.add_argument("--split", choices=("test", "val", "train", "all"), default="test")
    p.add_argument("--limit", type=int, help="evaluate a deterministic sample of N items of the split")
    p.add_argument("--sample", choices=("pool", "balanced"), default="pool",
                   help="how --limit draws: by hash from the split, or spread over price buckets")
    add_predictor_options(p)
    p.add_argument("--out", help="folder for report.json, predictions.csv and chart.png")
    args = p.parse_args(argv)
    if not args.compare and (not args.data or not args.out):
        p.error("--data and --out are required (or --compare DIR ...)")
    if args.limit is not None and args.limit <= 0:
        p.error("--limit must be a positive number of items")
    if args.batch_size <= 0:
        p.error("--batch-size must be positive")
    try:
        predictor_from_args(args)   # a usage error now, before any data or model is read
    except OptionError as e:
        p.error(str(e))
    return with_run_defaults(args)


def run(args: argparse.Namespace) -> dict:
    """Evaluate as the arguments say, write the outputs and return the report."""
    from data import test_prompt

    items, train_prices = pick_items(args)
    predictor = predictor_from_args(args)
    model = tokenizer = base = None
    if predictor.needs_model:
        base = resolve_base(args.adapter, args.base)
        model, tokenizer = load_model(base, args.adapter, args.bits, args.quant_type, args.compute_dtype)
    prompts = [test_prompt(it, tokenizer, args.max_text_tokens) for it in items]
    start = time.perf_counter()
    predictions = predictor.predict(prompts, model=model, tokenizer=tokenizer, batch_size=args.batch_size,
                                    train_prices=train_prices)
    seconds = time.perf_counter() - start
    name = model_name(args.adapter, base) if base is not None else f"{predictor.name} baseline"
    record = provenance(args, name, base, model, len(items), seconds, predictor.record())
    return write_report(args.out, [it.title for it in items], [it.price for it in items],
                        [p.price for p in predictions], record, name)


def main(argv: Sequence[str] | None = None) -> int:
    """Run the CLI; user errors print `error: ...` and return 2."""
    args = parse_args(argv)
    try:
        if args.compare:
            print(format_compare(load_reports(args.compare)))
            return 0
        report = run(args)
    except (ValueError, FileNotFoundError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    print(format_summary(report))
    print(f"wrote report.json, predictions.csv and chart.png to {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
