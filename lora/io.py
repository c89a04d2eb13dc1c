"""Adapters on disk in peft's format: adapter_model.safetensors + adapter_config.json, both ways."""
from __future__ import annotations

import dataclasses
import json
import os
from pathlib import Path

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file
from torch import nn

from utils.atomic import write_files

from .config import AdapterError, LoRAConfig
from .inject import inject_lora, lora_layers, unload_lora
from .layer import LoRALinear

CONFIG_NAME = "adapter_config.json"
WEIGHTS_NAME = "adapter_model.safetensors"
# train.py's resolved config, saved in every adapter folder it writes (not read by peft): the run's
# settings for evaluate.py and predict.py when the folder has left its run (evaluation.with_run_defaults).
TRAINING_CONFIG_NAME = "training-config.yaml"
# peft keys are the module names under PeftModel.base_model.model, with the adapter name dropped.
PREFIX = "base_model.model."


def adapter_params(model: nn.Module) -> dict[str, nn.Parameter]:
    """The adapter parameters under peft's keys (base_model.model.<layer>.lora_A.weight, ...)."""
    return {f"{PREFIX}{name}.{key}": p for name, layer in lora_layers(model).items()
            for key, p in layer.adapter_parameters().items()}


def adapter_state_dict(model: nn.Module) -> dict[str, torch.Tensor]:
    """The LoRA weights under peft's keys (...q_proj.lora_A.weight, ...lora_B.weight, ...lora_magnitude_vector)."""
    return {k: v.detach().contiguous().cpu() for k, v in adapter_params(model).items()}


def save_adapter(model: nn.Module, path: str | os.PathLike, base_model_name_or_path: str | None = None) -> Path:
    """Write the model's adapter to path as peft does, so PeftModel.from_pretrained loads it (and
    AutoPeftModelForCausalLM its base, at the embedded copy's revision when it was trained on one)."""
    layers = lora_layers(model)
    config = getattr(model, "lora_config", None)
    if not layers or config is None:
        raise ValueError("model has no LoRA layers: call inject_lora or load_adapter before save_adapter")
    if base_model_name_or_path is not None:
        config = dataclasses.replace(config, base_model_name_or_path=base_model_name_or_path)
    # peft records "all-linear" as the module names it resolved to; do the same so peft wraps the same layers.
    targets = list(layers) if config.target_modules == "all-linear" else None
    peft_config = config.to_peft_dict(targets)
    revision = base_revision(model, peft_config.get("base_model_name_or_path"))
    if revision is not None:
        peft_config["revision"] = revision
    state = adapter_state_dict(model)

    def write_config(p: Path) -> None:
        p.write_text(json.dumps(peft_config, indent=2) + "\n")

    path = Path(path)
    write_files(path, {WEIGHTS_NAME: lambda p: save_file(state, p, metadata={"format": "pt"}),
                         CONFIG_NAME: write_config})
    return path


def base_revision(model: nn.Module, base: str | None) -> str | None:
    """The revision peft should load `base` at: for an embedded model's hub id, when the model was loaded from
    pricer's embedded copy, that copy's revision in the Hugging Face cache (quant/hf_cache.py); else None."""
    from quant.embedded import embedded_with_hub_id
    from quant.hf_cache import revision, revision_of_folder

    embedded = embedded_with_hub_id(base or "")
    loaded = revision_of_folder(getattr(getattr(model, "config", None), "_name_or_path", None))
    return loaded if embedded is not None and loaded == revision(embedded) else None


def read_adapter(path: Path) -> tuple[LoRAConfig, dict[str, torch.Tensor]]:
    """(config, tensors) of an adapter folder, checked but not applied; one-line AdapterError when unusable."""
    if not path.is_dir():
        raise FileNotFoundError(f"no adapter folder at {path}: pass the folder save_adapter wrote")
    if not (path / CONFIG_NAME).is_file():
        raise AdapterError(f"{path} has no {CONFIG_NAME}: pass a folder written by save_adapter or peft")
    if not (path / WEIGHTS_NAME).is_file():
        if (path / "adapter_model.bin").is_file():
            raise AdapterError(f"{path} holds adapter_model.bin (a pickle), which pricer never loads: re-save it "
                               "with peft's save_pretrained(..., safe_serialization=True)")
        raise AdapterError(f"{path} has no {WEIGHTS_NAME}: the adapter save did not finish; save it again")
    config = read_config(path / CONFIG_NAME)
    try:
        tensors = load_file(path / WEIGHTS_NAME)
    except (SafetensorError, OSError) as e:
        raise AdapterError(f"{path / WEIGHTS_NAME}: not a readable safetensors file ({e}); save it again") from None
    _check_tensors(path / WEIGHTS_NAME, tensors, config.r)
    return config, tensors


