#!/usr/bin/env bash
# Runs every system of the paper's Tables 2-4 and Figure 1 and writes one report,
# OUT/tables.md: Vanilla-FT, B2, TAPT-FT and PAPT-FT (Tables 2 and 3, test-b and test-c),
# the speaker-fusion ablation last / first / prefix / none (Table 4), and the
# personalization gap (Figure 1, launch/personalization_gap.sh, OUT/figure1.png).
#
# Embedded synthetic corpus (no downloads; about 1.5-2 h on 2 CPU cores):
#   launch/reproduce_tables.sh demo runs/tables_demo
# MSP-Podcast (set the paths below first):
#   launch/reproduce_tables.sh paper runs/tables
set -euo pipefail

MODE=${1:-demo}          # 'demo' (embedded corpus), 'smoke' (tiny) or 'paper' (MSP-Podcast)
OUT=${2:-runs/tables_$MODE}  # one workdir per system below this folder

# Paper setting only: where the corpus and the converted checkpoints live.
MSP_DIR=${MSP_DIR:-/data/MSP-Podcast-1.6}       # v1.6 root
NEW_CORPUS=${NEW_CORPUS:-/data/MSP-Podcast-1.10}  # v1.10 root: test-c
LARGE=${LARGE:-ckpt/hubert_large}   # python -m papt_jax.convert --source hubert-large-ll60k
TEACHER=${TEACHER:-ckpt/hubert_base}  # HuBERT-base iteration 2 (layer-9 k-means labels)

# Embedded corpus: the tables train longer than the one-command demo, whose preset is cut to
# fit 15 minutes (2 bootstrap and 4 fine-tuning epochs); the README's tables used these.
TABLE_EPOCHS=(--config.bootstrap.epochs=3 --config.finetune.epochs=6)
[ "$MODE" = demo ] || TABLE_EPOCHS=()

run() {  # run CONFIG NAME [extra flags...]
  local config=$1 name=$2; shift 2
  if [ "$MODE" = paper ]; then
    python -m papt_jax.main --config="configs/$config.py" --workdir="$OUT/$name" \
      --config.data.corpus_dir="$MSP_DIR" --config.data.new_corpus_dir="$NEW_CORPUS" \
      --config.model.init="converted:$LARGE" --config.pseudo_labels.teacher="converted:$TEACHER" "$@"
  else
    python -m papt_jax.main --config="configs/$config.py:$MODE" --workdir="$OUT/$name" \
      "${TABLE_EPOCHS[@]}" "${shared[@]}" "$@"
  fi
}

# PAPT first: on the embedded corpus its corpus, dataset and bootstrap encoder (the
# stand-in for pre-trained HuBERT) are shared by every other system.
shared=()
run papt papt
if [ "$MODE" != paper ]; then
  shared=(--config.data.corpus_dir="$OUT/papt/corpus" --config.data.synthetic_preset=
          --config.data.data_dir="$OUT/papt/data"
          --config.model.init="converted:$OUT/papt/bootstrap/encoder"
          --config.pseudo_labels.teacher="converted:$OUT/papt/bootstrap/encoder")
fi
no_corpus=prepare,pseudo_labels,pretrain,finetune,evaluate,report
run tapt tapt --config.stages="$no_corpus"
run vanilla_ft vanilla --config.stages=prepare,finetune,evaluate,report
run b2 b2 --config.stages=prepare,speaker_weights,finetune,evaluate,report
for fusion in first prefix; do
  run papt "papt_$fusion" --config.stages="$no_corpus" --config.pretrain.speaker_fusion="$fusion"
done

# Figure 1: SI and SD fine-tuning on K training speakers (its own workdirs in OUT/gap).
MSP_DIR="$MSP_DIR" LARGE="$LARGE" EXTRA_FLAGS="${TABLE_EPOCHS[*]}" launch/personalization_gap.sh "$MODE" "$OUT/gap" "$OUT/papt"

python -m papt_jax.eval.compare --out "$OUT/comparison.md" \
  "$OUT/vanilla" "$OUT/b2" "$OUT/tapt" "$OUT/papt"
python -m papt_jax.eval.ablation --out "$OUT/table4.md" \
  "$OUT/papt" "$OUT/papt_first" "$OUT/papt_prefix" "$OUT/tapt"
python -m papt_jax.eval.gap --out "$OUT/figure1.md" "$OUT"/gap/s[id]_*
cat "$OUT/comparison.md" "$OUT/table4.md" "$OUT/figure1.md" > "$OUT/tables.md"
echo "tables: $OUT/tables.md"
