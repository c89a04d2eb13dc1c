"""What a run reports while it trains: metrics.jsonl, the progress bar, an optional tracker
(wandb, TensorBoard), peak memory, and the stop flag that SIGINT/SIGTERM raise."""
from __future__ import annotations

import json
import signal
import time
from pathlib import Path
from typing import Any

import torch

from training.config import Config, flat_config
from training.errors import ConfigError
from training.rundir import truncate_metrics


def tracker(cfg: Config) -> str | None:
    """The tracker accelerate should log to (None for none); ConfigError when its package is missing."""
    name = None if cfg.log.report_to == "none" else cfg.log.report_to
    if name:
        from accelerate.utils import is_tensorboard_available, is_wandb_available

        if not {"wandb": is_wandb_available, "tensorboard": is_tensorboard_available}[name]():
            raise ConfigError(f"log.report_to {name} needs the {name} package: pip install {name}")
    return name


def peak_memory_mb() -> float:
    """Peak GPU memory allocated since the last reset, or this process's peak RSS on CPU, in MiB."""
    if torch.cuda.is_available():
        return torch.cuda.max_memory_allocated() / 2**20
    import resource

    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # KiB on Linux


class RunLog:
    """One row per optimizer step to <output_dir>/metrics.jsonl, the progress bar and the tracker (main process)."""

    def __init__(self, accelerator, cfg: Config, out: Path, total_steps: int, step: int) -> None:
        from tqdm.auto import tqdm

        self.accelerator, self.cfg, self.path = accelerator, cfg, out / "metrics.jsonl"
        self.name = cfg.log.run_name or out.resolve().name
        self.main = accelerator.is_main_process
        if self.main:
            truncate_metrics(self.path, step)  # rows written after the checkpoint a run resumes from
        self.tracking = tracker(cfg) is not None
        if self.tracking:
            accelerator.init_trackers(cfg.log.project, config=flat_config(cfg),
                                      init_kwargs={"wandb": {"name": cfg.log.run_name}} if cfg.log.run_name else {})
        if torch.cuda.is_available():
            torch.cuda.reset_peak_memory_stats()  # peak_mem_mb measures training, not loading
        self.bar = tqdm(total=total_steps, initial=step, disable=not self.main, dynamic_ncols=True)
        self.started = time.time()
        self.last_validation: dict[str, Any] | None = None

    def record(self, step: int, loss: float, lr: float, grad_norm: float, micro: list, started: float) -> dict:
        """One step's numbers: loss, lr, gradient norm, tokens/s over all processes, peak memory."""
        tokens = self.accelerator.reduce(sum(b["attention_mask"].sum() for b in micro).float(), "sum")
        return {"step": step, "loss": loss, "lr": lr, "grad_norm": grad_norm,
                "tokens_per_s": float(tokens) / (time.time() - started), "peak_mem_mb": peak_memory_mb()}

    def write(self, record: dict[str, Any]) -> None:
        """Append one step's record (adding elapsed time) and show it; redraw curves.png after a validation."""
        record["elapsed"] = time.time() - self.started
        if "val_loss" in record:
            self.last_validation = record
        if self.main:
            with open(self.path, "a") as f:
                f.write(json.dumps(record) + "\n")
            self.bar.update(1)
            self.bar.set_postfix(loss=f"{record['loss']:.4f}", lr=f"{record['lr']:.2e}",
                                 tok_s=f"{record['tokens_per_s']:.0f}")
            if "val_loss" in record:
                self.draw()
        if self.tracking and (record["step"] % self.cfg.log.log_every == 0 or "val_loss" in record):
            self.accelerator.log({k: v for k, v in record.items() if k != "step"}, step=record["step"])

    def draw(self) -> None:
        """<output_dir>/curves.png from metrics.jsonl (main process); a plot that fails is said, never fatal."""
        if self.main and self.path.exists():
            from training.curves import read_metrics, save_curves  # late: `python -m training.curves` imports us

            try:
                save_curves([(self.name, read_metrics(self.path.parent))], self.path.parent / "curves.png", self.name)
            except (OSError, ValueError, RuntimeError) as e:
                self.accelerator.print(f"note: could not draw {self.path.parent / 'curves.png'} ({e})")

    def __enter__(self) -> "RunLog":
        return self

    def __exit__(self, *exc) -> None:
        self.bar.close()
        self.draw()


class StopFlag:
    """Set by SIGINT/SIGTERM; the loop checks it between optimizer steps (a second signal stops at once)."""

    def __init__(self) -> None:
        self.signal: int | None = None
        self._previous: dict[int, Any] = {}

    def __enter__(self) -> "StopFlag":
        for sig in (signal.SIGINT, signal.SIGTERM):
            self._previous[sig] = signal.signal(sig, self._handle)
        return self

    def _handle(self, signum, frame) -> None:
        if self.signal is not None:  # a second Ctrl-C: stop now, without a checkpoint
            raise KeyboardInterrupt
        self.signal = signum

    def raised(self, accelerator) -> bool:
        """Whether any process got a stop signal (collective: every process calls it each step)."""
        flag = torch.tensor(float(self.signal is not None), device=accelerator.device)
        return bool(accelerator.reduce(flag, "sum") > 0)

    def __exit__(self, *exc) -> None:
        for sig, handler in self._previous.items():
            signal.signal(sig, handler)
