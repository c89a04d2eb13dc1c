"""Fold adapters into base weights (merge_lora) and write a plain 16-bit merged checkpoint (export_merged)."""
from __future__ import annotations

import copy
import os
from pathlib import Path

import torch
from safetensors.torch import save_file
from torch import nn

from utils.atomic import atomic_folder
from utils.compat import non_persistent_buffers

from .inject import _replace, lora_layers
from .layer import LoRALinear, dequantized_weight


def _set_weight(base: nn.Linear, weight: torch.Tensor) -> None:
    """Store a dense float weight into base, re-quantizing it the way the base was quantized."""
    old = base.weight
    kind = type(old).__name__
    if kind == "Params4bit":
        import bitsandbytes as bnb

        state = old.quant_state
        data, new_state = bnb.functional.quantize_4bit(
            weight.to(state.dtype).contiguous(), blocksize=old.blocksize, compress_statistics=old.compress_statistics,
            quant_type=old.quant_type, quant_storage=old.quant_storage)
        base.weight = bnb.nn.Params4bit(
            data, requires_grad=False, quant_state=new_state, blocksize=old.blocksize,
            compress_statistics=old.compress_statistics, quant_type=old.quant_type, quant_storage=old.quant_storage,
            module=base, bnb_quantized=True)
        base.quant_state = new_state
    elif kind == "Int8Params":
        import bitsandbytes as bnb

        cb, scb, _ = bnb.functional.int8_vectorwise_quant(weight.to(torch.float16).contiguous())
        base.weight = bnb.nn.Int8Params(cb, requires_grad=False, has_fp16_weights=False, CB=cb, SCB=scb)
        base.state.reset_grads()
    else:
        with torch.no_grad():
            old.copy_(weight)


def merge_lora(model: nn.Module) -> nn.Module:
    """Fold every adapter into its base weight and remove the LoRA layers; returns the model.

    16/32-bit bases: W + s*B@A is computed in float32 and rounded once to the base dtype, so the
    merged forward equals the unmerged one up to float rounding (<1e-5 in float32).
    4-bit bases: dequantize -> add -> requantize with the base's quant_type, blocksize, double
    quantization and storage. Requantizing moves each weight to a 4-bit code of its new block scale,
    an error of about half the widest gap between codes (0.139 of the block's absmax for NF4, 0.167
    for FP4), so the merged model's logits differ from the unmerged ones by about as much as 4-bit
    quantization itself moved them (tests/test_lora_merge.py bounds the ratio). Serve a merged
    4-bit model only if that is acceptable; export_merged writes a 16-bit merge, with no
    requantization, instead.
    8-bit bases: the same round trip through int8 row-wise quantization (a small fraction of the
    row's absmax; the test bounds it).
    """
    for name, layer in lora_layers(model).items():
        _set_weight(layer.base_layer, layer.merged_weight())
        _replace(model, name, layer.base_layer)
    model.__dict__.pop("lora_config", None)
    return model


def _dense_state_dict(model: nn.Module, dtype: torch.dtype) -> dict[str, torch.Tensor]:
    """Model weights with adapters merged and 4/8-bit layers dequantized, under the original module names."""
    state: dict[str, torch.Tensor] = {}
    seen: set[int] = set()
    skip = ""  # the LoRALinear whose children (base_layer, lora_A, ...) are already written merged
    for name, module in model.named_modules():
        if skip and name.startswith(skip):
            continue
        prefix = f"{name}." if name else ""
        tensors: dict[str, torch.Tensor | None] = {}
        if isinstance(module, LoRALinear):
            tensors = {"weight": module.merged_weight(), "bias": module.base_layer.bias}
            skip = prefix
        elif isinstance(module, nn.Linear) and type(module.weight).__name__ in ("Params4bit", "Int8Params"):
            tensors = {"weight": dequantized_weight(module), "bias": module.bias}
        else:
            tensors.update(module.named_parameters(recurse=False))
            tensors.update((n, b) for n, b in module.named_buffers(recurse=False)
                           if n not in non_persistent_buffers(module))
        for key, t in tensors.items():
            if t is None:
                continue
            if isinstance(t, nn.Parameter):
                # Tied weights (lm_head = embed_tokens) are one Parameter: write it once, as transformers does.
                if id(t) in seen:
                    continue
                seen.add(id(t))
            t = t.detach()
            state[prefix + key] = (t.to(dtype) if t.is_floating_point() else t).contiguous().cpu()
    return state


def export_merged(model: nn.Module, tokenizer, path: str | os.PathLike, dtype: torch.dtype = torch.bfloat16) -> Path:
    """Write a plain merged checkpoint folder (config, safetensors weights, tokenizer) that transformers loads.

    The model is not changed: adapters are merged and 4/8-bit layers dequantized on the fly, so a
    QLoRA model exports as a full-precision `dtype` model without the quantization config.
    """
    if dtype not in (torch.bfloat16, torch.float16, torch.float32):
        raise ValueError(f"export dtype must be bfloat16, float16 or float32, got {dtype}")
    path = Path(path)
    if path.exists() and any(path.iterdir()):
        raise FileExistsError(f"{path} exists and is not empty: choose a new folder for the merged model")
    state = _dense_state_dict(model, dtype)
    config = copy.deepcopy(model.config)
    for attr in ("quantization_config", "_pre_quantization_dtype"):
        if hasattr(config, attr):
            delattr(config, attr)
    config.dtype = dtype
    with atomic_folder(path, replace=path.exists()) as tmp:
        save_file(state, tmp / "model.safetensors", metadata={"format": "pt"})
        config.save_pretrained(tmp)
        generation = getattr(model, "generation_config", None)
        if generation is not None:
            generation.save_pretrained(tmp)
        if tokenizer is not None:
            tokenizer.save_pretrained(tmp)
    return path
