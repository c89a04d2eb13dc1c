"""Every use of a private or version-dependent API of torch, accelerate, transformers and
bitsandbytes, in one place, each with the versions it was checked on.

Checked on: torch 2.11 (GPU image) and 2.13 (CPU); transformers 5.17, 5.24 and 5.25; accelerate
1.15 and 1.16; bitsandbytes 0.50.2; kernels 0.19. When one of them moves, this file is the one to fix, and the tests
that call these functions say which broke.
"""
from __future__ import annotations

from typing import Any

import torch
from torch import nn


# ---------------------------------------------------------------- bitsandbytes

def unpack_cpu_4bit(weight: Any) -> tuple[torch.Tensor, Any]:
    """(data, quant_state) of a Params4bit in bitsandbytes' ordinary layout.

    On CPUs with AVX512, bitsandbytes 0.50 repacks 4-bit weights for its inference kernel
    (`quant_state.packing_format_for_cpu`); the private `_convert_weight_packed_for_cpu_inverse`
    undoes that on a copy. Checked: bitsandbytes 0.50.2.
    """
    data, state = weight.data, weight.quant_state
    if getattr(state, "packing_format_for_cpu", False):
        import bitsandbytes.functional as bnbF

        data, state = bnbF._convert_weight_packed_for_cpu_inverse(data, state)
    return data, state


def disable_cpu_4bit_repacking(model: nn.Module) -> None:
    """Keep bitsandbytes from repacking 4-bit weights for its no-backward AVX512-BF16 CPU kernel.

    `support_avx512bf16_for_cpu` is a module attribute of Linear4bit. Checked: bitsandbytes 0.50.2.
    """
    for module in model.modules():
        if getattr(module, "support_avx512bf16_for_cpu", False):
            module.support_avx512bf16_for_cpu = False


# ---------------------------------------------------------------- torch

def non_persistent_buffers(module: nn.Module) -> set[str]:
    """Names of the module's own buffers that state_dict leaves out (`_non_persistent_buffers_set`). torch 2.4-2.13."""
    return set(module._non_persistent_buffers_set)


def trace_scoped_side_effects_under_checkpointing() -> None:
    """Let dynamo trace a checkpointed layer whose forward sets and resets a context variable.

    From transformers 5.25 every attention forward routes its rotary function through the
    `kernels` package's `_ACTIVE_KERNEL_FUNCS` context variable, set on entry and reset before
    it returns. Under activation checkpointing dynamo refuses to trace that set ("HOP: Unsafe
    side effect") and the compiled layer falls back to eager around it, unless it may skip
    replaying the side effect in the backward's recomputation: safe here, since the variable is
    back to its old value when the layer returns. `skip_fwd_side_effects_in_bwd_under_checkpoint`
    is a dynamo config flag (checked on torch 2.13; where a torch lacks it, nothing is done).
    """
    import torch._dynamo.config as dynamo_config

    if hasattr(dynamo_config, "skip_fwd_side_effects_in_bwd_under_checkpoint"):
        dynamo_config.skip_fwd_side_effects_in_bwd_under_checkpoint = True


def ddp_ignore(module: nn.Module, names: list[str]) -> None:
    """Tell DistributedDataParallel not to broadcast or sync these parameters and buffers.

    `_ddp_params_and_buffers_to_ignore` is the attribute DDP reads. torch 2.4-2.13.
    """
    module._ddp_params_and_buffers_to_ignore = names


def fsdp2() -> tuple[Any, Any]:
    """(fully_shard, MixedPrecisionPolicy): FSDP2, per-parameter sharding.

    Public in `torch.distributed.fsdp` from torch 2.6; before that only in the private
    `torch.distributed._composable.fsdp`. Checked: torch 2.11 (GPU image) and 2.13 (CPU, gloo).
    """
    try:
        from torch.distributed.fsdp import MixedPrecisionPolicy, fully_shard
    except ImportError:
        from torch.distributed._composable.fsdp import MixedPrecisionPolicy, fully_shard
    return fully_shard, MixedPrecisionPolicy


# ---------------------------------------------------------------- transformers

def attention_implementation(model: nn.Module) -> str:
    """"sdpa", "eager", ... as the model's config records it (`config._attn_implementation`). transformers 5.17-5.24."""
    return getattr(model.config, "_attn_implementation", None) or "sdpa"


def cache_keyword() -> str:
    """The forward() argument that takes the KV cache: `cache` from transformers 5.24, `past_key_values` before."""
    from dataclasses import fields

    from transformers.modeling_outputs import CausalLMOutputWithPast

    return "cache" if "cache" in {f.name for f in fields(CausalLMOutputWithPast)} else "past_key_values"


def forget_gguf_quantization(model: Any, name_or_path: str) -> None:
    """Make a model loaded with `gguf_file=` saveable: its weights are already de-quantized.

    transformers refuses save_pretrained while `model.hf_quantizer` is set; the config keeps a
    quantization_config and a `_model_name_or_path` of GGUF's run label. transformers 5.17-5.24.
    """
    model.hf_quantizer = None
    if hasattr(model.config, "quantization_config"):
        del model.config.quantization_config
    model.config._model_name_or_path = name_or_path


# ---------------------------------------------------------------- accelerate

def reset_accelerate() -> None:
    """Forget accelerate's process-wide state, so that another Accelerator can be built in this process.

    `_reset_state` is private in accelerate 1.15; train() builds its own Accelerator each call.
    """
    from accelerate.state import AcceleratorState, GradientState

    AcceleratorState._reset_state(reset_partial_state=True)
    GradientState._reset_state()
