"""How several processes share a step (train.distributed), and clipping over what they share.

- ddp:       accelerate's DistributedDataParallel; adapter gradients all-reduced in buckets
             during backward.
- allreduce: no wrapper; one all-reduce of the flat adapter gradients after the step's
             backward (all_reduce_gradients): what CUDA graphs allow, since DDP's hooks
             cannot be captured.
- fsdp:      FSDP2 (fully_shard): every parameter sharded over the processes, a decoder
             layer's base weights and its adapter weights in one unit (wrap_fsdp), each
             unit sharded as soon as the load has built it (ShardWhileLoading), so that no
             process ever holds the whole model.
With one process all three are the same plain module. `wrap_for_processes` picks one;
the loop only sees the returned `Wrapped`.
"""
from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn

from lora import AdapterError, LoRAConfig, inject_lora, lora_parameters
from lora.io import adapter_params, read_adapter
from quant.memory import held_slice
from training.config import Config, lora_config_of
from training.errors import ConfigError
from training.runlog import tracker
from utils.compat import fsdp2


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


def wrap_fsdp(loss_model: nn.Module, device: torch.device) -> nn.Module:
    """Shard `loss_model` over all processes with FSDP2 (train.distributed fsdp): QLoRA beyond one GPU's memory.

    fully_shard shards every parameter on its first dimension, each process keeping one slice
    (a DTensor); a unit's whole weights exist only while it runs. The units (fsdp_units): every
    decoder layer (its 4-bit weights, norms and LoRA A and B together, whatever their dtypes), the
    embeddings, the head, and the root (the final norm). Units already sharded while loading
    (ShardWhileLoading, what train.py does) are left as they are; the root is sharded here, last.
    Parameters keep their stored dtypes (param_dtype None): bf16 compute comes from the same
    autocast as on one process, the adapter and its optimizer state stay fp32, and packed 4-bit
    bytes are never cast (a cast of fp32 storage to bf16 would silently destroy the weights:
    loss 0 or NaN norms). Integer (uint8) storage is refused in one line: torch 2.11's FSDP2
    cannot shard it (resolve stores 4-bit weights in the compute dtype under fsdp). Gradients
    are reduce-scattered in fp32. Each unit's adapter is made identical on every process first,
    since each process keeps its slice of its own copy.
    """
    model = loss_model.model
    refuse_packed_storage(model)
    sharded = [p for p in model.parameters() if _is_sharded(p)]
    mesh = sharded[0].device_mesh if sharded else fsdp_mesh(device)
    for unit in fsdp_units(model):
        if not _is_sharded(next(unit.parameters())):
            shard_unit(unit, mesh)
    shard_unit(loss_model, mesh)
    return loss_model


def fsdp_mesh(device: torch.device):
    """The one-dimensional device mesh of all processes, on `device`'s type."""
    import torch.distributed as dist
    from torch.distributed.device_mesh import init_device_mesh

    return init_device_mesh(device.type, (dist.get_world_size(),))


def fsdp_units(model: nn.Module) -> list[nn.Module]:
    """The modules FSDP2 shards as units of their own: the embeddings and the head, then every decoder layer.

    The embeddings and head are units so that they too are whole only while they run (the root
    stays whole from forward to backward); tied ones (one weight in two modules) stay together,
    in the root. They come first so that a load sharding unit by unit holds them whole (bf16,
    2.1 GB each for Llama 3.1 70B) while it holds the fewest slices.
    """
    emb, head = model.get_input_embeddings(), model.get_output_embeddings()
    tied = emb is not None and head is not None and head.weight is emb.weight
    return [m for m in (emb, head) if m is not None and not tied] + list(model.get_decoder().layers)


def refuse_packed_storage(model: nn.Module) -> None:
    """ConfigError in one line when a parameter is stored as integers (uint8 4-bit): FSDP2 shards floats only."""
    packed = [n for n, p in model.named_parameters() if not p.dtype.is_floating_point]
    if packed:
        raise ConfigError(f"train.distributed fsdp: {packed[0]} is stored as {model.get_parameter(packed[0]).dtype}, "
                          "which FSDP2 cannot shard (torch 2.11); set model.quant_storage to the compute dtype")


