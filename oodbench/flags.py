"""Attack-diagnostic flags in the tables (`attacks.diagnostics`): a flagged cell is marked in every table (markdown
and LaTeX with a dagger and a legend, the tidy CSV with a `flags` column), and `oodbench table --flags` lists the
diagnostics of every cell."""

from __future__ import annotations

import pandas as pd
from tabulate import tabulate

from attacks.diagnostics import EPS_SWEEP, FLAGS

MARK = {"markdown": "†", "latex": "$^\\dagger$"}


def _flag_list(value) -> list[str]:
    if isinstance(value, (list, tuple)):
        return [str(v) for v in value]
    return []


def cell_flags(cells: pd.DataFrame) -> pd.DataFrame:
    """in_dist, method (labelled as in the tables), ood_set, threat, flags (comma-separated; '' when none), with
    one `average` row per (in_dist, method, threat) carrying the union over its OOD sets."""
    from oodbench.results import _labelled

    cells = _labelled(cells)
    flags = cells["flags"] if "flags" in cells else pd.Series([[]] * len(cells), index=cells.index)
    frame = cells[["in_dist", "method", "ood_set", "threat"]].copy()
    frame["flags"] = [set(_flag_list(v)) for v in flags]
    per_set = frame.groupby(["in_dist", "method", "ood_set", "threat"], as_index=False)["flags"].agg(
        lambda s: set().union(*s)
    )
    average = per_set.groupby(["in_dist", "method", "threat"], as_index=False)["flags"].agg(lambda s: set().union(*s))
    average["ood_set"] = "average"
    out = pd.concat([per_set, average[per_set.columns]], ignore_index=True)
    out["flags"] = out["flags"].map(lambda s: ",".join(sorted(s, key=list(FLAGS).index)))
    return out


def with_flags(long: pd.DataFrame, cells: pd.DataFrame) -> pd.DataFrame:
    """The tidy long form with a `flags` column (the CSV of `oodbench table --format csv`)."""
    merged = long.merge(cell_flags(cells), on=["in_dist", "method", "ood_set", "threat"], how="left")
    merged["flags"] = merged["flags"].fillna("")
    return merged


def table_marks(table: pd.DataFrame, cells: pd.DataFrame, fmt: str) -> tuple[pd.DataFrame, str]:
    """A mark per value of a wide table (`oodbench.results.wide`) whose cell is flagged, and the legend."""
    flags = cell_flags(cells).set_index(["in_dist", "method", "ood_set", "threat"])["flags"]
    marks = pd.DataFrame("", index=table.index, columns=table.columns)
    seen: set[str] = set()
    for key in table.index:
        in_dist, method = key[0], key[1]
        ood_set = key[2] if "ood_set" in table.index.names else "average"
        for column in table.columns:
            text = flags.get((in_dist, method, ood_set, column[0]), "")
            if text:
                marks.loc[key, column] = MARK.get(fmt, "†")
                seen.update(text.split(","))
    if not seen:
        return marks, ""
    legend = "; ".join(f"{name}: {FLAGS[name]}" for name in FLAGS if name in seen)
    mark = "\\dagger" if fmt == "latex" else "†"
    return marks, f"{mark} attack diagnostics flagged the cell ({legend}); see `oodbench table --flags`"


def flags_report(cells: pd.DataFrame, fmt: str = "markdown") -> str:
    """One row per cell: FPR, the diagnostics (in %) and the flags (`oodbench table --flags`)."""
    from oodbench.results import _labelled, _method_order

    cells = _labelled(cells)
    rows = []
    order = {m: i for i, m in enumerate(_method_order(cells["method"]))}
    cells = cells.assign(_m=cells["method"].map(order)).sort_values(["in_dist", "_m", "ood_set", "threat"])
    for _, cell in cells.iterrows():
        diag = cell.get("diagnostics")
        diag = diag if isinstance(diag, dict) else {}
        sweep = diag.get("eps_sweep") or {}

        def pct(name: str, diag: dict = diag) -> str:
            value = diag.get(name)
            return "-" if value is None else f"{value:.1f}"

        rows.append(
            [
                cell["in_dist"],
                cell["method"],
                cell["ood_set"],
                cell["threat"],
                f"{cell['fpr']:.2f}",
                pct("zero_grad"),
                pct("saturated"),
                pct("black_box_wins"),
                " ".join(f"{e}:{sweep[str(e)]:.0f}" for e in EPS_SWEEP if str(e) in sweep) or "-",
                ",".join(_flag_list(cell.get("flags"))) or "-",
            ]
        )
    headers = [
        "in-dist",
        "method",
        "ood-set",
        "threat",
        "FPR",
        "zero-grad %",
        "saturated %",
        "bb-wins %",
        "FPR by eps (x/255)",
        "flags",
    ]
    return tabulate(rows, headers=headers, tablefmt="latex" if fmt == "latex" else "pipe", disable_numparse=True)
