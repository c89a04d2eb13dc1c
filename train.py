"""Fine-tune a causal LM with hand-written QLoRA to predict Amazon prices.

    python train.py --config configs/demo.yaml [--train.lr 2e-4 ...] [--resume latest|PATH]
    accelerate launch --num_processes 2 train.py --config configs/llama31-8b.yaml

Reads top to bottom like nanoGPT: config -> accelerator -> data -> 4-bit base (quant) ->
LoRA (lora) -> optimizer and schedule -> the loop -> <output_dir>/adapter/ (peft format).

Two decisions the rest follows from:
- One global data order per epoch. Every optimizer step consumes the next
  global_batch = batch_size * grad_accum * world_size examples of it, and process r takes its
  slice of each micro-batch, so 2 processes x accumulation a see exactly the examples of
  1 process x accumulation 2a.
- The loss of a step is the sum of token losses over all its supervised (answer) tokens, in
  every micro-batch and process, divided by their total count: not a mean of per-batch means,
  which would weigh a 3-token price against an 8-token one unevenly.
"""
from __future__ import annotations

import argparse
import contextlib
import dataclasses
import json
import math
import os
import random
import re
import shutil
import signal
import sys
import time
import types
import typing
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Iterator, Literal

import numpy as np
import torch
import torch.nn.functional as F
import yaml
from torch import nn

from data import CompletionCollator, DataError, load_items, split_items, test_prompt, to_example
from data.splits import balance
from lora import AdapterError, LoRAConfig, inject_lora, load_adapter, lora_parameters, save_adapter
from lora.inject import parameter_counts
from quant import (ModelError, check_projections, format_memory_report, load_base_model, memory_report,
                   prepare_for_kbit_training)


# ----------------------------------------------------------------------------- config

@dataclass
class ModelConfig:
    name: str = "smollm2-135m"               # "smollm2-135m", a local folder, or a hub id
    bits: int = 4                            # 4, 8 or 16
    quant_type: Literal["nf4", "fp4"] = "nf4"
    double_quant: bool = True
    compute_dtype: Literal["bfloat16", "float16", "float32"] = "bfloat16"
    quant_storage: str | None = None         # e.g. "bfloat16" so FSDP can shard 4-bit weights


@dataclass
class LoRASection:
    r: int = 16
    alpha: float = 32.0
    dropout: float = 0.05
    target_modules: list[str] | str = field(default_factory=lambda: ["q_proj", "k_proj", "v_proj", "o_proj"])
    use_rslora: bool = False
    use_dora: bool = False
    init: Literal["kaiming", "gaussian"] = "kaiming"


@dataclass
class DataConfig:
    source: str = "data/amazon-prices"
    seed: int = 42                           # the split's seed: evaluate.py must use the same
    val_fraction: float = 0.05
    test_fraction: float = 0.1
    limit: int | None = None                 # stop loading after this many items
    max_text_tokens: int = 160
    max_length: int = 182
    balance: bool = False                    # the course's per-price-bucket cap (train split only)
    balance_cap: int = 1200
    balance_keep_all_above: float = 240.0
    pad_to_multiple_of: int | None = None


@dataclass
class TrainConfig:
    epochs: int = 1
    max_steps: int | None = None             # overrides epochs when set
    batch_size: int = 4                      # per device
    grad_accum: int = 1
    lr: float = 1e-4
    schedule: Literal["cosine", "linear", "constant"] = "cosine"
    warmup_ratio: float = 0.03
    warmup_steps: int | None = None          # overrides warmup_ratio when set
    optimizer: Literal["adamw", "paged_adamw_32bit", "paged_adamw_8bit", "adamw_8bit"] = "adamw"
    weight_decay: float = 0.0
    max_grad_norm: float = 1.0               # 0 disables clipping
    loraplus_ratio: float = 1.0              # lr of B = lr * ratio (LoRA+, Hayou et al. 2024); 1 = off
    gradient_checkpointing: bool = False
    cuda_graphs: bool = False                # capture forward+backward once, replay (GPU; see CudaGraphLoss)
    compile: bool = False                    # torch.compile each decoder layer (see compile_decoder_layers)
    distributed: Literal["ddp", "allreduce", "fsdp"] = "ddp"  # how processes share the work (README: multi-GPU)
    mixed_precision: Literal["bf16", "fp16", "no"] = "bf16"
    group_by_length: bool = False
    eval_every: int = 0                      # steps; 0 = never
    eval_batches: int = 20
    price_eval_items: int = 0                # greedy price metric on this many val items at each eval
    save_every: int = 0                      # steps; 0 = only on interrupt
    keep_last: int = 2
    seed: int = 42


@dataclass
class LogConfig:
    report_to: Literal["none", "wandb", "tensorboard"] = "none"
    project: str = "pricer"
    run_name: str | None = None
    log_every: int = 10


