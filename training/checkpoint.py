"""Checkpoints: written atomically, read without unpickling, checked before a run resumes from one.

    <output_dir>/checkpoints/step-N/
        adapter/                 the LoRA weights (peft format)
        optimizer.pt             optimizer state (FSDP: optimizer-rank<R>.pt, each process's slices)
        scheduler.pt             learning-rate schedule position
        rng.json, rng.safetensors    every process's random-number state (training.rng)
        trainer_state.json       step, examples seen, batch geometry, the data's fingerprint
        config.yaml              the resolved config

A checkpoint appears whole or not at all (written into .tmp-step-N, then renamed); a save that
fails (a full disk) removes its temporary folder and says what to do. Every .pt file is read
with `torch.load(weights_only=True)`, which refuses anything but tensors and plain containers,
so a tampered checkpoint cannot run code. `--resume latest` takes the newest checkpoint whose
files are all present and readable, noting each damaged one it passes over.
"""
from __future__ import annotations

import json
import os
import pickle
import re
import shutil
from collections import Counter
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError

from lora import AdapterError, save_adapter
from lora.io import TRAINING_CONFIG_NAME, read_adapter
from quant import canonical_name
from training import rng
from training.best import copy_best, restore_best
from training.card import model_card
from training.config import Config, config_yaml
from training.errors import ConfigError
from training.parallel import full_adapter_parameters, load_local_optimizer_state, local_optimizer_state
from utils.atomic import atomic_folder, public_modes
from utils.move_aside import move_aside

STATE = "trainer_state.json"
FSDP_VERSION = 2     # trainer_state.json's fsdp_version: FSDP2's per-parameter slices (FSDP1's were flat)
MAX_STEP = 2 ** 31   # far beyond any run's steps, batch or processes; a larger number in trainer_state.json is damage


class CheckpointError(RuntimeError):
    """A checkpoint that cannot be written or read; the message names the file and what to do."""


class CheckpointSaveError(CheckpointError):
    """A checkpoint save that failed; `why` is the reason in a few words (File too large, No space left)."""

    def __init__(self, message: str, why: str) -> None:
        super().__init__(message)
        self.why = why


def _first_line(error: BaseException) -> str:
    lines = [ln.strip() for ln in str(error).splitlines() if ln.strip()]
    return lines[0] if lines else type(error).__name__


def _steps(root: Path) -> list[Path]:
    """checkpoints/step-N folders, oldest first."""
    return sorted((p for p in root.glob("step-*") if p.name[5:].isdigit()), key=lambda p: int(p.name[5:]))


def _optimizer_files(state: dict[str, Any]) -> list[str]:
    if state.get("distributed") == "fsdp" and state.get("world_size", 1) > 1:
        return [f"optimizer-rank{r}.pt" for r in range(state["world_size"])]
    return ["optimizer.pt"]


def _gather_objects(accelerator, obj: Any) -> list[Any]:
    if accelerator.num_processes == 1:
        return [obj]
    from accelerate.utils import gather_object

    return gather_object([obj])


