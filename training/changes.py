"""What a resumed run may change, and what it may not.

`--resume` compares every config key with the checkpoint's config.yaml. Each key is in one of
two sets:

- MAY_CHANGE: the schedule, LoRA+'s ratio, the length of the run, clipping, evaluation,
  saving, speed switches and logging. A changed key takes effect from the step the run resumes
  at (the learning-rate schedule is rebuilt: training.optim.reschedule) and is said in one line,
  `train.lr: 0.0002 -> 0.0001 from step 6`.
- every other key (the model and its quantization, the LoRA shape and targets, the data and its
  prompts and answer format, the optimizer type, the seed that orders the data, autocast):
  the checkpoint's weights, optimizer state or data position mean something else under another
  value, so a change is refused before any model loads, naming the key and both values.

The changes of every resume travel in trainer_state.json ("changes"), so the records a run
writes (config.yaml, the adapter's training-config.yaml, run.json, the model card) list each
change and the step it took effect from, across any number of resumes.
"""
from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any

from training.config import Config, sections
from training.errors import ConfigError

# key -> what it is; each takes effect from the resumed step.
MAY_CHANGE: dict[str, str] = {
    "train.epochs": "length of the run", "train.max_steps": "length of the run",
    "train.lr": "schedule", "train.schedule": "schedule", "train.warmup_ratio": "schedule",
    "train.warmup_steps": "schedule", "train.loraplus_ratio": "schedule", "train.weight_decay": "schedule",
    "train.max_grad_norm": "clipping",
    "train.batch_size": "batch geometry (the global batch is kept)",
    "train.grad_accum": "batch geometry (the global batch is kept)",
    "train.gradient_checkpointing": "speed", "train.cuda_graphs": "speed", "train.compile": "speed",
    "train.distributed": "speed (fsdp needs the checkpoint's processes)", "data.pad_to_multiple_of": "speed",
    "train.eval_every": "evaluation", "train.eval_batches": "evaluation", "train.price_eval_items": "evaluation",
    "train.price_predictor": "evaluation", "train.keep_best": "evaluation (a new metric starts a new best)",
    "train.early_stopping_patience": "evaluation",
    "train.save_every": "saving", "train.keep_last": "saving", "output_dir": "saving",
    "log.report_to": "logging", "log.project": "logging", "log.run_name": "logging", "log.log_every": "logging",
}


def flat(cfg: Config) -> dict[str, Any]:
    """{"train.lr": 0.0001, ..., "output_dir": "runs/x"}: every key of the config with its value."""
    values = {}
    for section in sections():
        for key, value in dataclasses.asdict(getattr(cfg, section)).items():
            values[f"{section}.{key}"] = value
    for f in dataclasses.fields(Config):
        if f.name not in sections():
            values[f.name] = getattr(cfg, f.name)
    return values


def fixed_keys() -> list[str]:
    """The keys a resume refuses to change, in config order."""
    return [key for key in flat(Config()) if key not in MAY_CHANGE]


def _show(value: Any) -> str:
    return ",".join(map(str, value)) if isinstance(value, list) else str(value)


def compare(saved: Config, now: Config, step: int, checkpoint: Path) -> list[dict[str, Any]]:
    """The changes from `saved` (the checkpoint's config) to `now`, each {"key", "from", "to", "step"};
    ConfigError naming the first key that may not change."""
    before, after = flat(saved), flat(now)
    changes = []
    for key, value in after.items():
        if before[key] == value:
            continue
        if key not in MAY_CHANGE:
            raise ConfigError(f"--resume: {key} is {_show(before[key])} in checkpoint {checkpoint} and "
                              f"{_show(value)} now; it cannot change during a run ({_fixed_reason(key)}): resume "
                              f"with {key} {_show(before[key])}, or start a new run")
        changes.append({"key": key, "from": before[key], "to": value, "step": step})
    return changes


def _fixed_reason(key: str) -> str:
    section = key.split(".")[0]
    return {"model": "the adapter was trained on that base", "lora": "the adapter's shape and targets are saved",
            "data": "the data, its split, prompts and answers are part of what was learned"}.get(
        section, "the optimizer state, data order or numerics depend on it")


def describe(change: dict[str, Any]) -> str:
    """`train.lr: 0.0002 -> 0.0001 from step 6`."""
    return f"{change['key']}: {_show(change['from'])} -> {_show(change['to'])} from step {change['step']}"


def changes_comment(changes: list[dict[str, Any]]) -> str:
    """YAML comment lines that head a config written after resumes with changes ("" when none)."""
    if not changes:
        return ""
    lines = ["# This run was resumed with changes; each value below took effect from the step named:"]
    return "\n".join(lines + [f"#   {describe(c)}" for c in changes]) + "\n"
