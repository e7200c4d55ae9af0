#!/usr/bin/env bash
# Single-machine runs: the embedded demo corpus, or the paper's setting on MSP-Podcast.
#
#   launch/local.sh demo            # PAPT, TAPT and Vanilla-FT on the embedded corpus
#   launch/local.sh paper           # the paper's three systems on MSP-Podcast v1.6
#   launch/local.sh convert         # only convert the HuBERT checkpoints
#
# Every variable below can be overridden from the environment, e.g.
#   CORPUS_DIR=/mnt/msp RUNS=/scratch/runs launch/local.sh paper
set -euo pipefail

# Python interpreter with papt_jax installed.
PYTHON="${PYTHON:-python}"
# Root of every run's workdir (checkpoints, logs, reports).
RUNS="${RUNS:-runs}"
# MSP-Podcast v1.6 release (Audios/, Labels/, Partitions.txt) for the paper's setting.
CORPUS_DIR="${CORPUS_DIR:-/data/MSP-Podcast-1.6}"
# The newer release (its own Audios/ and Labels/) whose test speakers form test-c.
NEW_CORPUS="${NEW_CORPUS:-/data/MSP-Podcast-1.10}"
# Original checkpoints to convert: HuBERT-large (encoder) and HuBERT-base (k-means teacher).
HUBERT_LARGE_SRC="${HUBERT_LARGE_SRC:-/models/hubert-large-ll60k}"
HUBERT_BASE_SRC="${HUBERT_BASE_SRC:-/models/hubert_base_ls960.pt}"
# Where converted Flax checkpoints are written and read.
CKPT="${CKPT:-ckpt}"
# Which stage to run: demo, paper or convert (first argument).
MODE="${1:-demo}"

convert() {
  "$PYTHON" -m papt_jax.convert --source "$HUBERT_LARGE_SRC" --out "$CKPT/hubert_large"
  "$PYTHON" -m papt_jax.convert --source "$HUBERT_BASE_SRC" --out "$CKPT/hubert_base"
}

demo() {
  # About 15 minutes per system on 2 CPU cores; no downloads.
  for system in papt tapt vanilla_ft; do
    "$PYTHON" -m papt_jax.main --config="configs/${system}.py:demo" \
      --workdir="$RUNS/${system}_demo"
  done
}

paper() {
  convert
  for system in papt tapt; do
    "$PYTHON" -m papt_jax.main --config="configs/${system}.py" --workdir="$RUNS/${system}" \
      --config.data.corpus_dir="$CORPUS_DIR" \
      --config.data.new_corpus_dir="$NEW_CORPUS" \
      --config.model.init="converted:$CKPT/hubert_large" \
      --config.pseudo_labels.teacher="converted:$CKPT/hubert_base"
  done
  "$PYTHON" -m papt_jax.main --config=configs/vanilla_ft.py --workdir="$RUNS/vanilla_ft" \
    --config.data.corpus_dir="$CORPUS_DIR" \
    --config.data.new_corpus_dir="$NEW_CORPUS" \
    --config.model.init="converted:$CKPT/hubert_large"
}

case "$MODE" in
  demo) demo ;;
  paper) paper ;;
  convert) convert ;;
  *) echo "usage: $0 [demo|paper|convert]" >&2; exit 2 ;;
esac
