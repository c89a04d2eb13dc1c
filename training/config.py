"""The training config: five sections of typed fields, each with its default, its valid range and
a one-line description (what `train.py --help` lists), and the checks that need several fields.

    cfg = load_config("configs/demo.yaml", {"train.lr": "2e-4"})     # training.parse
    cfg.train.lr, cfg.lora.r, cfg.output_dir

LoRA's defaults are LoRAConfig's (lora/config.py): the lora section refers to them, so there is
one set. Ranges are written as intervals, "[1, inf)" or "(0, 1)", and checked when the config is
built, before any model loads.
"""
from __future__ import annotations

import dataclasses
import math
import re
from dataclasses import asdict, dataclass, field
from typing import Any, Literal

import yaml

from lora import LoRAConfig
from training.errors import ConfigError

_LORA = LoRAConfig()


def knob(default: Any, help: str, valid: str | None = None) -> Any:
    """A config field: its default, a one-line description and, for numbers, its valid interval."""
    if isinstance(default, (list, dict)):
        return field(default_factory=lambda: type(default)(default), metadata={"help": help, "valid": valid})
    return field(default=default, metadata={"help": help, "valid": valid})


@dataclass
class ModelConfig:
    """The frozen base model and how it is quantized."""

    name: str = knob("smollm2-135m", "the embedded smollm2-135m or gemma3-270m, a checkpoint folder, or a hub id")
    bits: int = knob(4, "base weights in 4 (NF4/FP4), 8 (int8) or 16 bits", "{4, 8, 16}")
    quant_type: Literal["nf4", "fp4"] = knob("nf4", "4-bit code: NF4 (QLoRA's) or FP4")
    double_quant: bool = knob(True, "quantize the 4-bit block scales too (QLoRA's double quantization)")
    compute_dtype: Literal["bfloat16", "float16", "float32"] = knob("bfloat16", "dtype the 4/8-bit matmuls run in")
    quant_storage: str | None = knob(None, "storage dtype of packed 4-bit weights (fsdp sets the compute dtype)")


@dataclass
class LoRASection:
    """The adapter; defaults are LoRAConfig's."""

    r: int = knob(_LORA.r, "rank of the update B A", "[1, inf)")
    alpha: float = knob(_LORA.alpha, "scaling numerator: the update is (alpha / r) B A", "(0, inf)")
    dropout: float = knob(_LORA.dropout, "dropout on the adapter's input", "[0, 1)")
    target_modules: list[str] | str = knob(list(_LORA.target_modules),
                                           "linear layers to wrap: names, 'all-linear', or a regex")
    use_rslora: bool = knob(_LORA.use_rslora, "scale by alpha / sqrt(r) (rsLoRA)")
    use_dora: bool = knob(_LORA.use_dora, "DoRA: a trainable magnitude per output row")
    init: Literal["kaiming", "gaussian"] = knob(_LORA.init, "initialisation of A (B starts at zero)")


@dataclass
class DataConfig:
    """Listings, their split, and how they become token batches."""

    source: str = knob("data/amazon-prices", "a file, folder or dataset that data.load_items reads")
    seed: int = knob(42, "seed of the train/val/test split (evaluate.py must use the same)", "[0, inf)")
    val_fraction: float = knob(0.05, "share of items held out for validation", "[0, 1)")
    test_fraction: float = knob(0.1, "share of items held out for testing (never trained on)", "[0, 1)")
    limit: int | None = knob(None, "stop loading after this many items (null: all)", "[1, inf)")
    max_text_tokens: int = knob(160, "listing text is cut to this many tokens in the prompt", "[1, inf)")
    max_length: int = knob(182, "longest training sequence in tokens (prompt middles are cut)", "[8, inf)")
    balance: bool = knob(False, "the course's cap per whole-dollar price bucket (train split only)")
    balance_cap: int = knob(1200, "with balance: items kept per price bucket", "[1, inf)")
    balance_keep_all_above: float = knob(240.0, "with balance: buckets at or above this price are kept whole",
                                         "[0, inf)")
    pad_to_multiple_of: int | None = knob(None, "pad batch lengths to a multiple of this (null: no rounding)",
                                          "[1, inf)")
    holdout_source: str | None = knob(None, "train without this source file (e.g. mixed); it becomes the test split")
    resample_power: float = knob(0.0, "even out log-price buckets: 0 keeps the data, 1 gives each bucket one share",
                                 "[0, 1]")
    answer_width: int = knob(0, "zero-pad the answer's dollars to this many digits (4: 0123.00), magnitude first; "
                                "0: as written (123.00)", "[0, 8]")


