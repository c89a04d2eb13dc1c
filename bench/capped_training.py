"""QLoRA on one GPU under a memory cap: the Llama-3.1-70B shape in 48 GB, the 8B shape in 24 GB, pricer beside the reference.

One cell is (stack, shape, cap in GB of 2**30 bytes), each in its own process:
1. torch.cuda.set_per_process_memory_fraction(cap / card memory) before anything is allocated:
   torch's allocator holds no more than the cap (the CUDA context, about half a GB, is outside
   it, as on a card of that size).
2. The base built layer by layer with random NF4 weights (bench.common.llama_shapes, quant.layerwise):
   the build time, peak GPU memory and peak host memory (VmHWM) while building.
3. The stack, with gradient checkpointing, LoRA r 32 / alpha 64 / dropout 0.1 on q/k/v/o, torch
   AdamW (fp32 state on the GPU, inside the cap), clipping 0.3, bf16 autocast:
     pricer    : quant.prepare_for_kbit_training (norms fp32; embeddings and head stay bf16),
                 lora.inject_lora, training.CompletionLossModel (the head only at supervised
                 positions): the pieces train.py uses.
     reference : peft.prepare_model_for_kbit_training (every parameter that is not 4-bit cast
                 to fp32, embeddings and head included) + get_peft_model, model(..., labels).loss.
4. The largest batch that fits: steps at batch 1 and 2 give the memory a row costs; from the
   batch that predicts, down by ~15% at a time until two steps run without running out.
5. `steps` steps on one fixed batch of that size (sequence 182, the last 5 tokens supervised):
   losses (finite, falling), tokens/s over all steps but the first, the steps' peak GPU memory,
   and model FLOPs utilisation (bench/common/flops.py) against the bf16 matmul peak measured in the run.

    python -m bench.capped_training --out DIR                  # the four cells
    python -m bench.capped_training --cells pricer:70b:48 --steps 24
"""
from __future__ import annotations

import argparse
import gc
import json
import math
import os
import subprocess
import sys
import time
from pathlib import Path

import torch

from bench.common.flops import lora_step_flops_per_token, matmul_peak_tflops
from bench.common.llama_shapes import build_llama_4bit, completion_batch, llama_config
from quant.peak_memory import GB, PeakMemory, host_peak_gb

SEQ = 182
LORA = dict(r=32, alpha=64, dropout=0.1)
TARGETS = ["q_proj", "k_proj", "v_proj", "o_proj"]
CELLS = ["pricer:70b:48", "reference:70b:48", "pricer:8b:24", "reference:8b:24"]


def pricer_loss(lm):
    """train.py's pieces on the base: k-bit prep with checkpointing, LoRA, completion loss; loss(ids, labels)."""
    from lora import LoRAConfig, inject_lora
    from quant import prepare_for_kbit_training
    from training.loss import CompletionLossModel

    prepare_for_kbit_training(lm, gradient_checkpointing=True)
    inject_lora(lm, LoRAConfig(r=LORA["r"], alpha=LORA["alpha"], dropout=LORA["dropout"], target_modules=TARGETS))
    loss_model = CompletionLossModel(lm)

    def loss_fn(ids, labels):
        with torch.autocast(ids.device.type, dtype=torch.bfloat16):
            loss_sum, n_tok = loss_model(ids, torch.ones_like(ids), labels)
        return loss_sum / n_tok
    return lm, loss_fn


def reference_loss(lm):
    """peft's QLoRA recipe on the base: prepare_model_for_kbit_training with checkpointing, LoRA; loss(ids, labels)."""
    from peft import LoraConfig, get_peft_model, prepare_model_for_kbit_training

    lm = prepare_model_for_kbit_training(lm, use_gradient_checkpointing=True,
                                         gradient_checkpointing_kwargs={"use_reentrant": False})
    pm = get_peft_model(lm, LoraConfig(r=LORA["r"], lora_alpha=LORA["alpha"], lora_dropout=LORA["dropout"],
                                       target_modules=TARGETS, task_type="CAUSAL_LM"))

    def loss_fn(ids, labels):
        with torch.autocast(ids.device.type, dtype=torch.bfloat16):
            return pm(input_ids=ids, attention_mask=torch.ones_like(ids), labels=labels).loss
    return pm, loss_fn


def make_step(model, loss_fn, lr: float):
    """One optimizer step on (ids, labels) -> loss: AdamW over the trainable parameters, clipping 0.3."""
    model.train()
    params = [p for p in model.parameters() if p.requires_grad]
    opt = torch.optim.AdamW(params, lr=lr, weight_decay=0.001)

    def step(ids, labels):
        opt.zero_grad(set_to_none=True)
        loss = loss_fn(ids, labels)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params, 0.3)
        opt.step()
        return loss.item()
    step.n_trainable = sum(p.numel() for p in params)
    return step


