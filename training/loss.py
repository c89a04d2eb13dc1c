"""The completion loss: next-token cross-entropy summed over the answer's tokens only.

    loss of a step = (sum of token losses over every supervised token of the step, in all its
                      micro-batches and processes) / (their total count)

not a mean of per-batch means, which would weigh a 3-token price against an 8-token one
unevenly. Two forms share one definition (`head_cross_entropy`):
- eager (`completion_loss_sum`): picks the supervised positions with a boolean mask;
- static (`StaticCompletionLoss`): the same positions as a fixed-length index list with 0/1
  weights, so that its shapes never change and CUDA graphs can capture it (training.speed).
"""
from __future__ import annotations

import contextlib
from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import nn

from data import IGNORE_INDEX
from training.parallel import all_reduce_gradients, no_gradient_sync
from utils.compat import attention_implementation, ddp_ignore

Batch = dict[str, torch.Tensor]
LossFn = Callable[[nn.Module, Batch], tuple[torch.Tensor, torch.Tensor]]


def supervised_count(batch: Batch) -> torch.Tensor:
    """How many positions of the batch the loss sees: labels shifted by one, not IGNORE_INDEX."""
    return (batch["labels"][:, 1:] != IGNORE_INDEX).sum()


def head_cross_entropy(model: nn.Module, rows: torch.Tensor, targets: torch.Tensor,
                       weights: torch.Tensor | None = None) -> torch.Tensor:
    """Summed cross-entropy of the LM head on hidden-state `rows` (n, hidden) against `targets` (n,),
    each row weighted by `weights` (n,) when given.

    The head runs only on these rows: a price is ~4 of 182 tokens, and Llama 3's head is
    4096 x 128k, so the full logits would cost more memory than the rest of a QLoRA step.
    Outside autocast: the head runs in its own dtype and the softmax over the vocabulary in float32.
    """
    head = model.get_output_embeddings()
    with torch.autocast(device_type=rows.device.type, enabled=False):
        logits = head(rows.to(head.weight.dtype)).float()
    if weights is None:
        return F.cross_entropy(logits, targets, reduction="sum")
    return (F.cross_entropy(logits, targets, reduction="none") * weights).sum()


def completion_loss_sum(model: nn.Module, batch: Batch) -> tuple[torch.Tensor, torch.Tensor]:
    """(sum of next-token cross-entropy over supervised positions, their count) for a causal LM."""
    hidden = model.get_decoder()(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"],
                                 use_cache=False).last_hidden_state
    targets = batch["labels"][:, 1:]
    supervised = targets != IGNORE_INDEX
    return head_cross_entropy(model, hidden[:, :-1][supervised], targets[supervised]), supervised.sum()


class CompletionLossModel(nn.Module):
    """The model as DDP/FSDP sees it: forward(ids, mask, labels) = loss_fn(model, batch).

    Distributed wrappers synchronise gradients through hooks set up by their own forward, so
    the whole loss (body + selected head rows) has to be one module's forward; this module is
    what DDP/FSDP wrap, and `.model` stays the plain causal LM (for saving and generation).
    `loss_fn` is the seam for another loss with the same contract: (sum, supervised count).
    """

    def __init__(self, model: nn.Module, loss_fn: LossFn = completion_loss_sum) -> None:
        super().__init__()
        self.model = model
        self.loss_fn = loss_fn
        # Only trainable parameters need synchronising: skip broadcasting the frozen (4-bit) base at DDP start.
        ddp_ignore(self, [name for name, p in self.named_parameters() if not p.requires_grad]
                   + [name for name, _ in self.named_buffers()])

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor,
                labels: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return self.loss_fn(self.model, {"input_ids": input_ids, "attention_mask": attention_mask, "labels": labels})


class StaticCompletionLoss(nn.Module):
    """completion_loss_sum with fixed shapes, so that CUDA graphs can capture it.

    The supervised positions come in as a fixed-length list (flat indices into batch x length)
    with a weight of 1 for real ones and 0 for padding, instead of a boolean mask whose number
    of True entries changes from batch to batch. No attention mask: batches are right padded
    and attention is causal, so no real token ever attends to padding.
    """

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model = model

    def causal_mask(self, input_ids: torch.Tensor) -> torch.Tensor | dict[str, torch.Tensor]:
        """The (batch, 1, length, length) causal mask, passed ready-made (transformers uses a 4D mask as is).

        Left to itself, transformers skips the mask (SDPA's is_causal) except while a CUDA graph
        is being captured, when some versions build one: the captured graph would then run other
        code than its warm-up did, and compiled layers (train.compile) would recompile inside
        the capture, which fails. A mask of our own is the same in both. Boolean for SDPA,
        additive (0 / -inf) for eager attention, which adds it to the scores. A model with
        sliding-window layers (Gemma 3: config.layer_types) gets one mask per kind of layer, as its
        forward accepts, the sliding one keeping only the last `sliding_window` positions
        (transformers' rule: q - window < kv <= q).
        """
        rows, length = input_ids.shape
        q = torch.arange(length, device=input_ids.device)[:, None]
        k = torch.arange(length, device=input_ids.device)[None, :]
        masks = {"full_attention": k <= q}
        window = getattr(self.model.config, "sliding_window", None)
        if window and "sliding_attention" in (getattr(self.model.config, "layer_types", None) or ()):
            masks["sliding_attention"] = (k <= q) & (k > q - window)
        additive = attention_implementation(self.model) != "sdpa"
        for kind, allowed in masks.items():
            if additive:
                allowed = torch.zeros(allowed.shape, device=allowed.device).masked_fill(~allowed, float("-inf"))
            masks[kind] = allowed[None, None].expand(rows, 1, length, length)
        return masks if len(masks) > 1 else masks["full_attention"]

    def forward(self, input_ids: torch.Tensor, positions: torch.Tensor, targets: torch.Tensor,
                weights: torch.Tensor) -> torch.Tensor:
        hidden = self.model.get_decoder()(input_ids=input_ids, attention_mask=self.causal_mask(input_ids),
                                          use_cache=False).last_hidden_state
        rows = hidden.flatten(0, 1).index_select(0, positions)
        return head_cross_entropy(self.model, rows, targets, weights)


def accumulate_gradients(accelerator, model: Callable, micro_batches: list[Batch],
                         allreduce: list[nn.Parameter] | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """Backward over one optimizer step's micro-batches; returns (loss sum, supervised tokens), summed over processes.

    Each micro-batch contributes loss_sum / n_tok, with n_tok the step's total over all
    micro-batches and processes; the factor world_size undoes the averaging of gradients over
    processes (DDP's, FSDP's, or all_reduce_gradients' on `allreduce` after the last backward).
    """
    local = sum(supervised_count(b) for b in micro_batches)
    n_tok = accelerator.reduce(local.to(accelerator.device), reduction="sum").float()
    loss_sum = torch.zeros((), device=accelerator.device)
    for i, batch in enumerate(micro_batches):
        # Gradients are all-reduced (FSDP: reduce-scattered) once, on the step's last micro-batch.
        sync = contextlib.nullcontext() if i == len(micro_batches) - 1 else no_gradient_sync(accelerator, model)
        with sync, accelerator.autocast():
            part, _ = model(batch["input_ids"], batch["attention_mask"], batch["labels"])
            accelerator.backward(part / n_tok * accelerator.num_processes)
        loss_sum += part.detach().float()
    if allreduce is not None:
        all_reduce_gradients(allreduce)
    return accelerator.reduce(loss_sum, reduction="sum"), n_tok
