"""Files and folders that appear whole or not at all, readable by others as the umask says.

Every output pricer writes (adapters, checkpoints, reports, exports, caches) goes through
here: the content is written to a hidden temporary sibling and renamed into place, so a
crash, Ctrl-C or full disk never leaves a half-written file under the final name. Temporary
files made by `tempfile` are private (0600, folders 0700); they are given the modes an
ordinary `open()` / `mkdir()` would have given (0666 / 0777 minus the umask) before the
rename, so another user can read a saved adapter.
"""
from __future__ import annotations

import contextlib
import os
import shutil
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import IO, Any


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def public_modes(path: Path) -> None:
    """Give `path` (and everything under a folder) the modes open()/mkdir() would have given it."""
    mask = _umask()
    paths = [path, *path.rglob("*")] if path.is_dir() else [path]
    for p in paths:
        if not p.is_symlink():
            p.chmod((0o777 if p.is_dir() else 0o666) & ~mask)


def atomic_write(path: str | os.PathLike, write: Callable[[IO[Any]], Any], mode: str = "w") -> Path:
    """Call write(f) on a temporary file beside `path`, then rename it to `path`; returns the path.

    `mode` is "w" (text, UTF-8, newline as written) or "wb". On any error the temporary file
    is removed and `path` keeps its earlier content.
    """
    path = Path(path)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, mode, **({"newline": "", "encoding": "utf-8"} if "b" not in mode else {})) as f:
            write(f)
        public_modes(Path(tmp))
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise
    return path


def atomic_write_text(path: str | os.PathLike, text: str) -> Path:
    """Write `text` to `path` atomically."""
    return atomic_write(path, lambda f: f.write(text))


def atomic_append(path: str | os.PathLike, text: str) -> None:
    """Append `text` (UTF-8) to the existing file `path` whole or not at all, and flush it to disk.

    For logs written as work finishes (evaluate.py's predictions.csv): if the append is cut
    short (a full disk, Ctrl-C between two writes) the file is truncated back to its earlier
    length, so a reader never meets half a row. The file keeps the modes it was created with
    (create it with atomic_write first).
    """
    data = text.encode("utf-8")
    fd = os.open(path, os.O_WRONLY | os.O_APPEND)
    try:
        size = os.fstat(fd).st_size
        try:
            written = 0
            while written < len(data):
                written += os.write(fd, data[written:])
            os.fsync(fd)
        except BaseException:
            os.ftruncate(fd, size)
            raise
    finally:
        os.close(fd)


@contextlib.contextmanager
def atomic_folder(path: str | os.PathLike, replace: bool = False) -> Iterator[Path]:
    """Yield an empty temporary folder beside `path`; on success it becomes `path`.

    An existing `path` is an error unless `replace` (then it is swapped out and removed only
    after the new folder is in place). On any error the temporary folder is removed and `path`
    is untouched.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    if path.exists() and not replace:
        raise FileExistsError(f"{path} exists; choose a new folder or remove it first")
    tmp = Path(tempfile.mkdtemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent))
    try:
        yield tmp
        public_modes(tmp)
        old = None
        if path.exists():
            old = Path(tempfile.mkdtemp(prefix=f".{path.name}.", suffix=".old", dir=path.parent))
            os.replace(path, old / path.name)
        os.replace(tmp, path)
        if old is not None:
            shutil.rmtree(old, ignore_errors=True)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


def write_files(path: str | os.PathLike, files: dict[str, Callable[[Path], None]]) -> Path:
    """Write named files into folder `path`: a new folder appears whole; in an existing one
    (which may hold other outputs) each named file is replaced atomically and the rest kept."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent))
    try:
        for name, write in files.items():
            write(tmp / name)
        public_modes(tmp)
        if not path.exists():
            os.replace(tmp, path)
            return path
        for name in files:
            os.replace(tmp / name, path / name)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return path
