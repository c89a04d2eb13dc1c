"""Peak host and GPU memory over a block of code, such as loading a model.

Host: the kernel's high-water mark of this process's resident memory (VmHWM), reset at the
block's start by writing 5 to /proc/self/clear_refs (Linux 4.0+), so one process can measure
several blocks in turn. Where that file cannot be written, the mark is the process's lifetime
peak and `host_reset` is False. GPU: torch's allocator peak on the current device.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import torch

GB = 2**30


def _status_kb(key: str) -> int:
    """A memory line of /proc/self/status in kB (0 where the file does not exist)."""
    status = Path("/proc/self/status")
    if not status.exists():
        return 0
    for line in status.read_text().splitlines():
        if line.startswith(key + ":"):
            return int(line.split()[1])
    return 0


def host_peak_gb() -> float:
    """This process's resident-memory high-water mark (since its last reset), GB."""
    return _status_kb("VmHWM") * 1024 / GB


def reset_host_peak() -> bool:
    """Reset this process's resident-memory high-water mark to its current resident memory; False if it cannot."""
    try:
        Path("/proc/self/clear_refs").write_text("5")
        return True
    except OSError:
        return False


@dataclass
class PeakMemory:
    """`with PeakMemory() as peak: ...` then peak.host_gb (peak resident), peak.host_added_gb (over the start), gpu_*."""

    device: torch.device | str | None = None
    host_start_kb: int = 0
    host_peak_kb: int = 0
    host_reset: bool = False
    gpu_start: int = 0
    gpu_peak: int = 0

    def __enter__(self) -> PeakMemory:
        self.host_reset = reset_host_peak()
        self.host_start_kb = _status_kb("VmRSS")
        if self._cuda():
            torch.cuda.synchronize(self.device)
            torch.cuda.reset_peak_memory_stats(self.device)
            self.gpu_start = torch.cuda.memory_allocated(self.device)
        return self

    def __exit__(self, *exc) -> None:
        self.host_peak_kb = _status_kb("VmHWM")
        if self._cuda():
            torch.cuda.synchronize(self.device)
            self.gpu_peak = torch.cuda.max_memory_allocated(self.device)

    def _cuda(self) -> bool:
        """Whether the block's device is a CUDA device."""
        return self.device is not None and torch.device(self.device).type == "cuda"

    @property
    def host_gb(self) -> float:
        """Peak resident host memory of the process during the block, GB."""
        return self.host_peak_kb * 1024 / GB

    @property
    def host_added_gb(self) -> float:
        """Peak resident host memory during the block over what was resident at its start, GB."""
        return max(0, self.host_peak_kb - self.host_start_kb) * 1024 / GB

    @property
    def gpu_gb(self) -> float:
        """Peak GPU memory allocated by torch during the block, GB (0 on CPU)."""
        return self.gpu_peak / GB

    def summary(self) -> str:
        """One line: peak host (and what the block added) and peak GPU memory."""
        gpu = f", GPU peak {self.gpu_gb:.2f} GB" if self._cuda() else ""
        mark = "" if self.host_reset else " (lifetime mark)"
        return f"host peak {self.host_gb:.2f} GB (+{self.host_added_gb:.2f} GB){mark}{gpu}"
