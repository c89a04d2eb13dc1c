#!/usr/bin/env bash
# CUDA graphs with gradient accumulation: 1 GPU x accum 2 eager vs graphs, 2 GPUs graphs vs 1 GPU
# graphs, and fsdp 2 GPUs vs 1 GPU (SmolLM2, 50 steps, dropout 0); then SmolLM2 training speed.
set -u
OUT=$1
common="--config configs/smollm2-pricer.yaml --train.max_steps 50 --train.batch_size 8 --lora.dropout 0 --train.warmup_steps 5"
L="accelerate launch --num_machines 1 --dynamo_backend no --mixed_precision no --num_processes 2 --multi_gpu"
run1() { CUDA_VISIBLE_DEVICES=$1 timeout 120 python train.py $common "${@:3}" --output_dir /tmp/g/$2 > $OUT/$2.log 2>&1; }
run1 0 eager-1 --train.cuda_graphs false --train.grad_accum 2 &
run1 1 graphs-1 --train.cuda_graphs true --train.grad_accum 2 &
wait
timeout 150 $L train.py $common --train.cuda_graphs true --train.grad_accum 1 --output_dir /tmp/g/graphs-2 > $OUT/graphs-2.log 2>&1
run1 0 fsdp-1 --train.cuda_graphs false --train.distributed fsdp --train.grad_accum 2 &
s="--config configs/smollm2-pricer.yaml --train.max_steps 150"
CUDA_VISIBLE_DEVICES=1 timeout 120 python -m bench.reference_train $s --output_dir /tmp/g/ref > "$OUT/small-ref.log" 2>&1
wait
timeout 150 $L train.py $common --train.cuda_graphs false --train.distributed fsdp --train.grad_accum 1 --output_dir /tmp/g/fsdp-2 > $OUT/fsdp-2.log 2>&1
CUDA_VISIBLE_DEVICES=1 timeout 120 python train.py $s --output_dir /tmp/g/pricer > "$OUT/small-pricer.log" 2>&1
python - <<'PY' | tee $OUT/agreement.txt
import json
def losses(n):
    try:
        return [json.loads(l)["loss"] for l in open(f"/tmp/g/{n}/metrics.jsonl")]
    except OSError:
        return []
for a, b in (("eager-1", "graphs-1"), ("graphs-1", "graphs-2"), ("eager-1", "graphs-2"), ("fsdp-1", "fsdp-2")):
    x, y = losses(a), losses(b)
    if x and y:
        d = max(abs(p - q) / abs(p) for p, q in zip(x, y))
        print(f"{a} vs {b}: {min(len(x), len(y))} steps, max relative loss difference {d:.2e}; last {x[-1]:.4f} / {y[-1]:.4f}")
    else:
        print(f"{a} vs {b}: missing ({len(x)}, {len(y)} steps)")
for name in ("ref", "pricer"):
    try:
        rows = {r["step"]: r for r in map(json.loads, open(f"/tmp/g/{name}/metrics.jsonl"))}
        print(f"SmolLM2-135M batch 32, {name}: {100 / (rows[150]['elapsed'] - rows[50]['elapsed']):.2f} steps/s over steps 51-150")
    except (OSError, KeyError) as e:
        print(name, "missing", e)
PY
