"""Statistics of a data source: `python -m data SOURCE [--tokenizer MODEL] [--hist out.png]`.

Prints the load summary, counts per source file and category, price quantiles, the
de-duplicated split sizes and, with a tokenizer, the token lengths of the text and of the
full training prompt; writes a price histogram when asked.
"""
from __future__ import annotations

import argparse
import os
import statistics
import sys
from collections import Counter
from collections.abc import Callable
from pathlib import Path

from data.items import DataError, Item
from data.prompts import MAX_TEXT_TOKENS, full_train_text
from data.sources import LoadReport, load_items
from data.splits import split_items

QUANTILES = (0.0, 0.05, 0.25, 0.5, 0.75, 0.95, 1.0)


def quantiles(values: list[float], qs: tuple[float, ...] = QUANTILES) -> dict[float, float]:
    """Nearest-rank quantiles of a non-empty list."""
    ordered = sorted(values)
    return {q: ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))] for q in qs}


def _quantile_line(label: str, values: list[float], fmt: str) -> str:
    qs = quantiles(values)
    cells = "  ".join(f"p{int(q * 100)} {fmt.format(v)}" for q, v in qs.items())
    return f"{label}: {cells}  mean {fmt.format(statistics.fmean(values))}"


def _counts(title: str, counter: Counter) -> list[str]:
    width = max(len(str(k)) for k in counter)
    return [f"{title}:"] + [f"  {str(k):<{width}}  {n:>7,}" for k, n in counter.most_common()]


def describe(items: list[Item], report: LoadReport, seed: int = 42, tokenizer=None) -> str:
    """The statistics report as text."""
    lines = [f"loaded: {report.summary()}"]
    lines += _counts("items per source", Counter(it.source for it in items))
    lines += _counts("items per category", Counter(it.category or "(none)" for it in items))
    lines.append(_quantile_line("price", [it.price for it in items], "${:,.2f}"))
    lines.append(f"split (seed {seed}): {split_items(items, seed=seed).summary()}")
    if tokenizer is not None:
        text_lens = [len(tokenizer.encode(it.text, add_special_tokens=False)) for it in items]
        lines.append(_quantile_line("text tokens", text_lens, "{:.0f}"))
        over = sum(n > MAX_TEXT_TOKENS for n in text_lens)
        lines.append(f"  {over:,} texts are longer than {MAX_TEXT_TOKENS} tokens and get cut in the prompt")
        full = [len(tokenizer(full_train_text(it, tokenizer))["input_ids"]) + 1 for it in items]
        lines.append(_quantile_line("training tokens (prompt + answer + eos)", full, "{:.0f}"))
    return "\n".join(lines)


def write_histogram(items: list[Item], path: str | Path, title: str = "") -> None:
    """A price histogram PNG (log-spaced bins), written atomically."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np

    prices = [it.price for it in items]
    fig, ax = plt.subplots(figsize=(9, 4.5))
    bins = np.geomspace(max(min(prices), 0.1), max(prices), 60)
    ax.hist(prices, bins=bins, color="#3b7dd8")
    ax.set_xscale("log")
    ax.set_xlabel("price (USD, log scale)")
    ax.set_ylabel("items")
    ax.set_title(title or f"{len(prices):,} items, median ${statistics.median(prices):,.2f}")
    fig.tight_layout()
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    fig.savefig(tmp, format="png", dpi=110)
    plt.close(fig)
    os.replace(tmp, path)


def main(argv: list[str] | None = None, resolve: Callable[[str], str] | None = None) -> int:
    """CLI entry point; `resolve` turns an embedded tokenizer name into its folder (data.tokens.load_tokenizer)."""
    parser = argparse.ArgumentParser(prog="python -m data", description=__doc__.splitlines()[0])
    parser.add_argument("source", help="file, folder (e.g. data/amazon-prices) or saved dataset")
    parser.add_argument("--fmt", choices=["jsonl", "csv", "parquet", "hf"])
    parser.add_argument("--limit", type=int)
    parser.add_argument("--seed", type=int, default=42)
    parser.add_argument("--tokenizer", help="tokenizer folder, hub id or embedded name for token lengths")
    parser.add_argument("--hist", help="write a price histogram PNG here")
    args = parser.parse_args(argv)
    try:
        report = LoadReport()
        items = load_items(args.source, fmt=args.fmt, limit=args.limit, report=report, verbose=False)
        if not items:
            raise DataError(f"{args.source}: no usable items ({report.summary()})")
        tokenizer = None
        if args.tokenizer:
            from data.tokens import load_tokenizer

            tokenizer = load_tokenizer(args.tokenizer, resolve)
        print(describe(items, report, args.seed, tokenizer))
        if args.hist:
            write_histogram(items, args.hist, title=f"{args.source}: {len(items):,} items")
            print(f"wrote {args.hist}")
    except (DataError, FileNotFoundError, OSError, ValueError) as e:  # ValueError: quant's ModelError
        print(f"error: {str(e).splitlines()[0]}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    from quant import resolve_model  # the command wires in quant's embedded names; the data package never does

    sys.exit(main(resolve=resolve_model))
