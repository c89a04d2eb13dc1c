"""The pieces of an evaluation around its predictor: the items, the model, the batches, report.json's provenance."""
from __future__ import annotations

import argparse
import hashlib
import time
from pathlib import Path
from typing import Any, Callable, Sequence

from predictors.base import Predictor
from predictors.batching import model_device, progress_over
from predictors.registry import baseline_names


def pick_items(args: argparse.Namespace) -> tuple[list, list[float]]:
    """The items to evaluate (split, then optional sample) and the training split's prices."""
    from data import load_items, split_items
    from data.splits import price_balanced_sample, sample

    items = load_items(args.data, fmt=args.data_format)
    if getattr(args, "holdout_source", None):
        from data.holdout import leave_source_out

        splits = leave_source_out(items, args.holdout_source, seed=args.seed, val_fraction=args.val_fraction)
    else:
        splits = split_items(items, seed=args.seed, val_fraction=args.val_fraction, test_fraction=args.test_fraction)
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
            from lora.io import read_config

            base = read_config(config).base_model_name_or_path
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
    """The name a report goes by: for train.py's <run>/adapter its run's (log.run_name, else the run folder's
    name; "(best)" for <run>/adapter-best), else the adapter's or base's folder name."""
    from training.rundir import run_name

    path = Path(adapter or base).resolve()
    if adapter is None or path.name not in ("adapter", "adapter-best"):
        return path.name
    return run_name(path.parent) + (" (best)" if path.name == "adapter-best" else "")


def in_length_order(items: Sequence[Any], prompts: Sequence[str], tokenizer: Any) -> tuple[list, list[str]]:
    """Items and prompts sorted by the prompt's token count (ties keep their order).

    Consecutive batches of this order pad least, and they are the batches the predictors form
    when given the whole split at once, so predicting batch by batch gives the same numbers.
    """
    lengths = [len(ids) for ids in tokenizer(list(prompts))["input_ids"]] if prompts else []
    order = sorted(range(len(prompts)), key=lambda i: lengths[i])
    return [items[i] for i in order], [prompts[i] for i in order]


def device_name(model: Any | None) -> str:
    """The GPU's name, else the device ("cpu"), else "none" for a predictor without a model."""
    import torch

    if model is None:
        return "none"
    device = model_device(model)
    return torch.cuda.get_device_name(device) if device.type == "cuda" else str(device)


def run_settings(args: argparse.Namespace, name: str, base: str | None, uses_model: bool, record: dict) -> dict:
    """How a run was made, as report.json records it: what was evaluated, on which items, how.

    `--resume` refuses to continue a run whose settings differ: its rows would mix two evaluations. The
    adapter is named by its folder and fingerprinted by its weights (adapter_sha256): retraining into the
    same folder makes another adapter.
    """
    weights = adapter_sha256(args.adapter) if uses_model and args.adapter else None
    return {
        "name": name, "base": base, "adapter": args.adapter, **({"adapter_sha256": weights} if weights else {}),
        "data": str(args.data), "split": args.split,
        "limit": args.limit, "sample": args.sample, "predictor": args.predictor, "seed": args.seed,
        "bits": args.bits if uses_model else None,
        "quant_type": args.quant_type if uses_model and args.bits == 4 else None,
        "compute_dtype": args.compute_dtype if uses_model else None,
        "val_fraction": args.val_fraction, "test_fraction": args.test_fraction, "batch_size": args.batch_size,
        "max_text_tokens": args.max_text_tokens, "holdout_source": getattr(args, "holdout_source", None),
        **({"answer_width": width} if uses_model and (width := getattr(args, "answer_width", 0)) else {}), **record,
    }


def adapter_sha256(adapter: str | Path) -> str | None:
    """sha256 of the adapter's weights file (of each file's name and sha256, when there are several); None when it
    has none (loading it then says so)."""
    files = sorted(p for p in Path(adapter).glob("adapter_model*") if p.suffix in (".safetensors", ".bin"))
    sums = []
    for path in files:
        digest = hashlib.sha256()
        with path.open("rb") as f:
            for block in iter(lambda: f.read(1 << 20), b""):
                digest.update(block)
        sums.append((path.name, digest.hexdigest()))
    if len(sums) <= 1:
        return sums[0][1] if sums else None
    return hashlib.sha256("".join(f"{name} {sha}\n" for name, sha in sums).encode()).hexdigest()


def provenance(args: argparse.Namespace, name: str, base: str | None, model: Any | None, n_items: int,
               seconds: float, extra: dict) -> dict:
    """report.json's account of a run: what was evaluated, on which items, how, where and how fast."""
    return {
        **run_settings(args, name, base, model is not None, extra),
        "time": time.strftime("%Y-%m-%dT%H:%M:%S%z"), "seconds": round(seconds, 3),
        "items_per_s": round(n_items / seconds, 3) if seconds > 0 else None,
        "device": device_name(model),
    }


def predict_in_batches(predictor: Predictor, prompts: Sequence[str], on_batch: Callable[[list, float], None], *,
                       batch_size: int, done: int = 0, total: int | None = None, **inputs: Any) -> None:
    """Predict `prompts` batch_size at a time, in order, calling on_batch(predictions, seconds) after each batch.

    Each batch is one predict() call, so an interruption loses at most the batch in flight, and a run
    resumed after `done` items (a whole number of batches) meets the batches an uninterrupted run
    met: a batched model's numbers depend on which prompts share a batch's padding.
    `inputs` are predict()'s keywords (model, tokenizer, train_prices).
    """
    total = done + len(prompts) if total is None else total
    with progress_over(total, predictor.name, initial=done) as bar:
        for start in range(0, len(prompts), batch_size):
            batch = prompts[start:start + batch_size]
            began = time.perf_counter()
            predictions = predictor.predict(batch, batch_size=batch_size, **inputs)
            on_batch(predictions, time.perf_counter() - began)
            bar.update(done + start + len(batch) - bar.n)   # a baseline's predict() moves no bar itself
