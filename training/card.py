"""The model card (README.md) written beside every adapter train.py saves: what it is, how it was
trained, what it scored on validation, and how to load it with pricer, peft and vLLM.
evaluate.py appends its test metrics under "## Evaluations"."""
from __future__ import annotations

from typing import Any

from quant import canonical_name
from training.changes import describe
from training.config import Config

METRIC_NAMES = {"val_loss": "validation loss", "val_rmsle": "validation RMSLE", "val_hit_rate": "validation hit rate",
                "val_avg_error": "validation average error ($)"}


def _metrics_lines(metrics: dict[str, Any]) -> list[str]:
    rows = [f"| {METRIC_NAMES[k]} | {metrics[k]:.4f} |" for k in METRIC_NAMES if isinstance(metrics.get(k), float)]
    if not rows:
        return ["No validation during training (train.eval_every 0); see the evaluations below, if any."]
    return [f"At step {metrics.get('step')}:", "", "| metric | value |", "|---|---|", *rows]


def model_card(cfg: Config, name: str, metrics: dict[str, Any], data: dict[str, Any],
               changes: list[dict[str, Any]] = ()) -> str:
    """README.md for an adapter saved from `cfg`'s run; `metrics` the last validation record, `data` its fingerprint,
    `changes` what resumes changed (training.changes)."""
    base = canonical_name(cfg.model.name)
    lora, t = cfg.lora, cfg.train
    targets = lora.target_modules if isinstance(lora.target_modules, str) else ", ".join(lora.target_modules)
    lines = [
        "---", f"base_model: {base}", "library_name: peft", "tags: [lora, qlora, pricer, price-prediction]", "---",
        "", f"# {name}", "",
        f"A LoRA adapter for `{base}` that reads an Amazon product description and says its price,",
        "trained with pricer (hand-written QLoRA over a bitsandbytes 4-bit base; peft-format files).", "",
        "## Recipe", "",
        f"- base: `{base}` in {cfg.model.bits}-bit" + (f" {cfg.model.quant_type}" if cfg.model.bits == 4 else ""),
        f"- LoRA: r {lora.r}, alpha {lora.alpha:g}, dropout {lora.dropout:g}, on {targets}"
        + (", rsLoRA" if lora.use_rslora else "") + (", DoRA" if lora.use_dora else ""),
        f"- training: {t.max_steps or str(t.epochs) + ' epoch(s)'}{' steps' if t.max_steps else ''}, "
        f"batch {t.batch_size} x accumulation {t.grad_accum}, lr {t.lr:g} {t.schedule}, "
        f"{t.optimizer}, max grad norm {t.max_grad_norm:g}" + (f", LoRA+ {t.loraplus_ratio:g}" if
                                                                t.loraplus_ratio != 1 else ""),
        f"- data: `{cfg.data.source}`, {data.get('items')} items after de-duplication, split seed {cfg.data.seed} "
        f"(train/val/test hash {data.get('split')}); prompts cut to {cfg.data.max_text_tokens} text tokens",
        *([f"- answers: the price zero-padded to {cfg.data.answer_width} digits "
           f"(`Price is ${12:0{cfg.data.answer_width}d}.00`, data.answer_width); evaluate.py and predict.py read the "
           "width from `training-config.yaml`, and other tools must read its leading zeros as padding"]
          if cfg.data.answer_width else []),
        *[f"- changed on resume: {describe(c)}" for c in changes],
        "- the full config: `training-config.yaml` in this folder (evaluate.py and predict.py read their defaults "
        "from it); code, versions and device: `run.json` beside the run", "",
        "## Validation", "", *_metrics_lines(metrics), "",
        "## Use", "", "```bash",
        "python predict.py --adapter ADAPTER_DIR --text \"Cordless drill, 20V, two batteries\"",
        "python evaluate.py --adapter ADAPTER_DIR --data data/amazon-prices --predictor expected --out runs/eval",
        "```", "", "```python",
        "from quant import load_base_model; from lora import load_adapter        # pricer",
        f"model, tokenizer = load_base_model(\"{base}\"); load_adapter(model, \"ADAPTER_DIR\")",
        "from peft import AutoPeftModelForCausalLM                               # peft",
        "model = AutoPeftModelForCausalLM.from_pretrained(\"ADAPTER_DIR\")", "```", "",
        f"vLLM: `vllm serve {base} --enable-lora --lora-modules pricer=ADAPTER_DIR --max-lora-rank {max(lora.r, 8)}`",
        "", "## Evaluations", "",
    ]
    return "\n".join(lines) + "\n"
