"""How many bytes a (quantized) model holds, split into quantized linears and the rest."""
from __future__ import annotations

import sys
from collections.abc import Iterator

import torch
from torch import nn


def quantized_linear_types() -> tuple[type, ...]:
    """The bitsandbytes linear classes, or () when bitsandbytes was never imported (then none can exist)."""
    if "bitsandbytes" not in sys.modules:
        return ()
    import bitsandbytes as bnb

    return bnb.nn.Linear4bit, bnb.nn.Linear8bitLt


def _state_tensors(state) -> Iterator[torch.Tensor]:
    """Every tensor inside a bitsandbytes QuantState / MatmulLtState, nested states included."""
    if state is None:
        return
    for value in vars(state).values():
        if isinstance(value, torch.Tensor):
            yield value
        elif hasattr(value, "absmax"):  # the nested QuantState of double quantization
            yield from _state_tensors(value)


def _quantized_tensors(module: nn.Module) -> Iterator[torch.Tensor]:
    """The weight, bias and quantization statistics (absmax, nested absmax, code, SCB) of one bnb linear."""
    yield from module.parameters(recurse=False)
    yield from module.buffers(recurse=False)
    yield from _state_tensors(getattr(module.weight, "quant_state", None))
    scb = getattr(module.weight, "SCB", None)
    if scb is not None:
        yield scb
    yield from _state_tensors(getattr(module, "state", None))


def held_slice(t: torch.Tensor) -> torch.Tensor:
    """What this process holds of `t`: its slice of a sharded tensor (an FSDP2 DTensor), any other tensor whole."""
    return t.to_local() if callable(getattr(t, "to_local", None)) else t


def memory_report(model: nn.Module) -> dict:
    """Bytes held by quantized linears (with their quant state), by everything else, in total, and at 16 bits.

    Shared tensors (tied embeddings, a SCB referenced twice) count once. `bf16_equivalent_bytes` is
    the same model with every parameter at 2 bytes (quantized weights at their logical shape) plus
    its buffers as they are (rotary tables stay fp32 in a 16-bit model too). Of a model FSDP2 has
    sharded, it reports this process's slices (bytes and parameters alike).
    """
    seen: set[tuple[torch.device, int]] = set()

    def fresh_bytes(t: torch.Tensor) -> int:
        t = held_slice(t)
        key = (t.device, t.data_ptr())
        if t.numel() == 0 or key in seen:
            return 0
        seen.add(key)
        return t.numel() * t.element_size()

    quantized = [m for m in model.modules() if isinstance(m, quantized_linear_types())]
    quantized_bytes = sum(fresh_bytes(t) for m in quantized for t in _quantized_tensors(m))
    quantized_params = sum(round((m.in_features * m.out_features + (m.bias.numel() if m.bias is not None else 0))
                                 * held_slice(m.weight).numel() / max(m.weight.numel(), 1)) for m in quantized)
    quantized_ids = {id(p) for m in quantized for p in m.parameters(recurse=False)}
    other_params = other_bytes = buffer_bytes = 0
    for p in model.parameters():
        if id(p) not in quantized_ids and (added := fresh_bytes(p)):
            other_bytes += added
            other_params += held_slice(p).numel()
    for b in model.buffers():
        added = fresh_bytes(b)
        other_bytes += added
        buffer_bytes += added
    return {
        "quantized_bytes": quantized_bytes,
        "other_bytes": other_bytes,
        "total_bytes": quantized_bytes + other_bytes,
        "bf16_equivalent_bytes": 2 * (quantized_params + other_params) + buffer_bytes,
        "quantized_linears": len(quantized),
        "quantized_params": quantized_params,
        "other_params": other_params,
        "sharded": any(held_slice(p) is not p for p in model.parameters()),
    }


def format_memory_report(report: dict) -> str:
    """One line for logs: quantized + other = total, against the 16-bit size it replaces."""
    ratio = report["bf16_equivalent_bytes"] / max(report["total_bytes"], 1)
    held = " (this process's slices)" if report.get("sharded") else ""
    return (f"memory{held}: {report['quantized_linears']} quantized linears {_human(report['quantized_bytes'])}"
            f" + other {_human(report['other_bytes'])} = {_human(report['total_bytes'])}"
            f" (16-bit: {_human(report['bf16_equivalent_bytes'])}, {ratio:.2f}x smaller)")


def _human(n: int) -> str:
    for unit, size in (("GB", 1e9), ("MB", 1e6), ("KB", 1e3)):
        if n >= size:
            return f"{n / size:.1f} {unit}"
    return f"{n} B"
