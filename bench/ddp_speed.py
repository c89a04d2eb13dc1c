"""Data-parallel throughput of pricer's training step on the Llama-3.1-8B-shaped NF4 model.

Launch with 1 and with N processes and compare tokens/s (the step is train.py's own:
train.CompletionLossModel under accelerator.prepare, train.accumulate_gradients with the
supervised-token normaliser summed across processes, only LoRA gradients all-reduced):

    accelerate launch --num_processes 1 bench/ddp_speed.py --batch 4 --out DIR
    accelerate launch --num_processes 2 --multi_gpu bench/ddp_speed.py --batch 4 --out DIR

Each run appends one JSON line to DIR/ddp_speed.jsonl (processes, per-GPU batch, tokens/s
over all GPUs, per-GPU peak memory).
"""
from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.llama8b import build_llama_4bit, completion_batch  # noqa: E402


def main() -> None:
    import bitsandbytes as bnb
    from accelerate import Accelerator

    from lora import LoRAConfig, inject_lora, lora_parameters
    from train import CompletionLossModel, accumulate_gradients

    ap = argparse.ArgumentParser()
    ap.add_argument("--batch", type=int, default=4)
    ap.add_argument("--accum", type=int, default=1)
    ap.add_argument("--steps", type=int, default=10)
    ap.add_argument("--warmup", type=int, default=3)
    ap.add_argument("--out", default="runs/bench")
    args = ap.parse_args()
    acc = Accelerator(mixed_precision="bf16")
    lm = build_llama_4bit(device=str(acc.device))
    inject_lora(lm, LoRAConfig(r=32, alpha=64, dropout=0.1, target_modules=["q_proj", "k_proj", "v_proj", "o_proj"]))
    wrapped = acc.prepare_model(CompletionLossModel(lm), device_placement=False)
    params = lora_parameters(lm)
    opt = acc.prepare_optimizer(bnb.optim.PagedAdamW32bit(params, lr=1e-4, weight_decay=0.001))
    wrapped.train()
    micro = [dict(zip(("input_ids", "labels"), completion_batch(args.batch, seed=1000 * acc.process_index + j,
                                                               device=str(acc.device))))
             for j in range(args.accum)]
    for b in micro:
        b["attention_mask"] = torch.ones_like(b["input_ids"])
    torch.cuda.reset_peak_memory_stats()
    for i in range(args.warmup + args.steps):
        if i == args.warmup:
            torch.cuda.synchronize()
            t0 = time.perf_counter()
        loss_sum, n_tok = accumulate_gradients(acc, wrapped, micro)
        acc.clip_grad_norm_(params, 0.3)
        opt.step()
        opt.zero_grad(set_to_none=True)
    torch.cuda.synchronize()
    dt = time.perf_counter() - t0
    tokens = args.batch * args.accum * 182 * args.steps * acc.num_processes
    peak = acc.gather(torch.tensor([torch.cuda.max_memory_allocated() / 2**30], device=acc.device)).tolist()
    if acc.is_main_process:
        row = dict(processes=acc.num_processes, batch=args.batch, accum=args.accum, tokens_per_s=round(tokens / dt),
                   step_ms=round(1000 * dt / args.steps, 1), peak_gb_per_gpu=[round(p, 2) for p in peak],
                   loss=round(float(loss_sum / n_tok), 4), device=torch.cuda.get_device_name())
        print("DDP " + json.dumps(row), flush=True)
        Path(args.out).mkdir(parents=True, exist_ok=True)
        with open(Path(args.out) / "ddp_speed.jsonl", "a") as f:
            f.write(json.dumps(row) + "\n")
    acc.end_training()


if __name__ == "__main__":
    main()
