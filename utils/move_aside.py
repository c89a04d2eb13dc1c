"""Moving an earlier run's files out of the way instead of deleting them (train.py and evaluate.py --overwrite)."""
from __future__ import annotations

import os
import time
from pathlib import Path
from typing import Sequence


def move_aside(folder: Path, names: Sequence[str]) -> Path:
    """Move folder/<name> for each of `names` into a new sibling folder <folder>.previous-<time>[-n]; return it.

    The sibling's name is new (never an existing folder's), so repeated --overwrite keeps every earlier run.
    """
    stamp = time.strftime("%Y%m%d-%H%M%S")
    aside, n = folder.with_name(f"{folder.name}.previous-{stamp}"), 1
    while True:
        try:
            aside.mkdir()
            break
        except FileExistsError:
            n += 1
            aside = folder.with_name(f"{folder.name}.previous-{stamp}-{n}")
    for name in names:
        os.replace(folder / name, aside / name)
    return aside