def save_checkpoint(accelerator, root: Path, step: int, model, optimizer, scheduler, state: dict[str, Any],
                    cfg: Config, fsdp=None) -> Path:
    """Write checkpoints/step-N/ atomically and keep the last train.keep_last; returns its path.

    Collective: every process calls it. With FSDP every process writes its slice of the optimizer
    state, and the adapter's units are gathered for the adapter file. CheckpointError when a
    write fails (nothing half-written is left behind).
    """
    rng_states = _gather_objects(accelerator, rng.capture())
    final, tmp = root / f"step-{step}", root / f".tmp-step-{step}"
    sharded = fsdp is not None
    try:
        if accelerator.is_main_process:
            shutil.rmtree(tmp, ignore_errors=True)
            tmp.mkdir(parents=True)
        accelerator.wait_for_everyone()
        if sharded:  # this process's slices, as plain tensors; trainer_state.json says how they were cut
            state = {**state, "fsdp_version": FSDP_VERSION}
            torch.save(local_optimizer_state(optimizer), tmp / f"optimizer-rank{accelerator.process_index}.pt")
        with full_adapter_parameters(fsdp):
            if accelerator.is_main_process:
                save_adapter(model, tmp / "adapter", base_model_name_or_path=canonical_name(cfg.model.name))
        accelerator.wait_for_everyone()
        if accelerator.is_main_process:
            _write_rest(tmp, final, optimizer, scheduler, rng_states, state, cfg, sharded)
    except (OSError, SafetensorError, RuntimeError) as e:
        shutil.rmtree(tmp, ignore_errors=True)
        last = _steps(root)
        why = _why(e)
        raise CheckpointSaveError(f"could not save checkpoint {final} ({why}); check free disk space, then continue "
                                  f"with --resume latest (the last saved checkpoint is {last[-1] if last else 'none'})",
                                  why) from None
    if accelerator.is_main_process:
        prune(root, step, cfg.train.keep_last)
    accelerator.wait_for_everyone()
    return final


def _why(error: BaseException) -> str:
    """Why a write failed, in a few words (the OS's reason when there is one)."""
    why = error.strerror if isinstance(error, OSError) and error.strerror else _first_line(error)[-120:]
    if code := re.search(r"\(os error (\d+)\)", why):   # safetensors' writer: "I/O error: ... (os error 27)"
        why = os.strerror(int(code.group(1)))
    if "unexpected pos" in why:   # torch.save's writer, cut off by a full disk or a file-size limit
        why = "a file stopped part-way through its write"
    return why


def _remove(path: Path) -> None:
    """Remove a checkpoint folder; one that is a symbolic link loses the link only, never the files it points to."""
    if path.is_symlink():
        path.unlink()
    elif path.exists():
        shutil.rmtree(path)


def prune(root: Path, step: int, keep_last: int) -> None:
    """Remove all but the newest `keep_last` checkpoints up to step-`step`, the one just written, which stays."""
    older = [p for p in _steps(root) if int(p.name[5:]) < step]
    for old in older[:max(0, len(older) - (keep_last - 1))]:
        _remove(old)


def set_aside_later(root: Path, step: int) -> str | None:
    """Move checkpoints after `step` (a run resumed from an earlier one abandons them) to root/abandoned-<time>/,
    where neither `--resume latest` nor keep_last pruning looks; returns a note, or None when there were none."""
    later = [p for p in _steps(root) if int(p.name[5:]) > step]
    if not later:
        return None
    aside = move_aside(later, root / "abandoned")
    return (f"note: resuming from step {step}: moved the later checkpoints {', '.join(p.name for p in later)} "
            f"(of the run this one replaces) to {aside}; --resume latest no longer picks them")


def _write_rest(tmp: Path, final: Path, optimizer, scheduler, rng_states: list, state: dict, cfg: Config,
                sharded: bool) -> None:
    if not sharded:
        torch.save(optimizer.state_dict(), tmp / "optimizer.pt")
    torch.save(scheduler.state_dict(), tmp / "scheduler.pt")
    rng.save(rng_states, tmp)
    copy_best(final.parent.parent, tmp)
    (tmp / "config.yaml").write_text(config_yaml(cfg, state.get("changes", [])))
    (tmp / STATE).write_text(json.dumps(state, indent=2))
    public_modes(tmp)
    _remove(final)
    tmp.rename(final)


def _load_pt(path: Path, map_location: Any = "cpu", mmap: bool = False) -> Any:
    """torch.load(weights_only=True) with one-line CheckpointErrors naming the file."""
    if not path.is_file():
        raise CheckpointError(f"{path} is missing")
    try:
        return torch.load(path, map_location=map_location, weights_only=True, mmap=mmap)
    except pickle.UnpicklingError:
        raise CheckpointError(f"{path} holds objects other than tensors and numbers; refused, since loading it "
                              "could run code (torch.load weights_only)") from None
    except (RuntimeError, OSError, EOFError, ValueError) as e:
        raise CheckpointError(f"{path} is damaged ({_first_line(e)[:160]})") from None