@dataclass
class TrainConfig:
    """The loop: steps, batches, optimizer and schedule, speed, validation and checkpoints."""

    epochs: int = knob(1, "passes over the training split (max_steps overrides)", "[1, inf)")
    max_steps: int | None = knob(None, "optimizer steps to run; overrides epochs when set", "[1, inf)")
    batch_size: int = knob(4, "examples per micro-batch, per process", "[1, inf)")
    grad_accum: int = knob(1, "micro-batches per optimizer step", "[1, inf)")
    lr: float = knob(1e-4, "peak learning rate", "(0, inf)")
    schedule: Literal["cosine", "linear", "constant"] = knob("cosine", "learning-rate decay after warmup")
    warmup_ratio: float = knob(0.03, "warmup as a share of all steps (rounded up)", "[0, 1)")
    warmup_steps: int | None = knob(None, "warmup in steps; overrides warmup_ratio when set", "[0, inf)")
    optimizer: Literal["adamw", "paged_adamw_32bit", "paged_adamw_8bit", "adamw_8bit"] = knob(
        "adamw", "torch AdamW, or a bitsandbytes paged / 8-bit AdamW")
    weight_decay: float = knob(0.0, "AdamW weight decay", "[0, inf)")
    max_grad_norm: float = knob(1.0, "clip the global gradient norm to this (0: no clipping)", "[0, inf)")
    loraplus_ratio: float = knob(1.0, "LoRA+: B's lr = lr x ratio (1: off)", "(0, inf)")
    gradient_checkpointing: bool = knob(False, "recompute activations in backward: less memory, slower steps")
    cuda_graphs: bool = knob(False, "capture forward+backward once as CUDA graphs and replay them (GPU)")
    compile: bool = knob(False, "torch.compile each decoder layer (fuses the work between matmuls)")
    distributed: Literal["ddp", "allreduce", "fsdp"] = knob("ddp", "how several processes share the work")
    mixed_precision: Literal["bf16", "fp16", "no"] = knob("bf16", "autocast dtype for the forward pass")
    group_by_length: bool = knob(False, "batch examples of similar length together (less padding)")
    eval_every: int = knob(0, "validate every this many steps (0: never)", "[0, inf)")
    eval_batches: int = knob(20, "validation batches per evaluation", "[1, inf)")
    price_eval_items: int = knob(0, "price this many validation items at each evaluation (0: off)", "[0, inf)")
    price_predictor: str = knob("greedy", "the predictor (evaluate.py --predictor) of that price metric")
    keep_best: Literal["none", "val_loss", "val_rmsle", "val_hit_rate", "val_avg_error"] = knob(
        "none", "save the adapter with the best value of this validation metric to <output_dir>/adapter-best/")
    early_stopping_patience: int = knob(0, "stop after this many validations without improvement (0: never)",
                                        "[0, inf)")
    save_every: int = knob(0, "checkpoint every this many steps (0: only when interrupted)", "[0, inf)")
    keep_last: int = knob(2, "checkpoints kept; older ones are deleted", "[1, inf)")
    seed: int = knob(42, "seed of the data order, LoRA init and dropout", "[0, 4294967295]")


@dataclass
class LogConfig:
    """Where metrics go besides <output_dir>/metrics.jsonl."""

    report_to: Literal["none", "wandb", "tensorboard"] = knob("none", "experiment tracker")
    project: str = knob("pricer", "tracker project name")
    run_name: str | None = knob(None, "tracker run name (null: the tracker's own)")
    log_every: int = knob(10, "send metrics to the tracker every this many steps", "[1, inf)")


