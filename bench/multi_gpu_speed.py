"""Multi-GPU throughput and memory of pricer's training step on the Llama-3.1-8B-shaped NF4 model.

Launch with 1 and with N processes and compare tokens/s; every mode is train.py's own code:

    accelerate launch --num_processes 1 -m bench.multi_gpu_speed --mode graphs --batch 4 --out DIR
    accelerate launch --num_processes 2 --multi_gpu -m bench.multi_gpu_speed --mode graphs --batch 4 --out DIR
    bash bench/gpu.sh -n 2 multi_gpu_speed --mode graphs --batch 4    # on a GPU machine, staged (bench/gpu.sh)

--mode ddp       training.CompletionLossModel under accelerate's DDP (eager), LoRA gradients
                 all-reduced in buckets during backward (train.distributed ddp);
--mode graphs    training.CudaGraphLoss (forward + backward replayed as CUDA graphs) and one all-reduce
                 of the LoRA gradients after backward (train.distributed allreduce);
--mode fsdp      decoder layers and LoRA A/B sharded over the processes, 4-bit weights stored as
                 bf16 (train.distributed fsdp); eager.
The wrapping is training.parallel.wrap_for_processes, as train.py does it.

In every mode the supervised-token normaliser is summed across processes
(training.accumulate_gradients) and clipping is over the global norm. Each run appends one JSON
line to DIR/multi_gpu_speed.jsonl (mode, processes, per-GPU batch, tokens/s over all GPUs, per-GPU
peak memory after the model is built, the last loss).
"""
from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import torch

from bench.common.llama_shapes import build_llama_4bit, completion_batch


def parse_args() -> argparse.Namespace:
    """The command line (see the module docstring)."""
    ap = argparse.ArgumentParser()
    ap.add_argument("--mode", choices=("ddp", "graphs", "fsdp"), default="ddp")
    ap.add_argument("--batch", type=int, default=4)
    ap.add_argument("--accum", type=int, default=1)
    ap.add_argument("--steps", type=int, default=10)
    ap.add_argument("--warmup", type=int, default=3)
    ap.add_argument("--checkpointing", action="store_true", help="gradient checkpointing (not with graphs)")
    ap.add_argument("--out", default="runs/bench")
    ap.add_argument("--tiny", action="store_true", help="a 2-layer model of the same kind: a CPU smoke test")
    return ap.parse_args()


def build(args: argparse.Namespace, acc):
    """(the 8B-shaped NF4 model with LoRA on q/k/v/o, wrapped as train.py wraps it for args.mode)."""
    from lora import LoRAConfig, LoRALinear, inject_lora, lora_parameters
    from training import CompletionLossModel, CudaGraphLoss
    from training.parallel import ShardWhileLoading, wrap_for_processes

    shape = dict(hidden_size=64, intermediate_size=128, num_hidden_layers=2, num_attention_heads=4,
                 num_key_value_heads=2, vocab_size=512) if args.tiny else {}
    config = LoRAConfig(r=32, alpha=64, dropout=0.1, target_modules=["q_proj", "k_proj", "v_proj", "o_proj"])
    if args.mode == "fsdp":   # as train.py: each unit gets its LoRA and is sharded as it is built
        lm = build_llama_4bit(device=str(acc.device), quant_storage=torch.bfloat16,
                              on_unit=ShardWhileLoading(acc.device, config, LoRALinear), **shape)
        for p in lora_parameters(lm):
            p.requires_grad_(True)
    else:
        lm = build_llama_4bit(device=str(acc.device), **shape)
        inject_lora(lm, config)
    if args.checkpointing:
        lm.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
    wrapped = wrap_for_processes(CompletionLossModel(lm), {"graphs": "allreduce"}.get(args.mode, args.mode), acc)
    if args.mode == "graphs":
        wrapped.step_model = CudaGraphLoss(wrapped.step_model)
    return lm, wrapped


def main() -> None:
    import bitsandbytes as bnb
    from accelerate import Accelerator
    from accelerate.utils import AutocastKwargs

    from lora import lora_parameters
    from training import accumulate_gradients, clip_gradients

    args = parse_args()
    cuda = torch.cuda.is_available()
    acc = Accelerator(mixed_precision="bf16", kwargs_handlers=[AutocastKwargs(cache_enabled=args.mode != "graphs")])
    lm, wrapped = build(args, acc)
    params = lora_parameters(lm)
    # bitsandbytes' optimizers cannot step FSDP2's sharded parameters (train.py refuses them): torch's AdamW there
    optimizer = torch.optim.AdamW if args.mode == "fsdp" else bnb.optim.PagedAdamW32bit
    opt = acc.prepare_optimizer(optimizer(params, lr=1e-4, weight_decay=0.001))
    wrapped.train()
    micro = [dict(zip(("input_ids", "labels"), completion_batch(args.batch, seed=1000 * acc.process_index + j,
                                                               vocab=lm.config.vocab_size, device=str(acc.device))))
             for j in range(args.accum)]
    for b in micro:
        b["attention_mask"] = torch.ones_like(b["input_ids"])
    sync_gpu = torch.cuda.synchronize if cuda else (lambda: None)
    if cuda:
        torch.cuda.reset_peak_memory_stats()
    for i in range(args.warmup + args.steps):
        if i == args.warmup:
            sync_gpu()
            t0 = time.perf_counter()
        loss_sum, n_tok = accumulate_gradients(acc, wrapped.step_model, micro, allreduce=wrapped.allreduce)
        clip_gradients(acc, params, 0.3, fsdp=wrapped.fsdp)
        opt.step()
        opt.zero_grad(set_to_none=True)
    sync_gpu()
    dt = time.perf_counter() - t0
    peak = acc.gather(torch.tensor([torch.cuda.max_memory_allocated() / 2**30 if cuda else 0.0],
                                   device=acc.device)).tolist()
    if acc.is_main_process:
        tokens = args.batch * args.accum * 182 * args.steps * acc.num_processes
        row = dict(mode=args.mode, processes=acc.num_processes, batch=args.batch, accum=args.accum,
                   checkpointing=args.checkpointing, tokens_per_s=round(tokens / dt),
                   step_ms=round(1000 * dt / args.steps, 1), peak_gb_per_gpu=[round(p, 2) for p in peak],
                   loss=round(float(loss_sum / n_tok), 4), device=torch.cuda.get_device_name() if cuda else "cpu")
        print("DDP " + json.dumps(row), flush=True)
        Path(args.out).mkdir(parents=True, exist_ok=True)
        with open(Path(args.out) / "multi_gpu_speed.jsonl", "a") as f:
            f.write(json.dumps(row) + "\n")
    acc.end_training()


if __name__ == "__main__":
    main()
