#!/usr/bin/env bash
# Issues #14 and #23 on a GPU host: HuBERT-large encoder, fine-tuning and pre-training steps
# against PyTorch in the same run (fp32 and bf16; scanned and unrolled layers; remat policies;
# gradient accumulation; sharded parameters over every local device), the steps' memory under
# each remat policy (XLA's memory analysis of the compiled step), cold compile times of
# both steps, scanned and unrolled, and wav2vec 2.0's contrastive logits against
# transformers' formulation (full run only). Needs a CUDA build of jax and of torch.
#   benchmarks/gpu.sh runs/gpu_bench                # everything (about 30-40 min on one GPU)
#   LEASE=1 benchmarks/gpu.sh runs/gpu_bench        # the most telling half, in priority order,
#                                                   # ends within LEASE_SECONDS (default 480)
# Then copy the tables into BENCHMARKS.md with the device line from OUT/device.txt and the date.
# A command that fails or runs out of time is listed in OUT/failures.txt and the rest go on.
#
# Checking the script without a GPU:
#   SMOKE=1 benchmarks/gpu.sh /tmp/gpu_smoke       # every command, tiny model, CPU (~15 min
#                                                  # on 2 cores: each step compiles)
#   CHECK=1 benchmarks/gpu.sh /tmp/gpu_check       # every command's arguments only (seconds:
#                                                  # recorded, then parsed in one process)
set -uo pipefail
OUT=${1:-runs/gpu_bench}
mkdir -p "$OUT"
OUT=$(cd "$OUT" && pwd)
cd "$(dirname "$0")/.."
: >"$OUT/failures.txt"

LEASE=${LEASE:-0}
if [[ "${SMOKE:-0}" == 1 || "${CHECK:-0}" == 1 ]]; then
  # The CPU with 4 emulated devices (so 'fsdp' really splits) and the tiny model.
  export JAX_PLATFORMS=cpu XLA_FLAGS="--xla_force_host_platform_device_count=4"
  MODEL=tiny BATCH=4 SECONDS_=1 STEPS=1 WARMUP=0 DEVICES=4 COMPILE_MODELS=tiny
  TORCH_DEVICE=cpu CONTRASTIVE=(--batch 2 --frames 50 --dim 32 --negatives 10 --repeat 1)
elif [[ "$LEASE" == 1 ]]; then
  MODEL=large BATCH=8 SECONDS_=8 STEPS=10 WARMUP=2 COMPILE_MODELS=large
  DEVICES=$(python -c "import jax; print(jax.local_device_count())")
  TORCH_DEVICE=cuda
else
  MODEL=large BATCH=8 SECONDS_=8 STEPS=10 WARMUP=2 COMPILE_MODELS=base,large
  DEVICES=$(python -c "import jax; print(jax.local_device_count())")
  TORCH_DEVICE=cuda
  # wav2vec 2.0's contrastive logits at the large recipe's shape: 15.6 s rows, final_dim 768.
  CONTRASTIVE=(--batch 8 --frames 781 --dim 768)
fi
# JAX and PyTorch share the GPU inside one benchmark process: JAX must not take 75 % of it.
export XLA_PYTHON_CLIENT_MEM_FRACTION=${XLA_PYTHON_CLIENT_MEM_FRACTION:-0.45}
# CHECK=1: each command is recorded in OUT/commands.txt instead of run, and at the end
# benchmarks/check_commands.py parses them all with the scripts' own parsers in one process.
CHECK=${CHECK:-0}
if [[ "$CHECK" == 1 ]]; then : >"$OUT/commands.txt"; fi
REPEATS=2
if [[ "$LEASE" == 1 ]]; then REPEATS=1; fi

# LEASE=1: the whole script ends within LEASE_SECONDS (default 480): each command's time box is
# the smaller of its own and what is left, and a command is skipped when under 45 s are left.
# A time box ends the command's whole process group (GNU timeout), compile children included.
LEASE_END=$(($(date +%s) + ${LEASE_SECONDS:-480}))
# Runs one benchmark command, logging to OUT/NAME.log; a failure, timeout or skip is recorded
# in OUT/failures.txt and the script goes on.
step() {  # name, seconds (LEASE=1 time box), command...
  local name=$1 seconds=$2
  shift 2
  if [[ "$CHECK" == 1 ]]; then
    printf '%q ' "$@" >>"$OUT/commands.txt" && echo >>"$OUT/commands.txt"
    return
  fi
  local box=()
  if [[ "$LEASE" == 1 ]]; then
    local left=$((LEASE_END - $(date +%s)))
    if ((left < 45)); then
      echo "$name: skipped ($left s of the lease left)" | tee -a "$OUT/failures.txt"
      return
    fi
    ((seconds > left - 5)) && seconds=$((left - 5))
    box=(timeout --signal=TERM --kill-after=5 "$seconds")
  fi
  echo "=== $name ($(date -u +%H:%M:%S))"
  "${box[@]}" "$@" </dev/null >"$OUT/$name.log" 2>&1
  local rc=$?
  cat "$OUT/$name.log"
  if [[ $rc != 0 ]]; then
    echo "$name: exit $rc$([[ $rc == 124 ]] && echo ' (time box)')" | tee -a "$OUT/failures.txt"
  fi
}
encoder() {  # name, seconds, then benchmarks/encoder.py arguments
  local name=$1 seconds=$2
  shift 2
  step "$name" "$seconds" python benchmarks/encoder.py --model "$MODEL" --batch "$BATCH" \
    --seconds "$SECONDS_" --steps "$STEPS" --warmup "$WARMUP" --torch_device "$TORCH_DEVICE" \
    "$@" --json "$OUT/$name.json"
}
memory() {  # name, seconds, then benchmarks/memory.py arguments (4 x 8 s as in BENCHMARKS.md)
  local name=$1 seconds=$2
  shift 2
  step "$name" "$seconds" python benchmarks/memory.py --model "$MODEL" --batch 4 \
    --seconds "$SECONDS_" "$@" --json "$OUT/$name.json"
}
compile_times() {  # seconds
  step compile_times "$1" python benchmarks/encoder.py --compile_times \
    --compile_models "$COMPILE_MODELS" --compile_repeats "$REPEATS" --batch 4 \
    --seconds "$SECONDS_" --json "$OUT/compile_times.json"
}

