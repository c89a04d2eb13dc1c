"""How several processes share a step (train.distributed), and clipping over what they share.

- ddp:       accelerate's DistributedDataParallel; adapter gradients all-reduced in buckets
             during backward.
- allreduce: no wrapper; one all-reduce of the flat adapter gradients after the step's
             backward (all_reduce_gradients): what CUDA graphs allow, since DDP's hooks
             cannot be captured.
- fsdp:      every decoder layer, the embeddings, the head and each adapter leaf module
             (LoRA's A and B) sharded over the processes (wrap_fsdp).
With one process all three are the same plain module. `wrap_for_processes` picks one;
the loop only sees the returned `Wrapped`.
"""
from __future__ import annotations

import contextlib
import functools
from collections.abc import Callable, Iterator
from dataclasses import dataclass

import torch
from torch import nn

from lora import lora_parameters
from training.config import Config
from training.errors import ConfigError
from training.runlog import tracker
from utils.compat import fsdp_or_policy


@dataclass
class Wrapped:
    """What the loop trains through: `step_model(ids, mask, labels) -> (loss sum, count)`, plus how
    gradients are shared (`fsdp`: the FSDP root, or None; `allreduce`: parameters to all-reduce, or None)."""

    step_model: Callable
    fsdp: nn.Module | None = None
    allreduce: list[nn.Parameter] | None = None

    def train(self, mode: bool = True) -> None:
        """Set train/eval mode on whatever wraps the model."""
        self.step_model.train(mode)


def make_accelerator(cfg: Config):
    """The Accelerator of this process: mixed precision, the tracker, and autocast fit for CUDA graphs.

    `accelerate launch` decides how many processes there are; each gets one device.
    CUDA graphs need autocast without its weight-cast cache (a cached cast would outlive the capture).
    """
    from accelerate import Accelerator
    from accelerate.utils import AutocastKwargs

    return Accelerator(mixed_precision=cfg.train.mixed_precision, log_with=tracker(cfg), project_dir=cfg.output_dir,
                       kwargs_handlers=[AutocastKwargs(cache_enabled=not cfg.train.cuda_graphs)])


def wrap_for_processes(loss_model: nn.Module, distributed: str, accelerator) -> Wrapped:
    """Wrap the loss model as train.distributed says (one process: accelerate's plain preparation)."""
    world = accelerator.num_processes
    if world > 1 and distributed == "fsdp":
        fsdp = wrap_fsdp(loss_model, accelerator.device)
        return Wrapped(fsdp, fsdp=fsdp)
    if world > 1 and distributed == "allreduce":
        params = lora_parameters(loss_model.model)
        broadcast_parameters(params)
        return Wrapped(loss_model, allreduce=params)
    return Wrapped(accelerator.prepare_model(loss_model, device_placement=False))


def all_reduce_gradients(params: list[nn.Parameter]) -> None:
    """Average the gradients of `params` over all processes: one all-reduce per dtype (train.distributed allreduce).

    DDP overlaps its all-reduce with the backward pass, bucket by bucket, through autograd hooks;
    a CUDA graph cannot hold those hooks. Here the step's backward runs first and the adapter
    gradients travel afterwards as one flat message per dtype. The order of `params` must be
    the same on every process; a parameter without a gradient contributes zeros.
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


def _adapter_leaves(model: nn.Module) -> set[int]:
    """ids of the modules that are FSDP units of their own: leaves holding only adapter parameters.

    FSDP1 flattens a unit into one tensor of one dtype, so adapter weights (float32, trainable)
    cannot share a unit with the layer's bf16 base weights. Every adapter parameter must sit in
    such a leaf (LoRA's A and B do); one held directly by a LoRALinear (DoRA's magnitude) cannot
    be sharded this way, and is refused.
    """
    adapter = {id(p) for p in lora_parameters(model)}
    leaves, covered = set(), set()
    for m in model.modules():
        own = list(m.parameters(recurse=False))
        if not list(m.children()) and own and all(id(p) in adapter for p in own):
            leaves.add(id(m))
            covered |= {id(p) for p in own}
    stray = [n for n, p in model.named_parameters() if id(p) in adapter and id(p) not in covered]
    if stray:
        raise ConfigError(f"train.distributed fsdp: adapter parameter {stray[0]} is not in a module of its own "
                          "(FSDP shards modules of one dtype); use ddp or allreduce")
    return leaves


def wrap_fsdp(loss_model: nn.Module, device: torch.device) -> nn.Module:
    """Shard `loss_model` over all processes with FSDP (train.distributed fsdp): QLoRA beyond one GPU's memory.

    FSDP flattens each unit's parameters into one tensor and gives each process a slice; a
    unit's whole weights exist only while it runs. The units: every decoder layer (its 4-bit
    weights stored as bf16, model.quant_storage, beside bf16 norms), every adapter leaf
    (float32, trainable), the embeddings, the head, and the root (the final norm).
    use_orig_params keeps the original adapter parameter objects (each holding its slice), so
    the optimizer, LoRA+ groups and clipping work on them as without FSDP;
    `full_adapter_parameters` gathers them for saving.
    """
    from torch.distributed.fsdp import FullyShardedDataParallel as FSDP
    from torch.distributed.fsdp import ShardingStrategy
    from torch.distributed.fsdp.wrap import lambda_auto_wrap_policy, transformer_auto_wrap_policy

    model = loss_model.model
    layer_classes = {type(layer) for layer in model.get_decoder().layers}
    # The embeddings and head in units of their own, so that they too are whole only while they
    # run (the root unit stays whole from forward to backward). Tied ones (one weight in two
    # modules) must stay together, in the root.
    emb, head = model.get_input_embeddings(), model.get_output_embeddings()
    tied = emb is not None and head is not None and head.weight is emb.weight
    own = _adapter_leaves(model) | (set() if tied else {id(emb), id(head)})
    policy = fsdp_or_policy([
        functools.partial(lambda_auto_wrap_policy, lambda_fn=lambda m: id(m) in own),
        functools.partial(transformer_auto_wrap_policy, transformer_layer_cls=layer_classes),
    ])
    return FSDP(loss_model, auto_wrap_policy=policy, sharding_strategy=ShardingStrategy.FULL_SHARD,
                use_orig_params=True, device_id=device if device.type == "cuda" else torch.device("cpu"),
                limit_all_gathers=True, sync_module_states=False)


@contextlib.contextmanager
def full_adapter_parameters(fsdp: nn.Module | None) -> Iterator[None]:
    """Inside, every adapter parameter holds its whole tensor on every process (FSDP gathers each adapter unit).

    Collective: all processes enter it. Without FSDP it does nothing. Only the adapter units are
    gathered, never the base: saving an adapter of a large model costs megabytes, not the model.
    """
    from torch.distributed.fsdp import FullyShardedDataParallel as FSDP

    with contextlib.ExitStack() as stack:
        if fsdp is not None:
            leaves = _adapter_leaves(fsdp.module.model)
            for unit in FSDP.fsdp_modules(fsdp):
                if unit is not fsdp and id(unit.module) in leaves:
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
