#!/usr/bin/env bash
# One prepared GPU check (~5 min on an H200): training throughput of the paper profile for
# the variants that decide the trainer's defaults, the defaults first, then each default taken
# away in turn (variants past the time budget are skipped, and say so), then the CUDA tests (docs/training.md).
#
#   bash bench/gpu_check.sh                 # on a machine with a CUDA GPU, from the repo root
#   GPU_CHECK_SHAPE=24,28,26 bash bench/gpu_check.sh   # smoke-test on CPU (tests skip)
#
# Needs python3 with torch, numpy, pandas, tqdm and pytest (no nibabel: the CUDA tests run
# without tests/conftest.py). Logs go to $OUT (or /tmp/gpu-check).
set -uo pipefail
out=${OUT:-/tmp/gpu-check}
mkdir -p "$out"
export PYTHONPATH="$PWD/src:$PWD/tests" PYTHONUNBUFFERED=1
shape=${GPU_CHECK_SHAPE:-91,109,91}
variants=${GPU_CHECK_VARIANTS:-naive,fused+compile+cl+tb+tr+ro+fa,trainer,fused+compile+cl+tb+tr+ro+fa+m32,fused+compile+cl+tb+ro+fa,fused+compile+cl+tb+tr+ro,par2:fused+compile+cl+tb+tr+ro+fa,profile:fused+compile+cl+tb+tr+fa}

{ nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv 2>/dev/null || echo "no nvidia-smi"; } | tee "$out/gpu.txt"
python3 -c "import torch; print('torch', torch.__version__, 'cuda', torch.version.cuda, 'available', torch.cuda.is_available())" | tee -a "$out/gpu.txt"

echo "== throughput ($variants)"
timeout ${GPU_CHECK_BENCH_S:-320} python3 bench/train_throughput.py --shape "$shape" --budget-s $(( ${GPU_CHECK_BENCH_S:-320} - 50 )) --variants "$variants" 2>&1 | tee "$out/bench.log"

echo "== CUDA tests"
timeout ${GPU_CHECK_TESTS_S:-200} python3 -m pytest -v -s --tb=short --noconftest -p no:cacheprovider tests/test_model_cuda.py tests/test_triton_block.py tests/test_triton_rotate.py 2>&1 | tee "$out/tests.log"
