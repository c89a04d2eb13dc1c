"""Put LoRALinear layers into a model (and take them out): target matching, freezing, parameter groups."""
from __future__ import annotations

import dataclasses
import logging

from torch import nn

from utils.target_modules import matches_target, output_head_name

from .config import AdapterError, LoRAConfig
from .layer import LoRALinear, unwrapped_name

log = logging.getLogger(__name__)


def lora_layers(model: nn.Module) -> dict[str, LoRALinear]:
    """The model's LoRALinear layers by qualified name (wrapper levels such as FSDP's left out), in module order."""
    layers = {}
    for name, m in model.named_modules():
        if isinstance(m, LoRALinear):
            layers[unwrapped_name(name)] = m
    return layers


def _replace(model: nn.Module, name: str, module: nn.Module) -> None:
    parent_name, _, attr = name.rpartition(".")
    setattr(model.get_submodule(parent_name) if parent_name else model, attr, module)


def parameter_counts(model: nn.Module) -> tuple[int, int]:
    """(trainable, total) parameters, counting a bitsandbytes 4-bit weight as peft does (numel * 2 * bytes).

    A 4-bit weight is known by its module (Linear4bit), so that one FSDP2 has sharded (a DTensor, no
    longer a Params4bit; numel the whole tensor's) counts the same.
    """
    packed = {id(m.weight) for m in model.modules() if type(m).__name__ == "Linear4bit"}
    trainable = total = 0
    for p in model.parameters():
        n = p.numel()
        if type(p).__name__ == "Params4bit" or id(p) in packed:
            # Two 4-bit values are packed per byte of storage, so numel undercounts the weights.
            n *= 2 * p.element_size()
        total += n
        trainable += n if p.requires_grad else 0
    return trainable, total


def inject_lora(model: nn.Module, config: LoRAConfig | None = None,
                layer_class: type[LoRALinear] = LoRALinear, within: nn.Module | None = None) -> list[str]:
    """Wrap the linear layers config.target_modules names in `layer_class`, freeze all else; return the names.

    `layer_class` is the seam for trying a LoRALinear variant (a subclass) without editing layer.py.
    `within` (a submodule of `model`) limits it to that submodule: names still match as in the whole
    model, a submodule with nothing to wrap is left as it is, and only its parameters are frozen.
    Layer by layer in module order, the layers draw the same initial weights as one whole-model call:
    FSDP's loading injects each decoder layer's LoRA before it shards the layer.
    """
    config = config or LoRAConfig()
    scope = model if within is None else within
    if lora_layers(scope):
        raise ValueError("model already has LoRA layers: call unload_lora or merge_lora before injecting again")
    head = output_head_name(model)
    inside = {id(m) for m in scope.modules()}
    names = []
    for name, module in model.named_modules():
        if not name or id(module) not in inside or not matches_target(name, config.target_modules, head):
            continue
        if isinstance(module, nn.Linear):
            names.append(name)
        elif not isinstance(config.target_modules, str):
            raise ValueError(f"target_modules matches {name}, a {type(module).__name__}; LoRA wraps linear layers only")
    if not names and within is not None:
        return names
    if not names:
        example = next((n for n, m in model.named_modules() if isinstance(m, nn.Linear) and n != head), "none")
        raise ValueError(f"target_modules {config.target_modules!r} matched no linear layer (a regex must match "
                         f"whole names like {example!r}; a list matches name suffixes like 'q_proj')")
    for p in scope.parameters():
        p.requires_grad_(False)
    for name in names:
        base = model.get_submodule(name)
        layer = layer_class(base, r=config.r, alpha=config.alpha, dropout=config.dropout,
                           use_rslora=config.use_rslora, use_dora=config.use_dora, init=config.init)
        _replace(model, name, layer.train(base.training))  # an eval model must not start dropping out
    if config.base_model_name_or_path is None:
        config = dataclasses.replace(config, base_model_name_or_path=getattr(model, "name_or_path", None) or None)
    model.lora_config = config
    if within is not None:
        return names
    trainable, total = parameter_counts(model)
    log.info("LoRA on %d layers: trainable params: %s || all params: %s || trainable%%: %.4f",
             len(names), f"{trainable:,d}", f"{total:,d}", 100 * trainable / total)
    return names


def lora_parameters(model: nn.Module, split: bool = False) -> list[nn.Parameter] | tuple[list, list]:
    """Every adapter parameter (LoRALinear.adapter_parameters of each layer), or (others, B-side) for LoRA+."""
    a_side, b_side = [], []
    for layer in lora_layers(model).values():
        for name, p in layer.adapter_parameters().items():
            (b_side if name.startswith("lora_B") else a_side).append(p)
    return (a_side, b_side) if split else a_side + b_side


def check_trainable(model: nn.Module) -> None:
    """Raise AdapterError unless the parameters requiring grad are exactly the adapter parameters.

    A trainable parameter outside that list would get gradients but never be stepped, clipped,
    all-reduced or saved; one inside it that is frozen would silently stay at its initial value.
    """
    adapter = {id(p) for p in lora_parameters(model)}
    for name, p in model.named_parameters():
        if p.requires_grad and id(p) not in adapter:
            raise AdapterError(f"{name} requires grad but is not an adapter parameter (LoRALinear.adapter_parameters): "
                             "freeze it, or make it part of a LoRALinear")
        if not p.requires_grad and id(p) in adapter:
            raise AdapterError(f"adapter parameter {name} is frozen (requires_grad False): it would never train")


def unload_lora(model: nn.Module) -> nn.Module:
    """Put the original base layers back, dropping the adapters (base parameters stay frozen)."""
    for name, layer in lora_layers(model).items():
        _replace(model, name, layer.base_layer)
    model.__dict__.pop("lora_config", None)
    return model
