"""`python -m lora.export`: fold an adapter into its base and write a model folder that serves as it is.

    python -m lora.export --adapter runs/x/adapter --out runs/x/merged [--base MODEL]
                          [--dtype bfloat16|float16|float32] [--gguf f16|q8_0]

The base (--base, else the adapter_config.json's base_model_name_or_path) is loaded in the dtype
its checkpoint is stored in, never in 4 bits: export_merged computes W + s*B@A in float32 and
rounds it once to --dtype, so the folder carries no requantization error. (A QLoRA adapter was
trained against the 4-bit rounding of W; merged into the 16-bit W it makes the usual merged QLoRA
model, whose outputs differ from the 4-bit one's by about the quantization error.) The folder is
what `vllm serve DIR` and
`AutoModelForCausalLM.from_pretrained(DIR)` load. With --gguf it also holds model-<type>.gguf for
llama.cpp and Ollama (lora/gguf_export.py), written from the folder's own weights.

The adapter's training-config.yaml, when it has one, goes into the folder too: evaluate.py and
predict.py --base FOLDER read the answer format and prompt settings from it, as from an adapter. Its
model section is rewritten to the folder's own (bits 16, compute_dtype --dtype), so they serve the
merged weights as saved rather than quantizing them to the 4 bits the adapter was trained over. The
adapter's interval_calibration.json goes in too, so the folder states the adapter's calibrated intervals.

The folder appears whole or not at all: it is built in a temporary sibling and renamed into
place. An existing non-empty --out is refused and left untouched.
"""
from __future__ import annotations

import argparse
import os
import shutil
import sys
import time
from collections.abc import Sequence
from pathlib import Path

import torch

DTYPES = {"bfloat16": torch.bfloat16, "float16": torch.float16, "float32": torch.float32}


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    """The command line (see the module docstring); values are checked by check_args, not here."""
    p = argparse.ArgumentParser(prog="python -m lora.export",
                                description="Merge a LoRA adapter into its base; write an HF folder (+ GGUF).")
    p.add_argument("--adapter", help="adapter folder (adapter_config.json + adapter_model.safetensors)")
    p.add_argument("--base", help="base model: embedded name, folder or hub id (default: the adapter's base)")
    p.add_argument("--out", help="new folder for the merged model")
    p.add_argument("--dtype", default="bfloat16", help="weights of the merged folder: bfloat16, float16 or float32")
    p.add_argument("--gguf", help="also write DIR/model-<type>.gguf, type f16 or q8_0 (Llama architectures)")
    return p.parse_args([str(a) for a in argv] if argv is not None else None)


def check_args(args: argparse.Namespace) -> str:
    """Validate everything that needs no model weights; return the base to load. ValueError when unusable."""
    from .config import AdapterError
    from .gguf_export import GGUF_KINDS
    from .io import read_adapter

    if not args.adapter or not args.out:
        raise ValueError("pass --adapter DIR and --out DIR (python -m lora.export --help)")
    if args.dtype not in DTYPES:
        raise ValueError(f"unknown --dtype {args.dtype!r}: use one of {', '.join(DTYPES)}")
    if args.gguf is not None and args.gguf not in GGUF_KINDS:
        raise ValueError(f"unknown --gguf type {args.gguf!r}: use one of {', '.join(GGUF_KINDS)}")
    out = Path(args.out)
    if out.exists() and (not out.is_dir() or any(out.iterdir())):
        raise FileExistsError(f"{out} exists and is not an empty folder: choose a new --out (nothing was written)")
    config, _ = read_adapter(Path(args.adapter))
    base = args.base or config.base_model_name_or_path
    if not base:
        raise AdapterError(f"{Path(args.adapter) / 'adapter_config.json'} names no base model: pass --base MODEL")
    return base


