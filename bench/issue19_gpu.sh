#!/usr/bin/env bash
# The rows issue 19's results table still lacked, on one GPU: for SmolLM2 the reference stack (peft,
# bench/reference_train.py, same recipe with LoRA+) on the pool split and on each held-out source,
# pricer on the held-out musical-appliances source, and full log-price resampling (data.resample_power
# 1, scored on validation); for Gemma 3 270M the base on every split and pricer (the SmolLM2 recipe:
# 3 epochs, LoRA+ 16) on the pool split and on each held-out source, and the reference stack on the
# pool split. Everything scored by evaluate.py's expected price (width 30).
#
# Each part starts its jobs detached (setsid) and returns, so that short device calls can carry more
# files while it trains; `status` says what has finished, `collect` packs the results for $OUT.
#   bash bench/issue19_gpu.sh smol  R     # R: a scratch folder on the GPU machine
#   bash bench/issue19_gpu.sh gemma R
#   bash bench/issue19_gpu.sh status R
#   bash bench/issue19_gpu.sh collect R OUT
# Needs the embedded models (resolve_model) and bitsandbytes. TRAIN_S and EVAL_S bound each
# training and evaluation in seconds.
set -u
part=${1:?usage: issue19_gpu.sh smol|gemma|status|collect R [OUT]}; R=${2:?scratch folder}
mkdir -p "$R/eval"; R=$(cd "$R" && pwd)
S=configs/smollm2-135m-pricer.yaml
G=configs/gemma3-270m-pricer.yaml
RECIPE="--train.epochs 3 --train.loraplus_ratio 16 --train.cuda_graphs false"   # the shipped SmolLM2 recipe, for Gemma (eager)
export OMP_NUM_THREADS=2 PYTHONUNBUFFERED=1

train() { local c=$1 name=$2; shift 2
  timeout "${TRAIN_S:-780}" python train.py --config "$c" --output_dir "$R/$name" --overwrite "$@" > "$R/$name.log" 2>&1; }
ref() { local c=$1 name=$2; shift 2
  timeout "${TRAIN_S:-780}" python -m bench.reference_train --config "$c" --output_dir "$R/$name" "$@" > "$R/$name.log" 2>&1; }
ev() { local name=$1; shift
  timeout "${EVAL_S:-300}" python evaluate.py "$@" --data data/amazon-prices --predictor expected --batch-size 64 \
    --out "$R/eval/$name" > "$R/eval-$name.log" 2>&1; }
tests() {  # name adapter: validation, pool test, balanced test
  ev "$1-val" --adapter "$2" --split val & ev "$1-pool" --adapter "$2" &
  ev "$1-balanced" --adapter "$2" --sample balanced --limit 400 & wait; }
detach() { setsid nohup bash "$0" "$1-jobs" "$R" > "$R/$1.out" 2>&1 < /dev/null & echo "started $1 jobs in $R"; }

case $part in
smol) python -c "from quant import resolve_model; print(resolve_model('smollm2-135m'))" || exit 1; detach smol ;;
gemma) detach gemma ;;
smol-jobs)
  { train $S smol-pricer-loso-musical --data.holdout_source musical-appliances &&
    ev smol-pricer-loso-musical --adapter "$R/smol-pricer-loso-musical/adapter" --holdout-source musical-appliances; } &
  { ref $S smol-ref-pool && tests smol-ref "$R/smol-ref-pool/adapter"; } &
  for s in mixed musical-appliances; do
    { ref $S smol-ref-loso-$s --data.holdout_source $s &&
      ev smol-ref-loso-$s --adapter "$R/smol-ref-loso-$s/adapter" --holdout-source $s; } &
  done
  { train $S smol-p10 --data.resample_power 1.0 && tests smol-p10 "$R/smol-p10/adapter"; } &
  { ev smol-base-pool --base smollm2-135m; ev smol-base-balanced --base smollm2-135m --sample balanced --limit 400; } &
  wait; echo "smol done" ;;
gemma-jobs)
  python -c "from quant import resolve_model; print(resolve_model('gemma3-270m'))" || exit 1
  python -m data.tokens gemma3-270m 2>&1 | head -20
  { train $G gemma-pricer-pool $RECIPE && tests gemma-pricer "$R/gemma-pricer-pool/adapter"; } &
  for s in mixed musical-appliances; do
    { train $G gemma-pricer-loso-$s $RECIPE --data.holdout_source $s &&
      ev gemma-pricer-loso-$s --adapter "$R/gemma-pricer-loso-$s/adapter" --holdout-source $s; } &
  done
  { ref $G gemma-ref-pool $RECIPE && tests gemma-ref "$R/gemma-ref-pool/adapter"; } &
  { ev gemma-base-pool --base gemma3-270m; ev gemma-base-balanced --base gemma3-270m --sample balanced --limit 400
    for s in mixed musical-appliances; do ev gemma-base-loso-$s --base gemma3-270m --holdout-source $s; done; } &
  wait; echo "gemma done" ;;
status)
  nvidia-smi --query-gpu=utilization.gpu,memory.used --format=csv,noheader
  for d in "$R"/*/; do n=$(basename "$d"); [ "$n" = eval ] && continue
    printf '%-30s %s\n' "$n" "$(tail -1 "$d/metrics.jsonl" 2>/dev/null | grep -o '"step": [0-9]*')"; done
  grep -a -h "adapter saved\|^reference:\|^error\|Error" "$R"/*.log | tail -20
  ls "$R/eval"; cat "$R"/*.out ;;
collect)
  OUT=${3:?collect needs OUT}
  python evaluate.py --compare "$R"/eval/* > "$OUT/compare.txt" 2>&1
  (cd "$R" && tar czf "$OUT/issue19-reports.tgz" $(ls -d eval/*/report.json eval/*/predictions.csv */metrics.jsonl \
     */config.yaml *.log *.out 2>/dev/null))
  # the adapters a shipping decision may need, in pieces under the 16 MB a returned file may have
  (cd "$R" && tar cf - $(ls -d gemma-pricer-pool/adapter smol-p10/adapter 2>/dev/null) | split -b 15m - "$OUT/adapters.tar.")
  ls -la "$OUT" ;;
*) echo "unknown part $part"; exit 2 ;;
esac
