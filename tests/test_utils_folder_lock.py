"""utils/folder_lock.py with real processes: a live holder refuses a second, a dead one's lock is taken."""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from utils.folder_lock import FolderBusyError, hold_folder

ROOT = Path(__file__).resolve().parent.parent

HOLDER = textwrap.dedent("""
    import sys, time
    from utils.folder_lock import hold_folder
    with hold_folder(sys.argv[1], "a test holder"):
        print("held", flush=True)
        time.sleep(60)
""")


def _start_holder(folder: Path) -> subprocess.Popen:
    """A second process holding `folder`'s lock (returns once it holds it)."""
    (folder.parent / "holder.py").write_text(HOLDER)   # a short command line, which the refusal quotes whole
    proc = subprocess.Popen([sys.executable, "holder.py", folder.name, "--marker"], cwd=folder.parent,
                            stdout=subprocess.PIPE, text=True, env={**os.environ, "PYTHONPATH": str(ROOT)})
    assert proc.stdout.readline().strip() == "held"
    return proc


def test_a_live_holder_refuses_another_process_naming_itself(tmp_path):
    folder = tmp_path / "x"
    holder = _start_holder(folder)
    try:
        with pytest.raises(FolderBusyError) as e:
            with hold_folder(folder, "evaluate.py"):
                pass
    finally:
        holder.kill()
        holder.wait()
    message = str(e.value)
    assert message.startswith(f"{folder} is in use by pid {holder.pid} (")
    assert "--marker" in message and "since " in message and message.endswith("wait for it or choose another folder")
    assert "\n" not in message and isinstance(e.value, ValueError)   # evaluate.py's one-line exit 2


def test_a_dead_holders_lock_is_taken_and_released_cleanly(tmp_path):
    folder = tmp_path / "x"
    holder = _start_holder(folder)
    holder.send_signal(signal.SIGKILL)   # no finally runs: the .lock file stays, the kernel frees the flock
    holder.wait()
    assert json.loads((folder / ".lock").read_text())["pid"] == holder.pid
    with hold_folder(folder, "evaluate.py"):
        info = json.loads((folder / ".lock").read_text())
        assert (info["pid"], info["what"]) == (os.getpid(), "evaluate.py")
        (folder / "report.json").write_text("{}")
    assert sorted(p.name for p in folder.iterdir()) == ["report.json"]   # .lock gone; the folder kept


def test_a_folder_made_for_nothing_is_removed_and_one_process_holds_at_a_time(tmp_path):
    folder = tmp_path / "new"
    with hold_folder(folder, "first"):
        assert folder.is_dir()
        with pytest.raises(FolderBusyError, match=f"in use by pid {os.getpid()} "):
            with hold_folder(folder, "second"):
                pass
    assert not folder.exists()   # created by the lock, nothing written: no trace
    with hold_folder(folder, "again"):   # released: free to take
        pass
