#!/usr/bin/env bash
# Runs Vanilla-FT, TAPT-FT and PAPT-FT and writes one comparison report shaped like the
# paper's Tables 2 (test-b) and 3 (test-c).
#
# Embedded synthetic corpus (no downloads):
#   launch/reproduce_tables.sh demo runs/tables_demo
# MSP-Podcast (set the paths below first):
#   launch/reproduce_tables.sh paper runs/tables
set -euo pipefail

MODE=${1:-demo}          # 'demo' (embedded corpus), 'smoke' (tiny) or 'paper' (MSP-Podcast)
OUT=${2:-runs/tables_$MODE}  # one workdir per system below this folder

# Paper setting only: where the corpus and the converted checkpoints live.
MSP_DIR=${MSP_DIR:-/data/MSP-Podcast-1.6}                                     # v1.6 root
NEW_LABELS=${NEW_LABELS:-/data/MSP-Podcast-1.10/Labels/labels_consensus.csv}  # test-c
LARGE=${LARGE:-ckpt/hubert_large}   # python -m papt_jax.convert --source hubert-large-ll60k
TEACHER=${TEACHER:-ckpt/hubert_base}  # HuBERT-base iteration 2 (layer-9 k-means labels)

run() {  # run CONFIG NAME [extra flags...]
  local config=$1 name=$2; shift 2
  if [ "$MODE" = paper ]; then
    python -m papt_jax.main --config="configs/$config.py" --workdir="$OUT/$name" \
      --config.data.corpus_dir="$MSP_DIR" --config.data.new_labels_file="$NEW_LABELS" \
      --config.model.init="converted:$LARGE" --config.pseudo_labels.teacher="converted:$TEACHER" "$@"
  else
    python -m papt_jax.main --config="configs/$config.py:$MODE" --workdir="$OUT/$name" "$@"
  fi
}

# PAPT first: on the embedded corpus its bootstrap encoder is the "pre-trained HuBERT"
# that the baselines start from too (same corpus and data directory, no second bootstrap).
run papt papt
if [ "$MODE" = paper ]; then
  run tapt tapt
  run vanilla_ft vanilla
else
  shared=(--config.data.data_dir="$OUT/papt/data" --config.model.init="converted:$OUT/papt/bootstrap/encoder"
          --config.pseudo_labels.teacher="converted:$OUT/papt/bootstrap/encoder")
  run tapt tapt --config.stages=prepare,pseudo_labels,pretrain,finetune,evaluate,report \
    --config.data.corpus_dir="$OUT/papt/corpus" --config.data.synthetic_preset= "${shared[@]}"
  run vanilla_ft vanilla --config.stages=prepare,finetune,evaluate,report \
    --config.data.corpus_dir="$OUT/papt/corpus" --config.data.synthetic_preset= "${shared[@]}"
fi

python -m papt_jax.eval.compare --out "$OUT/comparison.md" \
  "$OUT/vanilla/report/summary.json" "$OUT/tapt/report/summary.json" "$OUT/papt/report/summary.json"
