#!/usr/bin/env bash
# GPU check of oodbench's throughput (under 8 minutes; installs nothing, needs no network).
#
# For DenseNet-BC-100 (densenet100) and WRN-40-4 (wrn40_4) at CIFAR scale on the GPU it runs `oodbench bench`:
# raw forward and forward+input-gradient throughput over a batch sweep, every stage of the suite (clean scoring,
# PGD, corruption generation and search, mining, a training step of each method family) with its efficiency, the
# reference-style comparison (the released code's evaluation structure vs the suite, scores checked), the peak
# memory of the corruption search for 75 vs 95 variants, and the CIFAR-10 projections (four-threat evaluation of one
# method on the six OOD sets, ATOM's 100-epoch training). Then the attack-precision experiment (fp32 / tf32 /
# bf16 FPR under PGD, `python -m oodbench.tools.precision`). Every `timeout` leaves the JSON written so far.
#
# Run from the repository root, with the project installed in the interpreter given by $PYTHON:
#     PYTHON=.venv/bin/python benchmarks/gpu_check.sh
# Results: $OUT if set, else benchmarks/results/: bench-densenet100.json, bench-wrn40_4.json, accel-cuda.json.
# Knobs (environment): DEVICE (cuda), ARCHS, N_OOD (10000 OOD images for the throughput stages), REF_OOD (500 images
# for the reference comparison; its in-dist set is N x 10,000 / 54,565 images), STAGE_SECONDS, REPEATS,
# ARCH_TIMEOUT (seconds per architecture), BENCH_ARGS (extra `oodbench bench` options).
set -u -o pipefail

PYTHON="${PYTHON:-python}"
DEVICE="${DEVICE:-cuda}"
ARCHS="${ARCHS:-densenet100 wrn40_4}"
N_OOD="${N_OOD:-10000}"
REF_OOD="${REF_OOD:-500}"
STAGE_SECONDS="${STAGE_SECONDS:-2}"
REPEATS="${REPEATS:-2}"
MIN_TIME="${MIN_TIME:-0.25}"
ARCH_TIMEOUT="${ARCH_TIMEOUT:-195}"
ACCEL_TIMEOUT="${ACCEL_TIMEOUT:-45}"
BENCH_ARGS="${BENCH_ARGS:-}"
RESULTS="${OUT:-benchmarks/results}"
export OODBENCH_PROGRESS=0
mkdir -p "$RESULTS"
started=$(date +%s)

echo "== oodbench GPU check: $($PYTHON -c 'import torch; print("torch", torch.__version__, "cuda", torch.version.cuda)')"
if [ "$DEVICE" != "cpu" ]; then
    if ! "$PYTHON" -c 'import sys, torch; sys.exit(0 if torch.cuda.is_available() else 1)'; then
        echo "no CUDA device visible to $PYTHON: nothing to check (set DEVICE=cpu for a dry run)" >&2
        exit 3
    fi
    "$PYTHON" -c 'import torch; p = torch.cuda.get_device_properties(0); print(p.name, f"{p.total_memory / 2**30:.0f} GiB")'
fi

status=0
for arch in $ARCHS; do
    echo
    echo "== $arch (limit ${ARCH_TIMEOUT} s)"
    # shellcheck disable=SC2086  # BENCH_ARGS is a list of options
    timeout --signal=TERM --kill-after=15 "$ARCH_TIMEOUT" \
        "$PYTHON" -m oodbench.cli bench --arch "$arch" --device "$DEVICE" \
        --n-ood "$N_OOD" --ref-ood "$REF_OOD" --stage-seconds "$STAGE_SECONDS" --repeats "$REPEATS" --min-time "$MIN_TIME" \
        --project-cifar10 --json "$RESULTS/bench-$arch.json" $BENCH_ARGS
    code=$?
    if [ $code -ne 0 ]; then
        echo "!! oodbench bench --arch $arch exited with $code (124 = timeout; the JSON keeps what finished)" >&2
        status=1
    fi
done

