"""Turn what a user typed (embedded name, local folder, hub id) into something from_pretrained reads.

Hub ids pass through untouched, with one exception: the hub id of an embedded model
(HuggingFaceTB/SmolLM2-135M-Instruct, google/gemma-3-270m), which adapters trained on that model
name as their base so that peft, vLLM and llama.cpp can find it. pricer resolves it to that model
in the Hugging Face cache when it is there, and otherwise to the embedded copy, without ever
starting a download: an adapter trained offline loads offline, on the weights it was trained on
(the embedded copies are de-quantized from 4-bit GGUFs, close to but not bitwise the original bf16
releases). Any other hub id that cannot be fetched gets a loader error naming the embedded model.
Each embedded folder is also registered in the Hugging Face cache as a revision of its own
(quant/hf_cache.py), which the adapters trained on it name, so peft finds it offline.
"""
from __future__ import annotations

import os
import re
from pathlib import Path

from quant.embedded import EMBEDDED, EmbeddedModel, embedded_named, embedded_with_hub_id, provision
from quant.exceptions import ModelError

_HUB_ID = re.compile(r"[\w.-]+/[\w.-]+")


def resolve_model(name: str | os.PathLike) -> str:
    """Return a local folder or hub id for `name`, provisioning the embedded model if that is what it names."""
    text = str(name)
    embedded = embedded_named(text)
    if embedded is not None:
        return _provision_and_register(embedded)
    embedded = embedded_with_hub_id(text)
    if embedded is not None:
        return _cached_hub_folder(embedded.hub_id) or _provision_and_register(embedded)
    path = Path(text).expanduser()
    if path.is_dir():
        if not (path / "config.json").is_file():
            raise ModelError(f"{text} is a folder but holds no config.json; point at a Hugging Face checkpoint folder")
        return text
    if path.exists():
        raise ModelError(f"{text} is a file; give a checkpoint folder (config.json + weights), not a single file")
    if _HUB_ID.fullmatch(text) and not text.startswith("."):
        return text
    names = " or ".join(f"'{m.names[0]}'" for m in EMBEDDED)
    hint = f"give an existing checkpoint folder, a hub id like org/name, or an embedded model, {names}"
    if "/" not in text and os.sep not in text:
        raise ModelError(f"unknown model name {text!r}; {hint}")
    raise ModelError(f"no model folder at {text}; {hint}")


def _provision_and_register(model: EmbeddedModel) -> str:
    """The embedded folder, registered as its own revision in the Hugging Face cache for peft (quant/hf_cache.py)."""
    from quant.hf_cache import register_quietly

    folder = provision(model)
    register_quietly(model, folder)
    return str(folder)


def canonical_name(name: str) -> str:
    """The name to record as an adapter's base: the hub id for an embedded model's names, else `name`."""
    embedded = embedded_named(name)
    return embedded.hub_id if embedded is not None else str(name)


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
