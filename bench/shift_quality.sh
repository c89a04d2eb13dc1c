#!/usr/bin/env bash
# Shift-robust training on one GPU, in one call: SmolLM2 with the shipped adapter's recipe
# (configs/smollm2-135m-pricer.yaml) and with log-price resampling (data.resample_power 0.5), on the
# pool split (POOL=1) and with each SOURCE held out (leave-one-source-out); every adapter, the
# shipped one and the base model scored by evaluate.py's expected predictor: validation (with and
# without --search-accounting by-length: the selection), the pool and balanced test splits, and
# each held-out source. Needs the embedded SmolLM2 (resolve_model) and bitsandbytes.
#   POOL=1 bash bench/shift_quality.sh OUT [SOURCE ...]
# (TRAIN_S and EVAL_S bound each training and evaluation in seconds; SHIPPED_EVALS=0 skips the
# shipped adapter's evaluations.)
set -u
OUT=${1:?usage: shift_quality.sh OUT [SOURCE ...]}; shift
mkdir -p "$OUT"; OUT=$(cd "$OUT" && pwd)
R=/tmp/shift; mkdir -p $R/eval
C=configs/smollm2-135m-pricer.yaml
SHIPPED=adapters/smollm2-135m-pricer
python -c "from quant import resolve_model; print(resolve_model('smollm2-135m'))" || exit 1
run() { local name=$1; shift; timeout ${TRAIN_S:-330} python train.py --config $C --output_dir $R/$name --overwrite "$@" > $R/$name.log 2>&1; }
ev() { local name=$1; shift; timeout ${EVAL_S:-150} python evaluate.py "$@" --data data/amazon-prices --predictor expected \
         --batch-size 64 --out $R/eval/$name > $R/eval-$name.log 2>&1; }
[ "${POOL:-0}" = 1 ] && run pool-p05 --data.resample_power 0.5 &
for s in "$@"; do
  run loso-$s-p0 --data.holdout_source $s &
  run loso-$s-p05 --data.holdout_source $s --data.resample_power 0.5 &
done
wait
grep -h "adapter saved\|^error" $R/*.log
if [ "${POOL:-0}" = 1 ]; then
  for acc in none by-length; do
    [ "${SHIPPED_EVALS:-1}" = 1 ] && ev shipped-val-$acc --adapter $SHIPPED --split val --search-accounting $acc &
    ev p05-val-$acc --adapter $R/pool-p05/adapter --split val --search-accounting $acc &
  done
  ev p05-pool --adapter $R/pool-p05/adapter &
  ev p05-balanced --adapter $R/pool-p05/adapter --sample balanced --limit 400 &
  [ "${SHIPPED_EVALS:-1}" = 1 ] && ev shipped-balanced-by-length --adapter $SHIPPED --sample balanced --limit 400 \
    --search-accounting by-length &
fi
for s in "$@"; do   # a run's config.yaml holds its data.holdout_source: its test split is that source
  ev loso-$s-p0 --adapter $R/loso-$s-p0/adapter &
  ev loso-$s-p05 --adapter $R/loso-$s-p05/adapter &
  ev loso-$s-base --base smollm2-135m --holdout-source $s &
done
wait
python evaluate.py --compare $R/eval/* | tee "$OUT/compare.txt"
tar czf "$OUT/shift-reports.tgz" -C $R $(cd $R && ls -d eval/*/report.json eval/*/predictions.csv */metrics.jsonl \
  */config.yaml *.log 2>/dev/null)
