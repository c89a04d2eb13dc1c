"""Evaluate a base model (and optionally an adapter) on a price split, as the course's Tester did.

    base (+ adapter) -> prompts of a split -> predictor -> metrics -> report.json, predictions.csv, chart.png

The predictors come from predictors' registry (`python evaluate.py --help` lists them with their
options); all are batched with left padding and the KV cache, and deterministic:
- greedy:    generate a few tokens after "Price is $" and read the first number.
- expected:  a point estimate (--estimate: mean, log-mean, median or hit) of the model's price
             distribution after "Price is $"; see predictors/digit_search.py for the digit search.
- mean / median: constant baselines from the training split's prices.

Metrics follow the course's Tester (evaluation/metrics.py): absolute error, RMSLE, and colours
green, orange and red. A reply with no number is a failure: counted in `failures`, never a hit
(red), and scored as a guess of $0 in the average error and RMSLE; --score-failures-as-zero
scores it as $0 in the colours too, as the course did.

--out is checked before anything is read, and held by this process alone (utils/folder_lock.py)
until it ends. Predictions are written batch by batch: after each batch its rows are appended to
predictions.csv and report.json counts them (`"complete": false`), so Ctrl-C, a crash or a full disk
keeps what was done, and --resume (same options, same --out, same adapter weights and items)
continues it to the files an uninterrupted run writes (evaluation/outputs.py). A fresh run into an
--out holding an earlier evaluation is refused; --overwrite moves that one aside first.

The adapter folder is only read: --update-card adds the test metrics to its model card (README.md).

    python evaluate.py --adapter runs/demo/adapter --data data/amazon-prices --out runs/demo/eval
    python evaluate.py --adapter runs/demo/adapter --data data/amazon-prices --out runs/demo/eval --resume
    python evaluate.py --compare runs/base-eval runs/demo/eval   # + each against the first, item by item
"""
from __future__ import annotations

import argparse
import sys
from typing import Sequence

from evaluation import (OutputWriteError, ReportFolder, add_model_options, add_predictor_options, append_to_model_card,
                        check_out_dir, compare_folders, device_name, format_compare, format_summary, in_length_order,
                        load_model, load_reports, model_name, pick_items, predict_in_batches, predictor_from_args,
                        resolve_base, run_settings, with_run_defaults)
from predictors import positive_int
from utils.folder_lock import hold_folder


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    """The command line (see the module docstring)."""
    p = argparse.ArgumentParser(prog="evaluate.py", description="Evaluate a base model (+ adapter) on prices.")
    p.add_argument("--compare", nargs="+", metavar="DIR", help="print these report folders side by side and exit")
    add_model_options(p)
    p.add_argument("--split", choices=("test", "val", "train", "all"), default="test")
    p.add_argument("--limit", type=positive_int, help="evaluate a deterministic sample of N items of the split")
    p.add_argument("--sample", choices=("pool", "balanced"), default="pool",
                   help="how --limit draws: by hash from the split, or spread over price buckets")
    add_predictor_options(p)
    p.add_argument("--out", help="folder for report.json, predictions.csv and chart.png")
    p.add_argument("--resume", action="store_true",
                   help="continue the interrupted evaluation in --out (run with the same options)")
    p.add_argument("--overwrite", action="store_true",
                   help="start afresh in an --out holding an earlier evaluation, moving its files aside (not deleted)")
    p.add_argument("--linear-chart", action="store_true", help="chart.png on the course's linear axes (default: log)")
    p.add_argument("--update-card", action="store_true",
                   help="also add this evaluation's metrics to the adapter's model card (its README.md); "
                        "by default the adapter folder is only read")
    p.add_argument("--score-failures-as-zero", action="store_true",
                   help="score a reply with no price as a $0 guess in the colours too, as the course did "
                        "(default: a failure is a miss, and a $0 guess only in avg error and RMSLE)")
    args = p.parse_args(argv)
    if not args.compare and (not args.data or not args.out):
        p.error("--data and --out are required (or --compare DIR ...)")
    if args.update_card and not args.adapter:
        p.error("--update-card writes into an adapter's model card: pass --adapter DIR")
    if args.resume and args.overwrite:
        p.error("--resume continues the evaluation in --out, --overwrite moves it aside: pass one of them")
    try:
        predictor_from_args(args)   # a usage error now, before any data or model is read (a bad calibration too)
        return with_run_defaults(args)
    except ValueError as e:
        p.error(str(e))


def run(args: argparse.Namespace) -> dict:
    """Evaluate as the arguments say, writing the outputs batch by batch, and return the report."""
    check_out_dir(args.out)
    with hold_folder(args.out, "evaluate.py"):   # FolderBusyError while another process writes it
        return evaluate_into(args)


def evaluate_into(args: argparse.Namespace) -> dict:
    """run()'s work, with --out checked and held."""
    from data import test_prompt
    from quant import load_tokenizer, resolve_model

    items, train_prices = pick_items(args)
    predictor = predictor_from_args(args)
    base = resolve_base(args.adapter, args.base) if predictor.needs_model else None
    name = model_name(args.adapter, base) if base is not None else f"{predictor.name} baseline"
    settings = run_settings(args, name, base, predictor.needs_model, predictor.record())
    tokenizer = load_tokenizer(resolve_model(base)) if predictor.needs_model else None
    prompts = [test_prompt(it, tokenizer, args.max_text_tokens) for it in items]
    if predictor.needs_model:
        items, prompts = in_length_order(items, prompts, tokenizer)   # the batches a whole-split predict() forms
    if args.resume:   # refused before the model loads: a mismatch costs nothing
        folder = ReportFolder.resume(args.out, items, settings, args.score_failures_as_zero)
    else:
        folder = ReportFolder.fresh(args.out, items, settings, args.score_failures_as_zero, args.overwrite)
    folder.log_axes = not args.linear_chart
    model = None
    if predictor.needs_model:
        model, tokenizer = load_model(base, args.adapter, args.bits, args.quant_type, args.compute_dtype)
    folder.device = device_name(model)
    with folder.keeping():
        predict_in_batches(predictor, prompts[folder.done:], folder.add, batch_size=args.batch_size,
                           done=folder.done, total=len(items), model=model, tokenizer=tokenizer,
                           train_prices=train_prices, answer_width=args.answer_width)
    report = folder.finish(name)
    if args.update_card and args.adapter and append_to_model_card(args.adapter, report):
        print(f"added these test metrics to {args.adapter}/README.md")
    return report


def main(argv: Sequence[str] | None = None) -> int:
    """Run the CLI; user errors print `error: ...` and return 2, an output that cannot be written returns 1."""
    args = parse_args(argv)
    try:
        if args.compare:
            reports = load_reports(args.compare)
            print(format_compare(reports))
            paired = compare_folders(args.compare, reports)
            if paired:
                print(paired)
            return 0
        report = run(args)
    except KeyboardInterrupt as e:   # Ctrl-C: what was kept is in the message; no traceback
        print(str(e) or "interrupted", file=sys.stderr)
        return 130
    except (ValueError, FileNotFoundError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    except OutputWriteError as e:   # as train.py's failed checkpoint save: the run is sound, the disk is not
        print(f"error: {e}", file=sys.stderr)
        return 1
    print(format_summary(report))
    print(f"wrote report.json, predictions.csv and chart.png to {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
