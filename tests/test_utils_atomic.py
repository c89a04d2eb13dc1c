"""utils/atomic.py: appends that land whole or not at all."""
from __future__ import annotations

import errno
import os

import pytest

from utils.atomic import atomic_append, atomic_write_text


def test_append_adds_text(tmp_path):
    path = atomic_write_text(tmp_path / "log.csv", "head\n")
    atomic_append(path, "a,1\n")
    atomic_append(path, "b,2\n")
    assert path.read_text() == "head\na,1\nb,2\n"


def test_append_cut_short_leaves_the_file_as_it_was(tmp_path, monkeypatch):
    """A disk that fills after half a batch: the half is taken back, so no torn row stays."""
    path = atomic_write_text(tmp_path / "log.csv", "head\n")
    real_write, calls = os.write, []

    def half_then_full(fd, data):
        calls.append(len(data))
        if len(calls) > 1:
            raise OSError(errno.ENOSPC, "No space left on device")
        return real_write(fd, bytes(data[: len(data) // 2]))
    monkeypatch.setattr(os, "write", half_then_full)
    with pytest.raises(OSError, match="No space left"):
        atomic_append(path, "row one,1\nrow two,2\n")
    monkeypatch.undo()
    assert path.read_text() == "head\n" and len(calls) == 2


def test_append_needs_the_file(tmp_path):
    with pytest.raises(FileNotFoundError):
        atomic_append(tmp_path / "missing.csv", "x\n")