def fits(step, batch: int, vocab: int, device: str, tries: int = 2) -> int | None:
    """Peak GPU bytes of `tries` steps at `batch`, or None when they run out of the capped memory."""
    ids, labels = completion_batch(batch, SEQ, vocab=vocab, device=device)
    torch.cuda.reset_peak_memory_stats()
    try:
        for _ in range(tries):
            step(ids, labels)
        return torch.cuda.max_memory_allocated()
    except RuntimeError as e:  # torch.OutOfMemoryError, or the same re-raised from inside autograd's backward
        if "out of memory" not in str(e).lower():
            raise
    del ids, labels
    gc.collect()
    torch.cuda.empty_cache()
    return None


def largest_batch(step, vocab: int, device: str, cap: int, limit: int = 512) -> tuple[int, list[dict]]:
    """The largest batch whose steps fit under `cap` bytes, and the tries that found it (batch, peak GB or None)."""
    tries = []
    p1 = fits(step, 1, vocab, device)
    tries.append(dict(batch=1, peak_gb=p1 and round(p1 / GB, 2)))
    if p1 is None:
        return 0, tries
    p2 = fits(step, 2, vocab, device, tries=1)
    tries.append(dict(batch=2, peak_gb=p2 and round(p2 / GB, 2)))
    if p2 is None:
        return 1, tries
    batch = min(limit, max(2, 1 + math.floor((0.98 * cap - p1) / max(p2 - p1, 1))))
    while batch > 2:
        peak = fits(step, batch, vocab, device)
        tries.append(dict(batch=batch, peak_gb=peak and round(peak / GB, 2)))
        if peak is not None:
            return batch, tries
        batch = max(2, int(batch * 0.85))
    return 2, tries


def train_fixed(step, batch: int, steps: int, vocab: int, device: str) -> dict:
    """`steps` steps on one fixed batch: losses, tokens/s (all steps but the first), peak GPU memory of the steps."""
    ids, labels = completion_batch(batch, SEQ, vocab=vocab, device=device, seed=1)
    if device == "cuda":
        torch.cuda.reset_peak_memory_stats()
    losses = [step(ids, labels)]
    if device == "cuda":
        torch.cuda.synchronize()
    t0 = time.perf_counter()
    losses += [step(ids, labels) for _ in range(steps - 1)]
    if device == "cuda":
        torch.cuda.synchronize()
    dt = time.perf_counter() - t0
    out = dict(batch=batch, steps=steps, losses=[round(x, 4) for x in losses],
               finite=all(math.isfinite(x) for x in losses), falling=losses[-1] < losses[0],
               tokens_per_s=round(batch * SEQ * (steps - 1) / dt, 1), step_s=round(dt / (steps - 1), 3))
    if device == "cuda":
        free, total = torch.cuda.mem_get_info()
        out |= dict(train_peak_gb=round(torch.cuda.max_memory_allocated() / GB, 2),
                    train_reserved_gb=round(torch.cuda.max_memory_reserved() / GB, 2),
                    device_in_use_gb=round((total - free) / GB, 2))  # the CUDA context included
    return out


def one_cell(stack: str, shape: str, cap_gb: float, steps: int, lr: float, device: str = "cuda",
             batch: int | None = None, **overrides) -> dict:
    """Build, find the largest batch under the cap (or take `batch`), train `steps` steps: the cell's figures."""
    if device == "cuda":
        torch.cuda.set_per_process_memory_fraction(cap_gb * GB / torch.cuda.get_device_properties(0).total_memory)
        torch.zeros(1, device=device)  # the CUDA context before the host measurement
    config = llama_config(shape, **overrides)
    cell = dict(stack=stack, shape=shape, cap_gb=cap_gb)
    t0 = time.perf_counter()
    with PeakMemory(device) as peak:
        lm = build_llama_4bit(device, shape=shape, **overrides)
    cell |= dict(load_s=round(time.perf_counter() - t0, 1), load_gpu_peak_gb=round(peak.gpu_gb, 2),
                 load_host_peak_gb=round(peak.host_gb, 2), load_host_added_gb=round(peak.host_added_gb, 2))
    model, loss_fn = (reference_loss if stack == "reference" else pricer_loss)(lm)
    step = make_step(model, loss_fn, lr)
    cell["trainable"] = step.n_trainable
    if batch is None:
        batch, cell["batch_search"] = largest_batch(step, config.vocab_size, device, int(cap_gb * GB))
        if batch == 0:
            return cell | dict(error=f"batch 1 does not fit in {cap_gb} GB")
    cell |= train_fixed(step, batch, steps, config.vocab_size, device)
    cell["flops_per_token"] = lora_step_flops_per_token(config, SEQ, LORA["r"], TARGETS)
    cell["tflops"] = round(cell["flops_per_token"] * cell["tokens_per_s"] / 1e12, 1)
    cell["host_peak_gb"] = round(host_peak_gb(), 2)  # the process's, from the start of the build to the end
    return cell


