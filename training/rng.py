"""Random-number state as plain data: JSON for Python's and numpy's generators, tensors for torch's.

A checkpoint stores every process's state so that a resumed run draws the same dropout masks
as an uninterrupted one. Nothing here is pickled, so reading a checkpoint never runs code.
"""
from __future__ import annotations

import json
import random
from pathlib import Path
from typing import Any

import numpy as np
import torch
from safetensors.torch import load_file, save_file

from utils.atomic import atomic_write_text


def capture() -> dict[str, Any]:
    """This process's RNG state: {"python": [...], "numpy": [...], "torch": uint8 tensor, "cuda": [tensors]}."""
    version, internal, gauss = random.getstate()
    kind, keys, pos, has_gauss, cached = np.random.get_state()
    state = {"python": [version, list(internal), gauss],
             "numpy": [kind, keys.tolist(), int(pos), int(has_gauss), float(cached)],
             "torch": torch.get_rng_state()}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def restore(state: dict[str, Any]) -> None:
    """Set this process's generators to a state from `capture` (CUDA only where there is a GPU)."""
    version, internal, gauss = state["python"]
    random.setstate((version, tuple(internal), gauss))
    kind, keys, pos, has_gauss, cached = state["numpy"]
    np.random.set_state((kind, np.array(keys, dtype=np.uint32), pos, has_gauss, cached))
    torch.set_rng_state(state["torch"])
    if state.get("cuda") and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def save(states: list[dict[str, Any]], folder: Path) -> None:
    """Write every process's state into folder/rng.json and folder/rng.safetensors."""
    tensors, plain = {}, []
    for rank, state in enumerate(states):
        tensors[f"{rank}.torch"] = state["torch"].clone()
        for i, t in enumerate(state.get("cuda", [])):
            tensors[f"{rank}.cuda.{i}"] = t.clone()
        plain.append({"python": state["python"], "numpy": state["numpy"], "cuda": len(state.get("cuda", []))})
    save_file(tensors, folder / "rng.safetensors")
    atomic_write_text(folder / "rng.json", json.dumps(plain))


def load(folder: Path) -> list[dict[str, Any]]:
    """The per-process states `save` wrote (ValueError or OSError when the files are damaged)."""
    plain = json.loads((folder / "rng.json").read_text())
    tensors = load_file(folder / "rng.safetensors")
    if not isinstance(plain, list) or not all(isinstance(p, dict) for p in plain):
        raise ValueError("rng.json is not a list of per-process states")
    return [{"python": p["python"], "numpy": p["numpy"], "torch": tensors[f"{rank}.torch"],
             "cuda": [tensors[f"{rank}.cuda.{i}"] for i in range(p["cuda"])]} for rank, p in enumerate(plain)]
