"""The `strong` protocol next to `paper` on the same checkpoints (issue "threat models", done-when 2).

Reads a finished `paper`-protocol run directory, evaluates the same trained networks under `--protocol strong`
(the command of the paper run, with `--checkpoint METHOD=PATH` for every method) into RUN_DIR-strong, and prints
both tables side by side with, per cell, whether the strong FPR is at least the paper FPR.

    python benchmarks/strong_vs_paper.py oodbench-runs/digits-paper-smoke-seed0
    python benchmarks/strong_vs_paper.py RUN_DIR --apgd-steps 25 --apgd-restarts 1 --square-queries 300 --max-ood 100

Any further `oodbench run` option is passed on and overrides the paper run's (CPU scale: fewer APGD steps,
queries and images; the paper run's cells then differ in size, so compare the per-OOD-set rows of equal n).
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path


def strong_command(run_dir: Path, out: Path, extra: list[str] = ()) -> list[str]:
    """`oodbench run` arguments that re-evaluate the networks of `run_dir` under the strong protocol; `extra`
    (e.g. `--apgd-steps 25 --square-queries 300 --max-ood 100`) comes last, so it overrides the paper run's
    options."""
    record = json.loads((run_dir / "run.json").read_text())
    options = record["command"]
    args = [
        "run",
        "--methods",
        ",".join(record["methods"]),
        "--in",
        options["in_dist"],
        "--protocol",
        "strong",
        "--profile",
        options["profile"],
        "--seed",
        str(options["seed"]),
        "--out",
        str(out),
        "--no-progress",
    ]
    for flag, key in (("--ood", "ood"), ("--threats", "threats")):
        if options.get(key):
            args += [flag, ",".join(options[key])]
    for flag, key in (
        ("--arch", "arch"),
        ("--aux", "aux"),
        ("--data-root", "data_root"),
        ("--epochs", "epochs"),
        ("--max-ood", "max_ood"),
        ("--max-train", "max_train"),
        ("--pgd-steps", "pgd_steps"),
        ("--pgd-restarts", "pgd_restarts"),
        ("--batch-size", "batch_size"),
    ):
        if options.get(key) is not None:
            args += [flag, str(options[key])]
    for method, entry in record["methods"].items():
        checkpoint = Path(entry["checkpoint_file"])
        args += ["--checkpoint", f"{method}={checkpoint if checkpoint.is_absolute() else run_dir / checkpoint}"]
    for method, settings in options.get("overrides", {}).items():
        for key, value in settings.items():
            args += ["--set", f"{method}.{key}={value}"]
    return args + list(extra)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("run_dir", help="a finished run of the paper protocol")
    parser.add_argument("--out", default=None, help="the strong run directory (default: RUN_DIR-strong)")
    args, extra = parser.parse_known_args(argv)
    run_dir = Path(args.run_dir)
    out = Path(args.out) if args.out else run_dir.with_name(run_dir.name + "-strong")

    from oodbench.cli import main as oodbench
    from oodbench.results import load_cells, summary_table, tidy

    started = time.time()
    code = oodbench(strong_command(run_dir, out, extra))
    if code != 0:
        return code
    wall = time.time() - started
    paper = tidy(load_cells([run_dir]), ["fpr", "auroc"])
    strong = tidy(load_cells([out]), ["fpr", "auroc"])
    merged = paper.merge(
        strong, on=["in_dist", "method", "ood_set", "threat", "metric"], suffixes=("_paper", "_strong")
    )
    fpr = merged[merged["metric"] == "fpr"]
    weaker = fpr[fpr["value_strong"] < fpr["value_paper"] - 1e-9]
    print("\npaper protocol\n" + summary_table(load_cells([run_dir])))
    print("\nstrong protocol (same checkpoints)\n" + summary_table(load_cells([out])))
    print(
        f"\nstrong FPR >= paper FPR in {len(fpr) - len(weaker)} of {len(fpr)} cells (per OOD set and averages); "
        f"strong evaluation wall time {wall / 60:.1f} min"
    )
    if len(weaker):
        print(weaker.to_string(index=False))
    return 0 if weaker.empty else 1


if __name__ == "__main__":
    sys.exit(main())
