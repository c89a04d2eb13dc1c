#!/usr/bin/env bash
# Issue 11, second round, on a 2-GPU machine: four recipes trained side by side (two per GPU),
# each saving its adapter after every epoch; every epoch's adapter scored on the validation
# split (expected price, the metric we select by: never the test split); the best
# (recipe, epoch) then scored on the two test splits with every point estimate and two search
# widths (bench/estimators.py), and its adapter packed for shipping.
#   bash bench/quality_sweep.sh OUT
set -u
OUT=${1:?usage: quality_sweep.sh OUT}
mkdir -p "$OUT"; OUT=$(cd "$OUT" && pwd)
R=/tmp/sweep; mkdir -p $R
C=configs/smollm2-pricer.yaml
EPOCH=343   # 10,992 training items / batch 32
common="--config $C --train.epochs 3 --train.save_every $EPOCH --train.keep_last 3"
declare -A RECIPE=(
  [lr5e-4]=""
  [lr1e-3]="--train.lr 1e-3"
  [text300]="--data.max_text_tokens 300 --data.max_length 336"
  [loraplus16]="--train.loraplus_ratio 16"
)
python -c "from quant import resolve_model; print(resolve_model('smollm2-135m'))" || exit 1
gpu=0; n=0
for name in lr5e-4 lr1e-3 text300 loraplus16; do
  CUDA_VISIBLE_DEVICES=$gpu python train.py $common ${RECIPE[$name]} --output_dir $R/$name > $R/$name.log 2>&1 &
  n=$((n + 1)); gpu=$((n / 2))
done
wait
grep -h "adapter saved\|error" $R/*.log
# Validation RMSLE of every epoch's adapter (4 recipes x 3 epochs, six at a time per GPU).
i=0
for name in lr5e-4 lr1e-3 text300 loraplus16; do
  for ck in $R/$name/checkpoints/step-*; do
    CUDA_VISIBLE_DEVICES=$((i % 2)) python evaluate.py --adapter $ck/adapter --data data/amazon-prices \
      --split val --predictor expected --batch-size 64 --out $R/val/$name-$(basename $ck) > /dev/null 2>&1 &
    i=$((i + 1))
  done
done
wait
python - "$R" "$OUT" <<'PY' | tee "$OUT/val.txt"
import json, pathlib, sys
R, OUT = map(pathlib.Path, sys.argv[1:])
rows = sorted((json.loads((d / "report.json").read_text())["rmsle"], d.name) for d in (R / "val").iterdir()
              if (d / "report.json").exists())
for rmsle, name in rows:
    print(f"val  {name:24s} RMSLE {rmsle:.4f}")
best = rows[0][1]
recipe, step = best.split("-step-")
(OUT / "best.txt").write_text(f"{recipe} {step}\n")
print("best", recipe, step)
PY
read recipe step < "$OUT/best.txt"
mkdir -p $R/best && cp -r $R/$recipe/checkpoints/step-$step/{adapter,config.yaml} $R/best/
# The pick on the test splits: every estimate, widths 30 and 60; the 3-epoch lr 5e-4 recipe too, for contrast.
CUDA_VISIBLE_DEVICES=0 python -m bench.estimators --adapter $R/best/adapter --data data/amazon-prices \
  --widths 30 60 --batch-size 64 --out $R/test-best > $R/test-best.log 2>&1 &
CUDA_VISIBLE_DEVICES=1 python -m bench.estimators --adapter $R/lr5e-4/adapter --data data/amazon-prices \
  --widths 30 60 --batch-size 64 --out $R/test-lr5e-4-final > $R/test-lr5e-4.log 2>&1 &
wait
tail -n 20 $R/test-best.log $R/test-lr5e-4.log | tee "$OUT/test.txt"
cd $R && tar czf "$OUT/sweep.tgz" --exclude='*.safetensors' --exclude='*.pt' --exclude='*.dists.json.gz' \
  */metrics.jsonl */config.yaml *.log val test-best test-lr5e-4-final best/config.yaml best/adapter/*.json
tar cf - best | split -b 15m - "$OUT/best.tar.part-"