@dataclass
class Config:
    """A whole training run."""

    model: ModelConfig = field(default_factory=ModelConfig)
    lora: LoRASection = field(default_factory=LoRASection)
    data: DataConfig = field(default_factory=DataConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    log: LogConfig = field(default_factory=LogConfig)
    output_dir: str = knob("runs/train", "folder for metrics, checkpoints and the adapter")


def sections() -> dict[str, type]:
    """{"model": ModelConfig, ...}: the config's sections by name."""
    return {f.name: f.default_factory for f in dataclasses.fields(Config)
            if f.default_factory is not dataclasses.MISSING}


def in_interval(value: float, interval: str) -> bool:
    """Whether value lies in an interval written "[1, inf)", "(0, 1)" or a set "{4, 8, 16}"."""
    if interval.startswith("{"):
        return value in {float(v) for v in interval.strip("{}").split(",")}
    low, high = (float(v) for v in interval[1:-1].split(","))
    above = value >= low if interval[0] == "[" else value > low
    below = value <= high if interval[-1] == "]" else value < high
    return above and below and not math.isnan(value)


def check_ranges(cfg: Config) -> None:
    """ConfigError for the first numeric field outside its valid interval."""
    for section, cls in sections().items():
        values = getattr(cfg, section)
        for f in dataclasses.fields(cls):
            value, valid = getattr(values, f.name), f.metadata.get("valid")
            if valid and value is not None and not in_interval(value, valid):
                raise ConfigError(f"{section}.{f.name} must be in {valid}, got {value!r} ({f.metadata['help']})")


def _predictors() -> list[str]:
    from predictors import PREDICTORS

    return list(PREDICTORS)


def validate(cfg: Config) -> None:
    """Refuse a config whose values cannot work together, before any model or data loads."""
    lora_config_of(cfg)
    check_ranges(cfg)
    t = cfg.train
    checks = [
        (cfg.data.val_fraction + cfg.data.test_fraction < 1,
         "data.val_fraction + data.test_fraction must be below 1: nothing would be left to train on"),
        (t.distributed != "fsdp" or cfg.model.bits in (4, 16),
         "train.distributed fsdp needs model.bits 4 or 16 (8-bit weights cannot be sharded)"),
        (t.distributed != "fsdp" or not cfg.lora.use_dora,
         "train.distributed fsdp does not support lora.use_dora (the magnitude sits beside the 4-bit base)"),
        (t.distributed != "fsdp" or not t.price_eval_items,
         "train.price_eval_items needs the whole model in one process; with fsdp set it to 0 and run "
         "evaluate.py on the saved adapter"),
        (t.distributed != "fsdp" or not t.cuda_graphs,
         "train.cuda_graphs does not work with fsdp (its all-gathers run outside the graph); use ddp or allreduce"),
        (t.eval_every or (t.keep_best == "none" and not t.early_stopping_patience),
         "train.keep_best and train.early_stopping_patience watch validations: set train.eval_every too"),
        (t.keep_best in ("none", "val_loss") or t.price_eval_items,
         f"train.keep_best {t.keep_best} is a price metric: set train.price_eval_items (e.g. 200) too"),
        (t.price_predictor in _predictors(),
         f"train.price_predictor must be one of {', '.join(_predictors())}, got {t.price_predictor!r}"),
        (t.distributed != "fsdp" or not t.compile,
         "train.compile is not supported with fsdp (untested with its flat parameters); use ddp or allreduce"),
    ]
    for ok, message in checks:
        if not ok:
            raise ConfigError(message)


def lora_config_of(cfg: Config) -> LoRAConfig:
    """The lora section as a LoRAConfig; a bare module name ("q_proj") means that one module, not a regex."""
    targets = cfg.lora.target_modules
    if isinstance(targets, str) and targets != "all-linear" and re.fullmatch(r"[\w.]+", targets):
        targets = [targets]
    try:
        return LoRAConfig(r=cfg.lora.r, alpha=cfg.lora.alpha, dropout=cfg.lora.dropout, target_modules=targets,
                          use_rslora=cfg.lora.use_rslora, use_dora=cfg.lora.use_dora, init=cfg.lora.init,
                          base_model_name_or_path=cfg.model.name)
    except ValueError as e:
        raise ConfigError(f"lora: {e}") from None


def config_yaml(cfg: Config, changes: list[dict[str, Any]] = ()) -> str:
    """The resolved config as YAML (loadable with --config), headed by comments naming a resume's changes."""
    from training.changes import changes_comment

    return changes_comment(list(changes)) + yaml.safe_dump(asdict(cfg), sort_keys=False)


def flat_config(cfg: Config) -> dict[str, Any]:
    """{"train.lr": 1e-4, ...}, non-scalars as strings: what trackers' hyper-parameter tables take."""
    flat = {}
    for section, values in asdict(cfg).items():
        for key, value in (values.items() if isinstance(values, dict) else [(None, values)]):
            flat[f"{section}.{key}" if key else section] = (
                value if isinstance(value, (int, float, str, bool)) else str(value))
    return flat
