#!/usr/bin/env bash
# One 2-GPU call (device time is scarce): the quality run on GPU 1
# (bench/quality_gpu.sh) while GPU 0 measures 1-process DDP throughput and the 2-process
# loss agreement runs; then 2-process DDP throughput once GPU 1 is free.
#   bash bench/two_gpu_session.sh OUT
set -u
mkdir -p "${1:-runs/gpu}"
export OUT="$(cd "${1:-runs/gpu}" && pwd)"  # read by the python below, and after cd
L="accelerate launch --num_machines 1 --dynamo_backend no --mixed_precision no"
CUDA_VISIBLE_DEVICES=1 timeout 400 bash bench/quality_gpu.sh /tmp/q > "$OUT/quality.log" 2>&1 &
QP=$!
for b in 4 16; do
  CUDA_VISIBLE_DEVICES=0 timeout 90 $L --num_processes 1 -m bench.ddp_speed --batch $b --out "$OUT" 2>&1 | grep "^DDP\|Error"
done
common="--config configs/smollm2-pricer.yaml --train.max_steps 50 --train.batch_size 8 --lora.dropout 0
  --train.cuda_graphs false --train.warmup_steps 5"
timeout 150 $L --num_processes 2 --multi_gpu train.py $common --train.grad_accum 1 --output_dir /tmp/m/ddp2 > "$OUT/ddp2.log" 2>&1
CUDA_VISIBLE_DEVICES=0 timeout 120 python train.py $common --train.grad_accum 2 --output_dir /tmp/m/ddp1 > "$OUT/ddp1.log" 2>&1
python - <<'PY'
import json, os
a, b = ([json.loads(l)["loss"] for l in open(f"/tmp/m/{d}/metrics.jsonl")] for d in ("ddp1", "ddp2"))
diff = max(abs(x - y) / abs(x) for x, y in zip(a, b))
json.dump(dict(one_gpu=a, two_gpu=b, max_rel_diff=diff), open(os.environ["OUT"] + "/loss_agreement.json", "w"))
print(f"loss curves over {len(a)} steps: 1 GPU x accum 2 vs 2 GPUs x accum 1, max relative difference {diff:.2e}")
PY
wait $QP
for b in 4 16; do
  timeout 90 $L --num_processes 2 --multi_gpu -m bench.ddp_speed --batch $b --out "$OUT" 2>&1 | grep "^DDP\|Error"
done
tail -n 32 "$OUT/quality.log"
cd /tmp/q && tar czf "$OUT/quality.tgz" --exclude=adapter_model.safetensors . && tar cf - */adapter | split -b 15m - "$OUT/adapters.tar.part-"