def run_cell(spec: str, args: argparse.Namespace) -> dict:
    """One cell (STACK:SHAPE:CAP) in its own process; its figures, or what it said when it failed."""
    stack, shape, cap = spec.split(":")
    cmd = [sys.executable, "-m", "bench.capped_training", "--cell", spec, "--steps", str(args.steps),
           "--lr", str(args.lr)]
    try:
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=args.cell_timeout)
    except subprocess.TimeoutExpired as e:
        proc = subprocess.CompletedProcess(cmd, 1, e.stdout or "", f"timed out after {args.cell_timeout} s")
    Path(args.out, f"{stack}-{shape}-{cap}.log").write_text(str(proc.stdout) + "\n" + str(proc.stderr))
    line = next((ln for ln in str(proc.stdout).splitlines() if ln.startswith("CELL ")), None)
    if line:
        return json.loads(line[5:])
    tail = [ln for ln in str(proc.stderr).strip().splitlines() if ln.strip()][-3:]
    return dict(stack=stack, shape=shape, cap_gb=float(cap), error=" | ".join(tail))


def summary(result: dict) -> str:
    """The printed table: the card and versions, then one line per cell."""
    lines = [f"\n{result['device']}, torch {result['torch']}, transformers {result['transformers']}, peft "
             f"{result['peft']}, bitsandbytes {result['bitsandbytes']}, {result['date']}; bf16 matmul peak "
             f"{result['bf16_peak_tflops']:.0f} TFLOP/s"]
    for c in result["cells"]:
        head = f"{c['stack']:>9} {c['shape']:>3} cap {c['cap_gb']:>4} GB: "
        if "tokens_per_s" not in c:
            lines.append(head + f"FAILED {c.get('error')} (load {c.get('load_s')} s, {c.get('load_gpu_peak_gb')} GB)")
            continue
        lines.append(head + f"batch {c['batch']:>3}, {c['tokens_per_s']:>8} tok/s, {c['tflops']} TFLOP/s, MFU "
                     f"{c['mfu']:.1%}, train peak {c['train_peak_gb']} GB (reserved {c['train_reserved_gb']}), "
                     f"load {c['load_s']} s peak GPU {c['load_gpu_peak_gb']} GB host {c['load_host_peak_gb']} GB; "
                     f"loss {c['losses'][0]} -> {c['losses'][-1]} finite {c['finite']}")
    return "\n".join(lines)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", default=os.environ.get("OUT", "runs/capped"))
    ap.add_argument("--cells", nargs="+", default=CELLS, help="STACK:SHAPE:CAP_GB (pricer|reference, 8b|70b)")
    ap.add_argument("--steps", type=int, default=24)
    ap.add_argument("--lr", type=float, default=2e-4)
    ap.add_argument("--cell-timeout", type=int, default=400)
    ap.add_argument("--cell", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.cell:
        stack, shape, cap = args.cell.split(":")
        print("CELL " + json.dumps(one_cell(stack, shape, float(cap), args.steps, args.lr)), flush=True)
        return
    import bitsandbytes, peft, transformers  # noqa: E401
    Path(args.out).mkdir(parents=True, exist_ok=True)
    result = dict(device=torch.cuda.get_device_name(), torch=torch.__version__, transformers=transformers.__version__,
                  peft=peft.__version__, bitsandbytes=bitsandbytes.__version__, date=time.strftime("%Y-%m-%d"),
                  bf16_peak_tflops=round(matmul_peak_tflops(), 1), command=" ".join(sys.argv), cells=[])
    for spec in args.cells:
        cell = run_cell(spec, args)
        if "tflops" in cell:
            cell["mfu"] = cell["tflops"] / result["bf16_peak_tflops"]
        print(json.dumps(cell), flush=True)
        result["cells"].append(cell)
        Path(args.out, "capped_training.json").write_text(json.dumps(result, indent=1))
    print(summary(result))


if __name__ == "__main__":
    main()