def read_state(checkpoint: Path) -> dict[str, Any]:
    """trainer_state.json as a dict, or CheckpointError naming the file."""
    path = checkpoint / STATE
    try:
        state = json.loads(path.read_text())
    except FileNotFoundError:
        raise CheckpointError(f"{path} is missing: {checkpoint} is not a checkpoint folder") from None
    except (OSError, ValueError) as e:
        raise CheckpointError(f"{path} is damaged ({_first_line(e)})") from None
    need = ("step", "global_batch", "world_size")
    if not isinstance(state, dict) or not all(_is_int(state.get(k)) for k in need):
        raise CheckpointError(f"{path} lacks the integers {', '.join(need)}: it is damaged")
    seen = state.get("examples_seen", state["step"] * state["global_batch"])
    wrong = [f"{k} {state[k]}" for k, least in (("step", 0), ("global_batch", 1), ("world_size", 1))
             if not least <= state[k] <= MAX_STEP]
    if not wrong and (not _is_int(seen) or seen != state["step"] * state["global_batch"]):
        wrong = [f"examples_seen {seen!r} (step x global_batch is {state['step'] * state['global_batch']})"]
    if wrong:
        raise CheckpointError(f"{path} says {wrong[0]}, which no run writes: it is damaged or edited; resume from "
                              "another checkpoint")
    return state


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def verify(checkpoint: Path, fingerprint: dict[str, Any] | None = None) -> dict[str, Any]:
    """The checkpoint's state after reading every file it needs; CheckpointError naming a bad file.

    A checkpoint of other data (`fingerprint`: source, item count, split hash) is a ConfigError:
    resuming it would silently train on something else.
    """
    state = read_state(checkpoint)
    optimizers = {name: _load_pt(checkpoint / name, mmap=True) for name in _optimizer_files(state)}
    schedule = _load_pt(checkpoint / "scheduler.pt")
    if isinstance(schedule, dict) and _is_int(schedule.get("last_epoch")) and schedule["last_epoch"] != state["step"]:
        raise CheckpointError(f"{checkpoint}/scheduler.pt is at step {schedule['last_epoch']}, {STATE} at step "
                              f"{state['step']}: the files come from different saves; resume from another checkpoint")
    try:
        rng.load(checkpoint)
        _, tensors = read_adapter(checkpoint / "adapter")
    except (AdapterError, FileNotFoundError) as e:
        raise CheckpointError(f"{checkpoint}: {_first_line(e)}") from None
    except (OSError, ValueError, KeyError, TypeError, SafetensorError) as e:
        raise CheckpointError(f"{checkpoint}/rng.json or rng.safetensors is damaged ({_first_line(e)})") from None
    if "optimizer.pt" in optimizers:  # FSDP's per-process files hold flat slices, which have no adapter shapes
        _check_optimizer(checkpoint / "optimizer.pt", optimizers["optimizer.pt"], tensors)
    saved = state.get("data")
    if fingerprint is not None and isinstance(saved, dict) and any(
            saved.get(k) != fingerprint.get(k) for k in ("items", "split")):
        raise ConfigError(f"checkpoint {checkpoint} was trained on other data ({_describe(saved)}) than this run "
                          f"has ({_describe(fingerprint)}); resume with the same data settings or start a new run")
    return state


def _moment_shape(moments: Any) -> tuple[int, ...] | None:
    """The shape of a parameter's first moment (torch's exp_avg, bitsandbytes' state1); None before its first step."""
    for key in ("exp_avg", "state1"):
        if isinstance(moments, dict) and isinstance(moments.get(key), torch.Tensor):
            return tuple(moments[key].shape)
    return None


