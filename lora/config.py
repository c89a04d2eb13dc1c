"""LoRAConfig: the hyper-parameters of one LoRA adapter, and their peft adapter_config.json form."""
from __future__ import annotations

import math
import re
from dataclasses import dataclass, field
from typing import Any

DEFAULT_TARGETS = ("q_proj", "k_proj", "v_proj", "o_proj")
INITS = ("kaiming", "gaussian")


class AdapterError(ValueError):
    """An adapter, on disk or in a model, that cannot be used as it is (one line: what is wrong, what to do)."""


# Every field peft 0.21 writes to adapter_config.json, at the value that means "feature off".
# pricer writes them all so peft reads our files as its own; on load, a non-default value in any
# field pricer does not implement is refused rather than silently ignored.
_PEFT_DEFAULTS: dict[str, Any] = {
    "alora_invocation_tokens": None, "alpha_pattern": {}, "arrow_config": None, "auto_mapping": None,
    "bias": "none", "corda_config": None, "ensure_weight_tying": False, "eva_config": None,
    "exclude_modules": None, "fan_in_fan_out": False, "inference_mode": True, "kasa_config": None,
    "layer_replication": None, "layers_pattern": None, "layers_to_transform": None, "loftq_config": {},
    "lora_bias": False, "lora_ga_config": None, "megatron_config": None, "megatron_core": "megatron.core",
    "modules_to_save": None, "monteclora_config": None, "peft_type": "LORA", "peft_version": "0.21.2",
    "qalora_group_size": 16, "rank_pattern": {}, "revision": None, "target_parameters": None,
    "task_type": "CAUSAL_LM", "trainable_token_indices": None, "use_bdlora": None, "use_qalora": False,
    "velora_config": None,
}
# Fields that only describe the file or the run, never the math: any value is accepted on load.
_PEFT_INFO_FIELDS = {"peft_version", "inference_mode", "revision", "auto_mapping", "megatron_core",
                     "task_type", "qalora_group_size", "ensure_weight_tying"}