def shard_unit(unit: nn.Module, mesh) -> None:
    """fully_shard `unit` over `mesh`, its LoRA first made process 0's (each process keeps a slice of its own copy).

    No parameter cast (param_dtype None), gradients reduce-scattered in fp32 (see wrap_fsdp).
    """
    fully_shard, MixedPrecisionPolicy = fsdp2()
    broadcast_parameters([p for p in lora_parameters(unit) if not _is_sharded(p)])
    fully_shard(unit, mesh=mesh, mp_policy=MixedPrecisionPolicy(param_dtype=None, reduce_dtype=torch.float32))


def shard_while_loading(cfg: Config, accelerator, layer_class) -> ShardWhileLoading | None:
    """load_base_model's `on_unit` for this run: ShardWhileLoading under fsdp with several processes, else None."""
    if cfg.train.distributed != "fsdp" or accelerator.num_processes == 1:
        return None
    return ShardWhileLoading(accelerator.device, lora_config_of(cfg), layer_class)


class ShardWhileLoading:
    """load_base_model's `on_unit` under fsdp: each process builds only the slices it holds, never the whole model.

    The loader builds the units (fsdp_units) one at a time (quant.layerwise) and hands each over
    as soon as it is quantized; here the unit gets its LoRA (inject_lora within the unit: layer by
    layer, the draws one whole-model injection makes, so the adapter starts as on one process),
    made process 0's, and the unit is sharded: all but this process's slice is freed before the
    next unit is read. Per process the load peaks at its slices of the units so far plus one whole
    unit, against the whole 4-bit model without it. The LoRA comes frozen with the rest of the
    loaded model: train.py's add_adapter makes it trainable (and copies a checkpoint's weights in).
    A model loaded whole (16-bit, or a folder without safetensors) is handed over unit by unit
    after its load: the same units, LoRA and slices, without the memory saving.
    """

    def __init__(self, device: torch.device, lora_config, layer_class) -> None:
        self.mesh = fsdp_mesh(device)
        self.lora_config, self.layer_class = lora_config, layer_class

    def units(self, model: nn.Module) -> list[nn.Module]:
        """The units to build one by one; refuses packed uint8 storage and targets naming no layer first."""
        from quant import check_projections

        refuse_packed_storage(model)
        check_projections(model, self.lora_config.target_modules)  # names the model's Linear layers if none match
        return fsdp_units(model)

    def __call__(self, model: nn.Module, unit: nn.Module) -> None:
        """The unit's LoRA, then its slices."""
        inject_lora(model, self.lora_config, self.layer_class, within=unit)
        shard_unit(unit, self.mesh)


def load_adapter_values(model: nn.Module, path: Path) -> LoRAConfig:
    """The weights of the adapter folder `path` into the model's LoRA layers, sharded ones included (each process
    copies its slice of each, from its own read of the file); returns the adapter's config. One-line AdapterError
    when its keys or shapes are not the model's."""
    from torch.distributed.tensor import distribute_tensor

    config, tensors = read_adapter(path)
    params = adapter_params(model)
    odd = sorted(params.keys() ^ tensors.keys()) or [k for k in params if tuple(tensors[k].shape) != params[k].shape]
    if odd:
        raise AdapterError(f"adapter {path} does not fit this model's LoRA layers ({odd[0]}): it was trained on "
                           "another base or with other lora settings")
    with torch.no_grad():
        for key, p in params.items():
            value = tensors[key].to(held_slice(p).device, p.dtype)
            if _is_sharded(p):  # FSDP2's slices are torch.chunk's, as Shard(0)'s: each process takes its own
                value = distribute_tensor(value, p.device_mesh, p.placements, src_data_rank=None)
            p.copy_(value)
    return config


