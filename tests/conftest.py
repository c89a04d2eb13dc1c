"""Shared fixtures: tiny random Llama and Gemma models (quant.tiny builds them in code), data files, the embedded
models."""
from __future__ import annotations

from pathlib import Path

import pytest
import torch

from quant.tiny import build_tiny_gemma, build_tiny_llama


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


@pytest.fixture(scope="session")
def tiny_gemma_dir(tmp_path_factory) -> Path:
    """A tiny Gemma 3 whose tokenizer writes numbers as Gemma's does ("▁$" then one token per digit).

    Its output head is untied from the embedding, so that tests can set logits by hand (make_bigram),
    and its sliding window is shorter than the test prompts, so that the sliding layers' cache is used.
    """
    return build_tiny_gemma(tmp_path_factory.mktemp("tiny-gemma"), tied=False, sliding_window=8)


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


@pytest.fixture
def tiny_gemma(tiny_gemma_dir):
    """A fresh fp32 copy of the tiny Gemma, in eval mode."""
    return _fresh_model(tiny_gemma_dir)


@pytest.fixture
def tiny_gemma_tokenizer(tiny_gemma_dir):
    return _tokenizer(tiny_gemma_dir)


@pytest.fixture(scope="session")
def bundled_data_dir() -> Path:
    """The real Amazon listings shipped with pricer."""
    return Path(__file__).resolve().parent.parent / "data" / "amazon-prices"


@pytest.fixture(scope="session")
def smollm2_dir() -> Path:
    """The embedded SmolLM2-135M-Instruct, provisioned once into PRICER_CACHE."""
    from quant import resolve_model

    return Path(resolve_model("smollm2-135m"))


@pytest.fixture(scope="session")
def gemma3_dir(request) -> Path:
    """The embedded Gemma 3 270M from PRICER_CACHE. Provisioning it de-quantizes for minutes, so the
    default suite skips when it is not there; `pytest -m gemma3` provisions it."""
    from quant import ModelError
    from quant.embedded import GEMMA3, cache_dir, provision

    cached = cache_dir() / GEMMA3.folder
    if not cached.is_dir() and "gemma3" not in (request.config.option.markexpr or ""):
        pytest.skip(f"Gemma 3 270M is not in {cache_dir()}; `pytest -m gemma3` provisions it (minutes, PyPI)")
    try:
        return provision(GEMMA3)
    except ModelError as e:
        pytest.skip(f"Gemma 3 270M cannot be provisioned: {e}")


# ---------------------------------------------------------------- hand-set next-token distributions

PROMPTS = ["How much does this cost?\n\nA drill.\n\nPrice is $",
           "How much does this cost?\n\nAcoustic guitar strings, phosphor bronze, light gauge.\n\nPrice is $",
           "Price is $"]


def token_id(tokenizer, text: str) -> int:
    """The one token id of `text`, which must be a single token."""
    ids = tokenizer.encode(text, add_special_tokens=False)
    assert len(ids) == 1, (text, ids)
    return ids[0]


def make_bigram(model, table: dict[int, dict[int, float]]):
    """Make the model a bigram: P(next | sequence) = table[last token][next], set in the weights.

    Zeroing o_proj and down_proj leaves the residual stream equal to the current token's
    embedding; a context's embedding is 1000 * e_k, which the final RMSNorm maps to
    sqrt(hidden) * e_k, so lm_head column k (divided by sqrt(hidden)) is that context's logits.
    Tokens missing from a row get logit -40 (probability ~1e-18). Works for Llama and Gemma 3
    (whose embedding is scaled, which the norm undoes, and whose norm multiplies by 1 + weight).
    """
    import math

    hidden = model.config.hidden_size
    vocab = model.config.vocab_size
    assert len(table) <= hidden
    assert model.lm_head.weight.data_ptr() != model.model.embed_tokens.weight.data_ptr(), "untie the head"
    with torch.no_grad():
        for layer in model.model.layers:
            layer.self_attn.o_proj.weight.zero_()
            layer.mlp.down_proj.weight.zero_()
        model.model.embed_tokens.weight.zero_()
        norm = model.model.norm
        norm.weight.zero_()
        if not torch.allclose(norm(torch.ones(1, hidden)), torch.ones(1, hidden), atol=1e-3):
            norm.weight.fill_(1.0)   # Llama's norm scales by its weight; Gemma's by 1 + weight
        model.lm_head.weight.zero_()
        for k, (context, dist) in enumerate(table.items()):
            assert sum(dist.values()) == pytest.approx(1.0)
            model.model.embed_tokens.weight[context, k] = 1000.0
            logits = torch.full((vocab,), -40.0)
            for tok, p in dist.items():
                logits[tok] = math.log(p)
            model.lm_head.weight[:, k] = logits / math.sqrt(hidden)
    return model.eval()


def dollar_id(tokenizer) -> int:
    """The last token of "Price is $": the context the model writes a price after."""
    from data import PREFIX

    return tokenizer.encode(PREFIX, add_special_tokens=False)[-1]


def digit_table(tok):
    """A bigram table for a digit tokenizer (make_bigram) whose prices after "$" are DIGIT_DIST's."""
    d = {str(i): token_id(tok, str(i)) for i in range(10)}
    eos, dot = tok.eos_token_id, token_id(tok, ".")
    return {
        dollar_id(tok): {d["1"]: 0.5, d["2"]: 0.3, d["0"]: 0.2},
        d["1"]: {d["5"]: 0.4, eos: 0.6},
        d["5"]: {eos: 1.0},
        d["2"]: {dot: 0.9, d["3"]: 0.1},
        d["3"]: {d["3"]: 0.5, eos: 0.5},   # 3, 33, 333, ... : the 4-digit bound cuts the tail
        d["0"]: {eos: 0.5, d["7"]: 0.5},   # "07" is not a price: only "0" counts
    }


# P(price) by hand from digit_table: P(1)=.5*.6, P(15)=.5*.4, P(2)=.3*.9, P(23)=.3*.1*.5, ...
DIGIT_DIST = {1: 0.3, 15: 0.2, 2: 0.27, 23: 0.015, 233: 0.0075, 2333: 0.00375, 0: 0.1}
DIGIT_MASS = 0.89625   # 1 - .0037 (5+ digits) - .1 ("07"): what the search covers
