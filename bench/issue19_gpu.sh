#!/usr/bin/env bash
# The rows issue 19's results table lacked, on one GPU (bench/RESULTS.md has what they gave):
#   smol        SmolLM2: the reference stack (peft, bench/reference_train.py, same recipe with LoRA+) on
#               the pool split and with each source held out; pricer with musical-appliances held out;
#               the base on the pool and balanced splits (and data.resample_power 1, stopped unfinished)
#   gemma       Gemma 3 270M: the base on every split; pricer with SmolLM2's recipe (lr 5e-4, LoRA+ 16,
#               3 epochs) on the pool split (GEMMA_ALL=1 adds held-out sources and the reference stack)
#   gemma-lr    Gemma: three learning rates, 2 epochs each, scored on validation
#   gemma-pick  the best of those on validation: pool and balanced tests, and each source held out
#   recipes     SmolLM2: four changes to the shipped recipe (SMOL_RECIPES), each scored on validation; the
#               best of them on the pool and balanced tests and retrained with each source held out
#   gemma-ref   Gemma: the reference stack (peft) with Gemma's shipped recipe, pool split and each source held out
#   keep-best   both models with their best epoch kept (SmolLM2: e6best above, 6 epochs; Gemma: 4 epochs at its
#               shipped lr), each on the pool split (validation, pool and balanced tests) and with each source
#               held out; KEEP_BEST_MODELS=smol (or gemma) starts one model's runs only;
#               ADAPTERS="smol-e6best/adapter-best gemma-e4best/adapter-best" for collect
#   format      the last recipe levers, each with its tests and with each source held out: the answer zero-padded
#               to 4 digits (--data.answer_width 4, magnitude first) for both models; SmolLM2 at rank 64 with a
#               lower learning rate (2e-4: at 5e-4 it diverged), tests only; FORMAT_MODELS=smol (or gemma) starts
#               one model's runs only
#   format-ref  the reference stack (peft) with SmolLM2's padded answers, pool split and each source held out
#   bf16        both models' shipped recipes on a 16-bit base (--model.bits 16, LoRA instead of QLoRA): pool
#               split (validation, pool and balanced tests) and each source held out. On 2026-12-02 it ran
#               beside recipes (whose bf16 run was SmolLM2's pool-split one here), and recipes' e6best held-out
#               runs (6 epochs each, 15 min beside the others) were stopped unfinished to give it the GPU
# Everything is scored by evaluate.py's expected price (width 30). Each part starts its jobs detached
# (setsid) and returns, so that short device calls can carry more files while it trains; `status`
# says what has finished, `collect` packs reports (and the adapters named in ADAPTERS) into OUT.
#   bash bench/issue19_gpu.sh smol R      # R: a scratch folder on the GPU machine
#   bash bench/issue19_gpu.sh status R
#   ADAPTERS=gemma-lr2e-4/adapter bash bench/issue19_gpu.sh collect R OUT
# Needs the embedded models (resolve_model) and bitsandbytes. TRAIN_S and EVAL_S bound each
# training and evaluation in seconds. The table: bash bench/issue19_table.sh.
set -u
part=${1:?usage: issue19_gpu.sh smol|gemma|status|collect R [OUT]}; R=${2:?scratch folder}
mkdir -p "$R/eval"; R=$(cd "$R" && pwd)
# S is SmolLM2's shipped recipe, whose answers are padded to 4 digits since the format part (2026-12-02); the parts
# run before it trained unpadded answers: add --data.answer_width 0 to repeat them as they ran
S=configs/smollm2-135m-pricer.yaml
G=configs/gemma3-270m-pricer.yaml
RECIPE="--train.lr 5e-4 --train.epochs 3 --train.loraplus_ratio 16 --train.cuda_graphs false"   # SmolLM2's recipe, for Gemma (eager)
# Gemma's learning rates (gemma-lr), NAME:OVERRIDES, 2 epochs each; gemma-pick retrains the best one held out
GEMMA_LRS=("lr1e-4-lp16:--train.lr 1e-4 --train.loraplus_ratio 16" "lr2e-4:--train.lr 2e-4"
           "lr5e-5-lp16:--train.lr 5e-5 --train.loraplus_ratio 16")
# keep the adapter with the best validation RMSLE, priced on 300 validation items every 343 steps (an epoch)
KEEP_BEST="--train.eval_every 343 --train.keep_best val_rmsle --train.price_eval_items 300 --train.price_predictor expected"
# SmolLM2's recipe changes (recipes), NAME:OVERRIDES on configs/smollm2-135m-pricer.yaml; e6best keeps the
# adapter with the best validation RMSLE of six epochs (priced on 300 validation items after each epoch)
SMOL_RECIPES=("r64:--lora.r 64 --lora.alpha 128" "bf16:--model.bits 16" "p10:--data.resample_power 1.0"
              "e6best:--train.epochs 6 $KEEP_BEST")
