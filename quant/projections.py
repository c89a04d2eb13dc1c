"""Find the projection layers LoRA will wrap, and say clearly when a model has none of them."""
from __future__ import annotations

from collections.abc import Sequence

from torch import nn

from quant.exceptions import ModelError
from utils.target_modules import matches_target, output_head_name

ATTENTION = ("q_proj", "k_proj", "v_proj", "o_proj")
LAYER_KINDS = ("q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj")


def linear_names(model: nn.Module) -> list[str]:
    """Qualified names of every Linear-like module (nn.Linear and its bitsandbytes subclasses, Conv1D)."""
    return [name for name, m in model.named_modules()
            if isinstance(m, nn.Linear) or type(m).__name__ == "Conv1D"]


def check_projections(model: nn.Module, targets: Sequence[str] | str = ATTENTION) -> list[str]:
    """Qualified names of the Linear layers matching `targets`; ModelError naming the ones it has if none do.

    `targets` is a list of names matched as dotted suffixes ("q_proj", "self_attn.q_proj"), "all-linear",
    or a regex matched against whole qualified names -- the three forms LoRAConfig.target_modules
    takes, with the meaning inject_lora gives them (both read utils.target_modules).
    """
    names = linear_names(model)
    head = output_head_name(model)
    found = [n for n in names if matches_target(n, targets, head)]
    if not found:
        leaves = sorted({n.rsplit(".", 1)[-1] for n in names})
        raise ModelError(f"{type(model).__name__} has no Linear layers matching {targets!r}; its Linear layer "
                         f"names are {leaves}: target those instead")
    return found
