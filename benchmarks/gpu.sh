#!/usr/bin/env bash
# Issues #14 and #23 on a GPU host: HuBERT-large encoder, fine-tuning and pre-training steps
# against PyTorch in the same run (fp32 and bf16; scanned and unrolled layers; remat policies;
# gradient accumulation; sharded parameters over every local device), the steps' memory under
# each remat policy (XLA's memory analysis of the compiled step), and cold compile times of
# both steps for base and large, scanned and unrolled. Needs a CUDA build of jax and of torch.
#   benchmarks/gpu.sh runs/gpu_bench
# Then copy the tables into BENCHMARKS.md with the device line from OUT/device.txt and the date.
#
# Checking the script without a GPU:
#   SMOKE=1 benchmarks/gpu.sh /tmp/gpu_smoke       # every command, tiny model, CPU (~15 min
#                                                  # on 2 cores: each step compiles)
#   CHECK=1 benchmarks/gpu.sh /tmp/gpu_check       # every command's arguments only (seconds)
set -euo pipefail
OUT=${1:-runs/gpu_bench}
mkdir -p "$OUT"
cd "$(dirname "$0")/.."

if [[ "${SMOKE:-0}" == 1 || "${CHECK:-0}" == 1 ]]; then
  # The CPU with 4 emulated devices (so 'fsdp' really splits) and the tiny model.
  export JAX_PLATFORMS=cpu XLA_FLAGS="--xla_force_host_platform_device_count=4"
  MODEL=tiny BATCH=4 SECONDS_=1 STEPS=1 WARMUP=0 DEVICES=4 COMPILE_MODELS=tiny
  TORCH_DEVICE=cpu
else
  MODEL=large BATCH=8 SECONDS_=8 STEPS=10 WARMUP=2 COMPILE_MODELS=base,large
  DEVICES=$(python -c "import jax; print(jax.local_device_count())")
  TORCH_DEVICE=cuda
fi
EXTRA=()
if [[ "${CHECK:-0}" == 1 ]]; then EXTRA=(--check_args); fi

encoder() {  # name, then benchmarks/encoder.py arguments
  local name=$1
  shift
  python benchmarks/encoder.py --model "$MODEL" --batch "$BATCH" --seconds "$SECONDS_" \
    --steps "$STEPS" --warmup "$WARMUP" --torch_device "$TORCH_DEVICE" "$@" \
    --json "$OUT/$name.json" "${EXTRA[@]}" | tee "$OUT/$name.log"
}

python -c "import jax, torch; print(jax.devices()[0].device_kind, '| devices:', jax.device_count(), '| torch cuda:', torch.cuda.is_available())" \
  | tee "$OUT/device.txt"

# Step times against PyTorch: fp32 and bf16, without and with full remat (scanned layers).
for dtype in float32 bfloat16; do
  for remat in none full; do
    encoder "${MODEL}_${dtype}_remat-${remat}" --dtype "$dtype" --remat "$remat"
  done
done
# The other remat policies (train steps only, bf16: the configuration a GPU user runs).
for remat in dots_saveable dots_with_no_batch_dims_saveable; do
  encoder "${MODEL}_bfloat16_remat-${remat}" --dtype bfloat16 --remat "$remat" \
    --parts finetune,pretrain
done
# The unrolled (debugging) stack: same step, L copies of the layer in the program.
encoder "${MODEL}_bfloat16_unrolled" --dtype bfloat16 --unrolled --parts finetune,pretrain
# Gradient accumulation: twice the rows per step in two micro-batches of BATCH.
encoder "${MODEL}_bfloat16_accumulate-2" --dtype bfloat16 --batch $((2 * BATCH)) \
  --accumulate 2 --parts finetune,pretrain
# Parameters and optimiser state sharded over every local device (one GPU: the same as
# replicated; the batch must split over the devices).
encoder "${MODEL}_bfloat16_fsdp-${DEVICES}" --dtype bfloat16 --devices "$DEVICES" \
  --batch $((DEVICES * BATCH)) --param_sharding fsdp --parts finetune,pretrain

# Memory of the compiled steps (4 x 8 s as in BENCHMARKS.md) under each remat policy, fp32
# and bf16, and with accumulation.
memory() {  # name, then benchmarks/memory.py arguments
  local name=$1
  shift
  python benchmarks/memory.py --model "$MODEL" --batch 4 --seconds "$SECONDS_" "$@" \
    --json "$OUT/$name.json" "${EXTRA[@]}" | tee "$OUT/$name.log"
}
memory "memory_${MODEL}_float32"
memory "memory_${MODEL}_bfloat16" --dtype bfloat16
memory "memory_${MODEL}_float32_accumulate-2" --accumulate 2 --remat none,full
memory "memory_${MODEL}_float32_unrolled" --unrolled --remat none,full

# Cold compile times, scanned vs unrolled, each compile in a fresh process.
python benchmarks/encoder.py --compile_times --compile_models "$COMPILE_MODELS" --batch 4 \
  --seconds "$SECONDS_" --json "$OUT/compile_times.json" "${EXTRA[@]}" \
  | tee "$OUT/compile_times.log"
