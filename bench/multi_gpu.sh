#!/usr/bin/env bash
# Issue 10 on a 2-GPU machine, nothing else running: throughput scaling of the CUDA-graph step
# (train.distributed allreduce) on the Llama-3.1-8B shape, FSDP per-GPU memory, loss agreement
# of 2 GPUs x accumulation 1 against 1 GPU x accumulation 2 (graphs/allreduce and fsdp) on real
# SmolLM2 weights, and SmolLM2's training speed with the reference stack and with pricer;
# also bench/profile_step.py on GPU 1 while GPU 0 runs the 1-GPU cells.
#   bash bench/multi_gpu.sh OUT
set -u
OUT=${1:?usage: multi_gpu.sh OUT}
mkdir -p "$OUT"; OUT=$(cd "$OUT" && pwd)
export NCCL_NVLS_ENABLE=0
L="accelerate launch --num_machines 1 --dynamo_backend no --mixed_precision no"
one="$L --num_processes 1"; two="$L --num_processes 2 --multi_gpu"
speed() { timeout 120 "$@" --out "$OUT" 2>&1 | grep --line-buffered "^DDP\|Error"; }
# GPU 1 meanwhile profiles an eager batch-16 step of both stacks (issue 9; GPU kernel time only).
CUDA_VISIBLE_DEVICES=1 timeout 200 python bench/profile_step.py --batch 16 --out "$OUT" > "$OUT/profile.log" 2>&1 &
P=$!
for b in 4 16; do CUDA_VISIBLE_DEVICES=0 speed $one bench/ddp_speed.py --mode graphs --batch $b; done
CUDA_VISIBLE_DEVICES=0 speed $one bench/ddp_speed.py --mode ddp --batch 4
wait $P
for b in 4 16; do speed $two bench/ddp_speed.py --mode graphs --batch $b; done
for b in 4 16; do speed $two bench/ddp_speed.py --mode fsdp --batch $b; done
speed $two bench/ddp_speed.py --mode fsdp --batch 16 --checkpointing
python -c "from quant import resolve_model; print(resolve_model('smollm2-135m'))" || exit 1
common="--config configs/smollm2-pricer.yaml --train.max_steps 50 --train.batch_size 8 --lora.dropout 0
  --train.warmup_steps 5"
agree() {  # name, extra args: 2 processes x accum 1 against 1 process x accum 2
  timeout 150 $two train.py $common "${@:2}" --train.grad_accum 1 --output_dir /tmp/m/$1-2 > "$OUT/$1-2.log" 2>&1
  CUDA_VISIBLE_DEVICES=0 timeout 120 python train.py $common "${@:2}" --train.grad_accum 2 \
    --output_dir /tmp/m/$1-1 > "$OUT/$1-1.log" 2>&1
  python - "$1" <<'PY' | tee -a "$OUT/agreement.txt"
import json, sys
name = sys.argv[1]
a, b = ([json.loads(l)["loss"] for l in open(f"/tmp/m/{name}-{n}/metrics.jsonl")] for n in (1, 2))
diff = max(abs(x - y) / abs(x) for x, y in zip(a, b))
print(f"{name}: {len(a)} steps, 1 GPU x accum 2 vs 2 GPUs x accum 1: max relative loss difference {diff:.2e}; "
      f"first {a[0]:.4f}/{b[0]:.4f} last {a[-1]:.4f}/{b[-1]:.4f}")
PY
}
agree graphs --train.cuda_graphs true
agree fsdp --train.cuda_graphs false --train.distributed fsdp
# SmolLM2-135M, batch 32: the reference stack against pricer (graphs), 150 steps each, one GPU.
s="--config configs/smollm2-pricer.yaml --train.max_steps 150"
CUDA_VISIBLE_DEVICES=0 timeout 120 python bench/reference_train.py $s --output_dir /tmp/m/ref > "$OUT/small-ref.log" 2>&1
CUDA_VISIBLE_DEVICES=0 timeout 120 python train.py $s --output_dir /tmp/m/pricer > "$OUT/small-pricer.log" 2>&1
python - <<'PY' | tee -a "$OUT/agreement.txt"
import json
for name in ("ref", "pricer"):
    rows = {r["step"]: r for r in map(json.loads, open(f"/tmp/m/{name}/metrics.jsonl"))}
    # steps 51-150: past CUDA-graph capture and allocator warm-up (the reference logs every 10th step)
    dt = rows[150]["elapsed"] - rows[50]["elapsed"]
    print(f"SmolLM2-135M batch 32, {name}: {100 / dt:.2f} steps/s over steps 51-150, last loss {rows[150]['loss']:.4f}")
PY
