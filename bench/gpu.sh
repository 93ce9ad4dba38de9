#!/usr/bin/env bash
# Everything issues 3 and 17 measure on a lent GPU, in one call (see bench/NOTES.md): the CUDA tests and the fused
# Triton kernels against the torch ones, the GPU bench (torchgmm fused and torch-kernel paths side by side), profiles
# and TF32 accuracy. CASES=G-full,G-diag limits the bench to some cases when device time is short.
# Usage on the device machine: bash bench/gpu.sh [tag]   (logs go to $OUT or ./gpu-logs)
set -o pipefail
out=${OUT:-gpu-logs}/${1:-run}; mkdir -p "$out"
export PYTHONUNBUFFERED=1 PYTHONPATH=$PWD${PYTHONPATH:+:$PYTHONPATH}
if [ -d .whl ]; then  # optional peers carried as wheels
  python3 -m pip install -q --no-index --no-deps --no-compile --target /tmp/site .whl/*.whl && export PYTHONPATH=$PYTHONPATH:/tmp/site
fi
nvidia-smi --query-gpu=name,driver_version,memory.total,clocks.sm,clocks.max.sm --format=csv | tee "$out/gpu.txt"
python3 -c "import torch, triton; print('torch', torch.__version__, 'triton', triton.__version__)" | tee -a "$out/gpu.txt"
python3 -m pytest -q -x tests/test_cuda.py tests/test_fused.py ${TESTS:-} 2>&1 | tail -5 | tee "$out/tests.txt"
python3 -m bench --config configs/bench-gpu.yaml --out "$out/bench.json" ${CASES:+--cases $CASES} 2>&1 | tee "$out/bench.txt"
python3 -m bench.kernels 2>&1 | tee "$out/kernels.txt"
for case in ${PROFILE:-G-full G-diag}; do
  python3 -m bench.profile --config configs/bench-gpu.yaml --case "$case" --iterations 2 --rows 14 2>&1 | tee -a "$out/profile.txt"
done
python3 -m bench.precision --device cuda --iterations 10 2>&1 | tee "$out/precision.txt"
python3 -m bench.precision --device cuda --n-features 128 --n-components 1024 --covariance-type diag --iterations 10 2>&1 | tee -a "$out/precision.txt"
