"""Turn what a user typed (embedded name, local folder, hub id) into something from_pretrained reads.

Hub ids pass through untouched, with one exception: HuggingFaceTB/SmolLM2-135M-Instruct, the id
adapters trained on the embedded model name (so that peft, vLLM and llama.cpp can find their
base). pricer resolves it to that model in the Hugging Face cache when it is there, and otherwise
to the embedded copy, without ever starting a download: an adapter trained offline loads offline,
on the weights it was trained on (the embedded copy is de-quantized from a Q4_1 GGUF, close to but
not bitwise the original bf16 release). Any other hub id that cannot be fetched gets a loader error
naming the embedded model.
"""
from __future__ import annotations

import os
import re
from pathlib import Path

from quant.embedded import EMBEDDED_NAMES, HUB_ID, provision_smollm2
from quant.exceptions import ModelError

_HUB_ID = re.compile(r"[\w.-]+/[\w.-]+")


def resolve_model(name: str | os.PathLike) -> str:
    """Return a local folder or hub id for `name`, provisioning the embedded model if that is what it names."""
    text = str(name)
    if text.lower() in EMBEDDED_NAMES:
        return str(provision_smollm2())
    if text.lower() == HUB_ID.lower():
        return _cached_hub_folder(HUB_ID) or str(provision_smollm2())
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


def canonical_name(name: str) -> str:
    """The name to record as an adapter's base: the hub id for the embedded model's aliases, else `name`."""
    return HUB_ID if str(name).lower() in EMBEDDED_NAMES else str(name)


def _cached_hub_folder(repo_id: str) -> str | None:
    """The snapshot folder of `repo_id` in the Hugging Face cache if a complete one is there (no network)."""
    try:
        from huggingface_hub import try_to_load_from_cache
    except ImportError:
        return None
    config = try_to_load_from_cache(repo_id, "config.json")
    return str(Path(config).parent) if isinstance(config, str) else None


def is_local(name_or_path: str) -> bool:
    """Whether a resolved name is a folder on disk (as opposed to a hub id)."""
    return Path(name_or_path).expanduser().is_dir()
