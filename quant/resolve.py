"""Turn what a user typed (embedded name, local folder, hub id) into something from_pretrained reads.

Hub ids pass through untouched, including HuggingFaceTB/SmolLM2-135M-Instruct: that id means the
original bf16 release, while the embedded copy is de-quantized from a Q4_1 GGUF, so quietly
swapping one for the other would change results. When the hub is out of reach, the loader's error
names the embedded model instead.
"""
from __future__ import annotations

import os
import re
from pathlib import Path

from quant.embedded import EMBEDDED_NAMES, provision_smollm2
from quant.exceptions import ModelError

_HUB_ID = re.compile(r"[\w.-]+/[\w.-]+")


def resolve_model(name: str | os.PathLike) -> str:
    """Return a local folder or hub id for `name`, provisioning the embedded model if that is what it names."""
    text = str(name)
    if text.lower() in EMBEDDED_NAMES:
        return str(provision_smollm2())
    path = Path(text).expanduser()
    if path.is_dir():
        if not (path / "config.json").is_file():
            raise ModelError(f"{text} is a folder but holds no config.json; point at a Hugging Face checkpoint folder")
        return text
    if path.exists():
        raise ModelError(f"{text} is a file; give a checkpoint folder (config.json + weights), not a single file")
    if _HUB_ID.fullmatch(text) and not text.startswith("."):
        return text
    hint = f"give an existing checkpoint folder, a hub id like org/name, or the embedded '{EMBEDDED_NAMES[0]}'"
    if "/" not in text and os.sep not in text:
        raise ModelError(f"unknown model name {text!r}; {hint}")
    raise ModelError(f"no model folder at {text}; {hint}")


def is_local(name_or_path: str) -> bool:
    """Whether a resolved name is a folder on disk (as opposed to a hub id)."""
    return Path(name_or_path).expanduser().is_dir()
