"""Hand-written LoRA / DoRA / QLoRA: one LoRALinear module, injection, merging and peft-format adapter files."""
from .config import AdapterError, LoRAConfig
from .inject import check_trainable, inject_lora, lora_layers, lora_parameters, parameter_counts, unload_lora
from .io import load_adapter, save_adapter
from .layer import LoRALinear
from .merge import export_merged, merge_lora

__all__ = [
    "AdapterError", "check_trainable", "export_merged", "inject_lora", "load_adapter", "lora_layers",
    "lora_parameters", "LoRAConfig", "LoRALinear", "merge_lora", "parameter_counts", "save_adapter", "unload_lora",
]
