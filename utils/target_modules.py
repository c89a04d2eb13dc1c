"""Which of a model's modules a target spec names (peft's rules), shared by lora/ (which layers to wrap)
and quant/ (which projections a base model has), so neither imports the other for it.

A spec is "all-linear" (every module but the output head), a regex matched against the whole
qualified name, or a list of names matched as dotted suffixes ("q_proj" names
"model.layers.0.self_attn.q_proj"): the three forms LoRAConfig.target_modules takes.
"""
from __future__ import annotations

import re

from torch import nn


def matches_target(name: str, targets: tuple[str, ...] | list[str] | str, head: str | None) -> bool:
    """Whether the target spec `targets` names the module `name` (`head`: the output head's name, or None)."""
    if targets == "all-linear":
        return name != head
    if isinstance(targets, str):
        return re.fullmatch(targets, name) is not None
    return any(name == t or name.endswith("." + t) for t in targets)


def output_head_name(model: nn.Module) -> str | None:
    """The qualified name of the model's output head (get_output_embeddings), or None."""
    get_head = getattr(model, "get_output_embeddings", None)
    head = get_head() if callable(get_head) else None
    return next((n for n, m in model.named_modules() if m is head), None) if head is not None else None
