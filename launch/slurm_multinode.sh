#!/usr/bin/env bash
# Multi-node data-parallel run under SLURM: one task (JAX process) per node, all local GPUs
# per process. jax.distributed.initialize() (called by --distributed) reads the coordinator
# address, process count and process id from SLURM's environment.
#
#   sbatch launch/slurm_multinode.sh                      # PAPT, paper setting
#   CONFIG=configs/tapt.py sbatch launch/slurm_multinode.sh
#
# Time limit and preemption: SLURM sends SIGTERM to every task 5 minutes before the time
# limit (--signal), and a preempting scheduler sends it before killing. Every process then
# saves the same training step (JAX's preemption sync) and exits with code 75; this script
# requeues the job, which resumes from that step in the same WORKDIR (a requeued job keeps
# its job id). Any other non-zero exit is a real failure and is not requeued.
#
#SBATCH --job-name=papt_jax
#SBATCH --nodes=2
#SBATCH --ntasks-per-node=1
#SBATCH --gpus-per-node=8
#SBATCH --cpus-per-task=32
#SBATCH --time=24:00:00
#SBATCH --output=slurm-%x-%j.out
#SBATCH --open-mode=append
#SBATCH --signal=TERM@300
#SBATCH --requeue
set -euo pipefail

# Python interpreter with papt_jax installed (same path on every node).
PYTHON="${PYTHON:-python}"
# Experiment config (append :demo for the embedded corpus).
CONFIG="${CONFIG:-configs/papt.py}"
# Shared filesystem directory for checkpoints and logs; every process must see it.
WORKDIR="${WORKDIR:-runs/papt_${SLURM_JOB_ID:-local}}"
# MSP-Podcast v1.6 on the shared filesystem.
CORPUS_DIR="${CORPUS_DIR:-/data/MSP-Podcast-1.6}"
# Labels of the newer release (unseen-speaker test set).
NEW_CORPUS="${NEW_CORPUS:-/data/MSP-Podcast-1.10}"
# Converted Flax checkpoints (see launch/local.sh convert).
CKPT="${CKPT:-ckpt}"
# Let XLA take most of each GPU's memory up front (JAX's default is 75 %).
export XLA_PYTHON_CLIENT_MEM_FRACTION="${XLA_PYTHON_CLIENT_MEM_FRACTION:-0.9}"

# papt_jax's exit code for "stopped on SIGTERM/SIGINT after saving; rerun to resume".
INTERRUPTED=75

set +e
srun --kill-on-bad-exit=1 "$PYTHON" -m papt_jax.main --distributed \
  --config="$CONFIG" --workdir="$WORKDIR" \
  --config.data.corpus_dir="$CORPUS_DIR" \
  --config.data.new_corpus_dir="$NEW_CORPUS" \
  --config.model.init="converted:$CKPT/hubert_large" \
  --config.pseudo_labels.teacher="converted:$CKPT/hubert_base"
status=$?
set -e
if [[ "$status" -eq "$INTERRUPTED" && -n "${SLURM_JOB_ID:-}" ]]; then
  echo "stopped at a saved step (exit $status): requeueing job $SLURM_JOB_ID to resume"
  scontrol requeue "$SLURM_JOB_ID"
fi
exit "$status"
