#!/usr/bin/env bash
# Training speed of an older checkout beside this one, on the same GPU in one call: for each stack,
# one cell of the old tree's bench/train_speed.py, then the same cell of this tree's, so that both
# see the same card, clocks and neighbours. Then the speed ratios of each tree.
#   git archive OLD_COMMIT | tar -x -C .old     (a scratch copy of the older checkout)
#   bash bench/speed_before_after.sh .old OUT BATCH [STACK ...]      (stacks: reference pricer compiled)
# ORDER="after before" runs this tree's cell first (to see whether running second costs anything).
set -u
OLD=$1; OUT=$2; BATCH=$3; shift 3
STACKS=${*:-reference compiled}
mkdir -p "$OUT"
cell() {  # tree stack
  if [ "$1" = before ]; then
    (cd "$OLD" && timeout 280 python bench/train_speed.py --cell "$2" "$BATCH" 0 2>&1)
  else
    timeout 280 python -m bench.train_speed --cell "$2" "$BATCH" 0 2>&1
  fi | grep --line-buffered "^CELL" | sed -u "s/^CELL /$1 /" | tee -a "$OUT/before_after.txt"
}
for stack in $STACKS; do
  for tree in ${ORDER:-before after}; do cell "$tree" "$stack"; done
done
python - "$OUT/before_after.txt" <<'PY'
import json, sys
cells = {}
for line in open(sys.argv[1]):
    tree, row = line.split(" ", 1)
    row = json.loads(row)
    cells[(tree, row["stack"], row["batch"])] = row
for (tree, stack, batch), row in sorted(cells.items()):
    ref = cells.get((tree, "reference", batch))
    if stack != "reference" and ref:
        print(f"{tree:>6} batch {batch}: {stack} {row['tokens_per_s']} tok/s vs reference {ref['tokens_per_s']}: "
              f"x{row['tokens_per_s'] / ref['tokens_per_s']:.2f}, memory {row['peak_gb']} vs {ref['peak_gb']} GB")
PY
