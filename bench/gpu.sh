#!/usr/bin/env bash
# Run one benchmark on a GPU machine: bash bench/gpu.sh [-n PROCESSES] NAME [ARGS ...]
#
# NAME is a module of bench/ (train_speed, parity, predict_speed, profile_step, multi_gpu_speed,
# capped_training, loss_agreement, quality_runs, estimators, export_fidelity, ...); ARGS go to it unchanged
# (`python -m bench.NAME --help` lists them). The runner
#   - puts packages staged beside the checkout first on the path (.device/site, .device/pt: a copy of
#     site-packages carried to a machine that cannot install them, e.g. bitsandbytes), when they exist;
#   - prints the card, driver and package versions, so that the output says what it ran on;
#   - runs `python -m bench.NAME ARGS` (with -n N > 1: under `accelerate launch --num_processes N
#     --multi_gpu`, NVLink multicast off), passing --out $OUT/NAME when the module takes --out and ARGS
#     do not give one;
#   - keeps everything it printed in $OUT/NAME.txt (OUT defaults to runs/gpu).
# Examples:
#   bash bench/gpu.sh train_speed --batches 16 4          # the training speed table (bench/RESULTS.md)
#   bash bench/gpu.sh -n 2 multi_gpu_speed --mode graphs --batch 16
#   bash bench/gpu.sh quality_runs --config configs/smollm2-135m-pricer.yaml --name smol
set -u
procs=1
if [ "${1:-}" = -n ]; then procs=${2:?-n needs a number}; shift 2; fi
name=${1:?usage: bash bench/gpu.sh [-n PROCESSES] NAME [ARGS ...]}; shift
[ -f "bench/$name.py" ] || { echo "error: no benchmark bench/$name.py (ls bench/*.py lists them)" >&2; exit 2; }
OUT=${OUT:-runs/gpu}; mkdir -p "$OUT/$name"
for d in .device/site .device/pt; do [ -d "$d" ] && PYTHONPATH="$PWD/$d${PYTHONPATH:+:$PYTHONPATH}"; done
export PYTHONPATH=${PYTHONPATH:-} PYTHONUNBUFFERED=1 TOKENIZERS_PARALLELISM=false NCCL_NVLS_ENABLE=0
out=()
case " $* " in *" --out "*) ;; *) python -m "bench.$name" --help 2>/dev/null | grep -q -- "--out" && out=(--out "$OUT/$name") ;; esac
if [ "$procs" -gt 1 ]; then
  run=(accelerate launch --num_machines 1 --dynamo_backend no --mixed_precision no --num_processes "$procs"
       --multi_gpu -m "bench.$name")
else
  run=(python -m "bench.$name")
fi
{
  nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader
  python -c "import torch, transformers, peft, bitsandbytes as b; print('torch', torch.__version__, 'transformers',
             transformers.__version__, 'peft', peft.__version__, 'bitsandbytes', b.__version__)"
  date -u +%Y-%m-%d
  "${run[@]}" "$@" "${out[@]}"
} 2>&1 | tee "$OUT/$name.txt"
exit "${PIPESTATUS[0]}"
