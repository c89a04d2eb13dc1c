"""Price a product listing with a trained adapter: what the project exists for.

    python predict.py --adapter runs/demo/run/adapter --text "Cordless drill, 20V, two batteries, case"
    python predict.py --adapter A --title "Acme 20V drill" --text "Two batteries, charger and case"
    echo "Cordless drill, 20V ..." | python predict.py --adapter A
    python predict.py --adapter A listings.jsonl --out priced.csv     # rows with a text; a price column is kept
                                                                      # as `truth`; .csv, .jsonl or parquet

The default predictor is `expected`: the mean of the model's price distribution after
"Price is $", with its 80% interval (the 10th to 90th percentile of that distribution, widened by
the margin in the adapter's interval_calibration.json when it has one: fitted on validation, or on
held-out sources; python -m evaluation.calibration). When
the search behind it covered less than half of the model's probability, the price is followed
by a line saying it is uncertain and why; an --out file says so in each row (`mass`, `uncertain`).
Any evaluate.py predictor works (`--predictor greedy`, ...). Base, quantization and prompt length
default to the adapter's run.

A listing reads the same in every shape: a file's text, title + text or title + description
columns, --title/--text and stdin give the model one text, its title on the first line (the
rule is in data/curate.py's docstring). Bytes that are not UTF-8 are refused in one line, not
replaced, since a listing read otherwise than written is priced as another product; so is an
--out that is the input file, which writing would destroy.
"""
from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path
from typing import Sequence

from data import DataError
from evaluation import (add_answer_width_option, add_predictor_options, load_model, predictor_from_args, resolve_base,
                        with_run_defaults)
from evaluation.pricing import calibration_basis, check_output, describe, write_priced
from predictors import OptionError, positive_int
from predictors.interval_margin import CalibrationError
from utils.folder_lock import hold_folder


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    """The command line (see the module docstring)."""
    p = argparse.ArgumentParser(prog="predict.py", description="Price product listings with a base model + adapter.")
    p.add_argument("file", nargs="?", help="listings to price (.jsonl, .csv, .parquet, gzip too); omit for --text")
    p.add_argument("--text", help="the listing's text ('-' reads stdin); its first line is the title unless --title")
    p.add_argument("--title", help="the listing's title, put before --text")
    p.add_argument("--out", help="with a file: write the prices to this .csv or .jsonl (default: print them)")
    p.add_argument("--adapter", help="adapter folder (train.py's <run>/adapter, or peft's)")
    p.add_argument("--base", help="base model; default: the adapter's")
    p.add_argument("--bits", type=int, choices=(4, 8, 16), help="default: the run's, else 4")
    p.add_argument("--quant-type", choices=("nf4", "fp4"), help="default: the run's, else nf4")
    p.add_argument("--compute-dtype", choices=("bfloat16", "float16", "float32"), help="default: the run's")
    p.add_argument("--max-text-tokens", type=positive_int, help="default: the run's, else 160")
    add_answer_width_option(p)
    p.add_argument("--batch-size", type=positive_int, default=16)
    add_predictor_options(p, default="expected")
    args = p.parse_args(argv)
    if args.file and (args.text or args.title):
        p.error("give a file or --text/--title, not both")
    if args.out and not args.file:
        p.error("--out is for a file of listings; one listing's price is printed")
    try:
        predictor_from_args(args)
        return with_run_defaults(args)
    except (OptionError, CalibrationError) as e:  # a bad calibration beside the adapter is a usage error too
        p.error(str(e))


def read_listings(args: argparse.Namespace) -> list:
    """The listings the command line names: a file, --text/--title, or stdin."""
    from data.listings import listing_from_text, load_listings
    from data.sources import LoadReport

    if args.file:
        report = LoadReport()
        listings = load_listings(args.file, report=report)
        if report.kept < report.total:   # rows that cannot be priced are counted, never dropped in silence
            print(f"{args.file}: {report.summary()} (skipped rows are not in the output)", file=sys.stderr)
        return listings
    text, where = args.text, "--text"
    if text == "-" or (text is None and args.title is None and not sys.stdin.isatty()):
        text, where = _read_stdin(), "stdin"
    return [listing_from_text(text or "", args.title, where)]


def _read_stdin() -> str:
    try:
        return sys.stdin.read()
    except UnicodeDecodeError as e:   # a strict stdin; under surrogateescape listing_from_text finds the byte
        raise DataError(f"stdin holds a byte that is not UTF-8 (0x{e.object[e.start]:02x} at byte {e.start + 1}); "
                        "save the listing as UTF-8 and try again") from None


def check_not_input(out: str, source: str | None) -> None:
    """ValueError (one line) when --out is the input file itself, by any path or link, which writing would destroy."""
    out_path, in_path = Path(out), Path(source) if source else None
    if in_path is None or not in_path.exists():
        return
    same = out_path.resolve() == in_path.resolve() or (out_path.exists() and os.path.samefile(out_path, in_path))
    if same:
        raise ValueError(f"--out {out} is the input file {source}: writing it would replace the listings; "
                         "name another file")


def price(args: argparse.Namespace) -> int:
    """Check --out against the input, then price the listings (holding --out: one writer at a time)."""
    if not args.out:
        return run(args)
    check_output(args.out)
    check_not_input(args.out, args.file)
    out = Path(args.out)
    with hold_folder(out.parent, "predict.py", name=f".{out.name}.lock"):  # the file, not its whole folder
        return run(args)


def run(args: argparse.Namespace) -> int:
    """Read the listings, load the model, price them, print or write the prices."""
    from data import test_prompt
    from predictors.batching import progress_over

    listings = read_listings(args)
    predictor = predictor_from_args(args)
    if not predictor.needs_model:
        raise ValueError(f"--predictor {predictor.name} is a baseline from training prices: use evaluate.py for it")
    model, tokenizer = load_model(resolve_base(args.adapter, args.base), args.adapter, args.bits, args.quant_type,
                                  args.compute_dtype)
    prompts = [test_prompt(listing, tokenizer, args.max_text_tokens) for listing in listings]
    started = time.perf_counter()
    with progress_over(len(prompts), predictor.name):
        predictions = predictor.predict(prompts, model=model, tokenizer=tokenizer, batch_size=args.batch_size,
                                        answer_width=args.answer_width)
    record = predictor.record()
    quantiles, margin = record.get("interval_quantiles"), record.get("interval_margin") or 0.0
    basis = calibration_basis(args.adapter or args.base) if margin else "on validation"
    if len(listings) == 1 and not args.out:
        print(describe(predictions[0], quantiles, margin, basis))
    elif args.out:
        write_priced(args.out, listings, predictions)
        print(f"priced {len(listings):,} listings in {time.perf_counter() - started:.1f}s; wrote {args.out}")
    else:
        for listing, p in zip(listings, predictions):
            print(f"{listing.title[:60]:<60}  {describe(p, quantiles, margin, basis)}")
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    """Run the CLI; user errors print one `error: ...` line and return 2."""
    args = parse_args(argv)
    try:
        return price(args)
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
    except (ValueError, FileNotFoundError, DataError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
