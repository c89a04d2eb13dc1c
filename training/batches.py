"""From the data section of the config to the micro-batches each process trains on at each step."""
from __future__ import annotations

from typing import Any

import torch

from data import (CompletionCollator, DataError, Item, Splits, balance, epoch_order, load_items,
                  micro_batch_indices, split_items, to_example)
from data.holdout import leave_source_out
from data.resample import resample_log_price
from training.config import DataConfig, TrainConfig

Batch = dict[str, torch.Tensor]


def load_splits(cfg: DataConfig, verbose: bool = True) -> tuple[Splits, list[Item]]:
    """(the train/val/test splits, the items to train on: the train split, balanced and resampled as asked);
    DataError when none is left."""
    items = load_items(cfg.source, limit=cfg.limit, verbose=verbose)
    if cfg.holdout_source:
        splits = leave_source_out(items, cfg.holdout_source, seed=cfg.seed, val_fraction=cfg.val_fraction)
    else:
        splits = split_items(items, seed=cfg.seed, val_fraction=cfg.val_fraction, test_fraction=cfg.test_fraction)
    train_items = splits.train
    if cfg.balance:
        train_items = balance(train_items, cap=cfg.balance_cap, keep_all_above=cfg.balance_keep_all_above,
                              seed=cfg.seed)
    train_items = resample_log_price(train_items, cfg.resample_power, seed=cfg.seed)
    if not train_items:
        raise DataError(f"{cfg.source}: no items left to train on ({splits.summary()}); "
                        "check data.source, data.limit and the split fractions")
    return splits, train_items


def examples_of(items: list[Item], tokenizer: Any, cfg: DataConfig) -> list[dict[str, str]]:
    """The {"prompt", "completion"} pairs the collator takes: prompts cut as evaluation cuts them
    (data.max_text_tokens), answers written as data.answer_width says."""
    return [to_example(it, tokenizer, cfg.max_text_tokens, answer_width=cfg.answer_width) for it in items]


class StepBatches:
    """The micro-batches of one optimizer step for this process: `batches(step) -> [batch, ...]`.

    One seeded order per epoch (data.order.epoch_order); step k of an epoch takes global batch
    k of it, and this process takes slice `rank` of each of its grad_accum micro-batches.
    """

    def __init__(self, examples: list[dict[str, str]], collate: CompletionCollator, cfg: TrainConfig,
                 rank: int, world: int) -> None:
        self.examples, self.collate, self.cfg = examples, collate, cfg
        self.rank, self.world = rank, world
        self.global_batch = cfg.batch_size * cfg.grad_accum * world
        self.steps_per_epoch = len(examples) // self.global_batch
        if self.steps_per_epoch == 0:
            raise DataError(f"{len(examples)} training examples is less than one global batch "
                            f"({self.global_batch}): lower train.batch_size/grad_accum or add data")
        ids = collate.tokenizer([e["prompt"] + e["completion"] for e in examples])["input_ids"]
        self.lengths = [len(i) for i in ids]
        self._epoch, self._order = None, []

    def total_steps(self) -> int:
        """max_steps if set, else epochs x steps per epoch."""
        return self.cfg.max_steps or self.cfg.epochs * self.steps_per_epoch

    def position(self, step: int) -> dict[str, int]:
        """Where `step` stands in the data: what a checkpoint records so that a resumed run continues there."""
        return {"step": step, "examples_seen": step * self.global_batch, "global_batch": self.global_batch,
                "batch_size": self.cfg.batch_size, "grad_accum": self.cfg.grad_accum, "world_size": self.world,
                "distributed": self.cfg.distributed, "epoch": step // self.steps_per_epoch}

    def __call__(self, step: int) -> list[Batch]:
        epoch, k = divmod(step, self.steps_per_epoch)
        if epoch != self._epoch:
            self._epoch, self._order = epoch, epoch_order(self.lengths, seed=self.cfg.seed, epoch=epoch,
                                                          global_batch=self.global_batch,
                                                          group_by_length=self.cfg.group_by_length)
        step_indices = self._order[k * self.global_batch:(k + 1) * self.global_batch]
        return [self.collate([self.examples[i] for i in idx])
                for idx in micro_batch_indices(step_indices, self.cfg.batch_size, self.cfg.grad_accum,
                                               self.rank, self.world)]
