"""Moving an earlier run's files out of the way instead of deleting them: train.py and evaluate.py
--overwrite, and the checkpoints a resume from an earlier one abandons."""
from __future__ import annotations

import os
import time
from pathlib import Path
from typing import Sequence


def move_aside(paths: Sequence[Path], base: Path) -> Path:
    """Move each of `paths` into a new folder <base>-<time>[-n] (made here); return that folder.

    The folder's name is new (never an existing folder's), so repeated moves keep every earlier file.
    """
    stamp = time.strftime("%Y%m%d-%H%M%S")
    aside, n = base.with_name(f"{base.name}-{stamp}"), 1
    while True:
        try:
            aside.mkdir()
            break
        except FileExistsError:
            n += 1
            aside = base.with_name(f"{base.name}-{stamp}-{n}")
    for path in paths:
        os.replace(path, aside / path.name)
    return aside