@contextlib.contextmanager
def no_gradient_sync(accelerator, model: nn.Module) -> Iterator[None]:
    """Inside, backward passes keep their gradients local (a step's micro-batches but the last).

    FSDP2 (fully_shard) modules skip their reduce-scatter and accumulate whole adapter gradients
    until the last micro-batch's backward reduces the sum once; accelerate's no_sync knows FSDP2
    only where it wrapped the model itself. Anything else: accelerate's no_sync (DDP's, or nothing).
    """
    if hasattr(model, "set_requires_gradient_sync"):
        model.set_requires_gradient_sync(False)
        try:
            yield
        finally:
            model.set_requires_gradient_sync(True)
    else:
        with accelerator.no_sync(model):
            yield


def _is_sharded(tensor: torch.Tensor) -> bool:
    from torch.distributed.tensor import DTensor

    return isinstance(tensor, DTensor)


@contextlib.contextmanager
def full_adapter_parameters(fsdp: nn.Module | None) -> Iterator[None]:
    """Inside, every adapter parameter holds its whole tensor on every process (each gathered from its slices).

    Collective: all processes enter it. Without FSDP it does nothing. Only the adapter
    parameters are gathered, never the base: saving an adapter of a large model costs megabytes.
    """
    swapped: list[tuple[nn.Module, str, nn.Parameter]] = []
    try:
        if fsdp is not None:
            adapter = {id(p) for p in lora_parameters(fsdp.model)}
            for module in fsdp.modules():  # the same order on every process: the gathers pair up
                for name, p in list(module.named_parameters(recurse=False)):
                    if id(p) in adapter and _is_sharded(p):
                        setattr(module, name, nn.Parameter(p.full_tensor(), requires_grad=False))
                        swapped.append((module, name, p))
        yield
    finally:
        for module, name, p in swapped:
            setattr(module, name, p)


def local_optimizer_state(optimizer) -> dict:
    """optimizer.state_dict() with each sharded tensor replaced by this process's slice: plain tensors, which
    torch.load(weights_only=True) reads back (FSDP's checkpoints keep one such file per process)."""
    state = optimizer.state_dict()
    state["state"] = {i: {k: v.to_local() if _is_sharded(v) else v for k, v in moments.items()}
                      for i, moments in state["state"].items()}
    return state


def load_local_optimizer_state(optimizer, state: dict, source: str) -> None:
    """Load what local_optimizer_state saved: each slice becomes a shard of its parameter again.

    ValueError naming `source` when a slice does not fit its parameter's (another number of
    processes, or FSDP1's flat slices).
    """
    from torch.distributed.tensor import DTensor

    params = [p for group in optimizer.param_groups for p in group["params"]]
    for i, moments in state["state"].items():
        p = params[i] if isinstance(i, int) and i < len(params) else None
        if p is None or not _is_sharded(p):
            continue
        for k, v in moments.items():
            if not isinstance(v, torch.Tensor) or v.dim() == 0:
                continue  # the step count: one number on every process
            if v.shape != p.to_local().shape:
                raise ValueError(f"{source}: a slice of shape {tuple(v.shape)} for a parameter whose slice here is "
                                 f"{tuple(p.to_local().shape)}: it was sharded another way")
            moments[k] = DTensor.from_local(v.to(p.device), p.device_mesh, p.placements, run_check=False,
                                            shape=p.shape, stride=p.stride())
    optimizer.load_state_dict(state)


def clip_gradients(accelerator, params: list[nn.Parameter], max_norm: float, fsdp: nn.Module | None = None) -> float:
    """Clip the global gradient norm to max_norm (0 = no clipping); return the norm before clipping.

    With FSDP each process holds a slice of every gradient: the norm is summed over all slices.
    """
    if fsdp is not None:
        norm = torch.nn.utils.get_total_norm([p.grad for p in params if p.grad is not None])
        norm = norm.full_tensor() if _is_sharded(norm) else norm
        if max_norm > 0:
            torch.nn.utils.clip_grads_with_norm_(params, max_norm, norm)
        return float(norm)
    if max_norm > 0:
        return float(accelerator.clip_grad_norm_(params, max_norm))
    grads = [p.grad.float().norm() for p in params if p.grad is not None]
    return float(torch.stack(grads).norm()) if grads else 0.0
