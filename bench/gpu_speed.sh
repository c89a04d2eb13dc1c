#!/usr/bin/env bash
# Training and prediction speed on one GPU, in calls that fit the device's 10-minute limit (device time is scarce):
#   bash bench/gpu_speed.sh tests|b16|b4|parity|predict|profile   (results under $OUT)
# Needs bitsandbytes (and pytest for `tests`) on PYTHONPATH: .device/site and .device/pt, as
# staged by ../shared/tools/device_stage.py.
set -u
OUT=${OUT:-runs/gpu9}; mkdir -p "$OUT"
export PYTHONPATH=$PWD/.device/site:$PWD/.device/pt PYTHONUNBUFFERED=1 TOKENIZERS_PARALLELISM=false
quiet() { grep --line-buffered -v -i "warn\|kernels-community"; }
for part in "$@"; do
  case $part in
    tests)   nvidia-smi --query-gpu=name,memory.total --format=csv,noheader
             python -c "import torch, triton; print('torch', torch.__version__, 'triton', triton.__version__)"
             timeout 200 python -m pytest -q -p no:cacheprovider tests/test_train_graph.py --tb=line 2>&1 | grep "^E \|^/\|passed\|failed" | cut -c1-300 | tail -12 ;;
    b16|b4)  python -m bench.train_speed --only train --batches "${part#b}" --out "$OUT/$part" 2>&1 | quiet ;;
    parity)  python -m bench.train_speed --only parity --out "$OUT/parity" 2>&1 | quiet ;;
    predict) python -m bench.train_speed --only predict --out "$OUT/predict" 2>&1 | quiet ;;
    profile) python -m bench.profile_step --batch 16 --stacks pricer compiled --out "$OUT/profile" 2>&1 | quiet ;;
  esac
done