finish() {  # CHECK=1: parse the recorded commands; then the exit status: no failure listed
  if [[ "$CHECK" == 1 ]]; then
    python benchmarks/check_commands.py "$OUT/commands.txt" ||
      echo "check: a command's arguments were refused" >>"$OUT/failures.txt"
  fi
  test ! -s "$OUT/failures.txt"
}

python -c "import jax, torch; print(jax.devices()[0].device_kind, '| devices:', jax.device_count(), '| jax', jax.__version__, '| torch', torch.__version__, '| torch cuda:', torch.cuda.is_available())" \
  | tee "$OUT/device.txt"

if [[ "$LEASE" == 1 ]]; then
  # Priority order: the PyTorch ratio in bf16, the compile-time goal, the memory goal, fp32,
  # full remat, accumulation, unrolled.
  encoder "${MODEL}_bfloat16_remat-none" 150 --dtype bfloat16 --remat none
  compile_times 170
  memory "memory_${MODEL}_float32" 130 --remat none,full,dots_saveable
  encoder "${MODEL}_float32_remat-none" 120 --dtype float32 --remat none --parts finetune,pretrain
  encoder "${MODEL}_bfloat16_remat-full" 90 --dtype bfloat16 --remat full \
    --parts finetune,pretrain
  encoder "${MODEL}_bfloat16_accumulate-2" 90 --dtype bfloat16 --batch $((2 * BATCH)) \
    --accumulate 2 --parts finetune,pretrain
  finish
  exit
fi

# Step times against PyTorch: fp32 and bf16, without and with full remat (scanned layers).
for dtype in float32 bfloat16; do
  for remat in none full; do
    encoder "${MODEL}_${dtype}_remat-${remat}" 0 --dtype "$dtype" --remat "$remat"
  done
done
# The other remat policies (train steps only, bf16: the configuration a GPU user runs).
for remat in dots_saveable dots_with_no_batch_dims_saveable; do
  encoder "${MODEL}_bfloat16_remat-${remat}" 0 --dtype bfloat16 --remat "$remat" \
    --parts finetune,pretrain
done
# The unrolled (debugging) stack: same step, L copies of the layer in the program.
encoder "${MODEL}_bfloat16_unrolled" 0 --dtype bfloat16 --unrolled --parts finetune,pretrain
# Gradient accumulation: twice the rows per step in two micro-batches of BATCH.
encoder "${MODEL}_bfloat16_accumulate-2" 0 --dtype bfloat16 --batch $((2 * BATCH)) \
  --accumulate 2 --parts finetune,pretrain
# Parameters and optimiser state sharded over every local device (one GPU: the same as
# replicated; the batch must split over the devices).
encoder "${MODEL}_bfloat16_fsdp-${DEVICES}" 0 --dtype bfloat16 --devices "$DEVICES" \
  --batch $((DEVICES * BATCH)) --param_sharding fsdp --parts finetune,pretrain

# Memory of the compiled steps under each remat policy, fp32 and bf16, and with accumulation.
memory "memory_${MODEL}_float32" 0
memory "memory_${MODEL}_bfloat16" 0 --dtype bfloat16
memory "memory_${MODEL}_float32_accumulate-2" 0 --accumulate 2 --remat none,full
memory "memory_${MODEL}_float32_unrolled" 0 --unrolled --remat none,full

# Cold compile times, scanned vs unrolled, each compile in a fresh process.
compile_times 0
# The contrastive logits and loss against transformers' gathered formulation in PyTorch.
step contrastive_logits 0 python benchmarks/contrastive_logits.py "${CONTRASTIVE[@]}" \
  --torch_device "$TORCH_DEVICE" --json "$OUT/contrastive_logits.json"
finish
