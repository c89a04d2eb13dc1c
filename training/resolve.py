"""The one place a config is adjusted to the world it runs in: the number of processes, the device
and the checkpoint it resumes. Each adjustment is said (through `say`), and a resume's changes
against the checkpoint's config are returned, so the saved config.yaml is what actually ran."""
from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any

from training.changes import compare, describe
from training.config import Config
from training.errors import ConfigError


def _distributed(cfg: Config, world: int, device_type: str) -> tuple[Config, list[str]]:
    t, notes = cfg.train, []
    if t.cuda_graphs and device_type != "cuda":
        raise ConfigError("train.cuda_graphs needs a CUDA GPU; set --train.cuda_graphs false on CPU")
    if t.cuda_graphs and world > 1 and t.distributed == "ddp":
        notes.append("note: DDP's gradient hooks cannot run inside CUDA graphs; using train.distributed allreduce "
                     "(one all-reduce of the LoRA gradients after each step's backward)")
        cfg = dataclasses.replace(cfg, train=dataclasses.replace(t, distributed="allreduce"))
    if t.distributed == "fsdp" and world > 1 and t.optimizer != "adamw":
        raise ConfigError(f"train.optimizer {t.optimizer} cannot step FSDP2's sharded parameters (bitsandbytes' "
                          "optimizers take plain tensors, not DTensors); with train.distributed fsdp use adamw")
    m = cfg.model
    if cfg.train.distributed == "fsdp" and m.bits == 4 and m.quant_storage in (None, "uint8"):
        notes.append(f"note: fsdp stores the 4-bit weights as {m.compute_dtype} (model.quant_storage): FSDP2 "
                     "shards floating-point tensors only (torch 2.11)")
        cfg = dataclasses.replace(cfg, model=dataclasses.replace(m, quant_storage=m.compute_dtype))
    return cfg, notes


def _resumed(cfg: Config, world: int, state: dict[str, Any], checkpoint: Path) -> tuple[Config, list[str]]:
    t, notes = cfg.train, []
    was = state.get("distributed", "ddp")
    if (t.distributed == "fsdp" or was == "fsdp") and (was != t.distributed or state["world_size"] != world):
        raise ConfigError(f"checkpoint {checkpoint} was written by {state['world_size']} process(es) with "
                          f"train.distributed {was}; its optimizer state is split that way, so resume it with the "
                          "same number of processes and the same train.distributed")
    from training.checkpoint import FSDP_VERSION

    if was == "fsdp" and state["world_size"] > 1 and state.get("fsdp_version") != FSDP_VERSION:
        raise ConfigError(f"checkpoint {checkpoint} was written by FSDP1 (pricer before FSDP2), whose optimizer "
                          "slices are flat; FSDP2 cannot resume them: start a new run, or resume with that pricer")
    if state["global_batch"] != t.batch_size * t.grad_accum * world:
        per_accum = t.batch_size * world
        if state["global_batch"] % per_accum:
            raise ConfigError(
                f"checkpoint {checkpoint} was trained with global batch {state['global_batch']}; with {world} "
                f"processes x batch_size {t.batch_size} no grad_accum gives it: set --train.batch_size so that "
                f"batch_size * {world} divides {state['global_batch']}")
        notes.append(f"resume: global batch {state['global_batch']} kept with {world} process(es) x batch "
                     f"{t.batch_size} x grad_accum {state['global_batch'] // per_accum} "
                     f"(config said grad_accum {t.grad_accum})")
        cfg = dataclasses.replace(cfg, train=dataclasses.replace(t, grad_accum=state["global_batch"] // per_accum))
    return cfg, notes


def _saved_config(checkpoint: Path) -> Config:
    from training.checkpoint import CheckpointError
    from training.parse import load_config

    path = checkpoint / "config.yaml"
    if not path.is_file():
        raise CheckpointError(f"{path} is missing: the checkpoint does not say how it was trained")
    try:
        return load_config(path)
    except ConfigError as e:
        raise CheckpointError(f"{path} is not a valid config ({e})") from None


def resolve(cfg: Config, world: int, device_type: str, state: dict[str, Any] | None = None,
            checkpoint: Path | None = None, say=print) -> tuple[Config, list[dict[str, Any]]]:
    """(the config as this run will use it, every change a resume made so far); each adjustment is said
    (through `say`) with its reason; or ConfigError.

    - CUDA graphs need a GPU; with several processes they need train.distributed allreduce
      (DDP's hooks cannot be captured), which replaces ddp.
    - FSDP2 shards floating-point tensors only: 4-bit weights are stored in the compute dtype;
      bitsandbytes' optimizers cannot step its sharded parameters: refused, adamw named.
    - A resumed run keeps the checkpoint's global batch (the data position depends on it),
      restating grad_accum for this number of processes; FSDP's per-process optimizer
      slices need the same processes and mode.
    - A resumed run may change only training.changes.MAY_CHANGE's keys; each change is said
      (`train.lr: 0.0002 -> 0.0001 from step 6`) and added to the checkpoint's earlier changes.
    """
    cfg, notes = _distributed(cfg, world, device_type)
    history: list[dict[str, Any]] = []
    if state is not None:
        cfg, more = _resumed(cfg, world, state, checkpoint)
        notes += more
        changes = compare(_saved_config(checkpoint), cfg, state["step"], checkpoint)
        notes += [describe(change) for change in changes]
        history = [c for c in state.get("changes") or [] if isinstance(c, dict) and
                   {"key", "from", "to", "step"} <= c.keys()] + changes
    for note in notes:
        say(note)
    return cfg, history
