#!/usr/bin/env bash
# The GPU check of issue 24, in ONE bounded run on the lent device machine (see the device
# tool's README): install from carried wheels, then on CUDA: train_model with ParlAI's --fp16
# and with our --bf16, eval_model, interactive, self_chat, multiprocessing_train (NCCL, 1 GPU),
# our torchrun launcher (NCCL, 1 GPU), the gpu test tier (pytest -m gpu), and the benchmark
# rows P1, P2, P3 (with MFU) and P9. Every step is bounded; the run ends by DEADLINE seconds.
#
#   on the GPU (from the repository root; .whl/ from benchmarks/gpu_wheels.sh, carried):
#       OUT=$OUT bash benchmarks/gpu_check.sh
#   dry run on this CPU first (the project's .venv, tiny model, few steps):
#       DRY=1 OUT=/tmp/gpucheck bash benchmarks/gpu_check.sh
#
# The GPU image has torch with CUDA and transformers but not ParlAI; nothing can be
# downloaded there, and the SmolLM2 GGUF does not travel: GPU runs use a randomly
# initialised gpt2-small with the real GPT-2 tokenizer. Results: $OUT/summary.txt, logs in
# $OUT/logs.tgz.
set -u
export PYTHONUNBUFFERED=1 PYTHONWARNINGS=ignore HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1 TOKENIZERS_PARALLELISM=false
REPO=$(cd "$(dirname "$0")/.." && pwd)
OUT=${OUT:?set OUT to the folder that comes back}
WORK=${WORK:-/tmp/gpucheck-work}
rm -rf "$WORK"; mkdir -p "$WORK/logs" "$OUT"
START=$(date +%s); DEADLINE=${DEADLINE:-450}
SUMMARY=$OUT/summary.txt; : > "$SUMMARY"
say() { echo "$*" | tee -a "$SUMMARY"; }
left() { echo $((DEADLINE - ($(date +%s) - START))); }
KEEP='"exps"|"hits@1"|"ppl"|Error|Traceback|MFU|ratio|tok/s|ms/example|examples/s|\[Transfertransfo|passed|failed|skipped|CUDA|NCCL'
step() {  # NAME LIMIT COMMAND...: bounded, logged to $WORK/logs/NAME.log, summarised
  local name=$1 limit=$2; shift 2
  local remaining; remaining=$(left)
  if [ "$remaining" -lt 20 ]; then say "=== $name skipped ($remaining s left)"; return; fi
  [ "$limit" -gt "$remaining" ] && limit=$remaining
  local t0; t0=$(date +%s)
  timeout -k 5 "$limit" "$@" > "$WORK/logs/$name.log" 2>&1; local rc=$?
  say "=== $name rc=$rc $(( $(date +%s) - t0 )) s (limit $limit)"
  grep -E "$KEEP" "$WORK/logs/$name.log" | tail -n 6 | cut -c1-400 | tee -a "$SUMMARY"
  [ $rc -ne 0 ] && tail -n 10 "$WORK/logs/$name.log" | cut -c1-300 | tee -a "$SUMMARY"
}
finish() { tar -czf "$OUT/logs.tgz" -C "$WORK" logs 2>/dev/null; say "total $(( $(date +%s) - START )) s"; }
trap finish EXIT

if [ -n "${DRY:-}" ]; then
  PY=$REPO/.venv/bin/python; NO_CUDA="--no-cuda"; DEVICE=cpu; STEPS=4; BS=4; EVALN=16
  BENCH="--only P1 --reps 1"
else
  PY=python3; NO_CUDA=""; DEVICE=cuda; STEPS=150; BS=32; EVALN=512
  BENCH="--only P1,P2,P3,P9 --reps 3"
  say "$(nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader)"
  step install 150 bash -c "$PY -m pip install -q --no-index --no-deps --no-compile $REPO/.whl/*.whl && \
    $PY -m pip install -q --no-index --no-deps --no-build-isolation -e $REPO"
