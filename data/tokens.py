"""How a tokenizer sees prices: `python -m data.tokens MODEL`.

Answers the course's questions before training: is every whole-dollar price 0-999 one
token (then the first answer token carries the whole price, as with Llama 3), and does
"Price is $" give the same ids alone, at the end of a prompt and inside a training text
(if not, a collator that searches the ids for the template would mislabel; pricer's
collator builds the mask by construction and is unaffected).
"""
from __future__ import annotations

import argparse
import sys
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from data.items import Item
from data.prompts import PREFIX, completion, full_train_text, test_prompt

PROBE_NUMBERS = ("0", "1", "10", "100", "999", "1000")
TYPICAL_PRICES = (4.99, 12.49, 29.99, 89.0, 249.95, 999.0)
_PROBE_ITEM = Item(title="Stainless steel water filter",
                   text="Stainless steel water filter\nFits most refrigerators, lasts six months.", price=29.99)


@dataclass
class TokenProbe:
    """What `probe_tokenizer` found; token lists are the tokenizer's token strings."""

    numbers: dict[str, list[str]]
    completions: dict[str, list[str]]
    single_token_ints: int
    all_ints_single: bool
    prefix_ids: list[int]
    prefix_same_at_prompt_end: bool
    prefix_found_in_training_ids: bool


def _tokens(tokenizer: Any, text: str) -> list[str]:
    return tokenizer.convert_ids_to_tokens(tokenizer.encode(text, add_special_tokens=False))


def _contains(haystack: list[int], needle: list[int]) -> bool:
    return any(haystack[i: i + len(needle)] == needle for i in range(len(haystack) - len(needle) + 1))


def probe_tokenizer(tokenizer: Any, prefix: str = PREFIX) -> TokenProbe:
    """Tokenize the probe numbers, typical answers and the prefix alone and in context."""
    single = sum(len(tokenizer.encode(str(i), add_special_tokens=False)) == 1 for i in range(1000))
    prefix_ids = tokenizer.encode(prefix, add_special_tokens=False)
    prompt_ids = tokenizer.encode(test_prompt(_PROBE_ITEM, prefix=prefix), add_special_tokens=False)
    train_ids = tokenizer.encode(full_train_text(_PROBE_ITEM, prefix=prefix), add_special_tokens=False)
    answers = [completion(Item(title="", text="", price=p)) for p in TYPICAL_PRICES]
    return TokenProbe(
        numbers={n: _tokens(tokenizer, n) for n in PROBE_NUMBERS},
        completions={a: _tokens(tokenizer, a) for a in answers},
        single_token_ints=single,
        all_ints_single=single == 1000,
        prefix_ids=prefix_ids,
        prefix_same_at_prompt_end=prompt_ids[-len(prefix_ids):] == prefix_ids,
        prefix_found_in_training_ids=_contains(train_ids, prefix_ids),
    )


def format_probe(probe: TokenProbe, name: str = "") -> str:
    """A readable report of a probe."""
    lines = [f"tokenizer: {name}"] if name else []
    lines += [f"  {n!r:>8} -> {toks}" for n, toks in probe.numbers.items()]
    lines.append("completions (tokenized alone, as the collator does):")
    lines += [f"  {a!r:>8} -> {toks}" for a, toks in probe.completions.items()]
    lines.append(f"integers 0-999 that are one token: {probe.single_token_ints}/1000"
                 + (" (all)" if probe.all_ints_single else ""))
    lines.append(f"'{PREFIX}' alone -> ids {probe.prefix_ids}")
    lines.append(f"  same ids at the end of a test prompt: {probe.prefix_same_at_prompt_end}")
    lines.append(f"  found inside a tokenized training text: {probe.prefix_found_in_training_ids}"
                 + ("" if probe.prefix_found_in_training_ids else
                    " (a template-search collator would fail; pricer's does not search)"))
    return "\n".join(lines)


def load_tokenizer(model: str, resolve: Callable[[str], str] | None = None) -> Any:
    """AutoTokenizer for a folder or hub id, after `resolve` maps the name to one (the entry points pass
    quant.resolve_model, which provisions pricer's embedded models: data/ itself never imports quant)."""
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(resolve(model) if resolve is not None else model)


def main(argv: list[str] | None = None, resolve: Callable[[str], str] | None = None) -> int:
    """CLI entry point; `resolve` turns an embedded name into its folder (see load_tokenizer)."""
    parser = argparse.ArgumentParser(prog="python -m data.tokens", description=__doc__.splitlines()[0])
    parser.add_argument("model", help="tokenizer folder, hub id or embedded name (smollm2-135m, gemma3-270m)")
    args = parser.parse_args(argv)
    try:
        tokenizer = load_tokenizer(args.model, resolve)
    except (OSError, ValueError) as e:
        print(f"error: could not load a tokenizer from {args.model!r}: {str(e).splitlines()[0]}", file=sys.stderr)
        return 2
    print(format_probe(probe_tokenizer(tokenizer), args.model))
    return 0


if __name__ == "__main__":
    from quant import resolve_model  # the command wires in quant's embedded names; importing data.tokens never does

    sys.exit(main(resolve=resolve_model))
