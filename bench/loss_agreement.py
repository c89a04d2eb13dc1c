"""Loss agreement across processes: 2 GPUs x accumulation 1 against 1 GPU x accumulation 2, train.py on real
SmolLM2-135M weights (configs/smollm2-pricer.yaml, 50 steps, batch 8 per process, dropout 0, the same data order).

For each way of training several processes (CUDA graphs + one all-reduce, eager DDP, FSDP) it trains the
1-process and the 2-process run and prints the largest relative loss difference over the 50 steps and the
last losses; with identical arithmetic they are identical, FSDP differs by bf16 summation order. Needs 2 GPUs.

    python -m bench.loss_agreement --out DIR [--modes graphs ddp fsdp]
    bash bench/gpu.sh loss_agreement               # on a GPU machine, staged (bench/gpu.sh)
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
COMMON = ["--config", "configs/smollm2-pricer.yaml", "--train.max_steps", "50", "--train.batch_size", "8",
          "--lora.dropout", "0", "--train.warmup_steps", "5"]
MODES = {"graphs": ["--train.cuda_graphs", "true"], "ddp": ["--train.cuda_graphs", "false"],
         "fsdp": ["--train.cuda_graphs", "false", "--train.distributed", "fsdp"]}


def train(out: Path, name: str, processes: int, extra: list[str]) -> list[float]:
    """The losses of one train.py run (1 process on GPU 0 with accumulation 2, or 2 processes with 1)."""
    if processes == 1:
        cmd = [sys.executable, "train.py", "--train.grad_accum", "2"]
        env = dict(os.environ, CUDA_VISIBLE_DEVICES="0")
    else:
        cmd = ["accelerate", "launch", "--num_machines", "1", "--dynamo_backend", "no", "--mixed_precision", "no",
               "--num_processes", "2", "--multi_gpu", "train.py", "--train.grad_accum", "1"]
        env = dict(os.environ, NCCL_NVLS_ENABLE="0")
    folder = out / name
    with open(out / f"{name}.log", "w") as log:
        subprocess.run(cmd + COMMON + extra + ["--output_dir", str(folder), "--overwrite"], cwd=ROOT, env=env,
                       stdout=log, stderr=subprocess.STDOUT, timeout=300)
    metrics = folder / "metrics.jsonl"
    return [json.loads(line)["loss"] for line in open(metrics)] if metrics.is_file() else []


def agreement(a: list[float], b: list[float]) -> str:
    """'50 steps, max relative loss difference 0.00e+00; last 0.8495 / 0.8476', or what is missing."""
    if not a or not b:
        return f"missing ({len(a)}, {len(b)} steps)"
    diff = max(abs(p - q) / abs(p) for p, q in zip(a, b))
    return f"{min(len(a), len(b))} steps, max relative loss difference {diff:.2e}; last {a[-1]:.4f} / {b[-1]:.4f}"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", type=Path, default=Path("runs/loss_agreement"))
    ap.add_argument("--modes", nargs="+", choices=list(MODES), default=list(MODES))
    args = ap.parse_args()
    args.out = args.out.resolve()
    args.out.mkdir(parents=True, exist_ok=True)
    lines = []
    for mode in args.modes:
        one = train(args.out, f"{mode}-1", 1, MODES[mode])
        two = train(args.out, f"{mode}-2", 2, MODES[mode])
        lines.append(f"{mode}: 1 GPU x accumulation 2 vs 2 GPUs x accumulation 1: {agreement(one, two)}")
        print(lines[-1], flush=True)
    (args.out / "agreement.txt").write_text("\n".join(lines) + "\n")


if __name__ == "__main__":
    main()
