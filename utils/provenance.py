"""Where a result came from: the code (git commit, dirty or not), the package versions, the device.

Written into <output_dir>/run.json by train.py and into report.json by evaluate.py, so that a
number can be traced to what produced it.
"""
from __future__ import annotations

import platform
import re
import subprocess
import time
from importlib import metadata
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
CORE = ("torch", "transformers", "accelerate", "bitsandbytes", "safetensors")


def git_state(repo: Path = REPO) -> dict:
    """{"commit", "dirty"} of the checkout pricer runs from; None values outside a git checkout."""
    def git(*args: str) -> str | None:
        try:
            done = subprocess.run(["git", "-C", str(repo), *args], capture_output=True, text=True, timeout=10)
        except (OSError, subprocess.TimeoutExpired):
            return None
        return done.stdout.strip() if done.returncode == 0 else None

    commit = git("rev-parse", "HEAD")
    status = git("status", "--porcelain", "--untracked-files=no") if commit else None
    return {"commit": commit, "dirty": bool(status) if status is not None else None}


def package_versions(requirements: Path = REPO / "requirements.txt") -> dict[str, str | None]:
    """Installed versions of torch and friends and of every package requirements.txt names (None: missing)."""
    names = list(CORE)
    if requirements.is_file():
        for line in requirements.read_text().splitlines():
            match = re.match(r"\s*([A-Za-z0-9_.-]+)", line.split("#")[0])
            if match and match.group(1) not in names:
                names.append(match.group(1))
    versions = {}
    for name in names:
        try:
            versions[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            versions[name] = None
    return versions


def device_name(device=None) -> str:
    """The GPU's name for a CUDA device (the current one by default when there is a GPU), else "cpu"."""
    import torch

    if device is None:
        device = torch.device("cuda") if torch.cuda.is_available() else torch.device("cpu")
    device = torch.device(device)
    return torch.cuda.get_device_name(device) if device.type == "cuda" else str(device.type)


def provenance(device=None, processes: int = 1) -> dict:
    """Code, versions, device and time of a run, as one JSON-ready dict."""
    return {"git": git_state(), "versions": package_versions(), "python": platform.python_version(),
            "device": device_name(device), "processes": processes, "time": time.strftime("%Y-%m-%dT%H:%M:%S%z")}
