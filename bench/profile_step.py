"""Where a training step's GPU time goes on the Llama-3.1-8B NF4 shape: kernels by category.

Profiles a few eager steps of the reference stack, of pricer and of pricer with compiled
layers (bench/train_speed.py's stacks, graphs off so that every kernel is visible to the profiler)
at one batch size and prints, per stack, the GPU time per step of: NF4 dequantization, matrix multiplications,
attention, and everything else (elementwise, norms, copies, optimizer), plus the top kernels.

    python -m bench.profile_step --batch 16 [--steps 3] [--out DIR]
"""
from __future__ import annotations

import argparse
import gc
import json
from pathlib import Path

import torch

from bench.common.llama_shapes import build_llama_4bit, completion_batch
from bench.train_speed import SEQ, plain_loop, pricer_stack, reference_stack

CATEGORIES = (("dequantize", ("dequant",)), ("matmul", ("gemm", "xmma", "cutlass", "nvjet", "sm90_", "wgmma")),
              ("fused (inductor)", ("triton_",)),
              ("attention", ("flash", "fmha", "attention", "sdpa")))


def category(kernel: str) -> str:
    low = kernel.lower()
    return next((name for name, keys in CATEGORIES if any(k in low for k in keys)), "other")


def profile(stack: str, batch: int, steps: int) -> dict:
    from torch.profiler import ProfilerActivity, profile as torch_profile

    lm = build_llama_4bit()
    step = plain_loop(*(reference_stack(lm) if stack == "reference"
                        else pricer_stack(lm, graphs=False, compile=stack == "compiled")))
    ids, labels = completion_batch(batch, SEQ)
    for _ in range(2):
        step(ids, labels)
    torch.cuda.synchronize()
    with torch_profile(activities=[ProfilerActivity.CUDA]) as prof:
        for _ in range(steps):
            step(ids, labels)
        torch.cuda.synchronize()
    kernels: dict[str, float] = {}
    for evt in prof.events():
        if evt.device_type == torch.autograd.DeviceType.CUDA:
            kernels[evt.name] = kernels.get(evt.name, 0.0) + evt.device_time / 1000 / steps  # ms per step
    by_cat: dict[str, float] = {}
    for name, ms in kernels.items():
        by_cat[category(name)] = by_cat.get(category(name), 0.0) + ms
    top = sorted(kernels.items(), key=lambda kv: -kv[1])[:12]
    return dict(stack=stack, batch=batch, gpu_ms_per_step=round(sum(kernels.values()), 1),
                by_category={k: round(v, 1) for k, v in sorted(by_cat.items(), key=lambda kv: -kv[1])},
                top_kernels=[(name[:90], round(ms, 2)) for name, ms in top])


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--batch", type=int, default=16)
    ap.add_argument("--steps", type=int, default=3)
    ap.add_argument("--out", default="runs/bench")
    ap.add_argument("--stacks", nargs="+", default=["reference", "pricer", "compiled"],
                    choices=["reference", "pricer", "compiled"])
    args = ap.parse_args()
    rows = []
    for stack in args.stacks:
        rows.append(profile(stack, args.batch, args.steps))
        gc.collect()  # the first stack's model and optimizer go before the second is built
        torch.cuda.empty_cache()
    for row in rows:
        print(f"{row['stack']:9s} batch {row['batch']}: {row['gpu_ms_per_step']} ms of GPU kernels per step: "
              + ", ".join(f"{k} {v}" for k, v in row["by_category"].items()), flush=True)
        for name, ms in row["top_kernels"]:
            print(f"    {ms:8.2f} ms  {name}")
    Path(args.out).mkdir(parents=True, exist_ok=True)
    (Path(args.out) / f"profile-b{args.batch}.json").write_text(json.dumps(rows, indent=1))


if __name__ == "__main__":
    main()
