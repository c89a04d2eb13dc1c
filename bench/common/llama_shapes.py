"""Llama 3.1 shapes (8B, 70B) with random weights, built in bitsandbytes NF4 on a GPU layer by layer.

Weights do not change speed or memory, so benchmarks use these instead of the real checkpoints:
the same shapes and the same module classes transformers builds for `BitsAndBytesConfig(
load_in_4bit=True, bnb_4bit_quant_type="nf4", bnb_4bit_use_double_quant=True,
bnb_4bit_compute_dtype=bfloat16)` (every decoder Linear a `bnb.nn.Linear4bit`; embeddings, norms
and head bf16). quant.layerwise builds them: the skeleton on the meta device, then each weight
drawn on the GPU and quantized before the next, so neither host nor GPU ever holds the 16-bit
model (16 GB for 8B, 141 GB for 70B).
"""
from __future__ import annotations

import torch

LLAMA31_8B = dict(
    hidden_size=4096, intermediate_size=14336, num_hidden_layers=32, num_attention_heads=32,
    num_key_value_heads=8, vocab_size=128256, max_position_embeddings=8192, rope_theta=500000.0,
    rms_norm_eps=1e-5, tie_word_embeddings=False,
)
LLAMA31_70B = {**LLAMA31_8B, "hidden_size": 8192, "intermediate_size": 28672, "num_hidden_layers": 80,
               "num_attention_heads": 64, "num_key_value_heads": 8}
SHAPES = {"8b": LLAMA31_8B, "70b": LLAMA31_70B}


def llama_config(shape: str = "8b", **overrides):
    """The LlamaConfig of a named shape ("8b", "70b"), with `overrides` (no KV cache: these models train)."""
    from transformers import LlamaConfig

    config = LlamaConfig(**{**SHAPES[shape], **overrides})
    config.use_cache = False
    return config


def build_llama_4bit(device: str = "cuda", seed: int = 0, quant_storage=torch.uint8, shape: str = "8b",
                     on_unit=None, **overrides):
    """A LlamaForCausalLM of `shape` (with `overrides`) with random NF4 weights on `device`, built layer by layer;
    `on_unit` is quant.layerwise.build_4bit's (training.parallel.ShardWhileLoading shards each unit as it is built)."""
    from quant.layerwise import Quant4bit, RandomSource, build_4bit

    quant = Quant4bit(quant_type="nf4", double_quant=True, compute_dtype=torch.bfloat16, quant_storage=quant_storage)
    return build_4bit(llama_config(shape, **overrides), RandomSource(seed), device, quant, on_unit=on_unit)


def completion_batch(batch: int, seq_len: int = 182, answer_tokens: int = 5, vocab: int = 128256,
                     device: str = "cuda", seed: int = 0):
    """A right-aligned batch with completion-only labels: the last `answer_tokens` of each row supervised."""
    g = torch.Generator().manual_seed(seed)
    ids = torch.randint(0, vocab, (batch, seq_len), generator=g)
    labels = torch.full_like(ids, -100)
    labels[:, -answer_tokens:] = ids[:, -answer_tokens:]
    return ids.to(device), labels.to(device)