if [ "$DEVICE" != "cpu" ]; then
    echo
    echo "== attack precision (fp32 / tf32 / bf16) on the GPU (limit ${ACCEL_TIMEOUT} s)"
    timeout --signal=TERM --kill-after=10 "$ACCEL_TIMEOUT" \
        "$PYTHON" -m oodbench.tools.precision --device "$DEVICE" --json "$RESULTS/accel-cuda.json" > "$RESULTS/accel-cuda.log" 2>&1 \
        || { echo "!! precision experiment failed or timed out (see $RESULTS/accel-cuda.log)" >&2; status=1; }
fi

echo
echo "== summary ($(( $(date +%s) - started )) s)"
"$PYTHON" - "$RESULTS" $ARCHS <<'EOF'
import json
import sys
from pathlib import Path

results, archs = Path(sys.argv[1]), sys.argv[2:]
for arch in archs:
    path = results / f"bench-{arch}.json"
    if not path.exists():
        print(f"{arch}: no result")
        continue
    r = json.loads(path.read_text())
    print(f"\n{arch} on {r['device']['name']} (torch {r['device']['torch']}, sections done: "
          f"{', '.join(r.get('section_seconds', {}))})")
    best = r.get("raw", {}).get("best")
    if best:
        print(f"  raw: forward {best['forward']['images_per_s']:,.0f} img/s @ {best['forward']['batch']}, "
              f"fwd+input-grad {best['fwd_grad']['images_per_s']:,.0f} img/s @ {best['fwd_grad']['batch']}")
    stages = r.get("stages", {})
    order = ["clean_scoring", "pgd", "corruption_generation", "corruption_search", "mining"]
    for name in order + sorted(k for k in stages if k not in order):
        if name not in stages:
            continue
        s = stages[name]
        eff = "" if s["efficiency"] is None else f"  efficiency {100 * s['efficiency']:5.1f} %"
        same = s.get("efficiency_same_batch")
        same = "" if same is None else f" (at the suite's batch {100 * same:5.1f} %)"
        print(f"  {name:<24s} {s['images_per_s']:>12,.0f} {s['unit']:<24s}{eff}{same}")
    ref = r.get("reference")
    if ref:
        print(f"  reference-style vs suite ({ref['n_ood']} OOD, {ref['n_id']} in-dist, {ref['variants']} variants):")
        for threat in ("natural", "corruption", "linf", "comp"):
            t = ref["threats"][threat]
            print(f"    {threat:<10s} {t['reference_s']:8.1f} s vs {t['suite_s']:7.1f} s  "
                  f"{t['speedup_vs_reference']:6.1f}x  identical scores: {t['scores']['identical']} "
                  f"(max diff {t['scores']['max_abs_diff']:.2e})")
        o = ref["overall"]
        print(f"    overall    {o['reference_s']:8.1f} s vs {o['suite_s']:7.1f} s  {o['speedup_vs_reference']:6.1f}x "
              f"(with the one-off generation {o['speedup_including_generation']:.1f}x)")
    mem = r.get("memory")
    if mem:
        print(f"  corruption search memory grows with the number of variants: {mem['grows_with_variants']} "
              f"(75 -> 95 variants: {mem['growth_75_to_95_bytes']})")
    proj = r.get("projection")
    if proj:
        for key, ev in proj["evaluation"].items():
            gen = ev["one_off_generation_s"]
            print(f"  projection: four-threat evaluation of one method on CIFAR-10's six OOD sets, "
                  f"{key.replace('_', ' ')}: {ev['total_h']:.2f} h" + (f" (+ one-off generation {gen / 3600:.2f} h)" if gen else ""))
        if "atom_training" in proj:
            print(f"  projection: ATOM training, 100 epochs: {proj['atom_training']['total_h']:.2f} h "
                  f"(paper: 21 h on an RTX 2080 Ti)")
    if r.get("targets"):
        print(f"  targets: {r['targets']}")
accel = results / "accel-cuda.json"
if accel.exists():
    a = json.loads(accel.read_text())
    print("\nattack precision (FPR % under PGD, fixed model):")
    for name, row in a["settings"].items():
        print(f"  {name:<14s} " + "  ".join(f"{p} {v['fpr']:6.2f}" for p, v in row.items()))
    print(f"  adoptable (lowers no FPR): {a.get('adoptable')}")
EOF
exit $status
