"""Training speed on a Llama-3.1-8B-shaped NF4 model: the reference stack vs pricer, tokens/s and peak memory.

Same GPU, same run, same base (random NF4 weights, bench/common/llama_shapes.py), same batches
(sequence length 182, completion-only labels on the last 5 tokens):

  reference : transformers + bitsandbytes NF4 (double quant, bf16 compute) + peft LoRA
              (r 32, alpha 64, dropout 0.1, q/k/v/o), model(..., labels=...).loss under bf16
              autocast, paged AdamW 32-bit, gradient clipping 0.3 -- a plain loop.
  pricer    : the same base with lora.inject_lora, training.CompletionLossModel (LM head only at
              supervised positions), and training.CudaGraphLoss (forward + backward captured once
              as CUDA graphs and replayed), the same optimizer and clipping.
  compiled  : pricer with training.compile_decoder_layers (torch.compile of each decoder layer,
              fusing the elementwise work between the matmuls), inside the same CUDA graphs.

Each cell also reports achieved TFLOP/s, and the summary its model FLOPs utilisation: bench/common/flops.py's
count (4 x decoder parameters + attention + LoRA, per token) over the bf16 matmul peak measured at
the start of the same run. Each (stack, batch, checkpointing) cell runs in its own process so that allocator and
paged-optimizer state never leak between cells. The same stacks' losses: bench.parity; prediction
speed: bench.predict_speed.

    python -m bench.train_speed --out DIR            # every cell: batch 16 and 4, with and without checkpointing
    python -m bench.train_speed --batches 16 --checkpointing off --stacks reference compiled   # some cells
    bash bench/gpu.sh train_speed --batches 16       # on a GPU machine, staged (bench/gpu.sh)
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import torch

from bench.common.flops import lora_step_flops_per_token, matmul_peak_tflops
from bench.common.llama_shapes import build_llama_4bit, completion_batch

ROOT = Path(__file__).resolve().parent.parent

SEQ = 182
LORA = dict(r=32, alpha=64, dropout=0.1)
TARGETS = ["q_proj", "k_proj", "v_proj", "o_proj"]


def reference_stack(lm, dropout=LORA["dropout"]):
    """peft on the base; returns (module to train, loss function(ids, labels) -> mean loss)."""
    from peft import LoraConfig, get_peft_model

    cfg = LoraConfig(r=LORA["r"], lora_alpha=LORA["alpha"], lora_dropout=dropout, target_modules=TARGETS,
                     task_type="CAUSAL_LM")
    pm = get_peft_model(lm, cfg)

    def loss_fn(ids, labels):
        with torch.autocast("cuda", dtype=torch.bfloat16):
            return pm(input_ids=ids, attention_mask=torch.ones_like(ids), labels=labels).loss
    return pm, loss_fn


def pricer_stack(lm, dropout=LORA["dropout"], graphs=True, compile=False):
    """pricer on the base; returns (model, loss function(ids, labels) -> mean loss)."""
    from lora import LoRAConfig, inject_lora
    from training.loss import CompletionLossModel
    from training.speed import CudaGraphLoss, compile_decoder_layers

    inject_lora(lm, LoRAConfig(r=LORA["r"], alpha=LORA["alpha"], dropout=dropout, target_modules=TARGETS))
    if compile:
        compile_decoder_layers(lm)
    loss_model = CompletionLossModel(lm)
    step_fn = CudaGraphLoss(loss_model) if graphs else loss_model

    def loss_fn(ids, labels):
        with torch.autocast("cuda", dtype=torch.bfloat16, cache_enabled=not graphs):
            loss_sum, n_tok = step_fn(ids, torch.ones_like(ids), labels)
        return loss_sum / n_tok
    return lm, loss_fn


def plain_loop(model, loss_fn):
    """The course recipe's loop around either stack (paged AdamW 32-bit, clipping 0.3): step(ids, labels) -> loss."""
    import bitsandbytes as bnb

    model.train()
    params = [p for p in model.parameters() if p.requires_grad]
    opt = bnb.optim.PagedAdamW32bit(params, lr=1e-4, weight_decay=0.001)

    def step(ids, labels):
        loss = loss_fn(ids, labels)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params, 0.3)
        opt.step()
        opt.zero_grad(set_to_none=True)
        return loss
    return step


def one_cell(stack: str, batch: int, checkpointing: bool, steps: int = 10, warmup: int = 3) -> dict:
    """Time `steps` optimizer steps of one stack at one batch size; peak memory over the whole process."""
    torch.cuda.reset_peak_memory_stats()
    lm = build_llama_4bit()
    if checkpointing:
        lm.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
    step = plain_loop(*(reference_stack(lm) if stack == "reference" else pricer_stack(lm, compile=stack == "compiled")))
    batches = [completion_batch(batch, SEQ, seed=s) for s in range(4)]
    for i in range(warmup + steps):
        if i == warmup:
            torch.cuda.synchronize()
            t0 = time.perf_counter()
        loss = step(*batches[i % len(batches)])
    torch.cuda.synchronize()
    dt = time.perf_counter() - t0
    tokens_per_s = batch * SEQ * steps / dt
    return dict(stack=stack, batch=batch, checkpointing=checkpointing, tokens_per_s=round(tokens_per_s),
                step_ms=round(1000 * dt / steps, 1), peak_gb=round(torch.cuda.max_memory_allocated() / 2**30, 2),
                last_loss=round(float(loss), 4),
                tflops=round(lora_step_flops_per_token(lm.config, SEQ, LORA["r"], TARGETS) * tokens_per_s / 1e12, 1))