def read_config(file: Path) -> LoRAConfig:
    """The LoRAConfig in an adapter_config.json file; one-line AdapterError naming the file for anything else."""
    try:
        d = json.loads(file.read_bytes().decode("utf-8"))
    except UnicodeDecodeError:
        raise AdapterError(f"{file}: not UTF-8 text, so not a config peft or pricer wrote; save the adapter "
                           "again") from None
    except RecursionError:
        raise AdapterError(f"{file}: not valid JSON (nested too deeply); save the adapter again") from None
    except ValueError as e:   # JSONDecodeError, or an integer too long to convert
        raise AdapterError(f"{file}: not valid JSON ({str(e)[:80]}); save the adapter again") from None
    try:
        return LoRAConfig.from_peft_dict(d)
    except AdapterError as e:
        raise AdapterError(f"{file}: {e}") from None


# The dtypes peft and pricer save adapters in; anything else (integers, float8) is not a trained adapter.
WEIGHT_DTYPES = (torch.float32, torch.float16, torch.bfloat16, torch.float64)


def _check_tensors(file: Path, tensors: dict[str, torch.Tensor], r: int) -> None:
    """Refuse weights no training writes (empty, non-float, NaN/inf) or whose rank is not the config's r.

    Checked before any layer is injected, so a config with an absurd r never allocates its layers.
    """
    if not any(key.endswith("lora_A.weight") for key in tensors):
        raise AdapterError(f"{file}: holds no LoRA weights (no lora_A.weight); save the adapter again")
    for key, t in tensors.items():
        if t.dtype not in WEIGHT_DTYPES:
            raise AdapterError(f"{file}: {key} has dtype {t.dtype}; adapter weights are float16, bfloat16, float32 "
                               "or float64: save the adapter again")
        if not bool(torch.isfinite(t).all()):
            raise AdapterError(f"{file}: {key} holds NaN or infinite values (training diverged); use an earlier "
                               "checkpoint's adapter or retrain")
        axis = 0 if key.endswith("lora_A.weight") else 1 if key.endswith("lora_B.weight") else None
        if axis is not None and t.ndim != 2:
            raise AdapterError(f"{file}: adapter weight {key} has shape {tuple(t.shape)}, not a matrix; "
                               "save the adapter again")
        if axis is not None and t.shape[axis] != r:
            raise AdapterError(f"{file}: adapter weight {key} has rank {t.shape[axis]} but adapter_config.json says "
                               f"r={r}; the adapter files are inconsistent, save it again")


def _shape_error(model: nn.Module, key: str, got: tuple, want: tuple) -> AdapterError:
    # Ranks were checked against adapter_config.json on reading: a shape that differs now is the base's.
    axis = next((i for i in range(len(want)) if len(got) == len(want) and got[i] != want[i]), None)
    hidden = getattr(getattr(model, "config", None), "hidden_size", None)
    if axis is not None and want[axis] == hidden:
        return AdapterError(f"adapter was trained on a base with hidden size {got[axis]}, this base has {hidden} "
                            f"({key}: {got} vs {want}); load it on the base it was trained on")
    return AdapterError(f"adapter was trained on another base: {key} has shape {got}, this base needs {want}; "
                        "load it on the base it was trained on")


def load_adapter(model: nn.Module, path: str | os.PathLike, layer_class: type[LoRALinear] = LoRALinear) -> LoRAConfig:
    """Inject LoRA (`layer_class`) as the adapter's config says and load its weights; one-line AdapterError on any mismatch."""
    path = Path(path)
    config, tensors = read_adapter(path)
    try:
        inject_lora(model, config, layer_class)
    except ValueError as e:
        if lora_layers(model):
            raise
        raise AdapterError(f"adapter does not fit this base: {e}") from None
    try:
        expected = adapter_params(model)
        for key, param in expected.items():
            if key not in tensors:
                raise AdapterError(f"adapter file lacks {key}, which this base needs: it was trained on another base "
                                   "or with other target_modules")
            got, want = tuple(tensors[key].shape), tuple(param.shape)
            if got != want:
                raise _shape_error(model, key, got, want)
        unexpected = [k for k in tensors if k not in expected]
        if unexpected:
            raise AdapterError(f"adapter has weights for {unexpected[0]}, which this base has no LoRA layer for: "
                               "it was trained on another base")
        with torch.no_grad():
            for key, param in expected.items():
                param.copy_(tensors[key])
    except AdapterError:
        unload_lora(model)
        raise
    return config

