#!/usr/bin/env bash
# Issue 19's results table from the committed reports (bench/results-issue19-2026-12-02: the H200 runs of
# bench/issue19_gpu.sh and bench/shift_quality.sh, and bench.ridge on this CPU) and the shipped adapters'.
#   bash bench/issue19_table.sh [--long]
D=bench/results-issue19-2026-12-02
S=adapters/smollm2-135m-pricer
splits="pool balanced loso-mixed loso-musical-appliances"
rows=()
for s in $splits; do rows+=("SmolLM2 base=$D/smol-base-$s"); done
for s in $splits; do rows+=("SmolLM2 reference stack (peft)=$D/smol-ref-$s"); done
rows+=("SmolLM2 pricer=$S/eval-pool" "SmolLM2 pricer=$S/eval-balanced")
for s in loso-mixed loso-musical-appliances; do rows+=("SmolLM2 pricer=$D/smol-pricer-$s"); done
for s in $splits; do rows+=("Gemma 3 270M base=$D/gemma-base-$s"); done
for s in $splits; do rows+=("Gemma 3 270M pricer=$D/gemma-lr2e-4-$s"); done
python -m bench.results_table "${rows[@]}" --baseline $(for s in $splits; do echo $D/ridge-$s; done) "$@"
