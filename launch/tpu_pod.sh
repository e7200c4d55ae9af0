#!/usr/bin/env bash
# Data-parallel run on a Cloud TPU pod slice: the same command on every worker VM;
# jax.distributed.initialize() (called by --distributed) finds the pod's topology itself.
#
#   TPU_NAME=my-v4-32 ZONE=us-central2-b launch/tpu_pod.sh
#
# The repository must already be on every worker at $REPO_DIR with papt_jax installed,
# e.g. via `gcloud compute tpus tpu-vm scp --worker=all`, and the data and converted
# checkpoints on storage every worker can read (GCS fuse or a persistent disk).
#
# Maintenance events and preemption: the worker VMs receive SIGTERM first. Every worker then
# saves the same training step (JAX's preemption sync), and the command exits with code 75
# (this script reports it). Once the slice is back (or re-created, e.g. from a queued
# resource), run this script again with the same WORKDIR: the run resumes from that step.
# A VM lost without the signal loses at most --config.train.checkpoint_every_minutes
# (default 30) of training. Any other non-zero exit is a real failure.
set -euo pipefail

# Name of the TPU VM (pod slice) and its zone.
TPU_NAME="${TPU_NAME:?set TPU_NAME to the TPU VM name}"
ZONE="${ZONE:?set ZONE to the TPU VM zone}"
# Google Cloud project (defaults to gcloud's configured project).
PROJECT="${PROJECT:-$(gcloud config get-value project 2>/dev/null)}"
# Checkout of this repository on every worker.
REPO_DIR="${REPO_DIR:-~/papt_jax}"
# Python interpreter on the workers.
PYTHON="${PYTHON:-python3}"
# Experiment config.
CONFIG="${CONFIG:-configs/papt.py}"
# Output directory shared by all workers (e.g. a GCS fuse mount).
WORKDIR="${WORKDIR:-/mnt/shared/runs/papt}"
# MSP-Podcast v1.6 and the newer labels file, readable by every worker.
CORPUS_DIR="${CORPUS_DIR:-/mnt/shared/MSP-Podcast-1.6}"
NEW_CORPUS="${NEW_CORPUS:-/mnt/shared/MSP-Podcast-1.10}"
# Converted Flax checkpoints.
CKPT="${CKPT:-/mnt/shared/ckpt}"

# papt_jax's exit code for "stopped on SIGTERM/SIGINT after saving; rerun to resume".
INTERRUPTED=75

set +e
gcloud compute tpus tpu-vm ssh "$TPU_NAME" --zone="$ZONE" --project="$PROJECT" --worker=all \
  --command "cd $REPO_DIR && $PYTHON -m papt_jax.main --distributed \
    --config=$CONFIG --workdir=$WORKDIR \
    --config.data.corpus_dir=$CORPUS_DIR \
    --config.data.new_corpus_dir=$NEW_CORPUS \
    --config.model.init=converted:$CKPT/hubert_large \
    --config.pseudo_labels.teacher=converted:$CKPT/hubert_base"
status=$?
set -e
if [[ "$status" -eq "$INTERRUPTED" ]]; then
  echo "stopped at a saved step (maintenance or preemption): run this script again to resume" >&2
fi
exit "$status"
