"""The output folder of a run: a fresh run never mixes with, nor destroys, an earlier one.

A fresh run into a folder that holds an earlier run's files is refused, naming the two ways on:
`--resume latest` continues that run; `--overwrite` starts afresh after moving the earlier run's
files (metrics, checkpoints, adapter, config, plots) into a sibling folder with a unique name.
Refusing catches the common slip (a forgotten --resume) before any work is done; moving rather
than deleting means that even --overwrite loses nothing. Files that are not a run's are left alone.
"""
from __future__ import annotations

import contextlib
import json
import os
from pathlib import Path
from typing import Any

from training.config import Config, config_yaml
from training.errors import ConfigError
from utils.atomic import atomic_write_text
from utils.move_aside import move_aside
from utils.provenance import provenance

RUN_FILES = ("metrics.jsonl", "config.yaml", "checkpoints", "adapter", "adapter-best", "curves.png", "run.json")


def claim_output_dir(out: Path, resume: bool, overwrite: bool) -> str | None:
    """Make `out` ready for this run (main process only); returns a note when an earlier run was moved aside."""
    if out.exists() and not out.is_dir():
        raise ConfigError(f"output_dir {out} is a file, not a folder: pass a new or existing folder")
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise ConfigError(f"cannot make output_dir {out} ({e.strerror}): pass a folder you can write to") from None
    used = [name for name in RUN_FILES if (out / name).exists() or (out / name).is_symlink()]
    if not used or resume:
        return None
    if not overwrite:
        raise ConfigError(f"{out} holds an earlier run ({', '.join(used)}): continue it with --resume latest, or "
                          "start afresh with --overwrite (the earlier run is moved aside, not deleted)")
    aside = move_aside([out / name for name in used], out.with_name(f"{out.name}.previous"))
    return f"note: --overwrite: moved the earlier run's {', '.join(used)} from {out} to {aside}"


def write_run_files(out: Path, cfg: Config, accelerator, changes: list[dict[str, Any]] = ()) -> None:
    """config.yaml (the resolved config, loadable with --config, headed by a resume's changes) and run.json
    (code, versions, device, the changes); main process."""
    if accelerator.is_main_process:
        atomic_write_text(out / "config.yaml", config_yaml(cfg, changes))
        record = provenance(accelerator.device, accelerator.num_processes)
        atomic_write_text(out / "run.json", json.dumps(record | ({"changes": list(changes)} if changes else {}),
                                                       indent=2) + "\n")


def truncate_metrics(path: Path, step: int) -> None:
    """Drop metrics of steps after `step` (written before an interrupt), so a resumed run's log reads straight."""
    if not path.exists():
        return
    rows = []
    for line in path.read_text().splitlines():
        try:
            row = json.loads(line)
        except ValueError:
            continue  # a line cut by a crash mid-write
        if isinstance(row, dict) and isinstance(row.get("step"), int) and row["step"] <= step:
            rows.append(line)
    atomic_write_text(path, "".join(row + "\n" for row in rows))


def run_name(folder: str | os.PathLike) -> str:
    """A run folder's name as train.py gives it (RunLog): its config.yaml's log.run_name, else the folder's name
    (also when config.yaml is missing or unreadable: a folder still has a name)."""
    from utils.bounded_yaml import read_yaml

    path = Path(folder).resolve()
    with contextlib.suppress(Exception):
        name = read_yaml(path / "config.yaml")["log"]["run_name"]
        if isinstance(name, str) and name.strip():
            return name
    return path.name
