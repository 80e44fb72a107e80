"""Is Mahalanobis', CCU's and ROWL's ~0 % L-inf FPR on the built-in benchmark robustness or gradient masking?
(issue 11, point 6a). Not part of the test suite.

Trains (or reuses) the three detectors at the `smoke` profile on the default built-in data, evaluates them under
the `paper` protocol (PGD 40 x 1/255) and the `strong` one (PGD + APGD on three objectives + Square on the
deployed score, with the attack diagnostics: zero gradients, saturation, black-box vs white-box, eps sweep up to
64/255), each under `natural`, `linf` and `linf-joint`, and writes a markdown table of the answer.

    python benchmarks/robust_builtin.py --out-dir /tmp/robust-builtin --max-ood 100 --square-queries 500
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

METHODS = ["mahalanobis", "ccu", "rowl"]
THREATS = ["natural", "linf", "linf-joint"]
OOD_SETS = ["photo_digits", "scenes_resize", "tiles"]  # the default in-dist set's (shapes)


def run(protocol: str, out: Path, args) -> None:
    from oodbench.runner import RunOptions
    from oodbench.runner import run as run_grid

    options = RunOptions(
        methods=METHODS,
        threats=THREATS,
        ood=OOD_SETS,
        protocol=protocol,
        profile="smoke",
        out=str(out),
        max_ood=args.max_ood,
        square_queries=args.square_queries,
        progress=False,
    )
    run_grid(options, log=lambda line: print(line, file=sys.stderr, flush=True))


def cells(run_dir: Path) -> list[dict]:
    return [json.loads(p.read_text()) for p in sorted((run_dir / "cells").glob("*.json"))]


def mean(values) -> float:
    values = [v for v in values if v is not None]
    return sum(values) / len(values) if values else float("nan")


def report(paper_dir: Path, strong_dir: Path, args, seconds: float) -> str:
    from attacks.diagnostics import EPS_SWEEP

    paper = {(c["method"], c["ood_set"], c["threat"]): c for c in cells(paper_dir)}
    strong = {(c["method"], c["ood_set"], c["threat"]): c for c in cells(strong_dir)}
    lines = [
        "# Built-in benchmark: robustness or gradient masking? (Mahalanobis, CCU, ROWL)",
        "",
        f"Command: `python benchmarks/robust_builtin.py --out-dir {args.out_dir} --max-ood {args.max_ood} "
        f"--square-queries {args.square_queries} --ood {args.ood} --threats {args.threats}`",
        "",
        f"Profile `smoke` (small CNN, 6 epochs, default built-in data: shapes, 500 in-dist test images), OOD sets "
        f"{args.ood}, {args.max_ood} images each; `strong`: PGD 40 x 1/255 + APGD 25 x 1 on the attack, margin and "
        f"adaptive objectives + Square ({args.square_queries} queries, p_init 0.8) on the deployed score; "
        "diagnostics on up to 64 images per cell (eps sweep: PGD + Square with at most 100 queries)."
        + ("" if args.report_only else f" Wall time {seconds / 60:.1f} min on 2 CPU cores."),
        "",
        "Averaged over the OOD sets (FPR@95TPR in %; per-attack FPRs of the strong worst case):",
        "",
        "| method | threat | paper FPR | paper AUROC | strong FPR | strong AUROC | PGD | APGD (best obj.) | Square "
        "| zero-grad % | saturated % | FPR by eps (x/255), strong attack on 64 images | flags |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for method in METHODS:
        for threat in THREATS:
            keys = sorted({k for k in [*paper, *strong] if k[0] == method and k[2] == threat})
            if not keys:
                continue
            p = mean(paper[k]["fpr"] for k in keys if k in paper)  # nan: not finished
            pa = mean(paper[k]["auroc"] for k in keys if k in paper)
            s = mean(strong[k]["fpr"] for k in keys if k in strong)
            auroc = mean(strong[k]["auroc"] for k in keys if k in strong)
            diag = [strong.get(k, paper.get(k, {})).get("diagnostics", {}) for k in keys]  # paper's until strong
            by = [d.get("by_attack_fpr", {}) for d in diag]
            pgd = mean(b.get("pgd") for b in by)
            apgd = mean(max((v for n, v in b.items() if n.startswith("apgd")), default=None) for b in by)
            square = mean(b.get("square") for b in by)
            zero = mean(d.get("zero_grad") for d in diag)
            saturated = mean(d.get("saturated") for d in diag)
            sweep = " ".join(f"{e}:{mean(d.get('eps_sweep', {}).get(str(e)) for d in diag):.0f}" for e in EPS_SWEEP)
            flags = sorted({f for k in keys for f in strong.get(k, paper.get(k, {})).get("flags", [])})
            lines.append(
                f"| {method} | {threat} | {p:.2f} | {pa:.2f} | {s:.2f} | {auroc:.2f} | {pgd:.2f} | {apgd:.2f} "
                f"| {square:.2f} | {zero:.1f} | {saturated:.1f} | {sweep} | {', '.join(flags) or '-'} |"
            )
    return "\n".join(lines) + "\n"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out-dir", default="/tmp/robust-builtin")
    parser.add_argument("--max-ood", type=int, default=300)
    parser.add_argument("--square-queries", type=int, default=300)
    parser.add_argument("--ood", default=",".join(OOD_SETS), help="OOD sets (default: the built-in three)")
    parser.add_argument("--threats", default=",".join(THREATS))
    parser.add_argument("--report-only", action="store_true", help="tabulate the cells finished so far")
    parser.add_argument("--output", default=str(REPO / "benchmarks" / "results" / "robust_builtin.md"))
    args = parser.parse_args()
    OOD_SETS[:] = args.ood.split(",")
    THREATS[:] = args.threats.split(",")
    out = Path(args.out_dir)
    started = time.time()
    strong_dir = out / "strong"
    if not args.report_only:
        run("paper", out / "paper", args)
        if not (strong_dir / "checkpoints").exists() and (out / "paper" / "checkpoints").exists():
            shutil.copytree(out / "paper" / "checkpoints", strong_dir / "checkpoints")  # same training switches
        run("strong", strong_dir, args)
    text = report(out / "paper", strong_dir, args, time.time() - started)
    Path(args.output).write_text(text)
    print(text)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
