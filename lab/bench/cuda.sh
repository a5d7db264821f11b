#!/usr/bin/env bash
# The GPU half of `gptviz bench`, as one prepared device call (about 5-8 minutes on an H100):
#   1. the CUDA-only section: GPT-2-small shape training step (B16, T1024), bf16 autocast, then
#      bf16 autocast + torch.compile, gptviz vs transformers, with MFU against the card's dense bf16 peak;
#   2. the quick table on the GPU (same comparisons as on CPU).
# Run from the repository root; results land in $OUT (the device tool's folder) or ./bench-cuda.
# It needs only torch + transformers (the GPU image has both); gptviz runs from the source tree.
set -o pipefail
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}" PYTHONUNBUFFERED=1
PY=${PYTHON:-python3}
DEST=${OUT:-bench-cuda}
mkdir -p "$DEST"
nvidia-smi --query-gpu=name,memory.total,clocks.max.sm --format=csv 2>&1 | tee "$DEST/gpu.txt"
"$PY" -c "import torch, transformers; print('torch', torch.__version__, 'transformers', transformers.__version__)"
timeout 420 "$PY" -m gptviz bench --only cuda --out "$DEST/bench-cuda.json" 2>&1 | tee "$DEST/cuda.log"
timeout 150 "$PY" -m gptviz bench --quick --out "$DEST/bench-quick-gpu.json" 2>&1 | tee "$DEST/quick.log"
