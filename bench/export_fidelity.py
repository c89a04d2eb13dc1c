"""How far the exported models' logits are from base + adapter: `python -m bench.export_fidelity [--smollm2]`.

For the tiny test Llama (an all-linear r=8 adapter with random B) and, with --smollm2, the embedded
SmolLM2-135M with the shipped adapters/smollm2-135m-pricer, it runs `python -m lora.export` (float32
and bfloat16 folders, f16 and q8_0 GGUF files) and prints one JSON line per comparison: the largest
|logit difference| over a listing prompt ending in "Price is $", that difference over max|logit|, the
mean |difference|, the share of positions whose top-1 token agrees, whether the last one (the first
price digit) does, and the seconds each export took. For SmolLM2 it also generates a price (greedy,
8 tokens) for --listings real listings with each model and counts the completions identical to base +
adapter unmerged. GGUF files are read back with transformers' GGUF loader, everything computed in
float32 on CPU.
"""
from __future__ import annotations

import argparse
import json
import os
import tempfile
import time
from pathlib import Path

import torch
from transformers import AutoModelForCausalLM, AutoTokenizer

from lora import LoRAConfig, inject_lora, load_adapter, save_adapter
from lora.export import main as export_main
from quant import load_base_model
from quant.tiny import build_tiny_llama

TEXT = "How much does this cost to the nearest dollar?\n\nCordless drill with two batteries.\n\nPrice is $"
REPO = Path(__file__).resolve().parent.parent
ADAPTER = REPO / "adapters" / "smollm2-135m-pricer"
DATA = REPO / "data" / "amazon-prices" / "appliances-lite.jsonl.gz"


def logits(model, tokenizer) -> torch.Tensor:
    with torch.no_grad():
        return model.eval()(input_ids=torch.tensor([tokenizer.encode(TEXT)])).logits[0].float()


def compare(name: str, got: torch.Tensor, want: torch.Tensor, **extra) -> None:
    diff, top = (got - want).abs(), got.argmax(-1) == want.argmax(-1)
    print(json.dumps({"comparison": name, "max_abs_diff": diff.max().item(), "max_abs_logit": want.abs().max().item(),
                      "relative": diff.max().item() / want.abs().max().item(), "mean_abs_diff": diff.mean().item(),
                      "top1_agreement": top.float().mean().item(), "price_digit_agrees": bool(top[-1]), **extra}),
          flush=True)


def export(adapter: Path, out: Path, *args: str) -> float:
    started = time.perf_counter()
    assert export_main(["--adapter", str(adapter), "--out", str(out), *args]) == 0
    return time.perf_counter() - started


def gguf_model(folder: Path, name: str, tmp: Path):
    """The GGUF read back alone: a folder with only the .gguf file, as llama.cpp would get it."""
    tmp.mkdir()
    os.link(folder / name, tmp / name)
    return AutoModelForCausalLM.from_pretrained(tmp, gguf_file=name, dtype=torch.float32)


def measure(label: str, base: str, adapter: Path, root: Path, listings: int = 0) -> None:
    """Print every comparison for one base + adapter (and the generated prices for `listings` listings)."""
    model, tokenizer = load_base_model(base, bits=16, compute_dtype=torch.float32, device="cpu", verbose=False)
    load_adapter(model, adapter)
    unmerged = logits(model, tokenizer)
    models = {"unmerged float32": model}
    for dtype, kinds in (("float32", ("f16", "q8_0")), ("bfloat16", ("f16", "q8_0"))):
        seconds = {}
        for kind in kinds:
            seconds[kind] = export(adapter, root / f"{dtype}-{kind}", "--dtype", dtype, "--gguf", kind)
        folder = root / f"{dtype}-{kinds[0]}"
        merged = logits(AutoModelForCausalLM.from_pretrained(folder, dtype=torch.float32), tokenizer)
        compare(f"{label}: {dtype} folder vs unmerged float32", merged, unmerged)
        models[f"{dtype} folder"] = AutoModelForCausalLM.from_pretrained(folder, dtype=torch.float32)
        for kind in kinds:
            name = f"model-{kind}.gguf"
            models[f"{kind} GGUF from the {dtype} folder"] = gguf = gguf_model(root / f"{dtype}-{kind}", name,
                                                                             root / f"g-{dtype}-{kind}")
            got = logits(gguf, tokenizer)
            compare(f"{label}: {kind} GGUF (from the {dtype} folder) vs that folder", got, merged,
                    export_seconds=round(seconds[kind], 1))
            compare(f"{label}: {kind} GGUF (from the {dtype} folder) vs unmerged float32", got, unmerged)
    if listings:
        same_prices(label, models, tokenizer, listings)


def same_prices(label: str, models: dict, tokenizer, listings: int) -> None:
    """Greedy completions after each listing's "Price is $", and how many equal the unmerged model's."""
    from data import load_items, test_prompt

    items = load_items(DATA, limit=listings, verbose=False)
    prompts = [torch.tensor([tokenizer.encode(test_prompt(item, tokenizer))]) for item in items]
    replies = {}
    for name, model in models.items():
        with torch.no_grad():
            replies[name] = [tokenizer.decode(model.generate(ids, max_new_tokens=8, do_sample=False,
                                                             pad_token_id=tokenizer.pad_token_id)[0, ids.shape[1]:],
                                              skip_special_tokens=True) for ids in prompts]
    reference = replies["unmerged float32"]
    for name, got in replies.items():
        print(json.dumps({"comparison": f"{label}: {name} completions vs unmerged float32", "listings": len(items),
                          "identical": sum(a == b for a, b in zip(got, reference)), "first": got[:5]}), flush=True)


def tiny_adapter(root: Path) -> tuple[str, Path]:
    base = build_tiny_llama(root / "tiny")
    model = AutoModelForCausalLM.from_pretrained(base, dtype=torch.float32)
    inject_lora(model, LoRAConfig(r=8, alpha=16, target_modules="all-linear"))
    torch.manual_seed(0)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if "lora_B" in name:
                p.normal_(0, 0.05)
    return str(base), save_adapter(model, root / "adapter", str(base))


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--smollm2", action="store_true", help="also SmolLM2-135M with the shipped adapter")
    p.add_argument("--listings", type=int, default=20, help="listings to generate prices for with SmolLM2")
    args = p.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        measure("tiny", *tiny_adapter(root), root / "tiny-exports")
        if args.smollm2:
            measure("smollm2", "smollm2-135m", ADAPTER, root / "smollm2-exports", args.listings)


if __name__ == "__main__":
    main()
