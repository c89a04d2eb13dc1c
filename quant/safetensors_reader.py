"""Read a safetensors checkpoint one tensor at a time, into fresh memory, without mapping the files.

safetensors' own reader memory-maps each shard: every page it touches stays resident (and
counted in the process's RSS) until the file is closed, so reading a 140 GB checkpoint tensor
by tensor through it can still fill host memory. Here each tensor is read with one `readinto`
into a buffer of its own size, so the host holds only the tensor being read (and whatever the
caller keeps). The format: an 8-byte little-endian header length, a JSON header naming each
tensor's dtype, shape and byte range, then the bytes.
"""
from __future__ import annotations

import json
import os
import struct
from pathlib import Path

import torch

from quant.exceptions import ModelError

DTYPES = {"F64": torch.float64, "F32": torch.float32, "F16": torch.float16, "BF16": torch.bfloat16,
          "I64": torch.int64, "I32": torch.int32, "I16": torch.int16, "I8": torch.int8, "U8": torch.uint8,
          "BOOL": torch.bool, "F8_E4M3": torch.float8_e4m3fn, "F8_E5M2": torch.float8_e5m2}


class SafetensorsReader:
    """The tensors of a checkpoint folder (model.safetensors or sharded with an index), read by name."""

    def __init__(self, folder: str | os.PathLike) -> None:
        """Index every tensor of the folder's shards (headers only; no tensor is read yet)."""
        self.folder = Path(folder)
        index = self.folder / "model.safetensors.index.json"
        if index.exists():
            shards = sorted(set(json.loads(index.read_text())["weight_map"].values()))
        elif (self.folder / "model.safetensors").exists():
            shards = ["model.safetensors"]
        else:
            raise ModelError(f"{self.folder} has no model.safetensors nor model.safetensors.index.json; "
                             "layer-by-layer loading reads safetensors checkpoints only (load with layerwise=False)")
        self.entries: dict[str, tuple[Path, int, dict]] = {}
        for shard in shards:
            path = self.folder / shard
            with path.open("rb") as f:
                (length,) = struct.unpack("<Q", f.read(8))
                header = json.loads(f.read(length))
            header.pop("__metadata__", None)
            for name, entry in header.items():
                self.entries[name] = (path, 8 + length, entry)

    def __contains__(self, name: str) -> bool:
        """Whether the checkpoint holds a tensor of this name."""
        return name in self.entries

    def read(self, name: str) -> torch.Tensor:
        """The tensor `name` as stored (its own dtype and shape), in newly allocated host memory."""
        if name not in self.entries:
            raise ModelError(f"{self.folder} has no tensor {name!r}; layer-by-layer loading reads the model's own "
                             "parameter names (load with layerwise=False for checkpoints saved under other names)")
        path, start, entry = self.entries[name]
        begin, end = entry["data_offsets"]
        buffer = torch.empty(end - begin, dtype=torch.uint8)
        with path.open("rb", buffering=0) as f:
            f.seek(start + begin)
            if end > begin and f.readinto(memoryview(buffer.numpy())) != end - begin:
                raise ModelError(f"{path} ends inside tensor {name!r}; the checkpoint is truncated")
        return buffer.view(DTYPES[entry["dtype"]]).reshape(entry["shape"])
