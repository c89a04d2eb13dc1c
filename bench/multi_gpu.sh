#!/usr/bin/env bash
# Issue 10 on a 2-GPU machine: DDP throughput on the 8B-shaped NF4 model (1 vs 2 processes),
# and train.py's loss curve on 2 GPUs (batch 8, accumulation 1) against 1 GPU (batch 8,
# accumulation 2) over 50 steps on the same data order (dropout 0 so both are deterministic).
#   bash bench/multi_gpu.sh runs/multigpu
set -u
R=${1:-runs/multigpu}
mkdir -p "$R"
L="accelerate launch --num_machines 1 --dynamo_backend no --mixed_precision no"
for b in 4 16; do
  $L --num_processes 1 bench/ddp_speed.py --batch $b --out "$R" 2>&1 | grep --line-buffered "^DDP\|Error"
  $L --num_processes 2 --multi_gpu bench/ddp_speed.py --batch $b --out "$R" 2>&1 | grep --line-buffered "^DDP\|Error"
done
common="--config configs/smollm2-pricer.yaml --train.max_steps 50 --train.batch_size 8 --lora.dropout 0
  --train.cuda_graphs false --train.warmup_steps 5"
$L --num_processes 2 --multi_gpu train.py $common --train.grad_accum 1 --output_dir "$R/ddp2" > "$R/ddp2.log" 2>&1
CUDA_VISIBLE_DEVICES=0 python train.py $common --train.grad_accum 2 --output_dir "$R/ddp1" > "$R/ddp1.log" 2>&1
python - "$R" <<'PY'
import json, sys
r = sys.argv[1]
a, b = ([json.loads(l)["loss"] for l in open(f"{r}/{d}/metrics.jsonl")] for d in ("ddp1", "ddp2"))
diff = max(abs(x - y) / abs(x) for x, y in zip(a, b))
json.dump(dict(one_gpu=a, two_gpu=b, max_rel_diff=diff), open(f"{r}/loss_agreement.json", "w"))
print(f"loss curves over {len(a)} steps: 1 GPU x accum 2 vs 2 GPUs x accum 1, max relative difference {diff:.2e}")
PY
