"""One process writes an output folder at a time: an exclusive lock on <folder>/.lock, held while it works.

    with hold_folder(out, "evaluate.py"):     # FolderBusyError (one line naming the holder) if another has it
        ... write into out ...

The lock is `flock(LOCK_EX | LOCK_NB)` on <folder>/.lock, which holds the holder's pid, host, command
line and start time (for the refusal message, not for the locking). The kernel drops a flock when its
process dies, however it dies, so a .lock left by a killed process is free and simply taken: there are
no stale locks to clear by hand. On release the holder deletes .lock while still holding it, and a
taker checks that the file it locked is still the one at the path, so two processes never both hold
one folder. A folder the lock created is removed again on release when nothing else was put in it,
so a refused run leaves no trace.

flock is advisory and local: it orders pricer's own processes on one machine (on NFS it may not hold).
"""
from __future__ import annotations

import contextlib
import json
import os
import shlex
import socket
import sys
import time
from pathlib import Path
from typing import Iterator

try:
    import fcntl
except ImportError:   # Windows: no flock; the folder is not locked there
    fcntl = None  # type: ignore[assignment]

LOCK_NAME = ".lock"


class FolderError(ValueError):
    """An output folder that cannot be used: a file, not writable (one line saying what to do)."""


class FolderBusyError(FolderError):
    """Another live process holds the folder (one line: which process, since when, and what to do)."""


def _holder_text(lock: Path) -> str:
    """The holder as its .lock file describes it: pid, command line, start time (and host when not this one)."""
    try:
        info = json.loads(lock.read_text(encoding="utf-8"))
        pid, command, since = info["pid"], info["command"], info["since"]
        host = info.get("host")
    except (OSError, ValueError, KeyError, TypeError):
        return "another process"   # it took the lock and has not written its name yet
    command = " ".join(str(command).split())   # one line, whatever `python -c` held
    command = command if len(command) <= 80 else command[:77] + "..."
    where = f" on {host}" if host and host != socket.gethostname() else ""
    return f"pid {pid}{where} ({command}) since {since}"


def _take(folder: Path, name: str) -> int:
    """An open descriptor of folder/name holding its flock; FolderBusyError when a live process holds it."""
    lock = folder / name
    while True:
        try:
            folder.mkdir(parents=True, exist_ok=True)
            fd = os.open(lock, os.O_RDWR | os.O_CREAT, 0o666)
        except FileNotFoundError:
            continue   # the folder was removed by a holder releasing it: make it again
        except FileExistsError:
            raise FolderError(f"{folder} is a file, not a folder: pass a new or existing folder") from None
        except OSError as e:
            raise FolderError(f"cannot write in {folder} ({e.strerror}): pass a folder you can write to") from None
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            raise FolderBusyError(f"{folder} is in use by {_holder_text(lock)}; wait for it or choose another "
                                  "folder") from None
        # The holder we waited on may have deleted the file between our open and our flock: then we hold a
        # lock on a file no one else will see, so take the one now at the path instead.
        try:
            same = os.path.samestat(os.fstat(fd), os.stat(lock))
        except FileNotFoundError:
            same = False
        if same:
            return fd
        os.close(fd)


def _describe(fd: int, what: str) -> None:
    """Write this process's pid, host, command line and start time into the lock file (for a refused other)."""
    command = shlex.join(getattr(sys, "orig_argv", sys.argv))
    info = {"pid": os.getpid(), "host": socket.gethostname(), "command": command, "what": what,
            "since": time.strftime("%H:%M:%S"), "date": time.strftime("%Y-%m-%dT%H:%M:%S%z")}
    os.ftruncate(fd, 0)
    os.pwrite(fd, (json.dumps(info) + "\n").encode("utf-8"), 0)


@contextlib.contextmanager
def hold_folder(path: str | os.PathLike, what: str, name: str = LOCK_NAME) -> Iterator[Path]:
    """Hold an exclusive lock on folder `path` (made if needed) for the block; FolderBusyError if another has it.

    `what` says who holds it ("evaluate.py", "train.py"), recorded in the lock file; `name` is the lock
    file's name in the folder (predict.py's one output file locks ".<file>.lock" beside it).
    """
    folder = Path(path)
    if fcntl is None:
        folder.mkdir(parents=True, exist_ok=True)
        yield folder
        return
    created = not folder.exists()
    fd = _take(folder, name)
    try:
        _describe(fd, what)
        yield folder
    finally:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(folder / name)   # while still holding it: see _take
        os.close(fd)
        if created:
            with contextlib.suppress(OSError):
                folder.rmdir()   # only when empty: the run wrote nothing
