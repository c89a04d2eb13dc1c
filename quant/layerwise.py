"""Build a bitsandbytes 4-bit causal LM one tensor at a time, so that no 16-bit copy of it is ever held.

The skeleton is built on the meta device (parameters without storage; buffers such as rotary
frequencies real, and tiny), every linear but the output head becomes a 4-bit `Linear4bit` (the
modules transformers' bitsandbytes integration converts), and then each parameter, in the model's
own order (embeddings, decoder layer 0, 1, ..., final norm, head), is read from a source, cast to
the compute dtype, placed on the device and, for a quantized linear, quantized there before the
next is read. Host and device hold the 4-bit model built so far plus one 16-bit tensor: for Llama
3.1 70B the largest is the 2.1 GB embedding, against 141 GB for the whole model in bf16.

Sources: `CheckpointSource` (a safetensors folder, each tensor read into fresh host memory,
quant/safetensors_reader.py) and `RandomSource` (seeded random weights drawn on the device, each
tensor from its own generator, so a weight does not depend on the order it is built in: the
benchmarks' builder). The quantization step is transformers' own, `Params4bit(value,
**meta_weight.__dict__).to(device)`, so a checkpoint built here has bitwise the weights that
`from_pretrained(quantization_config=BitsAndBytesConfig(load_in_4bit=True, ...))` gives it.

`on_unit` (an `OnUnit`) lets a caller act on parts of the model as they become real: the
modules `on_unit.units(model)` names (asked on the meta skeleton) are built first, one at a time,
each handed to `on_unit(model, unit)` as soon as its own parameters are quantized and before the
next is read. FSDP2 shards each unit there (the embeddings, the head, each decoder layer with its
LoRA: training.parallel.ShardWhileLoading), so that a process holds its slices of the units built
so far plus one whole unit, never the model.
"""
from __future__ import annotations

import os
import zlib
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

import torch
from torch import nn

from quant.exceptions import ModelError
from quant.safetensors_reader import SafetensorsReader
from utils.compat import non_persistent_buffers


@dataclass(frozen=True)
class Quant4bit:
    """bitsandbytes 4-bit settings, as BitsAndBytesConfig names them (bnb_4bit_*)."""

    quant_type: str = "nf4"
    double_quant: bool = True
    compute_dtype: torch.dtype = torch.bfloat16
    quant_storage: torch.dtype = torch.uint8

    def bnb_config(self):
        """The equivalent transformers BitsAndBytesConfig (recorded in the model's config)."""
        from transformers import BitsAndBytesConfig

        return BitsAndBytesConfig(load_in_4bit=True, bnb_4bit_quant_type=self.quant_type,
                                  bnb_4bit_use_double_quant=self.double_quant,
                                  bnb_4bit_compute_dtype=self.compute_dtype,
                                  bnb_4bit_quant_storage=self.quant_storage)


class CheckpointSource:
    """Parameters read from a safetensors checkpoint folder, one tensor at a time."""

    def __init__(self, folder: str | os.PathLike) -> None:
        """Index the folder's shards (headers only)."""
        self.reader = SafetensorsReader(folder)

    def __call__(self, name: str, shape: torch.Size, device: torch.device) -> torch.Tensor:
        """The checkpoint's tensor `name` on `device`, in its stored dtype."""
        tensor = self.reader.read(name)
        if tensor.shape != shape:
            raise ModelError(f"{self.reader.folder}: tensor {name!r} has shape {tuple(tensor.shape)}, "
                             f"the model built from its config.json expects {tuple(shape)}")
        return tensor.to(device)


@dataclass(frozen=True)
class RandomSource:
    """Random parameters drawn on the device: matrices N(0, std) in bf16, vectors (norm weights) ones."""

    seed: int = 0
    std: float = 0.02

    def __call__(self, name: str, shape: torch.Size, device: torch.device) -> torch.Tensor:
        """The tensor `name`: the same on every call for a given seed, name and device type."""
        if len(shape) == 1:
            return torch.ones(shape, device=device, dtype=torch.bfloat16)
        generator = torch.Generator(device).manual_seed(self.seed * 1_000_003 + zlib.crc32(name.encode()))
        return torch.randn(shape, generator=generator, device=device, dtype=torch.bfloat16) * self.std


def empty_model(config, trust_remote_code: bool = False) -> nn.Module:
    """The causal LM of `config` with every parameter on the meta device (buffers real, on the host)."""
    from accelerate import init_empty_weights
    from transformers import AutoModelForCausalLM

    with init_empty_weights(include_buffers=False):
        model = AutoModelForCausalLM.from_config(config, trust_remote_code=trust_remote_code)
    model.tie_weights()
    return model


