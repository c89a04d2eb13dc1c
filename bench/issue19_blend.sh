#!/usr/bin/env bash
# The two recipes shipped until 2026-12-02's fourth round (SmolLM2's answers unpadded) priced together (bench/blend.py) on every split issue 19 measures, from the
# committed predictions (the LOSO pairs are the adapters trained without that source).
#   bash bench/issue19_blend.sh
D=bench/results-issue19-2026-12-02
python -m bench.blend --weights 0,0.5,1 \
  --split validation $D/smol-shipped-val $D/gemma-lr2e-4-val \
  --split pool $D/smol-pricer-pool adapters/gemma3-270m-pricer/eval-pool \
  --split balanced $D/smol-pricer-balanced adapters/gemma3-270m-pricer/eval-balanced \
  --split held-out-mixed $D/smol-pricer-loso-mixed $D/gemma-lr2e-4-loso-mixed \
  --split held-out-musical-appliances $D/smol-pricer-loso-musical-appliances $D/gemma-lr2e-4-loso-musical-appliances
