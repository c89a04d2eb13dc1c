"""Validation during training: the completion loss on held-out examples and, optionally, a price metric."""
from __future__ import annotations

from typing import Any

import torch
from torch import nn

from data import CompletionCollator, Splits, test_prompt
from training.config import Config
from training.errors import ConfigError
from training.loss import completion_loss_sum
from training.parallel import Wrapped


class Validator:
    """`validator() -> {"val_loss": ..., ["val_rmsle", "val_hit_rate", "val_avg_error"]}`; collective.

    The loss covers the first train.eval_batches global batches of the validation split, each
    process taking its slice and the sums reduced over processes. With train.price_eval_items
    the main process also prices that many validation items with the train.price_predictor
    predictor (evaluate.py's predictors and metrics).
    """

    def __init__(self, accelerator, model: nn.Module, wrapped: Wrapped, examples: list[dict[str, str]],
                 splits: Splits, collate: CompletionCollator, cfg: Config) -> None:
        if cfg.train.eval_every and not examples:
            raise ConfigError("train.eval_every is set but the validation split is empty: "
                              "raise data.val_fraction or set train.eval_every 0")
        self.accelerator, self.model, self.wrapped = accelerator, model, wrapped
        self.examples, self.splits, self.collate, self.cfg = examples, splits, collate, cfg

    def _batch(self, examples: list[dict[str, str]]) -> dict[str, torch.Tensor]:
        return {k: v.to(self.accelerator.device) for k, v in self.collate(examples).items()}

    def loss(self) -> float:
        """Validation loss: summed token losses over summed supervised tokens, over all processes."""
        acc, t = self.accelerator, self.cfg.train
        rank, per_batch = acc.process_index, t.batch_size * acc.num_processes
        loss_sum = torch.zeros((), device=acc.device)
        n_tok = torch.zeros((), device=acc.device)
        with torch.no_grad(), acc.autocast():
            for start in range(0, min(len(self.examples), t.eval_batches * per_batch), per_batch):
                mine = self.examples[start + rank * t.batch_size: start + (rank + 1) * t.batch_size]
                if self.wrapped.fsdp is not None:
                    # The sharded model exists whole only inside its forward, which every process must
                    # join: a process past the end of val runs one example and counts nothing.
                    batch = self._batch(mine or self.examples[:1])
                    part, count = self.wrapped.fsdp(batch["input_ids"], batch["attention_mask"], batch["labels"])
                    loss_sum += part.float() * bool(mine)
                    n_tok += count * bool(mine)
                elif mine:
                    part, count = completion_loss_sum(self.model, self._batch(mine))
                    loss_sum += part.float()
                    n_tok += count
        loss_sum, n_tok = acc.reduce(loss_sum, "sum"), acc.reduce(n_tok, "sum")
        return float(loss_sum / n_tok.clamp(min=1))

    def price_metrics(self) -> dict[str, float]:
        """The price metric on the first price_eval_items validation items (left-padded, eval mode, eager)."""
        from evaluation import compute_metrics
        from predictors import get_predictor

        items = self.splits.val[: self.cfg.train.price_eval_items]
        tokenizer = self.collate.tokenizer
        prompts = [test_prompt(it, tokenizer, self.cfg.data.max_text_tokens) for it in items]
        # Eagerly: compiled layers (train.compile) would recompile at every generated length.
        with self.accelerator.autocast(), torch.compiler.set_stance("force_eager"):
            predictions = get_predictor(self.cfg.train.price_predictor).predict(
                prompts, model=self.model, tokenizer=tokenizer, batch_size=self.cfg.train.batch_size,
                train_prices=[it.price for it in self.splits.train], answer_width=self.cfg.data.answer_width)
        metrics = compute_metrics([it.price for it in items], [p.price for p in predictions])
        return {f"val_{k}": float(metrics[k]) for k in ("rmsle", "hit_rate", "avg_error")}

    def __call__(self) -> dict[str, Any]:
        self.wrapped.train(False)
        result = {"val_loss": self.loss()}
        if self.cfg.train.price_eval_items and self.accelerator.is_main_process:
            result |= self.price_metrics()
        self.wrapped.train(True)
        self.accelerator.wait_for_everyone()
        return result
