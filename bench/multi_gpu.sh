#!/usr/bin/env bash
# On a 2-GPU machine, nothing else running: throughput scaling of the CUDA-graph step
# (train.distributed allreduce) on the Llama-3.1-8B shape, FSDP per-GPU memory, then
# bench/graph_accum.sh: loss agreement of 2 GPUs x accumulation 1 against 1 GPU x accumulation 2
# on real SmolLM2 weights, and SmolLM2's training speed with the reference stack and with pricer;
# also bench/profile_step.py on GPU 1 while GPU 0 runs the 1-GPU cells.
#   bash bench/multi_gpu.sh OUT
set -u
OUT=${1:?usage: multi_gpu.sh OUT}
mkdir -p "$OUT"; OUT=$(cd "$OUT" && pwd)
export NCCL_NVLS_ENABLE=0
L="accelerate launch --num_machines 1 --dynamo_backend no --mixed_precision no"
one="$L --num_processes 1"; two="$L --num_processes 2 --multi_gpu"
speed() { timeout 120 "$@" --out "$OUT" 2>&1 | grep --line-buffered "^DDP\|Error"; }
# GPU 1 meanwhile profiles an eager batch-16 step of both stacks (GPU kernel time only).
CUDA_VISIBLE_DEVICES=1 timeout 200 python -m bench.profile_step --batch 16 --out "$OUT" > "$OUT/profile.log" 2>&1 &
P=$!
for b in 4 16; do CUDA_VISIBLE_DEVICES=0 speed $one -m bench.ddp_speed --mode graphs --batch $b; done
CUDA_VISIBLE_DEVICES=0 speed $one -m bench.ddp_speed --mode ddp --batch 4
wait $P
for b in 4 16; do speed $two -m bench.ddp_speed --mode graphs --batch $b; done
for b in 4 16; do speed $two -m bench.ddp_speed --mode fsdp --batch $b; done
speed $two -m bench.ddp_speed --mode fsdp --batch 16 --checkpointing
python -c "from quant import resolve_model; print(resolve_model('smollm2-135m'))" || exit 1
# Loss agreement (graphs, eager, fsdp) and SmolLM2's speed against the reference stack.
bash bench/graph_accum.sh "$OUT"
