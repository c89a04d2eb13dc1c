"""The pieces of an evaluation around its predictor: the items, the model, and report.json's provenance."""
from __future__ import annotations

import argparse
import json
import time
from pathlib import Path
from typing import Any

from predictors.batching import model_device
from predictors.registry import baseline_names


def pick_items(args: argparse.Namespace) -> tuple[list, list[float]]:
    """The items to evaluate (split, then optional sample) and the training split's prices."""
    from data import load_items, split_items
    from data.splits import price_balanced_sample, sample

    splits = split_items(load_items(args.data, fmt=args.data_format), seed=args.seed,
                         val_fraction=args.val_fraction, test_fraction=args.test_fraction)
    pool = splits.train + splits.val + splits.test if args.split == "all" else getattr(splits, args.split)
    if not pool:
        raise ValueError(f"the {args.split} split of {args.data} is empty: pick another --split or more data")
    n = args.limit if args.limit is not None else len(pool)
    picked = (price_balanced_sample(pool, n, seed=args.seed) if args.sample == "balanced"
              else sample(pool, n, seed=args.seed))
    return picked, [it.price for it in splits.train]


def resolve_base(adapter: str | None, base: str | None) -> str:
    """The base model to load: --base, else the one named in the adapter's adapter_config.json."""
    if adapter is not None:
        config = Path(adapter) / "adapter_config.json"
        if not config.is_file():
            raise FileNotFoundError(f"no adapter_config.json in {adapter}: pass a folder saved by train.py or peft")
        if base is None:
            base = json.loads(config.read_text()).get("base_model_name_or_path")
            if not base:
                raise ValueError(f"{config} names no base model: pass --base MODEL")
    if base is None:
        raise ValueError("no model to evaluate: pass --adapter DIR and/or --base MODEL "
                         f"(or --predictor {'|'.join(baseline_names())} for a constant baseline)")
    return base


def load_model(base: str, adapter: str | None, bits: int, quant_type: str = "nf4",
               compute_dtype: str = "bfloat16") -> tuple[Any, Any]:
    """The base model (quantized to `bits`) with the adapter loaded on it, and its tokenizer."""
    from quant import load_base_model

    model, tokenizer = load_base_model(base, bits=bits, quant_type=quant_type, compute_dtype=compute_dtype)
    if adapter is not None:
        from lora import load_adapter

        load_adapter(model, adapter)
    return model.eval(), tokenizer


def model_name(adapter: str | None, base: str) -> str:
    """The name a report goes by: the adapter's folder (its run's, for train.py's <run>/adapter), else the base's."""
    path = Path(adapter or base)
    return path.resolve().parent.name if path.name == "adapter" else path.name


def device_name(model: Any | None) -> str:
    """The GPU's name, else the device ("cpu"), else "none" for a predictor without a model."""
    import torch

    if model is None:
        return "none"
    device = model_device(model)
    return torch.cuda.get_device_name(device) if device.type == "cuda" else str(device)


def provenance(args: argparse.Namespace, name: str, base: str | None, model: Any | None, n_items: int,
               seconds: float, extra: dict) -> dict:
    """report.json's account of a run: what was evaluated, on which items, how, where and how fast."""
    return {
        "name": name, "base": base, "adapter": args.adapter, "data": str(args.data), "split": args.split,
        "limit": args.limit, "sample": args.sample, "predictor": args.predictor, "seed": args.seed,
        "bits": None if model is None else args.bits,
        "quant_type": None if model is None or args.bits != 4 else args.quant_type,
        "compute_dtype": None if model is None else args.compute_dtype,
        "val_fraction": args.val_fraction, "test_fraction": args.test_fraction, "batch_size": args.batch_size,
        "max_text_tokens": args.max_text_tokens, **extra,
        "time": time.strftime("%Y-%m-%dT%H:%M:%S%z"), "seconds": round(seconds, 3),
        "items_per_s": round(n_items / seconds, 3) if seconds > 0 else None,
        "device": device_name(model),
    }