KEEP_BEST_RUNS=("smol-e6best:$S:--train.epochs 6 $KEEP_BEST" "gemma-e4best:$G:--train.epochs 4 $KEEP_BEST")
FORMAT_RUNS=("smol-w4:$S:--data.answer_width 4" "gemma-w4:$G:--data.answer_width 4")
R64="--lora.r 64 --lora.alpha 128 --train.lr 2e-4"   # held out only if validation picks it
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
best() { if [ -d "$R/$1/adapter-best" ]; then echo "$R/$1/adapter-best"; else echo "$R/$1/adapter"; fi; }
# pick_best PREFIX CONFIG NAME:OVERRIDES...: of the recipes, the one whose PREFIX-NAME-val report has the lowest
# RMSLE; its pool and balanced tests, and the same recipe retrained with each source held out
pick_best() { local prefix=$1 c=$2; shift 2; local names=() v pick args
  for v in "$@"; do names+=("${v%%:*}"); done
  pick=$(python -c "import json,sys,os; r={n: json.load(open(f'$R/eval/$prefix-{n}-val/report.json'))['rmsle'] for n in sys.argv[1:] if os.path.exists(f'$R/eval/$prefix-{n}-val/report.json')}; print(min(r, key=r.get))" "${names[@]}")
  echo "picked $pick (lowest validation RMSLE)"
  for v in "$@"; do [ "${v%%:*}" = "$pick" ] && args=${v#*:}; done
  ev $prefix-$pick-pool --adapter "$(best $prefix-$pick)" &
  ev $prefix-$pick-balanced --adapter "$(best $prefix-$pick)" --sample balanced --limit 400 &
  for s in mixed musical-appliances; do
    { train $c $prefix-$pick-loso-$s $args --data.holdout_source $s &&
      ev $prefix-$pick-loso-$s --adapter "$(best $prefix-$pick-loso-$s)" --holdout-source $s; } &
  done
  wait; }
# everywhere "MODELS" NAME:CONFIG:OVERRIDES...: each run of those models (smol, gemma) on the pool split with its
# tests, and retrained with each source held out, all at once
everywhere() { local models=$1 v name rest c args; shift
  for v in "$@"; do
    name=${v%%:*}; rest=${v#*:}; c=${rest%%:*}; args=${rest#*:}
    case " $models " in *" ${name%%-*} "*) ;; *) continue ;; esac
    [ "${name%%-*}" = gemma ] && { python -c "from quant import resolve_model; print(resolve_model('gemma3-270m'))" || exit 1; }
    { train $c $name $args && tests $name "$(best $name)"; } &
    for s in mixed musical-appliances; do
      { train $c $name-loso-$s $args --data.holdout_source $s &&
        ev $name-loso-$s --adapter "$(best $name-loso-$s)" --holdout-source $s; } &
    done
  done
  wait; }
detach() { local out="$R/$1${KEEP_BEST_MODELS:+-${KEEP_BEST_MODELS// /-}}.out"
  setsid nohup bash "$0" "$1-jobs" "$R" > "$out" 2>&1 < /dev/null & echo "started $1 jobs in $R"; }

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
gemma-jobs)   # GEMMA_EPOCHS (default 3) for pricer's run; GEMMA_ALL=1 adds the held-out sources and the reference stack
  python -c "from quant import resolve_model; print(resolve_model('gemma3-270m'))" || exit 1
  python -m data.tokens gemma3-270m 2>&1 | head -20
  GR="$RECIPE --train.epochs ${GEMMA_EPOCHS:-3}"
  { train $G gemma-pricer-pool $GR && tests gemma-pricer "$R/gemma-pricer-pool/adapter"; } &
  if [ "${GEMMA_ALL:-0}" = 1 ]; then
    for s in mixed musical-appliances; do
      { train $G gemma-pricer-loso-$s $GR --data.holdout_source $s &&
        ev gemma-pricer-loso-$s --adapter "$R/gemma-pricer-loso-$s/adapter" --holdout-source $s; } &
    done
    { ref $G gemma-ref-pool $GR && tests gemma-ref "$R/gemma-ref-pool/adapter"; } &
  fi
  { ev gemma-base-pool --base gemma3-270m; ev gemma-base-balanced --base gemma3-270m --sample balanced --limit 400
    for s in mixed musical-appliances; do ev gemma-base-loso-$s --base gemma3-270m --holdout-source $s; done; } &
  wait; echo "gemma done" ;;
