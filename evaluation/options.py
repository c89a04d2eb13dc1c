"""Command-line options shared by evaluate.py and bench/: the model and data, and the registry's predictors."""
from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

from predictors.base import OptionError, Predictor, positive_int
from predictors.registry import PREDICTORS


def add_model_options(p: argparse.ArgumentParser) -> None:
    """The options naming the model, the data, its split fractions and the prompts."""
    p.add_argument("--adapter", help="adapter folder (pricer's or peft's); omit to evaluate the base alone")
    p.add_argument("--base", help="base model (name, folder or hub id); default: the adapter's base")
    p.add_argument("--data", help="data source: file, folder or dataset (as data.load_items reads)")
    p.add_argument("--data-format", choices=("jsonl", "csv", "parquet", "hf"),
                   help="read --data as this format (hf: a Hugging Face dataset name); default: by extension")
    p.add_argument("--seed", type=int, help="split and sampling seed (default: the run's, else 42)")
    p.add_argument("--val-fraction", type=float, help="split fractions (default: the run's, else 0.05 and 0.1)")
    p.add_argument("--test-fraction", type=float)
    p.add_argument("--batch-size", type=positive_int, default=16, help="prompts per batch (default 16)")
    p.add_argument("--bits", type=int, choices=(4, 8, 16), help="default: the run's, else 4")
    p.add_argument("--quant-type", choices=("nf4", "fp4"), help="default: the run's, else nf4")
    p.add_argument("--compute-dtype", choices=("bfloat16", "float16", "float32"),
                   help="default: the run's, else bfloat16")
    p.add_argument("--max-text-tokens", type=positive_int, help="default: the run's, else 160")
    add_answer_width_option(p)
    p.add_argument("--holdout-source", help="leave-one-source-out: the test split is this source file's items "
                                            "(e.g. mixed), the others train (default: the run's, else none)")


def add_answer_width_option(p: argparse.ArgumentParser) -> None:
    """--answer-width: the digits the model pads its answers to, as it was trained (data.answer_width)."""
    p.add_argument("--answer-width", type=_width, help="digits the adapter's answers are zero-padded to "
                                                       "(data.answer_width); default: the run's, else 0 (unpadded)")


def _width(text: str) -> int:
    """An answer width: a whole number of digits, 0 or more."""
    if not text.isdigit():
        raise argparse.ArgumentTypeError(f"{text!r} is not a number of digits (0 or more)")
    return int(text)


DEFAULT_PREDICTOR = "greedy"


def add_predictor_options(p: argparse.ArgumentParser, default: str = DEFAULT_PREDICTOR) -> None:
    """--predictor with the registry's names, and each predictor's own options in a --help section of its own."""
    p.add_argument("--predictor", choices=tuple(PREDICTORS), default=default,
                   help=f"how to price an item (default {default}); each is described below")
    for name, cls in PREDICTORS.items():
        cls.add_options(p.add_argument_group(f"--predictor {name}", _summary(cls)))


def _summary(cls: type[Predictor]) -> str:
    """The first line of the predictor's docstring."""
    lines = (cls.__doc__ or "").strip().splitlines()
    return lines[0] if lines else ""


def predictor_from_args(args: argparse.Namespace) -> Predictor:
    """The predictor --predictor names, built from its options; OptionError for another predictor's options."""
    for cls in PREDICTORS.values():
        given = cls.given_flags(args) if cls.name != args.predictor else []
        if given:
            raise OptionError(f"{', '.join(given)}: only for --predictor {cls.name}, not {args.predictor}")
    return PREDICTORS[args.predictor].from_args(args)


# What train.py trained with, where the command line leaves it open: evaluating on another
# split or another quantization than training used would score the wrong thing. Option -> the
# (section, field) of train.py's config; when the run does not say, the default is that field's
# own (training/config.py), read when needed so that importing evaluation does not import torch.
RUN_DEFAULTS = {"seed": ("data", "seed"), "val_fraction": ("data", "val_fraction"),
                "test_fraction": ("data", "test_fraction"), "max_text_tokens": ("data", "max_text_tokens"),
                "bits": ("model", "bits"), "quant_type": ("model", "quant_type"),
                "compute_dtype": ("model", "compute_dtype"),
                "holdout_source": ("data", "holdout_source"), "answer_width": ("data", "answer_width")}


def training_default(section: str, name: str) -> Any:
    """The value train.py uses for <section>.<name> when a config leaves it out (training.config's default)."""
    from training.config import Config

    return getattr(getattr(Config(), section), name)


def with_run_defaults(args: argparse.Namespace) -> argparse.Namespace:
    """Fill unset options from the run --adapter was trained in, else defaults.

    The run's settings are <run>/config.yaml when --adapter is train.py's <run>/adapter (or
    adapter-best), else the adapter folder's own training-config.yaml, which train.py saves in every
    adapter folder so that a copied or shipped adapter keeps them; neither: the defaults. Without
    --adapter, a --base folder's training-config.yaml (a merged model, python -m lora.export) counts.
    """
    import yaml

    from utils.bounded_yaml import read_yaml

    from lora.io import TRAINING_CONFIG_NAME

    run, merged = None, False
    if args.adapter:
        beside, inside = Path(args.adapter).parent / "config.yaml", Path(args.adapter) / TRAINING_CONFIG_NAME
        run = beside if beside.is_file() else inside
    elif getattr(args, "base", None) and Path(args.base).is_dir():
        run = Path(args.base) / TRAINING_CONFIG_NAME
        merged = True
    saved: Any = {}
    if run is not None and run.is_file():
        try:
            saved = read_yaml(run)
        except (yaml.YAMLError, UnicodeDecodeError) as e:
            raise OptionError(f"{run}: not readable YAML ({str(e).splitlines()[0]}); pass the options it would "
                              "give (--seed, --bits, ...) or repair it") from None
    if merged and getattr(args, "bits", None) is None:
        saved = served_as_saved(run, saved)
    for key, (section, name) in RUN_DEFAULTS.items():
        part = saved.get(section) if isinstance(saved, dict) else None
        if hasattr(args, key) and getattr(args, key) is None:
            default = training_default(section, name)
            setattr(args, key, part.get(name, default) if isinstance(part, dict) else default)
    return args


def served_as_saved(path: Path, saved: Any) -> Any:
    """A merged folder's training-config.yaml with model.bits 16: the folder's weights are served as saved.

    python -m lora.export writes bits 16 itself; a folder exported before it did carries the adapter's own
    `bits: 4`, which would quantize the merged weights again. Such a file is read as bits 16, with a note.
    """
    model = saved.get("model") if isinstance(saved, dict) else None
    if not isinstance(model, dict) or model.get("bits", 16) == 16:
        return saved
    print(f"note: {path} says bits {model['bits']} (how the adapter was trained; an older python -m lora.export "
          f"copied it); serving {path.parent}'s weights as saved, 16-bit (pass --bits {model['bits']} to quantize "
          "them)", file=sys.stderr)
    return {**saved, "model": {**model, "bits": 16}}