STACKS = ("reference", "pricer", "compiled")
CELLS = [(s, b, c) for b, c in [(16, False), (16, True), (4, False), (4, True)] for s in STACKS]


def train_cells(args: argparse.Namespace) -> tuple[list[dict], list[dict]]:
    """Every asked-for (stack, batch, checkpointing) cell, each in its own process; (cells, speed ratios)."""
    cells = []
    for stack, b, ckpt in CELLS:
        if b not in args.batches or stack not in args.stacks or ckpt not in args.checkpointing:
            continue
        try:
            cmd = [sys.executable, "-m", "bench.train_speed", "--cell", stack, str(b), str(int(ckpt))]
            proc = subprocess.run(cmd,
                                  capture_output=True, text=True, timeout=420)
        except subprocess.TimeoutExpired:
            proc = subprocess.CompletedProcess([], 1, "", "timed out after 420 s")
        line = next((ln for ln in proc.stdout.splitlines() if ln.startswith("CELL ")), None)
        cell = json.loads(line[5:]) if line else dict(stack=stack, batch=b, checkpointing=ckpt,
                                                      error=proc.stderr.strip().splitlines()[-1:])
        print(json.dumps(cell), flush=True)
        cells.append(cell)
    ratios = []
    for b, ckpt in sorted({(c["batch"], c["checkpointing"]) for c in cells}):
        row = {c["stack"]: c for c in cells if c["batch"] == b and c["checkpointing"] == ckpt}
        r = row.get("reference")
        for stack in STACKS[1:]:
            p = row.get(stack)
            if r and p and "tokens_per_s" in r and "tokens_per_s" in p:
                ratios.append(dict(stack=stack, batch=b, checkpointing=ckpt,
                                   speed=round(p["tokens_per_s"] / r["tokens_per_s"], 2),
                                   memory=round(p["peak_gb"] / r["peak_gb"], 2)))
    return cells, ratios


def versions() -> dict:
    """The card, the package versions and the date, as every speed result starts."""
    import bitsandbytes, peft, transformers  # noqa: E401
    return {"device": torch.cuda.get_device_name(), "torch": torch.__version__,
            "transformers": transformers.__version__, "peft": peft.__version__,
            "bitsandbytes": bitsandbytes.__version__, "date": time.strftime("%Y-%m-%d")}


def summary(result: dict) -> str:
    """The printed table: versions, every cell and the ratios."""
    lines = [f"\n{result['device']}, torch {result['torch']}, transformers {result['transformers']}, "
             f"peft {result['peft']}, bitsandbytes {result['bitsandbytes']}, {result['date']}"]
    peak = result.get("bf16_peak_tflops")
    if peak:
        lines.append(f"bf16 matmul peak measured in this run: {peak} TFLOP/s (bench/common/flops.py)")
    for c in result.get("train", []):
        mfu = f"  {c['tflops']:>5} TFLOP/s  MFU {c['tflops'] / peak:.1%}" if peak and "tflops" in c else ""
        lines.append(f"{c['stack']:>9} batch {c['batch']:>2} ckpt {str(c['checkpointing']):>5}: " + (
            f"{c['tokens_per_s']:>6} tok/s  {c['peak_gb']:>6} GB{mfu}" if "tokens_per_s" in c else str(c.get("error"))))
    for r in result.get("ratios", []):
        lines.append(f"{r['stack']}/reference batch {r['batch']:>2} ckpt {str(r['checkpointing']):>5}: "
                     f"speed x{r['speed']}, memory x{r['memory']}")
    return "\n".join(lines)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", default=os.environ.get("OUT", "runs/bench"))
    ap.add_argument("--batches", type=int, nargs="+", default=[16, 4], help="training cells to run (batch sizes)")
    ap.add_argument("--stacks", nargs="+", default=list(STACKS), choices=STACKS)
    ap.add_argument("--checkpointing", nargs="+", default=[False, True], type=lambda v: v == "on",
                    metavar="off|on", help="training cells without and/or with gradient checkpointing")
    ap.add_argument("--cell", nargs=3, metavar=("STACK", "BATCH", "CKPT"), help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.cell:
        print("CELL " + json.dumps(one_cell(args.cell[0], int(args.cell[1]), args.cell[2] == "1")), flush=True)
        return
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    result = versions()
    result["bf16_peak_tflops"] = round(matmul_peak_tflops(), 1)
    result["train"], result["ratios"] = train_cells(args)
    (out / "train_speed.json").write_text(json.dumps(result, indent=1))
    print(summary(result))


if __name__ == "__main__":
    main()
