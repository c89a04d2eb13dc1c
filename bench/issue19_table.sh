#!/usr/bin/env bash
# Issue 19's results table from the committed reports (bench/results-issue19-2026-12-02: the H200 runs of
# bench/issue19_gpu.sh and bench/shift_quality.sh, and bench.ridge on this CPU) and the shipped adapters'.
#   bash bench/issue19_table.sh [--long | --buckets]
#   bash bench/issue19_table.sh --recipes [--long]   # the recipe changes tried (issue19_gpu.sh recipes, bf16, keep-best,
#                                                    # format)
#   bash bench/issue19_table.sh --paired   # item by item (evaluate.py --compare): each shipped adapter against ridge,
#                                          # the best-epoch and padded-answer runs against the recipes they change,
#                                          # the estimates on musical
D=bench/results-issue19-2026-12-02
S=adapters/smollm2-135m-pricer
G=adapters/gemma3-270m-pricer
splits="pool balanced loso-mixed loso-musical-appliances"
rows=()
if [ "${1:-}" = --paired ]; then
  set -o pipefail
  shipped() {   # smol and gemma: the shipped adapters' report folders of split $1 (SmolLM2's trained without
                # the source when $1 is held out); unpadded: SmolLM2's recipe before its answers were padded
    case $1 in
      val|pool|balanced) smol=$S/eval-$1; gemma=$G/eval-$1 ;;
      *) smol=$D/smol-w4-$1; gemma=$D/gemma-lr2e-4-$1 ;;
    esac
    unpadded=$D/smol-pricer-$1; }
  for s in $splits; do
    shipped $s
    echo "== $s"
    python evaluate.py --compare $D/ridge-$s $unpadded $smol $gemma | sed -n '/^paired/,$p' || exit 1
  done
  # recipe changes against the recipes they change (SmolLM2's unpadded, Gemma's shipped): the best epoch kept
  # (issue19_gpu.sh keep-best), the answer padded to 4 digits (issue19_gpu.sh format)
  for change in "best epoch kept:e6best:e4best" "answer padded to 4 digits:w4:w4"; do
    IFS=: read -r label smolrun gemmarun <<< "$change"
    for s in val $splits; do
      shipped $s
      echo "== $s, $label against the recipe it changes"
      python evaluate.py --compare $unpadded $D/smol-$smolrun-$s | sed -n '/^paired/,$p' || exit 1
      python evaluate.py --compare $gemma $D/gemma-$gemmarun-$s | sed -n '/^paired/,$p' || exit 1
    done
  done
  # each point estimate on held-out musical-appliances, against the mean, and ridge against the mean
  echo "== held-out musical-appliances, each estimate against the mean"
  python evaluate.py --compare $D/smol-estimate-{mean,log-mean,median,hit}-loso-musical-appliances \
    $D/ridge-loso-musical-appliances | sed -n '/^paired/,$p' || exit 1
  exit 0
fi
if [ "${1:-}" = --recipes ]; then
  shift
  for s in val $splits; do rows+=("SmolLM2 unpadded (QLoRA, 3 epochs; shipped until 2026-12-02)=$D/smol-pricer-$s"); done
  for r in "p10:data.resample_power 1" "e6best:6 epochs, best of each epoch's validation" "bf16:16-bit base" \
           "w4:answer padded to 4 digits (shipped)" "r64lr2:rank 64, lr 2e-4"; do
    for s in val $splits; do [ -d $D/smol-${r%%:*}-$s ] && rows+=("SmolLM2 ${r#*:}=$D/smol-${r%%:*}-$s"); done
  done
  rows+=("Gemma shipped (QLoRA, lr 2e-4)=$G/eval-val")
  for s in $splits; do rows+=("Gemma shipped (QLoRA, lr 2e-4)=$D/gemma-lr2e-4-$s"); done
  for s in val $splits; do rows+=("Gemma 16-bit base=$D/gemma-bf16-$s"); done
  for s in val $splits; do rows+=("Gemma 4 epochs, best of each epoch's validation=$D/gemma-e4best-$s"); done
  for s in val $splits; do rows+=("Gemma answer padded to 4 digits=$D/gemma-w4-$s"); done
  exec python -m bench.results_table "${rows[@]}" --baseline $(for s in $splits; do echo $D/ridge-$s; done) "$@"
fi
for s in $splits; do rows+=("SmolLM2 base=$D/smol-base-$s"); done
for s in $splits; do rows+=("SmolLM2 reference stack (peft), unpadded recipe=$D/smol-ref-$s"); done
for s in $splits; do rows+=("SmolLM2 pricer, unpadded recipe=$D/smol-pricer-$s"); done
rows+=("SmolLM2 pricer, answer padded (shipped)=$S/eval-pool" "SmolLM2 pricer, answer padded (shipped)=$S/eval-balanced")
for s in loso-mixed loso-musical-appliances; do rows+=("SmolLM2 pricer, answer padded (shipped)=$D/smol-w4-$s"); done
for s in $splits; do rows+=("Gemma 3 270M base=$D/gemma-base-$s"); done
for s in $splits; do rows+=("Gemma 3 270M reference stack (peft)=$D/gemma-ref-$s"); done
for s in $splits; do rows+=("Gemma 3 270M pricer=$D/gemma-lr2e-4-$s"); done
python -m bench.results_table "${rows[@]}" --baseline $(for s in $splits; do echo $D/ridge-$s; done) "$@"