def _check_optimizer(path: Path, saved: Any, tensors: dict[str, torch.Tensor]) -> None:
    """CheckpointError unless `saved` (optimizer.pt) is the state of this adapter's parameters: per group (A side,
    then B side, as training.optim builds them) as many parameters, with the adapter's shapes."""
    groups = saved.get("param_groups") if isinstance(saved, dict) else None
    moments = saved.get("state") if isinstance(saved, dict) else None
    if (not isinstance(groups, list) or not isinstance(moments, dict)
            or not all(isinstance(g, dict) and isinstance(g.get("params"), list) for g in groups)):
        raise CheckpointError(f"{path} is not an optimizer state (no param_groups and state): it is damaged")
    b_side = [any(part.startswith("lora_B") for part in key.split(".")) for key in tensors]
    want = [Counter(tuple(t.shape) for t, b in zip(tensors.values(), b_side) if b == side) for side in (False, True)]
    got = [[_moment_shape(moments.get(i)) for i in g["params"]] for g in groups]
    counts = [len(shapes) for shapes in got]
    extra = [Counter(s for s in shapes if s is not None) - adapter for shapes, adapter in zip(got, want)]
    if counts != [sum(adapter.values()) for adapter in want] or any(extra):
        shapes = sorted(s for e in extra for s in e)
        raise CheckpointError(
            f"{path} is the optimizer state of {' + '.join(map(str, counts)) or 'no'} parameters"
            + (f" (shapes such as {list(shapes[0])} among them)" if shapes else "")
            + f", not of this checkpoint's adapter ({sum(want[0].values())} + {sum(want[1].values())}, A side + "
            "B side, of other shapes): it comes from another run or model; resume from another checkpoint")


def _describe(fingerprint: dict[str, Any]) -> str:
    return f"{fingerprint.get('source')}, {fingerprint.get('items')} items, split {fingerprint.get('split')}"


def pick_checkpoint(resume: str, output_dir: Path, fingerprint: dict[str, Any] | None = None,
                    say=print) -> tuple[Path, dict[str, Any]]:
    """(checkpoint folder, its state) for --resume: 'latest' (the newest intact one) or a path (checked)."""
    if resume != "latest":
        return Path(resume), verify(Path(resume), fingerprint)
    candidates = _steps(output_dir / "checkpoints")[::-1]
    if not candidates:
        raise CheckpointError(f"--resume latest: no checkpoint in {output_dir / 'checkpoints'}; "
                              "start without --resume")
    problems = []
    for checkpoint in candidates:
        try:
            state = verify(checkpoint, fingerprint)
        except CheckpointError as e:
            problems.append(str(e))
            say(f"note: skipping damaged checkpoint {checkpoint.name}: {e}")
            continue
        return checkpoint, state
    raise CheckpointError(f"--resume latest: no intact checkpoint in {output_dir / 'checkpoints'} "
                          f"({problems[0]}); start again without --resume")


def restore(checkpoint: Path, state: dict[str, Any], optimizer, accelerator, sharded: bool, seed: int,
            out: Path) -> str:
    """Load the optimizer and RNG states of `checkpoint` into this run, and its adapter-best into `out`, moving
    later checkpoints (of the run this one replaces) aside; returns a note. The schedule is not loaded: it is a
    function of the config and the step (training.optim.reschedule), and scheduler.pt only checks the step."""
    rank, world = accelerator.process_index, accelerator.num_processes
    # (Multi-process CPU runs name their device "cpu:0", which torch.load cannot map to.)
    where = accelerator.device if accelerator.device.type != "cpu" else "cpu"
    if sharded:
        path = checkpoint / f"optimizer-rank{rank}.pt"
        try:
            load_local_optimizer_state(optimizer, _load_pt(path, map_location=where), str(path))
        except ValueError as e:
            raise CheckpointError(f"{_first_line(e)}; resume from another checkpoint") from None
    else:
        optimizer.load_state_dict(_load_pt(checkpoint / "optimizer.pt", map_location=where))
    states = rng.load(checkpoint)
    note = f"resumed from {checkpoint} at step {state['step']} ({state.get('examples_seen', 0):,} examples seen)"
    if accelerator.is_main_process:
        restore_best(out, checkpoint)
        if aside := set_aside_later(out / "checkpoints", state["step"]):
            note += "\n" + aside  # checkpoints after this one belong to the run this one replaces
    if len(states) == world:
        rng.restore(states[rank])
    else:
        from accelerate.utils import set_seed

        set_seed(seed + 1000 * state["step"] + rank)
        note += f"; the checkpoint has {len(states)} process RNG states, this run {world}: reseeded dropout"
    return note


