"""One listing, one prompt: the bundled prompts pinned, and every shape of a listing read the same way."""
from __future__ import annotations

import hashlib

from data import load_items
from data import test_prompt as make_prompt  # not collected as a test
from data.listings import load_listings

# Pinned before titles and text shapes were unified (2026-12): the shipped adapters were trained on these
# strings, so the readers must give the bundled rows byte for byte the prompts they gave then.
BUNDLED_PROMPTS_SHA256 = "cd749d3c3654525254ba3fa33beab0830624d73ca06faa3f4acf29df9ef95fea"
BUNDLED_IDS_SHA256 = "b7a56be302d3817efd8545599298aac231c467543b2ad045d14f757045a261e8"   # SmolLM2, every 250th
FIRST_PROMPT_HEAD = ("How much does this cost to the nearest dollar?\n\nSetpower Insulated Protective Cover for AJ30 "
                     "Portable Refrigerator Freezer, suitable for AJ30 Only\nInsulation & Waterproof well-made")


def _sha(prompts) -> str:
    return hashlib.sha256("\0".join(prompts).encode()).hexdigest()


def test_bundled_prompts_are_pinned(bundled_data_dir):
    items = load_items(bundled_data_dir, verbose=False)
    prompts = [make_prompt(item, None) for item in items]
    assert len(prompts) == 13_238 and prompts[0].startswith(FIRST_PROMPT_HEAD)
    assert _sha(prompts) == BUNDLED_PROMPTS_SHA256
    listings = load_listings(bundled_data_dir)   # predict.py's reader gives the same texts
    assert [x.text for x in listings] == [item.text for item in items]


def test_bundled_token_ids_are_pinned(bundled_data_dir, smollm2_dir):
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(smollm2_dir)
    items = load_items(bundled_data_dir, verbose=False)[::250]
    ids = [tokenizer.encode(make_prompt(item, tokenizer), add_special_tokens=True) for item in items]
    assert ids[0][:10] == [2020, 1083, 1072, 451, 1708, 288, 260, 15673, 12796, 47]
    assert hashlib.sha256(repr(ids).encode()).hexdigest() == BUNDLED_IDS_SHA256
