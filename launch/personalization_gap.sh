#!/usr/bin/env bash
# The personalization gap (paper Figure 1): speaker-independent and speaker-dependent
# fine-tuning on K training speakers for every K, then the table and the figure.
#
# Embedded synthetic corpus (reuses the corpus and bootstrap encoder of a finished run,
# e.g. the PAPT run of launch/reproduce_tables.sh demo):
#   launch/personalization_gap.sh demo runs/gap_demo runs/tables_demo/papt
# MSP-Podcast (set the paths below first):
#   launch/personalization_gap.sh paper runs/gap
set -euo pipefail

MODE=${1:-demo}            # 'demo', 'smoke' or 'paper'
OUT=${2:-runs/gap_$MODE}   # one workdir per (K, SI/SD) below this folder
BASE=${3:-}                # demo/smoke: a finished run whose corpus and bootstrap are reused

MSP_DIR=${MSP_DIR:-/data/MSP-Podcast-1.6}
LARGE=${LARGE:-ckpt/hubert_large}
# More --config flags for every run, space-separated (reproduce_tables.sh passes its epochs).
read -ra extra <<< "${EXTRA_FLAGS:-}"

case "$MODE" in
  paper) KS=(50 100 250 500 987) ;;
  demo) KS=(25 30 40) ;;
  smoke) KS=(6 10) ;;
  *) echo "mode must be demo, smoke or paper" >&2; exit 2 ;;
esac

flags=()
if [ "$MODE" = paper ]; then
  flags=(--config.data.corpus_dir="$MSP_DIR" --config.model.init="converted:$LARGE")
  variant=""
else
  if [ -z "$BASE" ]; then echo "give a finished $MODE run as the third argument" >&2; exit 2; fi
  flags=(--config.data.corpus_dir="$BASE/corpus" --config.data.synthetic_preset=
         --config.data.data_dir="$BASE/data" --config.model.init="converted:$BASE/bootstrap/encoder"
         --config.stages=prepare,finetune,evaluate,report)
  variant=":$MODE"
fi

runs=()
for k in "${KS[@]}"; do
  for kind in si sd; do
    dependent=False; [ "$kind" = sd ] && dependent=True
    python -m papt_jax.main --config="configs/personalization_gap.py$variant" \
      --workdir="$OUT/${kind}_$k" "${flags[@]}" "${extra[@]}" \
      --config.finetune.train_speakers="$k" --config.finetune.speaker_dependent="$dependent"
    runs+=("$OUT/${kind}_$k")
  done
done
python -m papt_jax.eval.gap --out "$OUT/gap.md" "${runs[@]}"
