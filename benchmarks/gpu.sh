#!/usr/bin/env bash
# Issue #14 on one GPU: HuBERT-large encoder, fine-tuning and pre-training steps against
# PyTorch in the same run (fp32 and bf16, with and without remat; step times, XLA's FLOPs per
# step and MFU), and the steps' peak memory. Needs a CUDA build of jax and of torch.
#   benchmarks/gpu.sh runs/gpu_bench
# Then copy the tables into BENCHMARKS.md with the device line from OUT/device.txt.
set -euo pipefail
OUT=${1:-runs/gpu_bench}
mkdir -p "$OUT"
python -c "import jax, torch; print(jax.devices()[0].device_kind, '| torch cuda:', torch.cuda.is_available())" \
  | tee "$OUT/device.txt"
for dtype in float32 bfloat16; do
  for remat in "" --remat; do
    name="large_${dtype}${remat:+_remat}"
    python benchmarks/encoder.py --model large --batch 8 --seconds 8 --steps 10 --warmup 2 \
      --dtype "$dtype" $remat --json "$OUT/$name.json" | tee "$OUT/$name.log"
  done
done
# Compile-time buffer assignments of the fine-tuning step, every remat/dtype variant.
python benchmarks/memory.py --model large --batch 8 --seconds 8 --json "$OUT/memory.json" \
  | tee "$OUT/memory.log"