@dataclass
class LoRAConfig:
    """One adapter: rank, alpha, dropout, which linear layers to wrap, and the rsLoRA/DoRA/init switches.

    target_modules: a tuple of names matched as suffixes of qualified module names ("q_proj"
    matches "model.layers.0.self_attn.q_proj"), "all-linear" (every linear layer but the output
    head), or any other string, a regex that must match the whole qualified name (peft's rules).
    """

    r: int = 8
    alpha: float = 16.0
    dropout: float = 0.0
    target_modules: tuple[str, ...] | str = DEFAULT_TARGETS
    use_rslora: bool = False
    use_dora: bool = False
    init: str = "kaiming"
    base_model_name_or_path: str | None = field(default=None)

    def __post_init__(self) -> None:
        if not isinstance(self.r, int) or self.r <= 0:
            raise ValueError(f"LoRA rank r must be a positive integer, got {self.r!r}")
        if not self.alpha > 0:
            raise ValueError(f"LoRA alpha must be positive, got {self.alpha!r}")
        if not 0.0 <= self.dropout < 1.0:
            raise ValueError(f"LoRA dropout must be in [0, 1), got {self.dropout!r}")
        if self.init not in INITS:
            raise ValueError(f"LoRA init must be one of {INITS}, got {self.init!r}")
        if isinstance(self.target_modules, str):
            if self.target_modules != "all-linear":
                try:
                    re.compile(self.target_modules)
                except (re.error, OverflowError, RecursionError) as e:   # huge repeats, deep nesting
                    raise ValueError(f"target_modules {_short(self.target_modules)} is not a valid regex: {e}") from None
        else:
            self.target_modules = tuple(self.target_modules)
            if not self.target_modules:
                raise ValueError("target_modules is empty: name at least one module, or use 'all-linear'")

    def to_peft_dict(self, target_modules: list[str] | str | None = None) -> dict[str, Any]:
        """adapter_config.json contents as peft 0.21 writes them (target_modules may be given resolved)."""
        targets = self.target_modules if target_modules is None else target_modules
        d = dict(_PEFT_DEFAULTS)
        d.update(
            r=self.r,
            lora_alpha=int(self.alpha) if float(self.alpha).is_integer() else self.alpha,
            lora_dropout=self.dropout,
            target_modules=targets if isinstance(targets, str) else sorted(targets),
            use_rslora=self.use_rslora,
            use_dora=self.use_dora,
            init_lora_weights=True if self.init == "kaiming" else self.init,
            base_model_name_or_path=self.base_model_name_or_path,
        )
        return dict(sorted(d.items()))

    @classmethod
    def from_peft_dict(cls, d: Any) -> LoRAConfig:
        """Read a peft adapter_config.json dict; AdapterError for a feature pricer lacks or a field of the wrong type."""
        if not isinstance(d, dict):
            raise AdapterError(f"holds a {type(d).__name__}, not a JSON object; save the adapter again")
        if d.get("peft_type") != "LORA":
            raise AdapterError(f"adapter is peft_type {_short(d.get('peft_type'))}, pricer loads only LORA adapters")
        for key, off in _PEFT_DEFAULTS.items():
            if key in _PEFT_INFO_FIELDS or key not in d:
                continue
            value = d[key]
            if value != off and not (off is None and value in ({}, [], False)) and not (off == {} and value is None):
                raise AdapterError(f"adapter uses peft option {key}={_short(value)}, which pricer does not implement; "
                                   "retrain without it")
        init = d.get("init_lora_weights", True)
        # False only skipped initialisation (B random instead of zero); the saved weights load the same.
        if init is not True and init is not False and init != "gaussian":
            raise AdapterError(f"adapter uses init_lora_weights={_short(init)}; pricer implements true (kaiming), "
                               "false and 'gaussian' only (others change the base weights)")
        if "r" not in d or "target_modules" not in d:
            raise AdapterError("lacks 'r' or 'target_modules'; is it a peft LoRA config?")
        _check_field_types(d)
        targets = d["target_modules"]
        try:
            return cls(
                r=d["r"], alpha=d.get("lora_alpha", 8), dropout=d.get("lora_dropout", 0.0),
                target_modules=targets if isinstance(targets, str) else tuple(targets),
                use_rslora=d.get("use_rslora", False), use_dora=d.get("use_dora", False),
                init="gaussian" if init == "gaussian" else "kaiming",
                base_model_name_or_path=d.get("base_model_name_or_path"),
            )
        except ValueError as e:
            raise AdapterError(f"invalid: {e}") from None


def _short(value: Any, limit: int = 60) -> str:
    """repr(value) cut to `limit` characters: a message quotes a bad value but stays one short line."""
    text = repr(value)
    return text if len(text) <= limit else text[:limit - 3] + "..."


def _number(value: Any) -> float | None:
    """value as a float when it is a JSON number (not a bool), else None; a number too big for a float is inf."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return None
    try:
        return float(value)
    except OverflowError:
        return math.inf


def _check_field_types(d: dict[str, Any]) -> None:
    """AdapterError for a field of adapter_config.json whose JSON type or range LoRAConfig cannot take."""
    r, alpha, dropout = d["r"], _number(d.get("lora_alpha", 8)), _number(d.get("lora_dropout", 0.0))
    if isinstance(r, bool) or not isinstance(r, int) or r <= 0:
        raise AdapterError(f"r must be a positive integer, not {_short(r)}")
    if alpha is None or not math.isfinite(alpha) or alpha <= 0:
        raise AdapterError(f"lora_alpha must be a positive number, not {_short(d.get('lora_alpha'))}")
    if dropout is None or not 0.0 <= dropout < 1.0:
        raise AdapterError(f"lora_dropout must be a number in [0, 1), not {_short(d.get('lora_dropout'))}")
    targets = d["target_modules"]
    if not isinstance(targets, str) and not (isinstance(targets, list) and all(isinstance(t, str) for t in targets)):
        raise AdapterError(f"target_modules must be a list of module names or a regex string, not {_short(targets)}")
    for key in ("use_rslora", "use_dora"):
        if not isinstance(d.get(key, False), bool):
            raise AdapterError(f"{key} must be true or false, not {_short(d.get(key))}")
    base = d.get("base_model_name_or_path")
    if base is not None and not isinstance(base, str):
        raise AdapterError(f"base_model_name_or_path must be a string or null, not {_short(base)}")