fi
PARLAI="$PY -m parlai"
export PYTHONPATH=$REPO
cd "$WORK"
step smoke 60 $PY -c "import torch, transformers, parlai_transfertransfo.plugin.registration; \
import parlai.agents.transfertransfo.transfertransfo; \
print('torch', torch.__version__, 'CUDA' if torch.cuda.is_available() else 'no CUDA', 'transformers', transformers.__version__)"

if [ -n "${DRY:-}" ]; then  # a tiny GPT-2 with the real tokenizer
  MODEL=$($PY -c "import sys; sys.path.insert(0, '$REPO'); from benchmarks.host_overhead import negligible_model; print(negligible_model('$WORK'))" 2>/dev/null | tail -1)
else  # gpt2-small, random weights, the real tokenizer
  MODEL=$($PY -c "import sys; sys.path.insert(0, '$REPO'); from benchmarks.common import gpt2_small_dir; print(gpt2_small_dir('$WORK'))" 2>/dev/null | tail -1)
fi
say "model: $MODEL"
DATA="-t convai2_file --convai2-file $REPO/tests/data/convai2/valid_self_original_800.txt --valid-split 100"
RECIPE="--num-candidates 4 --personality-permutations 2 --max-history 2 --lm-coef 2.0"
SHORT="--log-every-n-secs 10 --validation-every-n-epochs -1 --short-final-eval true --validation-max-exs 64 --skip-generation true"

step train_fp16 120 $PARLAI train_model -m transfertransfo --model-name "$MODEL" $DATA -mf "$WORK/fp16/model" \
  -bs $BS $RECIPE --max-train-steps $STEPS $SHORT --fp16 true --datapath "$WORK/data" $NO_CUDA
step train_bf16 90 $PARLAI train_model -m transfertransfo --model-name "$MODEL" $DATA -mf "$WORK/bf16/model" \
  -bs $BS $RECIPE --max-train-steps $((STEPS / 2)) $SHORT --bf16 true --datapath "$WORK/data" $NO_CUDA
step eval 90 $PARLAI eval_model -mf "$WORK/fp16/model" $DATA -dt valid -bs 64 --num-examples $EVALN \
  --inference greedy --datapath "$WORK/data" $NO_CUDA
step interactive 45 bash -c "printf 'hi! how are you today?\nwhat do you do for a living?\n' | \
  $PARLAI interactive -mf $WORK/fp16/model --inference beam --beam-size 3 $NO_CUDA"
step self_chat 45 $PARLAI self_chat -mf "$WORK/fp16/model" -t convai2 --datapath "$WORK/data" \
  --num-self-chats 8 -bs 8 --inference greedy --outfile "$WORK/selfchat" $NO_CUDA
step mp_train 90 $PARLAI multiprocessing_train -m transfertransfo --model-name "$MODEL" $DATA -mf "$WORK/mp/model" \
  -bs 8 --max-train-steps 20 $SHORT --distributed-world-size 1 --datapath "$WORK/data" $NO_CUDA
step torchrun 90 $PY -m torch.distributed.run --nproc-per-node 1 --master-port 29533 -m parlai_transfertransfo.distributed \
  train_model -m transfertransfo --model-name "$MODEL" $DATA -mf "$WORK/tr/model" -bs 8 --max-train-steps 20 $SHORT \
  --datapath "$WORK/data" $NO_CUDA
step gpu_tests 120 $PY -m pytest -q -m gpu -rs -p no:cacheprovider "$REPO/tests/test_gpu.py"
step bench 200 $PY -m benchmarks --device $DEVICE --model gpt2-small $BENCH --train-batch-size $BS --workdir "$WORK/bench"
[ -z "${DRY:-}" ] && say "$(nvidia-smi --query-gpu=memory.used,utilization.gpu --format=csv,noheader)"
exit 0
