"""What the agreement benches share: the listings and prompts, transformers' greedy answers, and the summary.

A server answers a raw completion greedily, so each bench compares texts generated that way with the text
transformers (or pricer) generates for the same prompt, and the price read from each.
"""
from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any, Sequence

from predictors.greedy import extract_price


def listing_prompts(data: str, model_folder: str | None, adapter: str | None, limit: int,
                    tokenizer: Any) -> tuple[list[Any], list[str], argparse.Namespace]:
    """`limit` listings of the test split as the run's settings pick them, their prompts, and those settings."""
    from data import test_prompt
    from evaluation import pick_items, with_run_defaults

    args = argparse.Namespace(adapter=adapter, base=model_folder, data=data, data_format=None, split="test",
                              limit=limit, sample="pool", seed=None, val_fraction=None, test_fraction=None,
                              max_text_tokens=None, holdout_source=None, answer_width=None, bits=None,
                              quant_type=None, compute_dtype=None)
    args = with_run_defaults(args)
    items, _ = pick_items(args)
    return items, [test_prompt(it, tokenizer, args.max_text_tokens) for it in items], args


def greedy_texts(model: Any, tokenizer: Any, prompts: Sequence[str], max_new_tokens: int) -> list[str]:
    """Each prompt's greedy continuation, one prompt at a time (no padding), as decoded text."""
    import torch

    from predictors.greedy import greedy_tokens

    texts = []
    with torch.no_grad():
        for prompt in prompts:
            ids = torch.tensor([tokenizer.encode(prompt)])
            new = greedy_tokens(model, ids, torch.ones_like(ids), max_new_tokens, tokenizer.eos_token_id,
                                tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0)
            texts.append(tokenizer.decode(new[0], skip_special_tokens=True))
    return texts


def compare_rows(items: Sequence[Any], reference: Sequence[str], served: Sequence[str],
                 names: tuple[str, str]) -> tuple[list[dict], dict]:
    """One row per listing (title, truth, both texts and prices, whether they agree) and the counts."""
    rows = []
    for item, want, got in zip(items, reference, served):
        a, b = extract_price(want), extract_price(got)
        rows.append({"title": item.title[:60], "truth": item.price, f"{names[0]}_text": want, f"{names[1]}_text": got,
                     f"{names[0]}_price": a, f"{names[1]}_price": b, "same_text": want == got, "same_price": a == b})
    summary = {"listings": len(rows), "same_text": sum(r["same_text"] for r in rows),
               "same_price": sum(r["same_price"] for r in rows)}
    return rows, summary


def write_rows(out: Path | None, rows: Sequence[dict], summary: dict) -> None:
    """Print each row and the summary as JSON lines; with `out`, also write them there."""
    lines = [json.dumps(r) for r in rows] + [json.dumps({"summary": summary})]
    print("\n".join(lines), flush=True)
    if out is not None:
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text("\n".join(lines) + "\n")
