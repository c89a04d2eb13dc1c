"""Build a Llama-3.1-8B-shaped model with random weights directly in bitsandbytes NF4 on a GPU.

Weights do not change speed, so benchmarks use this instead of the real checkpoint: the
same shapes (32 layers, hidden 4096, MLP 14336, 32 query / 8 key-value heads, vocabulary
128,256), the same module classes transformers builds for `BitsAndBytesConfig(load_in_4bit=True,
bnb_4bit_quant_type="nf4", bnb_4bit_use_double_quant=True, bnb_4bit_compute_dtype=bfloat16)`
(every decoder Linear becomes `bnb.nn.Linear4bit`; embeddings, norms and head stay bf16).
Each weight is drawn on the GPU and quantized in place, layer by layer, so building takes
seconds and never holds the 16 GB bf16 model.
"""
from __future__ import annotations

import torch
from torch import nn

LLAMA31_8B = dict(
    hidden_size=4096, intermediate_size=14336, num_hidden_layers=32, num_attention_heads=32,
    num_key_value_heads=8, vocab_size=128256, max_position_embeddings=8192, rope_theta=500000.0,
    rms_norm_eps=1e-5, tie_word_embeddings=False,
)


def build_llama_4bit(device: str = "cuda", seed: int = 0, quant_storage=torch.uint8, **overrides):
    """Return a LlamaForCausalLM of the 8B shape (or `overrides`) with random NF4 weights on `device`."""
    import bitsandbytes as bnb
    from transformers import LlamaConfig, LlamaForCausalLM
    from transformers.models.llama.modeling_llama import LlamaRotaryEmbedding

    config = LlamaConfig(**{**LLAMA31_8B, **overrides})
    config.use_cache = False
    torch.manual_seed(seed)
    with torch.device("meta"):
        model = LlamaForCausalLM(config)
    std = 0.02
    for layer in model.model.layers:
        for parent in (layer.self_attn, layer.mlp):
            for name, lin in list(parent.named_children()):
                if not isinstance(lin, nn.Linear):
                    continue
                q = bnb.nn.Linear4bit(lin.in_features, lin.out_features, bias=False,
                                      compute_dtype=torch.bfloat16, compress_statistics=True,
                                      quant_type="nf4", quant_storage=quant_storage, device="meta")
                w = torch.randn(lin.out_features, lin.in_features, device=device, dtype=torch.bfloat16) * std
                # module=q: the layer keeps its own copy of the quantization state, which FSDP needs.
                q.weight = bnb.nn.Params4bit(w, requires_grad=False, compress_statistics=True, quant_type="nf4",
                                             quant_storage=quant_storage, module=q).to(device)
                setattr(parent, name, q)
    for mod in model.modules():
        for pname, p in list(mod.named_parameters(recurse=False)):
            if p.is_meta:
                data = (torch.ones(p.shape, device=device, dtype=torch.bfloat16) if p.dim() == 1
                        else torch.randn(p.shape, device=device, dtype=torch.bfloat16) * std)
                setattr(mod, pname, nn.Parameter(data, requires_grad=False))
    model.model.rotary_emb = LlamaRotaryEmbedding(config).to(device)
    model.requires_grad_(False)
    return model


def completion_batch(batch: int, seq_len: int = 182, answer_tokens: int = 5, vocab: int = 128256,
                     device: str = "cuda", seed: int = 0):
    """A right-aligned batch with completion-only labels: the last `answer_tokens` of each row supervised."""
    g = torch.Generator().manual_seed(seed)
    ids = torch.randint(0, vocab, (batch, seq_len), generator=g)
    labels = torch.full_like(ids, -100)
    labels[:, -answer_tokens:] = ids[:, -answer_tokens:]
    return ids.to(device), labels.to(device)