def export_adapter(adapter: str | os.PathLike, out: str | os.PathLike, base: str, dtype: torch.dtype = torch.bfloat16,
                   gguf: str | None = None, device: str | None = None) -> Path:
    """Load base + adapter, write the merged folder to `out` (and model-<gguf>.gguf in it); return `out`."""
    from transformers import AutoConfig

    from quant import load_base_model, resolve_model
    from quant.exceptions import ModelError
    from utils.atomic import atomic_folder

    from .gguf_export import check_gguf_support, write_gguf
    from predictors.interval_margin import FILE as INTERVAL_FILE

    from .io import TRAINING_CONFIG_NAME, load_adapter
    from .merge import export_merged

    out, path = Path(out), resolve_model(base)
    try:
        config = AutoConfig.from_pretrained(path)
    except OSError as e:
        raise ModelError(f"cannot read the config of base model {base!r} ({str(e).strip().splitlines()[0]}); "
                         "pass --base with a checkpoint folder or the embedded 'smollm2-135m'") from None
    if gguf is not None:
        check_gguf_support(config)  # before minutes of loading, not after
    model, tokenizer = load_base_model(base, bits=16, compute_dtype=config.dtype or torch.float32, device=device)
    if gguf is not None:
        check_gguf_support(config, tokenizer)
    adapter_config = load_adapter(model, adapter)
    print(f"adapter {adapter}: r={adapter_config.r}, alpha={adapter_config.alpha:g}, {_count_layers(model)} layers")
    if out.is_dir():
        out.rmdir()  # empty (check_args made sure); rmdir refuses a folder someone has filled since
    started = time.perf_counter()
    with atomic_folder(out) as tmp:
        # export_merged builds in its own temporary folder and renames it onto tmp; this outer one
        # makes the GGUF file part of the same final rename.
        export_merged(model, tokenizer, tmp, dtype=dtype)
        trained = Path(adapter) / TRAINING_CONFIG_NAME
        if trained.is_file():   # how it was trained (the answer format above all): evaluate.py and predict.py read it
            (tmp / TRAINING_CONFIG_NAME).write_text(serving_config(trained.read_text(), dtype))
        calibration = Path(adapter) / INTERVAL_FILE
        if calibration.is_file():   # the adapter's interval margin, so that --base FOLDER states calibrated intervals
            (tmp / INTERVAL_FILE).write_text(serving_calibration(calibration.read_text(), adapter))
        print(f"merged -> {out} ({str(dtype).removeprefix('torch.')}, {_size(tmp, '*.safetensors')}) "
              f"in {time.perf_counter() - started:.1f}s")
        if gguf is not None:
            started = time.perf_counter()
            written = write_gguf(tmp, gguf, name=out.name)
            print(f"gguf -> {out / written.name} ({_size(tmp, written.name)}) in {time.perf_counter() - started:.1f}s")
    return out


def serving_config(text: str, dtype: torch.dtype) -> str:
    """The adapter's training-config.yaml as the merged folder's: its model section says how the folder is served.

    evaluate.py and predict.py --base FOLDER take --bits and --compute-dtype from it: the merged weights are
    16-bit, so they are served as saved (`dtype`), not quantized again to the 4 bits the adapter trained over.
    """
    import yaml

    from utils.bounded_yaml import load_yaml

    config = load_yaml(text)
    if not isinstance(config, dict) or not isinstance(config.get("model", {}), dict):
        return text   # not train.py's; evaluate.py says what is wrong with it when it reads it
    trained = config.get("model", {})
    how = f"{trained.get('bits', '?')}-bit" + (f" {trained.get('quant_type')}" if trained.get("bits") == 4 else "")
    served = str(dtype).removeprefix("torch.")
    config["model"] = {**trained, "bits": 16, "compute_dtype": served}
    comments = [line for line in text.splitlines() if line.startswith("#")]
    note = (f"# python -m lora.export: model.bits and model.compute_dtype are this merged folder's ({served} weights, "
            f"served as saved); the adapter was trained over {trained.get('name', 'its base')} in {how}")
    return "\n".join([*comments, note]) + "\n" + yaml.safe_dump(config, sort_keys=False)


def serving_calibration(text: str, adapter: str | os.PathLike) -> str:
    """The adapter's interval_calibration.json as the merged folder's, saying where its margin was fitted.

    The margin was fitted on the adapter over its training base (4-bit for a QLoRA run); the merged 16-bit
    model's quantiles are narrower (bench/RESULTS.md, "Served answers"), and the same margin brings its
    intervals back to about the stated coverage there. A file that is not a JSON object is copied as it is,
    and reading it says what is wrong.
    """
    import json

    try:
        record = json.loads(text)
    except ValueError:
        return text
    if not isinstance(record, dict):
        return text
    record["copied_from"] = f"{adapter} (python -m lora.export): fitted on the adapter over its training base"
    return json.dumps(record, indent=2) + "\n"


def _count_layers(model: torch.nn.Module) -> int:
    from .inject import lora_layers

    return len(lora_layers(model))


def _size(folder: Path, pattern: str) -> str:
    """Total size of the files matching pattern, in MB."""
    return f"{sum(p.stat().st_size for p in folder.glob(pattern)) / 1e6:.0f} MB"


def main(argv: Sequence[str] | None = None) -> int:
    """Run the CLI: 0 when written, 2 with one `error: ...` line on a user error."""
    args = parse_args(argv)
    started = time.perf_counter()
    try:
        base = check_args(args)
        export_adapter(args.adapter, args.out, base, DTYPES[args.dtype], args.gguf)
    except (ValueError, FileNotFoundError, FileExistsError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    print(f"exported in {time.perf_counter() - started:.1f}s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
