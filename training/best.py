"""train.keep_best and train.early_stopping_patience: the best adapter so far, and when to stop.

After each validation the watched metric (train.keep_best, or val_loss when only early stopping
is on) is compared with the best so far: better (lower; higher for val_hit_rate) saves the
adapter to <output_dir>/adapter-best/ and resets the count, otherwise the count of evaluations
without improvement grows, and reaching the patience stops the run. The state travels in every
checkpoint (with a copy of adapter-best), so a resumed run keeps both right.
"""
from __future__ import annotations

import math
import shutil
from pathlib import Path
from typing import Any

from training.config import Config
from utils.atomic import atomic_folder


class BestKeeper:
    """Watches one validation metric; `update(record) -> stop?` after each validation (collective)."""

    def __init__(self, cfg: Config, save, state: dict[str, Any] | None = None, say=print) -> None:
        t = cfg.train
        self.metric = t.keep_best if t.keep_best != "none" else ("val_loss" if t.early_stopping_patience else None)
        self.keep, self.patience, self.save, self.say = t.keep_best != "none", t.early_stopping_patience, save, say
        if not state or state.get("metric", self.metric) != self.metric:  # a changed metric starts a new best
            state = {}
        self.best, self.best_step = state.get("value"), state.get("step")
        self.since = state.get("evaluations_since_best", 0)

    def _better(self, value: float) -> bool:
        if self.best is None:
            return math.isfinite(value)
        return value > self.best if self.metric == "val_hit_rate" else value < self.best

    def update(self, record: dict[str, Any]) -> bool:
        """Take one validation record; save adapter-best when it is the best yet; True (said) when patience ran out."""
        value = record.get(self.metric) if self.metric else None
        if value is None:
            return False
        if self._better(value):
            self.best, self.best_step, self.since = value, record["step"], 0
            if self.keep:
                self.save("adapter-best", record)
        else:
            self.since += 1
        if self.patience and self.since >= self.patience:
            self.say(f"early stopping at step {record['step']}: {self.metric} has not improved for {self.since} "
                     f"evaluations (best {self.best:.4f} at step {self.best_step})")
            return True
        return False

    def state(self) -> dict[str, Any]:
        """What a checkpoint records to resume watching."""
        return {"metric": self.metric, "value": self.best, "step": self.best_step,
                "evaluations_since_best": self.since}


def copy_best(out: Path, checkpoint: Path) -> None:
    """Put <out>/adapter-best into a checkpoint being written (main process), when there is one."""
    if (out / "adapter-best").is_dir():
        shutil.copytree(out / "adapter-best", checkpoint / "adapter-best")


def restore_best(out: Path, checkpoint: Path) -> None:
    """Make <out>/adapter-best the checkpoint's copy (or remove a later one it does not know of)."""
    saved = checkpoint / "adapter-best"
    if saved.is_dir():
        with atomic_folder(out / "adapter-best", replace=True) as tmp:
            shutil.copytree(saved, tmp, dirs_exist_ok=True)
    elif (out / "adapter-best").is_dir():
        shutil.rmtree(out / "adapter-best")
