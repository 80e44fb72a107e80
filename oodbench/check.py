"""Regression checks of reported numbers: `oodbench check RUN_DIR --against BASELINE --tol T`.

BASELINE is another run directory, a tidy CSV as written by `oodbench table --format csv`
(columns in_dist, method, ood_set, threat, metric, value), or `paper` (the paper's tables, SPEC section 7).
Every cell (including the averages over OOD sets) is compared; the command exits 1 and lists the cells that
moved by more than T percentage points and the cells missing on either side. `--update` deliberately rewrites
a CSV baseline from the run (how `results/reference/` is refreshed after an intended change).
"""

from __future__ import annotations

import argparse
from dataclasses import dataclass
from pathlib import Path

import pandas as pd

from oodbench.commands import add_command
from oodbench.errors import ConfigError
from oodbench.io import atomic_path
from oodbench.resources import bundled
from oodbench.results import TIDY_COLUMNS, load_cells, paper_reference, tidy

KEY = ["in_dist", "method", "ood_set", "threat", "metric"]


@dataclass
class CheckResult:
    """Cells compared, cells that moved beyond the tolerance, and cells present on one side only."""

    compared: int
    moved: pd.DataFrame
    missing_in_run: pd.DataFrame
    missing_in_baseline: pd.DataFrame

    @property
    def ok(self) -> bool:
        return self.moved.empty and self.missing_in_run.empty and self.missing_in_baseline.empty


def read_baseline(baseline: str | Path) -> pd.DataFrame:
    """A tidy frame from a run directory or a tidy CSV file."""
    path = resolve_baseline(baseline)
    if path.is_dir():
        return tidy(load_cells([path]))
    if not path.is_file():
        raise ConfigError(
            f"baseline '{baseline}' is neither a run directory nor a CSV file (nor 'paper' or 'reference:NAME')"
        )
    frame = pd.read_csv(path)
    missing = [c for c in TIDY_COLUMNS if c not in frame.columns]
    if missing:
        raise ConfigError(
            f"baseline CSV '{path}' lacks the columns {missing}; write it with `oodbench table --format csv`"
        )
    return frame[TIDY_COLUMNS]


def resolve_baseline(baseline: str | Path) -> Path:
    """`reference:NAME` -> the bundled `results/reference/NAME.csv` (e.g. `reference:smoke`, what CI checks);
    anything else is a path."""
    text = str(baseline)
    if not text.startswith("reference:"):
        return Path(baseline)
    name = text.split(":", 1)[1]
    path = bundled("reference", f"{name}.csv")
    if path is None:
        folder = bundled("reference")
        known = sorted(p.stem for p in folder.glob("*.csv")) if folder is not None else []
        raise ConfigError(f"no bundled reference '{name}' (known: {', '.join(known) or 'none'})")
    return path


def compare(run: pd.DataFrame, baseline: pd.DataFrame, tol: float, metrics: list[str] | None = None) -> CheckResult:
    """Cell-by-cell comparison of two tidy frames (values in percent)."""
    if metrics:
        run = run[run["metric"].isin(metrics)]
        baseline = baseline[baseline["metric"].isin(metrics)]
    merged = run.merge(baseline, on=KEY, how="outer", suffixes=("_run", "_baseline"), indicator=True)
    both = merged[merged["_merge"] == "both"].copy()
    # compared at the precision CSV baselines are written with (4 decimals of a percentage): a written value is
    # within 5e-5 of the true one, so a run equal to its own CSV passes at tol 0 (rounding both sides could
    # differ by 1e-4 at a ...5 boundary)
    both["diff"] = both["value_run"] - both["value_baseline"]
    moved = both[both["diff"].abs() > tol + 5e-5 + 1e-9]
    return CheckResult(
        compared=len(both),
        moved=moved[KEY + ["value_baseline", "value_run", "diff"]].reset_index(drop=True),
        missing_in_run=merged[merged["_merge"] == "right_only"][KEY].reset_index(drop=True),
        missing_in_baseline=merged[merged["_merge"] == "left_only"][KEY].reset_index(drop=True),
    )


