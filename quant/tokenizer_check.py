"""Does a saved tokenizer still tokenize like the model it belongs to? A check with pinned answers.

A tokenizer can come back from `save_pretrained` wrong and nothing fails loudly: transformers'
GGUF readers differ across versions, and a version that writes one kind of tokenizer.json and
reads it back as another gives one token per character and no BOS. A model trained on that
learns nothing. `check_tokenizer` reloads a saved folder and compares it with answers pinned
from the model's real tokenizer (`TokenizerExpectations`), returning what is wrong.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

ROUND_TRIP = (
    "Price is $123.00",
    "How much does this cost to the nearest dollar?\n\nCordless drill, 2 batteries.\n\nPrice is $",
    "  two  spaces, a\ttab and\n\nnew lines",
    "Caf\u00e9 cr\u00e8me \u2013 12\u00bd oz",
)


@dataclass(frozen=True)
class TokenizerExpectations:
    """What a model's real tokenizer does, pinned: the answers `tokenizer_problems` compares with."""

    text: str                 # a probe text, encoded with the tokenizer's special tokens
    ids: tuple[int, ...]      # its ids as the model's own tokenizer gives them
    bos: str | None           # the token every encoding starts with; None: the tokenizer prepends nothing
    words: tuple[str, ...] = ("Price", " is", " the")   # each must be one token
    round_trip: tuple[str, ...] = ROUND_TRIP             # decode(encode(x)) must give x back


def tokenizer_problems(tokenizer: Any, expect: TokenizerExpectations) -> list[str]:
    """What is wrong with `tokenizer` against `expect`, one short phrase each; empty when nothing is."""
    problems = []
    split = {w: tokenizer.convert_ids_to_tokens(tokenizer.encode(w, add_special_tokens=False)) for w in expect.words}
    problems += [f"{w!r} is {len(toks)} tokens {toks}, not one" for w, toks in split.items() if len(toks) != 1]
    first = tokenizer.encode("a")[:1]
    plain = tokenizer.encode("a", add_special_tokens=False)[:1]
    if expect.bos is not None and tokenizer.convert_ids_to_tokens(first) != [expect.bos]:
        problems.append(f"encodings start with {tokenizer.convert_ids_to_tokens(first)}, not {expect.bos}")
    if expect.bos is None and first != plain:
        problems.append(f"encodings start with {tokenizer.convert_ids_to_tokens(first)}, expected no special token")
    ids = tokenizer.encode(expect.text)
    if tuple(ids) != expect.ids:
        problems.append(f"{expect.text!r} encodes to {ids}, not {list(expect.ids)}")
    for text in expect.round_trip:
        back = tokenizer.decode(tokenizer.encode(text), skip_special_tokens=True)
        if back != text:
            problems.append(f"{text!r} decodes back as {back!r}")
    return problems


def check_tokenizer(folder: str | Path, expect: TokenizerExpectations) -> list[str]:
    """Reload the tokenizer saved in `folder` with AutoTokenizer and return its problems (see `tokenizer_problems`)."""
    from transformers import AutoTokenizer

    try:
        tokenizer = AutoTokenizer.from_pretrained(folder)
    except Exception as e:  # any failure to load is itself the problem to report
        return [f"AutoTokenizer cannot load it ({type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''})"]
    return tokenizer_problems(tokenizer, expect)