def swap_in_4bit_linears(model: nn.Module, quant: Quant4bit) -> int:
    """Replace every nn.Linear but the output head by a meta `bnb.nn.Linear4bit`; returns how many."""
    import bitsandbytes as bnb

    head, swapped = model.get_output_embeddings(), 0
    for parent in list(model.modules()):
        for name, child in list(parent.named_children()):
            if type(child) is not nn.Linear or child is head:
                continue
            setattr(parent, name, bnb.nn.Linear4bit(
                child.in_features, child.out_features, bias=child.bias is not None,
                compute_dtype=quant.compute_dtype, compress_statistics=quant.double_quant,
                quant_type=quant.quant_type, quant_storage=quant.quant_storage, device="meta"))
            swapped += 1
    return swapped


class OnUnit(Protocol):
    """Whom build_4bit hands each unit to as soon as its parameters are real (see the module doc)."""

    def units(self, model: nn.Module) -> list[nn.Module]:
        """The submodules to build one at a time and hand over, asked once on the meta skeleton."""

    def __call__(self, model: nn.Module, unit: nn.Module) -> None:
        """Act on `unit`, whose parameters are now real (the rest of `model` may still be on the meta device)."""


def _materialize_parameters(model: nn.Module, names: list[str], source, device: torch.device,
                            quant: Quant4bit) -> None:
    """Give the meta parameters `names` their values from `source` on `device`, quantizing 4-bit weights."""
    import bitsandbytes as bnb

    for name in names:
        owner_name, _, attr = name.rpartition(".")
        owner = model.get_submodule(owner_name)
        param = getattr(owner, attr)
        value = source(name, param.shape, device).to(quant.compute_dtype)
        if isinstance(owner, bnb.nn.Linear4bit) and attr == "weight":
            new = bnb.nn.Params4bit(value, requires_grad=False, **param.__dict__).to(device)
        else:
            new = nn.Parameter(value, requires_grad=False)
        setattr(owner, attr, new)
        del value, new


def materialize(model: nn.Module, source, device: torch.device, quant: Quant4bit,
                on_unit: OnUnit | None = None) -> None:
    """Give every meta parameter its value from `source` on `device`, quantizing 4-bit weights one at a time;
    with `on_unit`, its units first, each handed over once built (see the module doc)."""
    for module in model.modules():  # buffers (rotary tables) are real and small: on the device before any unit
        skip = non_persistent_buffers(module)
        for name, buffer in list(module.named_buffers(recurse=False)):
            module.register_buffer(name, buffer.to(device), persistent=name not in skip)
    names = [name for name, _ in model.named_parameters()]
    units = on_unit.units(model) if on_unit is not None else []
    built: set[str] = set()
    for unit in units:
        prefix = next(n for n, m in model.named_modules() if m is unit) + "."
        own = [n for n in names if n.startswith(prefix)]
        _materialize_parameters(model, own, source, device, quant)
        built.update(own)
        on_unit(model, unit)
    _materialize_parameters(model, [n for n in names if n not in built], source, device, quant)
    model.tie_weights()


def build_4bit(config, source, device: torch.device | str, quant: Quant4bit = Quant4bit(),
               trust_remote_code: bool = False, on_unit: OnUnit | None = None) -> nn.Module:
    """The causal LM of `config` quantized to 4 bits on `device`, weights from `source`, built tensor by tensor
    (every parameter it creates frozen); `on_unit` is handed each unit as it is built (see the module doc)."""
    device = torch.device(device)
    model = empty_model(config, trust_remote_code)
    swap_in_4bit_linears(model, quant)
    model.requires_grad_(False)
    materialize(model, source, device, quant, on_unit)
    model.config.quantization_config = quant.bnb_config()
    model.config.dtype = quant.compute_dtype
    model.is_loaded_in_4bit = True
    return model.eval()


def load_4bit_layerwise(path: str | os.PathLike, device: torch.device | str, quant: Quant4bit = Quant4bit(),
                        trust_remote_code: bool = False, on_unit: OnUnit | None = None) -> nn.Module:
    """A checkpoint folder's model in 4 bits on `device`, read and quantized tensor by tensor (see the module doc)."""
    from transformers import AutoConfig, GenerationConfig

    config = AutoConfig.from_pretrained(path, trust_remote_code=trust_remote_code)
    model = build_4bit(config, CheckpointSource(path), device, quant, trust_remote_code, on_unit)
    model.config.name_or_path = str(path)
    if (Path(path) / "generation_config.json").exists():
        model.generation_config = GenerationConfig.from_pretrained(path)
    return model
