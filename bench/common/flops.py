"""Model FLOPs of a LoRA training step, and the card's measured bf16 matmul peak: model FLOPs utilisation.

FLOPs per trained token (model FLOPs: what the step must compute, not what checkpointing recomputes):

    4 * N_decoder  +  12 * L * s * d_attn  +  6 * N_lora

- N_decoder: parameters of the decoder layers (embeddings and head left out: the embedding is a
  lookup, and pricer runs the head only at the few supervised positions). A frozen weight costs 2
  FLOPs per token forward and 2 backward (the input's gradient; it gets no gradient of its own).
- attention: per layer, Q.K^T and A.V cost 2 * s * d_attn each per token forward (s the sequence
  length, d_attn = heads x head_dim, the causal half counted in full as PaLM's appendix does), and
  backward twice that, since both operands need gradients: 12 * L * s * d_attn.
- N_lora: adapter parameters (trained: forward 2, input gradient 2, weight gradient 2).
"""
from __future__ import annotations

import torch


def decoder_parameters(config) -> int:
    """Parameters of all decoder layers of a Llama-style config (attention, MLP, two norms per layer)."""
    head_dim = getattr(config, "head_dim", None) or config.hidden_size // config.num_attention_heads
    h, q, kv = config.hidden_size, config.num_attention_heads * head_dim, config.num_key_value_heads * head_dim
    per_layer = h * q + 2 * h * kv + q * h + 3 * h * config.intermediate_size + 2 * h
    return per_layer * config.num_hidden_layers


def lora_parameters_of(config, r: int, targets: list[str]) -> int:
    """Adapter parameters of rank-r LoRA on the named projections (q/k/v/o, gate/up/down) of every layer."""
    head_dim = getattr(config, "head_dim", None) or config.hidden_size // config.num_attention_heads
    h, q, kv, f = (config.hidden_size, config.num_attention_heads * head_dim,
                   config.num_key_value_heads * head_dim, config.intermediate_size)
    shapes = {"q_proj": (h, q), "k_proj": (h, kv), "v_proj": (h, kv), "o_proj": (q, h),
              "gate_proj": (h, f), "up_proj": (h, f), "down_proj": (f, h)}
    return config.num_hidden_layers * sum(r * sum(shapes[t]) for t in targets)


def lora_step_flops_per_token(config, seq_len: int, r: int, targets: list[str]) -> float:
    """Model FLOPs per trained token of a LoRA step: 4 N_decoder + 12 L s d_attn + 6 N_lora (module doc)."""
    head_dim = getattr(config, "head_dim", None) or config.hidden_size // config.num_attention_heads
    attention = 12 * config.num_hidden_layers * seq_len * config.num_attention_heads * head_dim
    return 4 * decoder_parameters(config) + attention + 6 * lora_parameters_of(config, r, targets)


def matmul_peak_tflops(n: int = 8192, repeats: int = 30) -> float:
    """The card's bf16 matmul rate in TFLOP/s: median of `repeats` n x n x n products on random data (CUDA events)."""
    a, b = (torch.randn(n, n, device="cuda", dtype=torch.bfloat16) for _ in range(2))
    for _ in range(5):
        a @ b
    times = []
    for _ in range(repeats):
        start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        start.record()
        a @ b
        end.record()
        end.synchronize()
        times.append(start.elapsed_time(end) / 1000)
    times.sort()
    return 2 * n**3 / times[len(times) // 2] / 1e12