gemma-lr) detach gemma-lr ;;
gemma-lr-jobs)   # Gemma's learning rate, 2 epochs each, scored on validation
  for v in "${GEMMA_LRS[@]}"; do
    name=gemma-${v%%:*}
    { train $G $name --train.epochs 2 --train.cuda_graphs false ${v#*:} &&
      ev $name-val --adapter "$R/$name/adapter" --split val; } &
  done
  wait; echo "gemma-lr done" ;;
gemma-pick) detach gemma-pick ;;
gemma-pick-jobs)   # the learning rate with the best validation RMSLE: test splits and both held-out sources
  recipes=(); for v in "${GEMMA_LRS[@]}"; do recipes+=("${v%%:*}:--train.epochs 2 --train.cuda_graphs false ${v#*:}"); done
  pick_best gemma $G "${recipes[@]}"
  wait; echo "gemma-pick done" ;;
recipes) python -c "from quant import resolve_model; print(resolve_model('smollm2-135m'))" || exit 1; detach recipes ;;
recipes-jobs)
  for v in "${SMOL_RECIPES[@]}"; do
    name=smol-${v%%:*}
    { train $S $name ${v#*:} && ev $name-val --adapter "$(best $name)" --split val; } &
  done
  wait
  pick_best smol $S "${SMOL_RECIPES[@]}"
  wait; echo "recipes done" ;;
gemma-ref) detach gemma-ref ;;
gemma-ref-jobs)
  python -c "from quant import resolve_model; print(resolve_model('gemma3-270m'))" || exit 1
  { ref $G gemma-ref-pool && tests gemma-ref "$R/gemma-ref-pool/adapter"; } &
  for s in mixed musical-appliances; do
    { ref $G gemma-ref-loso-$s --data.holdout_source $s &&
      ev gemma-ref-loso-$s --adapter "$R/gemma-ref-loso-$s/adapter" --holdout-source $s; } &
  done
  wait; echo "gemma-ref done" ;;
keep-best) python -c "from quant import resolve_model; print(resolve_model('smollm2-135m'))" || exit 1; detach keep-best ;;
keep-best-jobs)   # 343 steps: one epoch of the pool split (the held-out runs' epochs are 324-338 steps)
  everywhere "${KEEP_BEST_MODELS:-smol gemma}" "${KEEP_BEST_RUNS[@]}"; echo "keep-best ${KEEP_BEST_MODELS:-smol gemma} done" ;;
format) python -c "from quant import resolve_model; print(resolve_model('smollm2-135m'))" || exit 1
  KEEP_BEST_MODELS=${FORMAT_MODELS:-} detach format ;;
format-ref) detach format-ref ;;
format-ref-jobs)   # the reference stack (peft) with SmolLM2's padded answers, pool split and each source held out
  { ref $S smol-ref-w4 --data.answer_width 4 && tests smol-ref-w4 "$R/smol-ref-w4/adapter"; } &
  for s in mixed musical-appliances; do
    { ref $S smol-ref-w4-loso-$s --data.answer_width 4 --data.holdout_source $s &&
      ev smol-ref-w4-loso-$s --adapter "$R/smol-ref-w4-loso-$s/adapter" --holdout-source $s; } &
  done
  wait; echo "format-ref done" ;;
format-jobs)
  case " ${FORMAT_MODELS:-smol gemma} " in *" smol "*) { train $S smol-r64lr2 $R64 && tests smol-r64lr2 "$R/smol-r64lr2/adapter"; } & ;; esac
  everywhere "${FORMAT_MODELS:-smol gemma}" "${FORMAT_RUNS[@]}"; wait; echo "format ${FORMAT_MODELS:-smol gemma} done" ;;
bf16) detach bf16 ;;
bf16-jobs)
  for m in "smol:$S" "gemma:$G"; do
    name=${m%%:*}-bf16; c=${m#*:}
    { train $c $name --model.bits 16 && tests $name "$R/$name/adapter"; } &
    for s in mixed musical-appliances; do
      { train $c $name-loso-$s --model.bits 16 --data.holdout_source $s &&
        ev $name-loso-$s --adapter "$R/$name-loso-$s/adapter" --holdout-source $s; } &
    done
  done
  wait; echo "bf16 done" ;;
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
  (cd "$R" && tar cf - $(ls -d ${ADAPTERS:-gemma-pricer-pool/adapter} 2>/dev/null) | split -b 15m - "$OUT/adapters.tar.")
  ls -la "$OUT" ;;
*) echo "unknown part $part"; exit 2 ;;
esac
