#!/usr/bin/env bash
# The regression benchmark CI runs: a subset of the built-in smoke benchmark (three detectors, two OOD sets,
# all four threat models, 2 epochs, 100 images per OOD set; about 2 minutes on 2 CPU cores).
#   bash results/reference/smoke.sh RUN_DIR                       # run it
#   oodbench check RUN_DIR --against results/reference/smoke.csv --tol 1.0            # what CI checks
#   oodbench check RUN_DIR --against results/reference/smoke.csv --update             # deliberate update
set -euo pipefail
out="${1:?usage: smoke.sh RUN_DIR}"
exec oodbench run --profile smoke --methods msp,oe,atom --ood tiles,scenes_crop \
    --threats natural,corruption,linf,comp --epochs 2 --max-ood 100 --seed 0 --no-progress --out "$out"