def paper_frame(cells: pd.DataFrame) -> pd.DataFrame:
    """The paper's averages for the settings of `cells` (a tidy frame; only settings the paper reports)."""
    from oodbench.paper import load_paper

    paper = load_paper()
    rows = []
    for (in_dist, method), group in cells.groupby(["in_dist", "method"]):
        info = group.iloc[0]
        table = paper_reference(in_dist, info.get("arch", ""), info.get("aux"))
        if table is None:
            continue
        match = paper[
            (paper["table"] == table)
            & (paper["in_dist"] == in_dist)
            & (paper["method"] == method)
            & (paper["ood_set"] == "average")
        ]
        rows.append(match[["in_dist", "method", "ood_set", "threat", "metric", "value"]])
    if not rows:
        raise ConfigError("the paper reports none of these settings (in-dist, architecture, auxiliary set)")
    return pd.concat(rows, ignore_index=True)


def check(run_dir: str | Path, against: str, tol: float, metrics: list[str] | None = None) -> CheckResult:
    """Compare a run with a baseline (run directory, tidy CSV, or `paper`)."""
    cells = load_cells([run_dir])
    run = tidy(cells)
    if against == "paper":
        run = run[run["ood_set"] == "average"]
        baseline = paper_frame(cells)
        # the paper reports more threats and fewer metrics than a given run: compare what both have
        baseline = baseline[baseline["threat"].isin(run["threat"].unique())]
        result = compare(run, baseline, tol, metrics)
        result.missing_in_baseline = result.missing_in_baseline.iloc[0:0]
        return result
    return compare(run, read_baseline(against), tol, metrics)


def update(run_dir: str | Path, baseline: str | Path) -> Path:
    """Write the run's tidy numbers as the new CSV baseline (atomically)."""
    path = resolve_baseline(baseline)
    if path.is_dir() or str(baseline) == "paper":
        raise ConfigError("--update rewrites a CSV baseline; pass --against PATH.csv")
    frame = tidy(load_cells([run_dir]))
    with atomic_path(path) as tmp:
        frame.to_csv(tmp, index=False, float_format="%.4f")
    return path


def report(result: CheckResult, tol: float, against: str) -> str:
    """Human-readable summary listing every moved or missing cell."""
    from tabulate import tabulate

    lines = []
    within = result.compared - len(result.moved)
    lines.append(f"{within} of {result.compared} cells within {tol:g} percentage points of {against}")
    if not result.moved.empty:
        lines.append("\ncells that moved beyond the tolerance:")
        lines.append(tabulate(result.moved, headers="keys", tablefmt="simple", showindex=False, floatfmt=".2f"))
    if not result.missing_in_run.empty:
        lines.append(f"\ncells in {against} but not in the run:")
        lines.append(tabulate(result.missing_in_run, headers="keys", tablefmt="simple", showindex=False))
    if not result.missing_in_baseline.empty:
        lines.append(f"\ncells in the run but not in {against}:")
        lines.append(tabulate(result.missing_in_baseline, headers="keys", tablefmt="simple", showindex=False))
    lines.append("\nOK" if result.ok else "\nREGRESSION: numbers differ from the baseline")
    return "\n".join(lines)


def cmd_check(args: argparse.Namespace) -> int:
    if args.update:
        path = update(args.run_dir, args.against)
        print(f"baseline '{path}' rewritten from {args.run_dir}")
        return 0
    result = check(args.run_dir, args.against, args.tol, args.metrics)
    print(report(result, args.tol, args.against))
    return 0 if result.ok else 1


def register(sub) -> None:
    parser = sub.add_parser("check", help="regression check of a run's numbers against a baseline within a tolerance")
    parser.add_argument("run_dir")
    parser.add_argument(
        "--against",
        required=True,
        help="a run directory, a tidy CSV, 'paper', or 'reference:NAME' (a bundled results/reference/NAME.csv)",
    )
    parser.add_argument("--tol", type=float, default=0.0, help="tolerance in percentage points (default 0)")
    parser.add_argument(
        "--metrics",
        type=lambda s: [m for m in s.split(",") if m],
        default=None,
        help="compare only these metrics (default: all in both)",
    )
    parser.add_argument("--update", action="store_true", help="rewrite the CSV baseline from this run")
    parser.set_defaults(func=cmd_check)


add_command(register)
