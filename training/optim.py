"""The optimizer over the adapter parameters and the learning-rate schedule."""
from __future__ import annotations

import math
import warnings

import torch
from torch import nn

from lora import lora_parameters
from training.config import TrainConfig


def build_optimizer(cfg: TrainConfig, model: nn.Module) -> torch.optim.Optimizer:
    """AdamW (torch or bitsandbytes paged/8-bit) over the adapter parameters; B gets lr * loraplus_ratio."""
    a_side, b_side = lora_parameters(model, split=True)
    groups = [{"params": a_side, "lr": cfg.lr}, {"params": b_side, "lr": cfg.lr * cfg.loraplus_ratio}]
    kwargs = dict(lr=cfg.lr, weight_decay=cfg.weight_decay, betas=(0.9, 0.999), eps=1e-8)
    if cfg.optimizer == "adamw":
        return torch.optim.AdamW(groups, **kwargs)
    import bitsandbytes as bnb

    cls = {"paged_adamw_32bit": bnb.optim.PagedAdamW32bit, "paged_adamw_8bit": bnb.optim.PagedAdamW8bit,
           "adamw_8bit": bnb.optim.AdamW8bit}[cfg.optimizer]
    return cls(groups, **kwargs)


def lr_lambda(step: int, *, warmup: int, total: int, schedule: str) -> float:
    """The lr multiplier at `step`: linear warmup from 0, then cosine to 0, linear to 0, or constant.

    The same numbers as transformers' get_{cosine,linear,constant}_schedule_with_warmup, so the
    course recipe (trained with the HF Trainer) is reproduced step for step.
    """
    if step < warmup:
        return step / max(1, warmup)
    if schedule == "constant":
        return 1.0
    progress = (step - warmup) / max(1, total - warmup)
    if schedule == "linear":
        return max(0.0, 1.0 - progress)
    return max(0.0, 0.5 * (1.0 + math.cos(math.pi * progress)))


def warmup_steps(cfg: TrainConfig, total: int) -> int:
    """warmup_steps if set, else ceil(warmup_ratio * total) as the HF Trainer rounds it."""
    return cfg.warmup_steps if cfg.warmup_steps is not None else math.ceil(cfg.warmup_ratio * total)


def build_scheduler(cfg: TrainConfig, optimizer: torch.optim.Optimizer,
                    total: int) -> torch.optim.lr_scheduler.LambdaLR:
    """Warmup then cfg.schedule over `total` optimizer steps (stepped once per optimizer step)."""
    warmup = warmup_steps(cfg, total)
    return torch.optim.lr_scheduler.LambdaLR(
        optimizer, lambda s: lr_lambda(s, warmup=warmup, total=total, schedule=cfg.schedule))


def reschedule(cfg: TrainConfig, optimizer: torch.optim.Optimizer, total: int,
               step: int) -> torch.optim.lr_scheduler.LambdaLR:
    """The schedule `cfg` says, at `step`, over a restored optimizer: what a resumed run trains with.

    A checkpoint's optimizer and scheduler states carry the learning rates and weight decay they
    were saved with; a resume that changes train.lr, loraplus_ratio or weight_decay would
    otherwise keep the old ones. The groups' moments stay; their lr and weight decay come from
    `cfg`, and the schedule is the one an uninterrupted run with `cfg` would be at after `step`
    steps (each lr is base lr x lr_lambda(step), so the same config gives the same numbers).
    """
    for group, lr in zip(optimizer.param_groups, (cfg.lr, cfg.lr * cfg.loraplus_ratio)):
        group["lr"], group["weight_decay"] = lr, cfg.weight_decay
        group.pop("initial_lr", None)
    scheduler = build_scheduler(cfg, optimizer, total)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # "scheduler.step() before optimizer.step()": these steps were taken
        for _ in range(step):
            scheduler.step()
    return scheduler