@dataclass
class Config:
    model: ModelConfig = field(default_factory=ModelConfig)
    lora: LoRASection = field(default_factory=LoRASection)
    data: DataConfig = field(default_factory=DataConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    log: LogConfig = field(default_factory=LogConfig)
    output_dir: str = "runs/train"


class ConfigError(ValueError):
    """A config file or override that pricer cannot use (one line: what and how to fix it)."""


class TrainingDiverged(RuntimeError):
    """The loss or gradient norm became NaN/inf."""


class TrainingInterrupted(RuntimeError):
    """SIGINT/SIGTERM arrived; a checkpoint was saved."""


_TRUE, _FALSE = {"true", "yes", "on", "1"}, {"false", "no", "off", "0"}


def _coerce(value: Any, tp: Any, key: str) -> Any:
    """`value` (from YAML or the command line) as type `tp`, or ConfigError."""
    origin, args = typing.get_origin(tp), typing.get_args(tp)
    if origin in (typing.Union, types.UnionType):
        if value is None or (isinstance(value, str) and value.lower() in {"none", "null", "~"}):
            if type(None) in args:
                return None
        errors = []
        # list before str: "q_proj,v_proj" is a list, "all-linear" falls through to str.
        for option in sorted((a for a in args if a is not type(None)), key=lambda a: a is str):
            try:
                return _coerce(value, option, key)
            except ConfigError as e:
                errors.append(str(e))
        raise ConfigError(errors[-1])
    if origin is Literal:
        if value is False and "no" in args:  # YAML 1.1 reads an unquoted `no` as false
            value = "no"
        if value not in args:
            raise ConfigError(f"{key} must be one of {', '.join(map(str, args))}, got {value!r}")
        return value
    if origin is list:
        if isinstance(value, str):
            if value.startswith("["):
                value = yaml.safe_load(value)
            elif "," in value:
                value = [v.strip() for v in value.split(",") if v.strip()]
        if not isinstance(value, (list, tuple)):
            raise ConfigError(f"{key} must be a list, got {value!r}")
        return [_coerce(v, args[0], key) for v in value]
    if tp is bool:
        if isinstance(value, bool):
            return value
        if isinstance(value, str) and value.lower() in _TRUE | _FALSE:
            return value.lower() in _TRUE
        raise ConfigError(f"{key} must be true or false, got {value!r}")
    if tp in (int, float):
        try:
            number = float(value) if isinstance(value, str) else value
            if isinstance(number, bool) or not isinstance(number, (int, float)):
                raise ValueError
            if tp is int and float(number) != int(number):
                raise ValueError
            return tp(number)
        except (TypeError, ValueError):
            raise ConfigError(f"{key} must be {'an integer' if tp is int else 'a number'}, got {value!r}") from None
    if tp is str:
        if isinstance(value, (dict, list)):
            raise ConfigError(f"{key} must be a string, got {value!r}")
        return str(value)
    raise ConfigError(f"{key}: unsupported type {tp}")


def _sections() -> dict[str, type]:
    return {f.name: f.default_factory for f in dataclasses.fields(Config) if f.default_factory is not dataclasses.MISSING}


def _set(cfg: Config, key: str, value: Any) -> None:
    """Set `section.key` (or a top-level key) on cfg, coercing to the field's type."""
    sections = _sections()
    section, _, name = key.rpartition(".")
    if not section:
        top = [f.name for f in dataclasses.fields(Config) if f.name not in sections]
        if name not in top:
            raise ConfigError(f"unknown key {key!r}; valid top-level keys: {', '.join(top)}; "
                              f"sections: {', '.join(sections)} (write section.key)")
        setattr(cfg, name, _coerce(value, typing.get_type_hints(Config)[name], key))
        return
    if section not in sections:
        raise ConfigError(f"unknown section {section!r}; valid sections: {', '.join(sections)}")
    target = getattr(cfg, section)
    hints = typing.get_type_hints(type(target))
    if name not in hints:
        raise ConfigError(f"unknown key {key!r}; valid keys in {section}: {', '.join(hints)}")
    setattr(target, name, _coerce(value, hints[name], key))


def load_config(path: str | os.PathLike | None = None, overrides: dict[str, Any] | None = None) -> Config:
    """Defaults, then the YAML file at `path`, then `overrides` ({"train.lr": "2e-4", ...})."""
    cfg = Config()
    if path is not None:
        path = Path(path)
        if not path.is_file():
            raise FileNotFoundError(f"config file {path} not found: pass one of configs/*.yaml")
        try:
            raw = yaml.safe_load(path.read_text()) or {}
        except yaml.YAMLError as e:
            raise ConfigError(f"{path} is not valid YAML: {str(e).splitlines()[0]}") from None
        if not isinstance(raw, dict):
            raise ConfigError(f"{path} must be a mapping of sections (model:, lora:, data:, train:, log:)")
        for key, value in raw.items():
            if key in _sections():
                if not isinstance(value, dict):
                    raise ConfigError(f"{path}: section {key!r} must be a mapping")
                for sub, v in value.items():
                    _set(cfg, f"{key}.{sub}", v)
            else:
                _set(cfg, key, value)
    for key, value in (overrides or {}).items():
        _set(cfg, key, value)
    _validate(cfg)
    return cfg


def lora_config_of(cfg: Config) -> LoRAConfig:
    """The lora section as a LoRAConfig; a bare module name ("q_proj") means that one module, not a regex."""
    targets = cfg.lora.target_modules
    if isinstance(targets, str) and targets != "all-linear" and re.fullmatch(r"[\w.]+", targets):
        targets = [targets]
    try:
        return LoRAConfig(r=cfg.lora.r, alpha=cfg.lora.alpha, dropout=cfg.lora.dropout, target_modules=targets,
                          use_rslora=cfg.lora.use_rslora, use_dora=cfg.lora.use_dora, init=cfg.lora.init,
                          base_model_name_or_path=cfg.model.name)
    except ValueError as e:
        raise ConfigError(f"lora: {e}") from None


def _validate(cfg: Config) -> None:
    t = cfg.train
    checks = [
        (cfg.model.bits in (4, 8, 16), f"model.bits must be 4, 8 or 16, got {cfg.model.bits}"),
        (t.batch_size >= 1 and t.grad_accum >= 1, "train.batch_size and train.grad_accum must be >= 1"),
        (t.max_steps is None or t.max_steps >= 1, "train.max_steps must be >= 1 (or null to use epochs)"),
        (t.epochs >= 1, "train.epochs must be >= 1"),
        (t.lr > 0, "train.lr must be positive"),
        (0 <= t.warmup_ratio < 1, "train.warmup_ratio must be in [0, 1)"),
        (t.loraplus_ratio > 0, "train.loraplus_ratio must be positive (1 = off)"),
        (t.keep_last >= 1, "train.keep_last must be >= 1"),
        (cfg.log.log_every >= 1, "log.log_every must be >= 1"),
        (t.distributed != "fsdp" or cfg.model.bits in (4, 16),
         "train.distributed fsdp needs model.bits 4 or 16 (8-bit weights cannot be sharded)"),
        (t.distributed != "fsdp" or not cfg.lora.use_dora,
         "train.distributed fsdp does not support lora.use_dora (the magnitude sits beside the 4-bit base)"),
        (t.distributed != "fsdp" or not t.price_eval_items,
         "train.price_eval_items needs the whole model in one process; with fsdp set it to 0 and run "
         "evaluate.py on the saved adapter"),
        (t.distributed != "fsdp" or not t.cuda_graphs,
         "train.cuda_graphs does not work with fsdp (its all-gathers run outside the graph); use ddp or allreduce"),
        (t.distributed != "fsdp" or not t.compile,
         "train.compile is not supported with fsdp (untested with its flat parameters); use ddp or allreduce"),
    ]
    for ok, message in checks:
        if not ok:
            raise ConfigError(message)
    lora_config_of(cfg)


def parse_args(argv: list[str] | None = None) -> tuple[Config, str | None]:
    """`--config FILE [--section.key value ...] [--resume latest|PATH]` -> (config, resume)."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0], allow_abbrev=False,
                                     epilog="Any config key can be overridden: --train.lr 2e-4 --output_dir runs/x")
    parser.add_argument("--config", help="YAML preset, e.g. configs/demo.yaml")
    parser.add_argument("--resume", help="'latest' or a checkpoint folder (output_dir/checkpoints/step-N)")
    args, rest = parser.parse_known_args(argv)
    overrides: dict[str, str] = {}
    i = 0
    while i < len(rest):
        token = rest[i]
        if not token.startswith("--") or len(token) == 2:
            raise ConfigError(f"unexpected argument {token!r}: overrides look like --train.lr 2e-4")
        key, eq, value = token[2:].partition("=")
        if not eq:
            if i + 1 >= len(rest):
                raise ConfigError(f"--{key} needs a value")
            value, i = rest[i + 1], i + 1
        overrides[key] = value
        i += 1
    return load_config(args.config, overrides), args.resume


# ----------------------------------------------------------------------------- loss

def completion_loss_sum(model: nn.Module, batch: dict[str, torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
    """(sum of next-token cross-entropy over supervised positions, their count) for a causal LM.

    Runs the decoder body to hidden states and applies the LM head only where the next token's
    label is supervised: a price is ~4 of 182 tokens, and Llama 3's head is 4096 x 128k, so the
    full logits would cost more memory than the rest of a QLoRA step.
    """
    hidden = model.get_decoder()(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"],
                                 use_cache=False).last_hidden_state
    targets = batch["labels"][:, 1:]
    supervised = targets != -100
    head = model.get_output_embeddings()
    # Outside autocast: the head runs in its own dtype and the softmax over the vocabulary in float32.
    with torch.autocast(device_type=hidden.device.type, enabled=False):
        logits = head(hidden[:, :-1][supervised].to(head.weight.dtype)).float()
    return F.cross_entropy(logits, targets[supervised], reduction="sum"), supervised.sum()


class CompletionLossModel(nn.Module):
    """The model as DDP/FSDP sees it: forward(batch) = completion_loss_sum(model, batch).

    Distributed wrappers synchronise gradients through hooks set up by their own forward, so
    the whole loss (body + selected head rows) has to be one module's forward; this module is
    what accelerator.prepare wraps, and `.model` stays the plain causal LM (for saving and
    generation).
    """

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model = model
        # Only LoRA parameters need synchronising: skip broadcasting the frozen (4-bit) base at DDP start.
        self._ddp_params_and_buffers_to_ignore = [
            name for name, p in self.named_parameters() if not p.requires_grad
        ] + [name for name, _ in self.named_buffers()]

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor,
                labels: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return completion_loss_sum(self.model, {"input_ids": input_ids, "attention_mask": attention_mask,
                                                "labels": labels})


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

    def causal_mask(self, input_ids: torch.Tensor) -> torch.Tensor:
        """The (batch, 1, length, length) causal mask, passed ready-made (transformers uses a 4D mask as is).

        Left to itself, transformers skips the mask (SDPA's is_causal) except while a CUDA graph
        is being captured, when some versions build one: the captured graph would then run other
        code than its warm-up did, and compiled layers (train.compile) would recompile inside
        the capture, which fails. A mask of our own is the same in both. Boolean for SDPA,
        additive (0 / -inf) for eager attention, which adds it to the scores.
        """
        rows, length = input_ids.shape
        allowed = torch.ones(length, length, dtype=torch.bool, device=input_ids.device).tril()
        if getattr(self.model.config, "_attn_implementation", "sdpa") != "sdpa":
            allowed = torch.zeros(allowed.shape, device=allowed.device).masked_fill(~allowed, float("-inf"))
        return allowed[None, None].expand(rows, 1, length, length)

    def forward(self, input_ids: torch.Tensor, positions: torch.Tensor, targets: torch.Tensor,
                weights: torch.Tensor) -> torch.Tensor:
        hidden = self.model.get_decoder()(input_ids=input_ids, attention_mask=self.causal_mask(input_ids),
                                          use_cache=False).last_hidden_state
        head = self.model.get_output_embeddings()
        with torch.autocast(device_type=hidden.device.type, enabled=False):
            logits = head(hidden.flatten(0, 1).index_select(0, positions).to(head.weight.dtype)).float()
        return (F.cross_entropy(logits, targets, reduction="none") * weights).sum()


class CudaGraphLoss:
    """CompletionLossModel's forward and backward captured as CUDA graphs, one pair per batch shape.

    A QLoRA step on a small batch is bound by the CPU launching thousands of small kernels
    (dequantize, matmul, LoRA, norms), not by the GPU. Capturing the step once and replaying
    it removes that cost (torch.cuda.make_graphed_callables; dropout stays random through
    graph-safe RNG). Same call and result as CompletionLossModel; each new (batch, length)
    shape is captured on first use, so pad batches to a fixed length (data.pad_to_multiple_of
    or max_length) to keep the number of graphs small. Wrap the plain CompletionLossModel, not
    DDP (its gradient hooks cannot be captured): on several processes train.py syncs with
    all_reduce_gradients after the step's backward (train.distributed allreduce).
    """

    def __init__(self, loss_model: "CompletionLossModel", max_supervised_per_row: int = 16) -> None:
        self.model = loss_model.model
        self.params = [p for p in self.model.parameters() if p.requires_grad]
        self.per_row = max_supervised_per_row
        self.graphs: dict[tuple[int, int], Any] = {}

    def train(self, mode: bool = True) -> "CudaGraphLoss":
        """Set the model's mode (captured graphs keep the mode they were captured in: training)."""
        self.model.train(mode)
        return self

    def eval(self) -> "CudaGraphLoss":
        return self.train(False)

    def _inputs(self, input_ids: torch.Tensor, labels: torch.Tensor):
        rows, length = input_ids.shape
        nxt = labels[:, 1:]
        mask = nxt != -100
        counts = mask.sum(1)
        if int(counts.max()) > self.per_row:
            raise ValueError(f"a row has {int(counts.max())} supervised tokens, more than the "
                             f"{self.per_row} the CUDA graph was sized for")
        k = rows * self.per_row
        b, t = mask.nonzero(as_tuple=True)
        positions = torch.zeros(k, dtype=torch.long, device=input_ids.device)
        targets = torch.zeros(k, dtype=torch.long, device=input_ids.device)
        weights = torch.zeros(k, dtype=torch.float32, device=input_ids.device)
        n = b.numel()
        positions[:n] = b * length + t
        targets[:n] = nxt[b, t]
        weights[:n] = 1.0
        return (input_ids, positions, targets, weights), counts.sum()

    def __call__(self, input_ids: torch.Tensor, attention_mask: torch.Tensor,
                 labels: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        args, n_tok = self._inputs(input_ids, labels)
        # A replay rewrites the graph's static gradient buffers, and autograd may have stolen
        # those very buffers as the parameters' .grad on the last call: with gradient
        # accumulation the next replay would overwrite the gradient summed so far. Own a copy.
        for p in self.params:
            if p.grad is not None:
                p.grad = p.grad.clone()
        key = tuple(input_ids.shape)
        if key not in self.graphs:
            # A fresh wrapper per shape: make_graphed_callables replaces the forward of what it captures.
            # Its sample arguments become the graph's static inputs, into which every later call's
            # arguments are copied: capture on private copies, or the caller's first batch would be
            # overwritten by each later one.
            self.graphs[key] = torch.cuda.make_graphed_callables(
                StaticCompletionLoss(self.model), tuple(a.clone() for a in args), num_warmup_iters=3)
        return self.graphs[key](*args), n_tok


def compile_decoder_layers(model: nn.Module, **options: Any) -> int:
    """torch.compile every decoder layer of a causal LM in place (regional compilation); returns how many.

    At batch 16 on the 8B shape a QLoRA step is GPU-bound, and 40% of its GPU time is neither
    matmul nor dequantization: RMSNorm's float32 round trip, rotary embedding, SiLU(gate) * up,
    residual additions, LoRA's cast to float32 and back, dropout and scaling, each a separate
    kernel reading and writing a (tokens x 4096) tensor, forward and backward. Inductor fuses
    each run of them into one kernel; the 4-bit matmuls (bitsandbytes' custom ops) stay as
    they are, with no graph break.

    Per layer, not the whole model: the layers run the same code, so one compilation serves
    all of them (one compile, not 32, on the 8B shape), and the loss, head and embeddings stay eager.
    `Module.compile` keeps parameter names, so lora_layers, save_adapter and checkpoints see
    the plain model. It composes with CudaGraphLoss (the compiled kernels are captured like any
    others; compilation happens in its warm-up) and with gradient checkpointing. A new batch
    shape or grad mode compiles once more (then shapes are dynamic); generation would recompile
    at every length, so run it under `torch.compiler.set_stance("force_eager")`, as train.py's
    price metric does. `options` go to torch.compile (backend="aot_eager" checks tracing cheaply).
    """
    decoder = model.get_decoder() if hasattr(model, "get_decoder") else None
    layers = getattr(decoder, "layers", None)
    if not isinstance(layers, nn.ModuleList) or not len(layers):
        raise ConfigError(f"train.compile: found no decoder layers in {type(model).__name__} "
                          "(expected model.get_decoder().layers)")
    for layer in layers:
        layer.compile(**options)
    return len(layers)


def accumulate_gradients(accelerator, model: nn.Module, micro_batches: list[dict[str, torch.Tensor]],
                         allreduce: list[nn.Parameter] | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """Backward over one optimizer step's micro-batches; returns (loss sum, supervised tokens), summed over processes.

    Each micro-batch contributes loss_sum / n_tok, with n_tok the step's total over all
    micro-batches and processes; the factor world_size undoes the averaging of gradients over
    processes (DDP's, FSDP's, or all_reduce_gradients' on `allreduce` after the last backward).
    """
    local = sum((b["labels"][:, 1:] != -100).sum() for b in micro_batches)
    n_tok = accelerator.reduce(local.to(accelerator.device), reduction="sum").float()
    loss_sum = torch.zeros((), device=accelerator.device)
    for i, batch in enumerate(micro_batches):
        # Gradients are all-reduced once, on the step's last micro-batch.
        sync = contextlib.nullcontext() if i == len(micro_batches) - 1 else accelerator.no_sync(model)
        with sync, accelerator.autocast():
            part, _ = model(batch["input_ids"], batch["attention_mask"], batch["labels"])
            accelerator.backward(part / n_tok * accelerator.num_processes)
        loss_sum += part.detach().float()
    if allreduce is not None:
        all_reduce_gradients(allreduce)
    return accelerator.reduce(loss_sum, reduction="sum"), n_tok


# ----------------------------------------------------------------------------- distributed

def all_reduce_gradients(params: list[nn.Parameter]) -> None:
    """Average the gradients of `params` over all processes: one all-reduce per dtype (train.distributed allreduce).

    DDP overlaps its all-reduce with the backward pass, bucket by bucket, through autograd hooks;
    a CUDA graph cannot hold those hooks. Here the step's backward runs first and the LoRA
    gradients travel afterwards as one flat message (27M numbers, 108 MB, for r 32 on q/k/v/o of
    an 8B model: about a millisecond over NVLink). The order of `params` must be the same on
    every process; a parameter without a gradient contributes zeros.
    """
    import torch.distributed as dist

    world = dist.get_world_size()
    by_dtype: dict[torch.dtype, list[torch.Tensor]] = {}
    for p in params:
        if p.grad is None:
            p.grad = torch.zeros_like(p)
        by_dtype.setdefault(p.grad.dtype, []).append(p.grad)
    for grads in by_dtype.values():
        flat = torch.cat([g.reshape(-1) for g in grads])
        dist.all_reduce(flat)
        flat /= world
        for g, part in zip(grads, flat.split([g.numel() for g in grads])):
            g.copy_(part.view_as(g))


def broadcast_parameters(params: list[nn.Parameter]) -> None:
    """Copy process 0's values of `params` to every process (what DDP does when it wraps a model)."""
    import torch.distributed as dist

    for p in params:
        dist.broadcast(p.data, src=0)


def _trainable_leaf(module: nn.Module) -> bool:
    """A module with no children whose own parameters are trainable: LoRA's A and B."""
    own = list(module.parameters(recurse=False))
    return not list(module.children()) and bool(own) and all(p.requires_grad for p in own)


def wrap_fsdp(loss_model: "CompletionLossModel", device: torch.device) -> nn.Module:
    """Shard `loss_model` over all processes with FSDP (train.distributed fsdp): QLoRA beyond one GPU's memory.

    FSDP flattens each unit's parameters into one tensor of one dtype and gives each process a
    slice; a unit's whole weights exist only while it runs. The units: every decoder layer (its
    4-bit weights stored as bf16, model.quant_storage, beside bf16 norms), every LoRA A and B on
    their own (float32, trainable), the embeddings, the head, and the root (the final norm). use_orig_params
    keeps the original LoRA parameter objects (each holding its slice), so the optimizer, LoRA+
    groups and clipping work on them as without FSDP; `full_lora_parameters` gathers them for saving.
    """
    import functools

    from torch.distributed.fsdp import FullyShardedDataParallel as FSDP
    from torch.distributed.fsdp import ShardingStrategy
    from torch.distributed.fsdp.wrap import _or_policy, lambda_auto_wrap_policy, transformer_auto_wrap_policy

    model = loss_model.model
    layer_classes = {type(layer) for layer in model.get_decoder().layers}
    # The embeddings and head in units of their own, so that they too are whole only while they
    # run (the root unit stays whole from forward to backward): on Llama 3 8B they are 2.1 GB of
    # the 5.5 GB. Tied ones (one weight in two modules) must stay together, in the root.
    emb, head = model.get_input_embeddings(), model.get_output_embeddings()
    tied = emb is not None and head is not None and head.weight is emb.weight
    own = set() if tied else {id(emb), id(head)}
    policy = functools.partial(_or_policy, policies=[
        functools.partial(lambda_auto_wrap_policy, lambda_fn=lambda m: _trainable_leaf(m) or id(m) in own),
        functools.partial(transformer_auto_wrap_policy, transformer_layer_cls=layer_classes),
    ])
    return FSDP(loss_model, auto_wrap_policy=policy, sharding_strategy=ShardingStrategy.FULL_SHARD,
                use_orig_params=True, device_id=device if device.type == "cuda" else torch.device("cpu"),
                limit_all_gathers=True, sync_module_states=False)


@contextlib.contextmanager
def full_lora_parameters(wrapped: Any) -> Iterator[None]:
    """Inside, every LoRA parameter holds its whole tensor on every process (FSDP gathers each A and B unit).

    Collective: all processes enter it. Without FSDP it does nothing. Only the LoRA units are
    gathered, never the base: saving an adapter of a 70B model costs megabytes, not the model.
    """
    from torch.distributed.fsdp import FullyShardedDataParallel as FSDP

    with contextlib.ExitStack() as stack:
        if isinstance(wrapped, FSDP):
            for unit in FSDP.fsdp_modules(wrapped):
                if unit is not wrapped and _trainable_leaf(unit.module):
                    stack.enter_context(FSDP.summon_full_params(unit, recurse=False, writeback=False))
        yield


def clip_gradients(accelerator, params: list[nn.Parameter], max_norm: float, fsdp: nn.Module | None = None) -> float:
    """Clip the global gradient norm to max_norm (0 = no clipping); return the norm before clipping.

    With FSDP each process holds a slice of every gradient, so the norm is FSDP's, over all slices.
    """
    if fsdp is not None:
        # An infinite max_norm gives a clip coefficient above 1, which FSDP clamps to 1: the norm alone.
        return float(fsdp.clip_grad_norm_(max_norm if max_norm > 0 else float("inf")))
    if max_norm > 0:
        return float(accelerator.clip_grad_norm_(params, max_norm))
    grads = [p.grad.float().norm() for p in params if p.grad is not None]
    return float(torch.stack(grads).norm()) if grads else 0.0


# ----------------------------------------------------------------------------- schedule

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


# ----------------------------------------------------------------------------- data order

def epoch_order(lengths: list[int], *, seed: int, epoch: int, global_batch: int,
                group_by_length: bool = False) -> list[int]:
    """This epoch's example indices, a whole number of global batches long (the rest is dropped).

    A seeded permutation; with group_by_length, chunks of ~50 global batches are each sorted
    by length and cut into global batches, and the batches shuffled, so a batch pads little
    while the order stays random.
    """
    g = torch.Generator().manual_seed(seed * 100_003 + epoch)
    order = torch.randperm(len(lengths), generator=g).tolist()
    order = order[: len(order) - len(order) % global_batch]
    if not group_by_length:
        return order
    mega = 50 * global_batch
    batches = []
    for start in range(0, len(order), mega):
        chunk = sorted(order[start:start + mega], key=lambda i: -lengths[i])
        batches += [chunk[k:k + global_batch] for k in range(0, len(chunk), global_batch)]
    return [i for b in torch.randperm(len(batches), generator=g).tolist() for i in batches[b]]


def micro_batch_indices(step_indices: list[int], batch_size: int, grad_accum: int, rank: int,
                        world_size: int) -> list[list[int]]:
    """This process's micro-batches of one optimizer step: slice r of each of the step's grad_accum parts."""
    per_micro = batch_size * world_size
    return [step_indices[j * per_micro + rank * batch_size: j * per_micro + (rank + 1) * batch_size]
            for j in range(grad_accum)]


# ----------------------------------------------------------------------------- checkpoints

def _rng_state() -> dict[str, Any]:
    state = {"python": random.getstate(), "numpy": np.random.get_state(), "torch": torch.get_rng_state()}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def _set_rng_state(state: dict[str, Any]) -> None:
    random.setstate(state["python"])
    np.random.set_state(state["numpy"])
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def save_checkpoint(accelerator, root: Path, step: int, model: nn.Module, optimizer, scheduler,
                    position: dict[str, Any], cfg: Config, wrapped: Any = None) -> Path:
    """Write checkpoints/step-N/ atomically (temp folder, then rename) and keep the last K; returns its path.

    With FSDP (`wrapped`) the LoRA weights are gathered for the adapter, and every process
    writes its slice of the optimizer state as optimizer-rank<R>.pt.
    """
    rng_states = _gather_objects(accelerator, _rng_state())
    final = root / f"step-{step}"
    tmp = root / f".tmp-step-{step}"
    sharded = wrapped is not None  # FSDP runs only with several processes: each holds a slice
    if accelerator.is_main_process:
        shutil.rmtree(tmp, ignore_errors=True)
        tmp.mkdir(parents=True)
    accelerator.wait_for_everyone()
    if sharded:
        torch.save(optimizer.state_dict(), tmp / f"optimizer-rank{accelerator.process_index}.pt")
    with full_lora_parameters(wrapped):
        if accelerator.is_main_process:
            save_adapter(model, tmp / "adapter", base_model_name_or_path=cfg.model.name)
    accelerator.wait_for_everyone()
    if accelerator.is_main_process:
        if not sharded:
            torch.save(optimizer.state_dict(), tmp / "optimizer.pt")
        torch.save(scheduler.state_dict(), tmp / "scheduler.pt")
        torch.save(rng_states, tmp / "rng_states.pt")
        (tmp / "trainer_state.json").write_text(json.dumps(position, indent=2))
        (tmp / "config.yaml").write_text(config_yaml(cfg))
        shutil.rmtree(final, ignore_errors=True)
        os.replace(tmp, final)
        steps = sorted((p for p in root.glob("step-*") if p.name[5:].isdigit()), key=lambda p: int(p.name[5:]))
        for old in steps[:-cfg.train.keep_last]:
            shutil.rmtree(old)
    accelerator.wait_for_everyone()
    return final


def _gather_objects(accelerator, obj: Any) -> list[Any]:
    if accelerator.num_processes == 1:
        return [obj]
    from accelerate.utils import gather_object

    return gather_object([obj])


def find_checkpoint(resume: str, output_dir: Path) -> Path:
    """The checkpoint folder `resume` names: 'latest' (the highest step in output_dir) or a path."""
    if resume == "latest":
        steps = [p for p in (output_dir / "checkpoints").glob("step-*") if p.name[5:].isdigit()]
        if not steps:
            raise FileNotFoundError(f"--resume latest: no checkpoint in {output_dir / 'checkpoints'}; "
                                    "start without --resume")
        return max(steps, key=lambda p: int(p.name[5:]))
    path = Path(resume)
    if not (path / "trainer_state.json").is_file():
        raise FileNotFoundError(f"--resume {resume}: not a checkpoint folder (no trainer_state.json)")
    return path


def config_yaml(cfg: Config) -> str:
    """The resolved config as YAML (loadable with --config)."""
    return yaml.safe_dump(asdict(cfg), sort_keys=False)


# ----------------------------------------------------------------------------- the run

def build_optimizer(cfg: TrainConfig, model: nn.Module) -> torch.optim.Optimizer:
    """AdamW (torch or bitsandbytes paged/8-bit) over the LoRA parameters; B gets lr * loraplus_ratio."""
    a_side, b_side = lora_parameters(model, split=True)
    groups = [{"params": a_side, "lr": cfg.lr}, {"params": b_side, "lr": cfg.lr * cfg.loraplus_ratio}]
    kwargs = dict(lr=cfg.lr, weight_decay=cfg.weight_decay, betas=(0.9, 0.999), eps=1e-8)
    if cfg.optimizer == "adamw":
        return torch.optim.AdamW(groups, **kwargs)
    import bitsandbytes as bnb

    cls = {"paged_adamw_32bit": bnb.optim.PagedAdamW32bit, "paged_adamw_8bit": bnb.optim.PagedAdamW8bit,
           "adamw_8bit": bnb.optim.AdamW8bit}[cfg.optimizer]
    return cls(groups, **kwargs)


def _peak_memory_mb() -> float:
    if torch.cuda.is_available():
        return torch.cuda.max_memory_allocated() / 2**20
    import resource

    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # KiB on Linux


class _StopFlag:
    """Set by SIGINT/SIGTERM; the loop checks it between optimizer steps."""

    def __init__(self) -> None:
        self.signal: int | None = None
        self._previous: dict[int, Any] = {}

    def __enter__(self) -> "_StopFlag":
        for sig in (signal.SIGINT, signal.SIGTERM):
            self._previous[sig] = signal.signal(sig, self._handle)
        return self

    def _handle(self, signum, frame) -> None:
        if self.signal is not None:  # a second Ctrl-C: stop now, without a checkpoint
            raise KeyboardInterrupt
        self.signal = signum

    def __exit__(self, *exc) -> None:
        for sig, handler in self._previous.items():
            signal.signal(sig, handler)


def train(cfg: Config, resume: str | None = None) -> Path:
    """Train a LoRA adapter as `cfg` says; returns <output_dir>/adapter."""
    from accelerate import Accelerator
    from accelerate.utils import set_seed
    from tqdm.auto import tqdm

    t = cfg.train
    out = Path(cfg.output_dir)
    ckpt_root = out / "checkpoints"

    # --- accelerator: one process per device; `accelerate launch` decides how many.
    log_with = None if cfg.log.report_to == "none" else cfg.log.report_to
    if log_with:
        from accelerate.utils import is_tensorboard_available, is_wandb_available

        if not {"wandb": is_wandb_available, "tensorboard": is_tensorboard_available}[log_with]():
            raise ConfigError(f"log.report_to {log_with} needs the {log_with} package: pip install {log_with}")
    # CUDA graphs need autocast without its weight-cast cache (a cached cast would outlive the capture).
    from accelerate.utils import AutocastKwargs
    accelerator = Accelerator(mixed_precision=t.mixed_precision, log_with=log_with, project_dir=str(out),
                              kwargs_handlers=[AutocastKwargs(cache_enabled=not t.cuda_graphs)])
    rank, world = accelerator.process_index, accelerator.num_processes
    say = accelerator.print
    if t.cuda_graphs and accelerator.device.type != "cuda":
        raise ConfigError("train.cuda_graphs needs a CUDA GPU; set --train.cuda_graphs false on CPU")
    if t.cuda_graphs and world > 1 and t.distributed == "ddp":
        say("note: DDP's gradient hooks cannot run inside CUDA graphs; using train.distributed allreduce "
            "(one all-reduce of the LoRA gradients after each step's backward)")
        t = dataclasses.replace(t, distributed="allreduce")
        cfg = dataclasses.replace(cfg, train=t)
    fsdp = t.distributed == "fsdp"
    if fsdp and cfg.model.bits == 4 and cfg.model.quant_storage in (None, "uint8"):
        say(f"note: fsdp stores the 4-bit weights as {cfg.model.compute_dtype} (model.quant_storage) so that "
            "FSDP can shard them with the layers' other parameters")
        cfg = dataclasses.replace(cfg, model=dataclasses.replace(cfg.model, quant_storage=cfg.model.compute_dtype))

    # --- where a resumed run stands; the global batch is part of the data position.
    checkpoint = find_checkpoint(resume, out) if resume else None
    state = json.loads((checkpoint / "trainer_state.json").read_text()) if checkpoint else None
    if state and (fsdp or state.get("distributed") == "fsdp") and (
            state.get("distributed", "ddp") != t.distributed or state["world_size"] != world):
        raise ConfigError(f"checkpoint {checkpoint} was written by {state['world_size']} process(es) with "
                          f"train.distributed {state.get('distributed', 'ddp')}; its optimizer state is split that "
                          "way, so resume it with the same number of processes and the same train.distributed")
    if state and state["global_batch"] != t.batch_size * t.grad_accum * world:
        per_accum = t.batch_size * world
        if state["global_batch"] % per_accum:
            raise ConfigError(
                f"checkpoint {checkpoint} was trained with global batch {state['global_batch']}; with {world} "
                f"processes x batch_size {t.batch_size} no grad_accum gives it: set --train.batch_size so that "
                f"batch_size * {world} divides {state['global_batch']}")
        say(f"resume: global batch {state['global_batch']} kept with {world} process(es) x batch {t.batch_size} "
            f"x grad_accum {state['global_batch'] // per_accum} (config said grad_accum {t.grad_accum})")
        t = dataclasses.replace(t, grad_accum=state["global_batch"] // per_accum)
        cfg = dataclasses.replace(cfg, train=t)
    global_batch = t.batch_size * t.grad_accum * world

    if accelerator.is_main_process:
        out.mkdir(parents=True, exist_ok=True)
        (out / "config.yaml").write_text(config_yaml(cfg))
        if not checkpoint and any(ckpt_root.glob("step-*")):
            # Left in place they would outrank this run's checkpoints (pruning, --resume latest).
            previous = out / "checkpoints.previous"
            shutil.rmtree(previous, ignore_errors=True)
            os.replace(ckpt_root, previous)
            say(f"note: moved an earlier run's checkpoints to {previous}; this run starts afresh "
                "(use --resume latest to continue that run instead)")

    # --- base model (frozen, maybe 4-bit) and tokenizer, on this process's device.
    set_seed(t.seed)
    model, tokenizer = load_base_model(
        cfg.model.name, bits=cfg.model.bits, quant_type=cfg.model.quant_type, double_quant=cfg.model.double_quant,
        compute_dtype=cfg.model.compute_dtype, device=accelerator.device, quant_storage=cfg.model.quant_storage,
        verbose=False)
    model = prepare_for_kbit_training(model, gradient_checkpointing=t.gradient_checkpointing, upcast_norms=not fsdp)

    # --- data: items -> deterministic split -> prompt/completion pairs -> token lengths.
    items = load_items(cfg.data.source, limit=cfg.data.limit, verbose=accelerator.is_main_process)
    splits = split_items(items, seed=cfg.data.seed, val_fraction=cfg.data.val_fraction,
                         test_fraction=cfg.data.test_fraction)
    train_items = splits.train
    if cfg.data.balance:
        train_items = balance(train_items, cap=cfg.data.balance_cap, keep_all_above=cfg.data.balance_keep_all_above,
                              seed=cfg.data.seed)
    say(f"data: {splits.summary()}; training on {len(train_items):,}")

    def examples(items_):
        return [to_example(it, tokenizer, cfg.data.max_text_tokens)
                for it in items_]

    train_examples, val_examples = examples(train_items), examples(splits.val)
    if t.eval_every and not val_examples:
        raise ConfigError("train.eval_every is set but the validation split is empty: "
                          "raise data.val_fraction or set train.eval_every 0")
    lengths = [len(ids) for ids in tokenizer([e["prompt"] + e["completion"] for e in train_examples])["input_ids"]]
    collate = CompletionCollator(tokenizer, max_length=cfg.data.max_length,
                                 pad_to_multiple_of=cfg.data.pad_to_multiple_of)
    steps_per_epoch = len(train_examples) // global_batch
    if steps_per_epoch == 0:
        raise ConfigError(f"{len(train_examples)} training examples is less than one global batch "
                          f"({global_batch}): lower train.batch_size/grad_accum or add data")
    total_steps = t.max_steps or t.epochs * steps_per_epoch

    # --- LoRA: fresh adapter, or the checkpoint's (load_adapter injects it with its saved config).
    lora_config = lora_config_of(cfg)
    if checkpoint:
        saved = load_adapter(model, checkpoint / "adapter")
        keys = ("r", "alpha", "dropout", "use_rslora", "use_dora")
        if any(getattr(saved, k) != getattr(lora_config, k) for k in keys):
            raise ConfigError(f"checkpoint {checkpoint} has LoRA " + ", ".join(f"{k}={getattr(saved, k)}" for k in keys)
                              + "; resume with the same lora settings")
    else:
        check_projections(model, lora_config.target_modules)  # names the model's Linear layers if none match
        inject_lora(model, lora_config)
    if t.compile:
        say(f"compile: {compile_decoder_layers(model)} decoder layers (torch.compile; the first step compiles)")
    trainable, total = parameter_counts(model)
    say(f"params: trainable {trainable:,} of {total:,} ({100 * trainable / total:.3f}%)")
    say(format_memory_report(memory_report(model)))
    say(f"batch: {t.batch_size} per device x {t.grad_accum} accumulation x {world} process(es) = "
        f"{global_batch} examples per step; {steps_per_epoch:,} steps per epoch; {total_steps:,} steps")

    # --- how processes share the work (train.distributed; with one process all three are the same):
    # ddp: accelerate's DistributedDataParallel, all-reducing LoRA gradients during backward;
    # allreduce: one all-reduce after backward (what CUDA graphs allow); fsdp: sharded model.
    loss_model = CompletionLossModel(model)
    sync_params = fsdp_module = None
    if world > 1 and t.distributed == "fsdp":
        wrapped = fsdp_module = wrap_fsdp(loss_model, accelerator.device)
    elif world > 1 and t.distributed == "allreduce":
        wrapped, sync_params = loss_model, lora_parameters(model)
        broadcast_parameters(sync_params)
    else:
        wrapped = accelerator.prepare_model(loss_model, device_placement=False)
    if t.cuda_graphs:
        # The collator pads to a fixed length, so one graph serves every step.
        collate = CompletionCollator(tokenizer, max_length=cfg.data.max_length, pad_to_multiple_of=cfg.data.max_length)
        wrapped = CudaGraphLoss(wrapped)

    # --- optimizer and schedule, built on the parameters as wrapped (FSDP's hold slices). Only
    # the model and optimizer go through accelerate: the data order is ours, and a prepared
    # scheduler would step once per process.
    optimizer = build_optimizer(t, model)
    warmup = warmup_steps(t, total_steps)
    scheduler = torch.optim.lr_scheduler.LambdaLR(
        optimizer, lambda s: lr_lambda(s, warmup=warmup, total=total_steps, schedule=t.schedule))
    optimizer = accelerator.prepare_optimizer(optimizer)
    params = lora_parameters(model)

    step = 0
    if checkpoint:
        saved_optimizer = checkpoint / (f"optimizer-rank{rank}.pt" if fsdp_module is not None else "optimizer.pt")
        # (Multi-process CPU runs name their device "cpu:0", which torch.load cannot map to.)
        where = accelerator.device if accelerator.device.type != "cpu" else "cpu"
        optimizer.load_state_dict(torch.load(saved_optimizer, map_location=where, weights_only=False))
        scheduler.load_state_dict(torch.load(checkpoint / "scheduler.pt", weights_only=False))
        rng_states = torch.load(checkpoint / "rng_states.pt", weights_only=False)
        step = state["step"]
        if len(rng_states) == world:
            _set_rng_state(rng_states[rank])
        else:
            set_seed(t.seed + 1000 * step + rank)
            say(f"resume: checkpoint has {len(rng_states)} process RNG states, this run {world}: reseeded dropout")
        say(f"resumed from {checkpoint} at step {step} ({state['examples_seen']:,} examples seen)")
    else:
        set_seed(t.seed + rank)  # dropout differs per process; the LoRA init above was shared
    if accelerator.is_main_process:
        _truncate_metrics(out / "metrics.jsonl", step)
    if log_with:
        flat = {f"{section}.{k}" if isinstance(values, dict) else section: v
                for section, values in asdict(cfg).items()
                for k, v in (values.items() if isinstance(values, dict) else [(None, values)])}
        # TensorBoard's hparams take only scalars and strings.
        flat = {k: v if isinstance(v, (int, float, str, bool)) else str(v) for k, v in flat.items()}
        accelerator.init_trackers(cfg.log.project, config=flat,
                                  init_kwargs={"wandb": {"name": cfg.log.run_name}} if cfg.log.run_name else {})

    def to_device(batch):
        return {k: v.to(accelerator.device) for k, v in batch.items()}

    def position() -> dict[str, Any]:
        return {"step": step, "examples_seen": step * global_batch, "global_batch": global_batch,
                "batch_size": t.batch_size, "grad_accum": t.grad_accum, "world_size": world,
                "distributed": t.distributed,
                "epoch": step // steps_per_epoch}

    def evaluate_val() -> dict[str, float]:
        """Validation loss on the first eval_batches global batches of val (sharded), and maybe a price metric."""
        per_batch = t.batch_size * world
        wrapped.eval()
        loss_sum = torch.zeros((), device=accelerator.device)
        n_tok = torch.zeros((), device=accelerator.device)
        with torch.no_grad(), accelerator.autocast():
            for start in range(0, min(len(val_examples), t.eval_batches * per_batch), per_batch):
                mine = val_examples[start + rank * t.batch_size: start + (rank + 1) * t.batch_size]
                if fsdp_module is not None:
                    # The sharded model exists whole only inside its forward, which every process must
                    # join: a process past the end of val runs one example and counts nothing.
                    batch = to_device(collate(mine or val_examples[:1]))
                    part, count = fsdp_module(batch["input_ids"], batch["attention_mask"], batch["labels"])
                    loss_sum += part.float() * bool(mine)
                    n_tok += count * bool(mine)
                elif mine:
                    part, count = completion_loss_sum(model, to_device(collate(mine)))
                    loss_sum += part.float()
                    n_tok += count
        wrapped.train()
        loss_sum, n_tok = accelerator.reduce(loss_sum, "sum"), accelerator.reduce(n_tok, "sum")
        result = {"val_loss": float(loss_sum / n_tok.clamp(min=1))}
        if t.price_eval_items and accelerator.is_main_process:
            result |= _price_metrics(model, tokenizer, splits.val[: t.price_eval_items], cfg, accelerator)
        accelerator.wait_for_everyone()
        return result

    # --- the loop
    if torch.cuda.is_available():
        torch.cuda.reset_peak_memory_stats()  # metrics' peak_mem_mb: training, not loading (FSDP loads whole, then shards)
    wrapped.train()
    bar = tqdm(total=total_steps, initial=step, disable=not accelerator.is_main_process, dynamic_ncols=True)
    started = time.time()
    last_saved = step if checkpoint else None
    order_epoch, order = None, []
    with _StopFlag() as stop:
        while step < total_steps:
            t0 = time.time()
            epoch, k = divmod(step, steps_per_epoch)
            if epoch != order_epoch:
                order_epoch, order = epoch, epoch_order(lengths, seed=t.seed, epoch=epoch,
                                                        global_batch=global_batch,
                                                        group_by_length=t.group_by_length)
            step_indices = order[k * global_batch:(k + 1) * global_batch]
            micro = [to_device(collate([train_examples[i] for i in idx]))
                     for idx in micro_batch_indices(step_indices, t.batch_size, t.grad_accum, rank, world)]

            loss_sum, n_tok = accumulate_gradients(accelerator, wrapped, micro, allreduce=sync_params)
            loss = float(loss_sum / n_tok)
            grad_norm = clip_gradients(accelerator, params, t.max_grad_norm, fsdp=fsdp_module)
            if not math.isfinite(loss) or (not math.isfinite(grad_norm) and t.mixed_precision != "fp16"):
                bar.close()
                saved = f"last good checkpoint: {last_saved and ckpt_root / f'step-{last_saved}'}"
                raise TrainingDiverged(f"loss {loss} / grad norm {grad_norm} at step {step + 1}: stopping before "
                                       f"the update; {saved} (lower train.lr or max_grad_norm, then --resume)")
            lr = scheduler.get_last_lr()[0]
            optimizer.step()
            scheduler.step()
            optimizer.zero_grad(set_to_none=True)
            step += 1

            tokens = accelerator.reduce(sum(b["attention_mask"].sum() for b in micro).float(), "sum")
            record = {"step": step, "loss": loss, "lr": lr, "grad_norm": grad_norm,
                      "tokens_per_s": float(tokens) / (time.time() - t0), "peak_mem_mb": _peak_memory_mb(),
                      "elapsed": time.time() - started}
            if t.eval_every and step % t.eval_every == 0:
                record |= evaluate_val()
            if accelerator.is_main_process:
                with open(out / "metrics.jsonl", "a") as f:
                    f.write(json.dumps(record) + "\n")
                bar.update(1)
                bar.set_postfix(loss=f"{loss:.4f}", lr=f"{lr:.2e}", tok_s=f"{record['tokens_per_s']:.0f}")
            if log_with and (step % cfg.log.log_every == 0 or "val_loss" in record):
                accelerator.log({k: v for k, v in record.items() if k != "step"}, step=step)

            interrupted = accelerator.reduce(torch.tensor(float(stop.signal is not None),
                                                          device=accelerator.device), "sum") > 0
            if (t.save_every and step % t.save_every == 0) or interrupted:
                save_checkpoint(accelerator, ckpt_root, step, model, optimizer, scheduler, position(), cfg, fsdp_module)
                last_saved = step
            if interrupted:
                bar.close()
                raise TrainingInterrupted(f"interrupted at step {step}; checkpoint saved to "
                                          f"{ckpt_root / f'step-{step}'}; continue with --resume latest")
    bar.close()

    adapter_dir = out / "adapter"
    with full_lora_parameters(fsdp_module):
        if accelerator.is_main_process:
            tmp = out / ".tmp-adapter"
            shutil.rmtree(tmp, ignore_errors=True)
            save_adapter(model, tmp, base_model_name_or_path=cfg.model.name)
            shutil.rmtree(adapter_dir, ignore_errors=True)
            os.replace(tmp, adapter_dir)
    accelerator.wait_for_everyone()
    say(f"adapter saved to {adapter_dir}")
    accelerator.end_training()
    return adapter_dir


def _truncate_metrics(path: Path, step: int) -> None:
    """Drop metrics of steps after `step` (written before an interrupt), so a resumed run's log reads straight."""
    if not path.exists():
        return
    lines = [ln for ln in path.read_text().splitlines() if ln.strip() and json.loads(ln)["step"] <= step]
    tmp = path.with_suffix(".tmp")
    tmp.write_text("".join(ln + "\n" for ln in lines))
    os.replace(tmp, path)


def _price_metrics(model: nn.Module, tokenizer, items: list, cfg: Config, accelerator) -> dict[str, float]:
    """Greedy price predictions on a few val items, by evaluate.py's predictor and metrics (left-padded, eval mode)."""
    from predict import compute_metrics, predict_greedy

    prompts = [test_prompt(it, tokenizer, cfg.data.max_text_tokens) for it in items]
    # Eagerly: compiled layers (train.compile) would recompile at every generated length.
    with accelerator.autocast(), torch.compiler.set_stance("force_eager"):
        guesses = predict_greedy(model, tokenizer, prompts, batch_size=cfg.train.batch_size)
    metrics = compute_metrics([it.price for it in items], guesses)
    return {f"val_{k}": float(metrics[k]) for k in ("rmsle", "hit_rate", "avg_error")}


def main(argv: list[str] | None = None) -> int:
    """CLI entry point: exit 0 when trained, 2 on a user error, 1 when training diverged, 130 when interrupted."""
    try:
        cfg, resume = parse_args(argv)
        train(cfg, resume)
    except TrainingInterrupted as e:
        print(e, file=sys.stderr)
        return 130
    except TrainingDiverged as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    except (ConfigError, DataError, AdapterError, ModelError, FileNotFoundError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
