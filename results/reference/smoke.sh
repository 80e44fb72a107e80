#!/usr/bin/env bash
# The regression benchmark CI runs: a subset of the built-in smoke benchmark on `shapes` (three detectors, two OOD sets,
# all four threat models, 2 epochs, 100 images per OOD set; about 1.5 minutes on one CPU core).
#   bash results/reference/smoke.sh RUN_DIR                       # run it
#   oodbench check RUN_DIR --against results/reference/smoke.csv --tol 1.0            # what CI checks
#   oodbench check RUN_DIR --against results/reference/smoke.csv --update             # deliberate update
# CPU numbers are bit-exact for a fixed kernel path and thread count, but a few ulps (another thread count, AVX-512
# instead of AVX2 kernels) grow through SGD and PGD's sign steps into points of FPR. So the reference is pinned to
# one thread and to the AVX2 code paths of PyTorch, oneDNN and MKL, which every x86-64 CI machine of the last decade
# runs the same way.
set -euo pipefail
out="${1:?usage: smoke.sh RUN_DIR}"
export OMP_NUM_THREADS=1 MKL_NUM_THREADS=1 ATEN_CPU_CAPABILITY=avx2 ONEDNN_MAX_CPU_ISA=AVX2 MKL_CBWR=AVX2
exec oodbench run --profile smoke --methods msp,oe,atom --ood photo_digits,tiles \
    --threats natural,corruption,linf,comp --epochs 2 --max-ood 100 --seed 0 --no-progress --out "$out"