class AdapterSaver:
    """`saver(name, record)` writes <output_dir>/<name>/ (adapter, model card and the resolved config as
    training-config.yaml) atomically; collective (FSDP gathers the adapter first). `record` is the validation
    the card reports. The config travels with the adapter so that evaluate.py and predict.py, given the
    folder alone (copied out of its run), still price with the bits, prompt length and split it trained on."""

    def __init__(self, accelerator, model, out: Path, cfg: Config, fsdp, data: dict[str, Any],
                 changes: list[dict[str, Any]] = ()) -> None:
        self.accelerator, self.model, self.out, self.cfg = accelerator, model, out, cfg
        self.fsdp, self.data, self.changes = fsdp, data, list(changes)

    def __call__(self, name: str, record: dict[str, Any] | None = None) -> Path:
        folder = self.out / name
        with full_adapter_parameters(self.fsdp):
            if self.accelerator.is_main_process:
                title = self.cfg.log.run_name or self.out.resolve().name
                with atomic_folder(folder, replace=True) as tmp:
                    save_adapter(self.model, tmp, base_model_name_or_path=canonical_name(self.cfg.model.name))
                    card = model_card(self.cfg, title if name == "adapter" else f"{title} ({name})", record or {},
                                      self.data, self.changes)
                    (tmp / "README.md").write_text(card)
                    (tmp / TRAINING_CONFIG_NAME).write_text(config_yaml(self.cfg, self.changes))
        self.accelerator.wait_for_everyone()
        return folder

    def final(self, step: int, optimizer, scheduler, position: dict[str, Any], last_saved: Path | None,
              record: dict[str, Any] | None, say=print) -> Path:
        """<output_dir>/adapter at the end of training, after a checkpoint of the final step (unless the last save
        was of it), so that an adapter that cannot be written loses no training: CheckpointError then says how
        to get it. Single-process for the failure paths, like save_checkpoint."""
        root = self.out / "checkpoints"
        final, missed = root / f"step-{step}", None
        if not (last_saved is not None and last_saved.is_dir() and final.is_dir()
                and os.path.samefile(last_saved, final)):
            try:
                save_checkpoint(self.accelerator, root, step, self.model, optimizer, scheduler, position, self.cfg,
                                self.fsdp)
            except CheckpointSaveError as e:
                missed = e.why
        try:
            adapter = self("adapter", record)
        except (OSError, SafetensorError) as e:
            raise CheckpointError(self._lost(step, _why(e), missed)) from None
        if missed:
            say(f"note: the adapter is saved, but not a checkpoint of step {step} ({missed}), so training cannot "
                f"be continued from step {step}")
        return adapter

    def _lost(self, step: int, why: str, missed: str | None) -> str:
        """The one line for an adapter that could not be written: where the training is and how to get it."""
        command = f"python train.py --config {self.out / 'config.yaml'}"
        if not missed:
            return (f"could not write the adapter ({why}); the trained state is in {self.out / 'checkpoints'}"
                    f"/step-{step}: free space, then `{command} --resume latest` writes the adapter without "
                    "training again")
        kept = _steps(self.out / "checkpoints")
        if not kept:
            return (f"could not write the adapter ({why}) nor a checkpoint of step {step} ({missed}): all {step} "
                    f"steps are lost; free space, then train again with `{command} --overwrite`")
        return (f"could not write the adapter ({why}) nor a checkpoint of step {step} ({missed}): the "
                f"{step - int(kept[-1].name[5:])} steps after {kept[-1]} are lost; free space, then "
                f"`{command} --resume latest` continues from it")
