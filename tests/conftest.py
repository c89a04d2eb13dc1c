"""Shared fixtures: tiny random Llama models (quant.tiny builds them in code), data files, the embedded model."""
from __future__ import annotations

from pathlib import Path

import pytest
import torch

from quant.tiny import build_tiny_llama


WORDS = "steel guitar drill desk filter blocks software cordless acoustic office bronze charger".split()


def write_items(path: Path, n: int, seed: int, noun: str, max_words: int, price) -> Path:
    """n curated items (title/text/price JSONL, as data/ reads it) from a few words; price(rng) -> float."""
    import json
    import random

    rng = random.Random(seed)
    with path.open("w") as f:
        for i in range(n):
            title = f"{rng.choice(WORDS).title()} {rng.choice(WORDS)} {noun} {i}"
            text = title + "\n" + " ".join(rng.choices(WORDS, k=rng.randint(8, max_words)))
            f.write(json.dumps({"title": title, "text": text, "price": round(price(rng), 2)}) + "\n")
    return path


@pytest.fixture(scope="session")
def tiny_llama_dir(tmp_path_factory) -> Path:
    """A tiny Llama with a digit-level tokenizer (like SmolLM2), saved as a checkpoint folder."""
    return build_tiny_llama(tmp_path_factory.mktemp("tiny-llama"), numbers="digits")


@pytest.fixture(scope="session")
def tiny_llama3_dir(tmp_path_factory) -> Path:
    """A tiny Llama whose tokenizer has single tokens for 0-999 (like Llama 3)."""
    return build_tiny_llama(tmp_path_factory.mktemp("tiny-llama3"), numbers="triples")


def _fresh_model(path: Path):
    from transformers import AutoModelForCausalLM

    return AutoModelForCausalLM.from_pretrained(path, dtype=torch.float32).eval()


def _tokenizer(path: Path):
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(path)


@pytest.fixture
def tiny_llama(tiny_llama_dir):
    """A fresh fp32 copy of the tiny Llama, in eval mode."""
    return _fresh_model(tiny_llama_dir)


@pytest.fixture
def tiny_tokenizer(tiny_llama_dir):
    return _tokenizer(tiny_llama_dir)


@pytest.fixture
def tiny_llama3(tiny_llama3_dir):
    """A fresh fp32 copy of the tiny Llama with the 0-999 tokenizer, in eval mode."""
    return _fresh_model(tiny_llama3_dir)


@pytest.fixture
def tiny_tokenizer3(tiny_llama3_dir):
    return _tokenizer(tiny_llama3_dir)


@pytest.fixture(scope="session")
def bundled_data_dir() -> Path:
    """The real Amazon listings shipped with pricer."""
    return Path(__file__).resolve().parent.parent / "data" / "amazon-prices"


@pytest.fixture(scope="session")
def smollm2_dir() -> Path:
    """The embedded SmolLM2-135M-Instruct, provisioned once into PRICER_CACHE."""
    from quant import resolve_model

    return Path(resolve_model("smollm2-135m"))
