#!/usr/bin/env bash
# Quality on one GPU: pricer (train.py) and the reference stack (bench/reference_train.py)
# trained from configs/smollm2-pricer.yaml on real SmolLM2 weights, plus a balanced 2-epoch
# pricer run, then every adapter and the base evaluated by evaluate.py on two test splits:
# the whole held-out test split ("pool") and 400 price-balanced test items ("balanced").
#   bash bench/quality_gpu.sh runs/quality
set -u
R=${1:-runs/quality}
C=configs/smollm2-pricer.yaml
mkdir -p "$R/eval"
python -c "from quant import resolve_model; print(resolve_model('smollm2-135m'))" || exit 1
python train.py --config $C --output_dir "$R/pricer" > "$R/pricer.log" 2>&1 &
python -m bench.reference_train --config $C --output_dir "$R/reference" > "$R/reference.log" 2>&1 &
python train.py --config $C --data.balance true --train.epochs 2 --output_dir "$R/pricer-balanced" \
  > "$R/pricer-balanced.log" 2>&1 &
wait
evaluate() {  # name, model args...
  local name=$1; shift
  for pred in greedy expected; do
    python evaluate.py "$@" --data data/amazon-prices --split test --predictor $pred --batch-size 64 \
      --out "$R/eval/$name-$pred-pool" > /dev/null 2>&1
    python evaluate.py "$@" --data data/amazon-prices --split test --sample balanced --limit 400 \
      --predictor $pred --batch-size 64 --out "$R/eval/$name-$pred-balanced" > /dev/null 2>&1
  done
}
evaluate base --base smollm2-135m &
for run in pricer reference pricer-balanced; do
  [ -f "$R/$run/adapter/adapter_config.json" ] && evaluate $run --adapter "$R/$run/adapter" &
done
wait
tail -n 3 "$R"/*.log
python evaluate.py --compare "$R"/eval/*
