"""The reference stack trained on exactly what train.py trains on: for the quality parity run.

transformers + bitsandbytes (the same quant.load_base_model base and preparation) + peft LoRA,
with HF's own loss (model(..., labels=...).loss) in a plain loop: the same config file, data
split, prompts, collator, data order (training.StepBatches), optimizer, schedule and clipping as
train.py. Only the LoRA implementation and the loss code differ, so the two adapters'
evaluate.py reports compare the stacks. Single process, grad_accum 1 (then HF's per-batch mean
equals train.py's supervised-token normalisation). Saves a peft adapter to <output_dir>/adapter.

    python -m bench.reference_train --config configs/smollm2-pricer.yaml --output_dir runs/ref
"""
from __future__ import annotations

import json
import sys
import time
from pathlib import Path

import torch

from data import CompletionCollator
from quant import load_base_model, prepare_for_kbit_training
from training import StepBatches, build_scheduler, config_yaml, examples_of, load_splits, parse_args


def save(model, out: Path, cfg) -> None:
    """The peft adapter in <out>/adapter, naming the base as the config does, and the run's config.yaml beside it."""
    model.save_pretrained(out / "adapter")
    cfg_path = out / "adapter" / "adapter_config.json"
    saved = json.loads(cfg_path.read_text())
    saved["base_model_name_or_path"] = cfg.model.name  # peft writes the resolved cache path
    cfg_path.write_text(json.dumps(saved, indent=2))
    # As train.py does: evaluate.py and predict.py read the run's split, prompts and answer width from it.
    (out / "config.yaml").write_text(config_yaml(cfg))


def main() -> None:
    from peft import LoraConfig, get_peft_model

    cfg, _ = parse_args(sys.argv[1:])
    t = cfg.train
    if t.grad_accum != 1:
        sys.exit("reference_train.py runs grad_accum 1 only (HF's loss is a per-batch mean)")
    torch.manual_seed(t.seed)
    device = "cuda" if torch.cuda.is_available() else "cpu"
    model, tokenizer = load_base_model(cfg.model.name, bits=cfg.model.bits, quant_type=cfg.model.quant_type,
                                       double_quant=cfg.model.double_quant, compute_dtype=cfg.model.compute_dtype,
                                       device=device, verbose=False)
    model = prepare_for_kbit_training(model, gradient_checkpointing=t.gradient_checkpointing)
    targets = cfg.lora.target_modules
    model = get_peft_model(model, LoraConfig(
        r=cfg.lora.r, lora_alpha=cfg.lora.alpha, lora_dropout=cfg.lora.dropout, use_rslora=cfg.lora.use_rslora,
        target_modules=targets if isinstance(targets, str) else list(targets), task_type="CAUSAL_LM"))

    _, items = load_splits(cfg.data)
    collate = CompletionCollator(tokenizer, max_length=cfg.data.max_length,
                                 pad_to_multiple_of=cfg.data.pad_to_multiple_of)
    batches = StepBatches(examples_of(items, tokenizer, cfg.data), collate, t, rank=0, world=1)
    total = batches.total_steps()

    import bitsandbytes as bnb
    named = [(n, p) for n, p in model.named_parameters() if p.requires_grad]
    params = [p for _, p in named]
    # LoRA+ as train.py does it (training/optim.py): peft's B matrices get lr x loraplus_ratio.
    groups = [{"params": [p for n, p in named if "lora_B" not in n], "lr": t.lr},
              {"params": [p for n, p in named if "lora_B" in n], "lr": t.lr * t.loraplus_ratio}]
    kw = dict(weight_decay=t.weight_decay, betas=(0.9, 0.999), eps=1e-8)
    opt = {"adamw": torch.optim.AdamW, "paged_adamw_32bit": bnb.optim.PagedAdamW32bit,
           "paged_adamw_8bit": bnb.optim.PagedAdamW8bit, "adamw_8bit": bnb.optim.AdamW8bit}[t.optimizer](groups, **kw)
    sched = build_scheduler(t, opt, total)
    out = Path(cfg.output_dir)
    out.mkdir(parents=True, exist_ok=True)
    log = open(out / "metrics.jsonl", "w")
    model.train()
    started, step = time.time(), 0
    while step < total:
        batch, = batches(step)
        with torch.autocast(device, dtype=torch.bfloat16, enabled=t.mixed_precision == "bf16"):
            loss = model(input_ids=batch["input_ids"].to(device), attention_mask=batch["attention_mask"].to(device),
                         labels=batch["labels"].to(device)).loss
        loss.backward()
        norm = torch.nn.utils.clip_grad_norm_(params, t.max_grad_norm) if t.max_grad_norm else torch.zeros(())
        opt.step()
        sched.step()
        opt.zero_grad(set_to_none=True)
        step += 1
        if step % 10 == 0 or step == total:
            log.write(json.dumps({"step": step, "loss": float(loss.detach()), "grad_norm": float(norm),
                                  "elapsed": time.time() - started}) + "\n")
            log.flush()
    save(model, out, cfg)
    print(f"reference: {total} steps in {time.time() - started:.0f}s; adapter in {out / 'adapter'}")


if __name__ == "__main__":
    main()
