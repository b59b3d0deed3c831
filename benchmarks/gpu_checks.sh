#!/usr/bin/env bash
# The checks that need a CUDA GPU, run by hand on such a machine (CI has none):
# the torch fitting tests (they add the cuda device when one is present), the segmentation
# networks' speed on the GPU, and the fitting benchmark at the GPU goal's size.
# Usage: OUT=folder benchmarks/gpu_checks.sh   (python3 must have torch with CUDA)
set -uo pipefail
cd "$(dirname "$0")/.."
OUT="${OUT:-benchmarks/results/gpu}"
mkdir -p "$OUT"
export PYTHONUNBUFFERED=1 PYTHONPATH=.
nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv 2>&1 | tee "$OUT/gpu.txt"
python3 -c "import torch, numpy; print('torch', torch.__version__, 'cuda', torch.version.cuda, 'numpy', numpy.__version__)" | tee -a "$OUT/gpu.txt"
python3 -m pytest -q -p no:cacheprovider Testing/test_fitting.py 2>&1 | tee "$OUT/pytest_fitting_cuda.log"
python3 benchmarks/bench_segmentation.py --device cuda --skip-eval --out "$OUT/bench_segmentation_cuda.json" 2>&1 | tee "$OUT/bench_segmentation_cuda.log"
python3 benchmarks/bench_fitting.py --voxels 134217728 --repeats "${REPEATS:-2}" --json "$OUT/bench_fitting_cuda.json" 2>&1 | tee "$OUT/bench_fitting_cuda.log"
