"""Results: read finished cells of one or more run directories and render the paper's tables.

- `tidy(...)`: the long form `in_dist, method, ood_set, threat, metric, value` (values in percent,
  `ood_set = average` for the unweighted mean over the OOD sets), which `--format csv` writes.
- `summary_table(...)`: Table 1's layout: methods x threat models, FPR and AUROC averaged over OOD sets,
  best in bold. `per_ood=True` gives one row per OOD set (Tables 12-14).
- `vs_paper(...)`: measured next to the paper's reported value (SPEC section 7).
- attack-diagnostic flags (`attacks.diagnostics`): a flagged cell is marked in every table (markdown and LaTeX
  with a dagger and a legend, the tidy CSV with a `flags` column); `flags_report` lists every cell's diagnostics
  (`oodbench table --flags`).
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

import pandas as pd
from tabulate import tabulate

from attacks.diagnostics import EPS_SWEEP, FLAGS
from oodbench.errors import ConfigError
from oodbench.metrics import OOD_METRICS
from oodbench.registry import DETECTORS, THREATS, threat_order, threat_title
from oodbench.rundir import DEFAULT_RUNS, RunDir, find_runs

METRIC_TITLES = {
    "fpr": "FPR",
    "auroc": "AUROC",
    "aupr_in": "AUPR-in",
    "aupr_out": "AUPR-out",
    "detection_error": "Det. err.",
}
LOWER_IS_BETTER = {"fpr", "detection_error"}
TIDY_COLUMNS = ["in_dist", "method", "ood_set", "threat", "metric", "value"]


def run_dirs_or_default(paths: Iterable[str | Path]) -> list[Path]:
    """The given run directories, or every run under ./oodbench-runs."""
    paths = [Path(p) for p in paths]
    if not paths:
        paths = find_runs(DEFAULT_RUNS)
        if not paths:
            raise ConfigError(
                f"no run directories given and none found under ./{DEFAULT_RUNS}; run `oodbench run` first"
            )
    for path in paths:
        if not RunDir(path).is_run():
            raise ConfigError(f"'{path}' is not an oodbench run directory (no run.json or cells/)")
    return paths


def load_cells(run_dirs: Iterable[str | Path]) -> pd.DataFrame:
    """One row per finished cell (its metrics JSON), across run directories."""
    rows = []
    for run_dir in run_dirs_or_default(run_dirs):
        for path in RunDir(run_dir).cell_rows():
            try:
                row = json.loads(path.read_text())
            except (OSError, json.JSONDecodeError):
                raise ConfigError(f"'{path}' is unreadable; delete it and rerun to recompute the cell") from None
            row["run_dir"] = str(run_dir)
            rows.append(row)
    if not rows:
        raise ConfigError("no finished cells in " + ", ".join(str(p) for p in run_dirs_or_default(run_dirs)))
    return pd.DataFrame(rows)


def _method_order(methods: Iterable[str]) -> list[str]:
    known = DETECTORS.names()
    return sorted(set(methods), key=lambda m: (known.index(m.split("@")[0]) if m.split("@")[0] in known else 99, m))


def _labelled(cells: pd.DataFrame) -> pd.DataFrame:
    """Method labels that stay unique when runs of several protocols / architectures are combined."""
    cells = cells.copy()
    for column in ("protocol", "arch"):
        if column in cells and cells[column].nunique() > 1:
            cells["method"] = cells["method"] + "@" + cells[column].astype(str)
    return cells


def tidy(cells: pd.DataFrame, metrics: Iterable[str] = OOD_METRICS, average: bool = True) -> pd.DataFrame:
    """Long form, one row per value; several seeds of the same cell are averaged."""
    cells = _labelled(cells)
    metrics = [m for m in metrics if m in cells]
    long = cells.melt(
        id_vars=["in_dist", "method", "ood_set", "threat"], value_vars=metrics, var_name="metric", value_name="value"
    )
    long = long.groupby(["in_dist", "method", "ood_set", "threat", "metric"], as_index=False)["value"].mean()
    if average:
        mean = long.groupby(["in_dist", "method", "threat", "metric"], as_index=False)["value"].mean()
        mean["ood_set"] = "average"
        long = pd.concat([long, mean[TIDY_COLUMNS]], ignore_index=True)
    long["_m"] = long["method"].map({m: i for i, m in enumerate(_method_order(long["method"]))})
    long["_t"] = long["threat"].map(threat_order)
    long["_o"] = (long["ood_set"] == "average").astype(int)
    long = long.sort_values(["in_dist", "_m", "_o", "ood_set", "_t", "metric"]).drop(columns=["_m", "_t", "_o"])
    return long[TIDY_COLUMNS].reset_index(drop=True)


def wide(long: pd.DataFrame, metrics: Iterable[str], per_ood: bool) -> pd.DataFrame:
    """Table 1's shape: rows (in_dist, method[, ood_set]), columns (threat, metric)."""
    metrics = list(metrics)
    data = long[long["metric"].isin(metrics)]
    data = data[data["ood_set"] != "average"] if per_ood else data[data["ood_set"] == "average"]
    index = ["in_dist", "method", "ood_set"] if per_ood else ["in_dist", "method"]
    table = data.pivot_table(index=index, columns=["threat", "metric"], values="value", aggfunc="mean")
    threats = sorted(table.columns.get_level_values(0).unique(), key=threat_order)  # stable: unknown ones keep theirs
    columns = [(t, m) for t in threats for m in metrics if (t, m) in table.columns]
    table = table[columns]
    order = {m: i for i, m in enumerate(_method_order(data["method"]))}
    return table.sort_index(key=lambda level: level.map(order) if level.name == "method" else level)


def _best_mask(table: pd.DataFrame, unranked: pd.DataFrame | None = None) -> pd.DataFrame:
    """True where a value is the best of its column within its in-dist block (ties all bold); values where
    `unranked` is True (a degenerate score, flag `ties`) neither compete nor are bold."""
    mask = pd.DataFrame(False, index=table.index, columns=table.columns)
    group_keys = ["in_dist"] + (["ood_set"] if "ood_set" in table.index.names else [])
    for _, block in table.groupby(level=group_keys):
        if len(block) < 2:
            continue
        for column in table.columns:
            values = block[column].round(2)
            ranked = ~unranked.loc[block.index, column].astype(bool) if unranked is not None else values.notna()
            candidates = values[ranked]
            best = candidates.min() if column[1] in LOWER_IS_BETTER else candidates.max()
            mask.loc[block.index, column] = (values == best) & ranked
    return mask


def render(
    table: pd.DataFrame,
    fmt: str,
    title: str = "",
    marks: pd.DataFrame | None = None,
    unranked: pd.DataFrame | None = None,
) -> str:
    """Markdown or LaTeX text of a wide table, two decimals, best values in bold; `marks` (same shape) appends a
    mark to values (the attack-diagnostic flags, `table_marks`); `unranked` values are never bold."""
    if table.empty:
        return "(no cells)"
    bold = _best_mask(table, unranked)
    if marks is None:
        marks = pd.DataFrame("", index=table.index, columns=table.columns)
    arrows = {m: ("↓" if m in LOWER_IS_BETTER else "↑") for m in METRIC_TITLES}

    def cell(value, is_best, mark=""):
        if pd.isna(value):
            return "-"
        text = f"{value:.2f}"
        if not is_best:
            return text + mark
        return (f"\\textbf{{{text}}}" if fmt == "latex" else f"**{text}**") + mark

    body = [
        [*key, *[cell(table.loc[key, c], bold.loc[key, c], marks.loc[key, c]) for c in table.columns]]
        for key in table.index
    ]
    index_titles = [n.replace("_", "-") for n in table.index.names]
    if fmt == "latex":
        return _latex(table, body, index_titles, title)
    headers = index_titles + [
        f"{threat_title(t)} {METRIC_TITLES.get(m, m)}{arrows.get(m, '')}" for t, m in table.columns
    ]
    text = tabulate(body, headers=headers, tablefmt="pipe", disable_numparse=True)
    return (f"{title}\n\n" if title else "") + text


def _latex(table: pd.DataFrame, body, index_titles, title: str) -> str:
    threats = list(dict.fromkeys(t for t, _ in table.columns))
    per_threat = {t: [m for tt, m in table.columns if tt == t] for t in threats}
    spec = "l" * len(index_titles) + "".join("r" * len(per_threat[t]) for t in threats)
    top = (
        " & " * (len(index_titles) - 1)
        + " & "
        + " & ".join(f"\\multicolumn{{{len(per_threat[t])}}}{{c}}{{{threat_title(t)}}}" for t in threats)
    )
    arrows = {m: ("$\\downarrow$" if m in LOWER_IS_BETTER else "$\\uparrow$") for m in METRIC_TITLES}
    second = (
        " & ".join(index_titles)
        + " & "
        + " & ".join(f"{METRIC_TITLES.get(m, m)} {arrows.get(m, '')}" for t in threats for m in per_threat[t])
    )
    lines = ["\\begin{table}[t]", "\\centering"]
    if title:
        lines.append(f"\\caption{{{_tex(title)}}}")
    lines += [f"\\begin{{tabular}}{{{spec}}}", "\\toprule", top + " \\\\", second + " \\\\", "\\midrule"]
    previous = None
    for row in body:
        if previous is not None and row[0] != previous:
            lines.append("\\midrule")
        previous = row[0]
        lines.append(" & ".join(_tex(str(v)) if i < len(index_titles) else str(v) for i, v in enumerate(row)) + " \\\\")
    lines += ["\\bottomrule", "\\end{tabular}", "\\end{table}"]
    return "\n".join(lines)


def _tex(text: str) -> str:
    return text.replace("_", "\\_").replace("%", "\\%").replace("&", "\\&")


def summary_table(cells: pd.DataFrame, fmt: str = "markdown", metrics=("fpr", "auroc"), per_ood: bool = False) -> str:
    """The rendered Table 1 layout (or the per-OOD-set view) of a set of cells."""
    long = tidy(cells, metrics)
    caption = ("Per OOD set" if per_ood else "Averaged over OOD sets") + " (values in %; best in bold)"
    table = wide(long, metrics, per_ood)
    marks, legend, unranked = table_marks(table, cells, fmt)
    text = render(table, fmt, title=caption, marks=marks, unranked=unranked)
    if not legend:
        return text
    return text + ("\n% " if fmt == "latex" else "\n\n") + legend


# ----------------------------------------------------------------------------------------------------
# measured vs. the paper
# ----------------------------------------------------------------------------------------------------
PROTOCOL_DIFFERS = "protocol differs"


@dataclass(frozen=True)
class PaperTable:
    """Which settings one table of the paper reports (SPEC section 7); an empty field matches anything."""

    table: int
    in_dist: tuple[str, ...] = ()
    arch: tuple[str, ...] = ()
    aux: tuple[str, ...] = ()

    def reports(self, in_dist: str, arch: str, aux: str | None) -> bool:
        return all(
            not allowed or value in allowed
            for allowed, value in ((self.in_dist, in_dist), (self.arch, arch), (self.aux, aux))
        )


_PAPER_SETS = ("cifar10", "cifar100", "svhn")
#: the paper's tables by the settings they report; the first match wins (WRN-40-4: Table 9 whatever the auxiliary
#: set; ImageNet-RC as auxiliary set: Table 8; DenseNet-BC-100: Table 5 for SVHN, Table 1 for CIFAR)
PAPER_TABLES = (
    PaperTable(9, in_dist=_PAPER_SETS, arch=("wrn40_4",)),
    PaperTable(8, in_dist=_PAPER_SETS, aux=("imagenet_rc",)),
    PaperTable(5, in_dist=("svhn",), arch=("densenet100",)),
    PaperTable(1, in_dist=("cifar10", "cifar100"), arch=("densenet100",)),
)


def paper_reference(in_dist: str, arch: str, aux: str | None) -> int | None:
    """The paper table that reports this setting (SPEC section 7, `PAPER_TABLES`), or None."""
    return next((t.table for t in PAPER_TABLES if t.reports(in_dist, arch, aux)), None)


def _published_with_code_settings(threat: str) -> bool:
    """Whether the paper's numbers of a threat model come from the released code's settings of it (declared by
    the threat model: the corruption suites differ, SPEC section 6), so only an atom-code run compares."""
    return bool(THREATS.declared(threat, "published_with_code_settings", False))


def _score_differs(method: str) -> bool:
    """Whether a detector's deployed score differs between the paper and the released code (CCU: SPEC 4)."""
    return method in DETECTORS and bool(DETECTORS.entry(method).meta.get("score_differs_by_protocol"))


def vs_paper(cells: pd.DataFrame, fmt: str = "markdown", metrics=("fpr", "auroc")) -> str:
    """Measured averages next to the paper's values, with the difference; cells whose protocol differs from
    the published one (the `paper` protocol's corruption / comp cells and CCU) are flagged."""
    from oodbench.paper import load_paper

    paper = load_paper()
    long = tidy(cells, metrics)
    long = long[long["ood_set"] == "average"]
    meta = cells.drop_duplicates(["in_dist", "method"]).set_index(["in_dist", "method"])
    rows = []
    for _, r in long.iterrows():
        base_method = r["method"].split("@")[0]
        info = meta.loc[(r["in_dist"], base_method)] if (r["in_dist"], base_method) in meta.index else None
        arch = info["arch"] if info is not None else ""
        aux = info["aux"] if info is not None else None
        protocol = info["protocol"] if info is not None else ""
        table = paper_reference(r["in_dist"], arch, aux)
        reported = None
        if table is not None:
            match = paper[
                (paper["table"] == table)
                & (paper["in_dist"] == r["in_dist"])
                & (paper["method"] == base_method)
                & (paper["threat"] == r["threat"])
                & (paper["metric"] == r["metric"])
                & (paper["ood_set"] == "average")
            ]
            if len(match):
                reported = float(match["value"].iloc[0])
        note = ""
        if table is None:
            note = "no paper reference for this setting"
        elif protocol != "atom-code" and (_published_with_code_settings(r["threat"]) or _score_differs(base_method)):
            note = PROTOCOL_DIFFERS
        elif reported is None and not (paper["method"] == base_method).any():
            note = "not in the paper"  # a detector beyond the paper (e.g. the post-hoc group): measured only
        rows.append(
            [
                r["in_dist"],
                r["method"],
                threat_title(r["threat"]),
                METRIC_TITLES.get(r["metric"], r["metric"]),
                f"{r['value']:.2f}",
                "-" if reported is None else f"{reported:.2f}",
                "-" if reported is None else f"{r['value'] - reported:+.2f}",
                f"Table {table}" if table else "-",
                note,
            ]
        )
    headers = ["in-dist", "method", "threat", "metric", "measured", "paper", "diff", "source", "note"]
    if fmt == "latex":
        lines = ["\\begin{tabular}{lllrrrrll}", "\\toprule", " & ".join(headers) + " \\\\", "\\midrule"]
        lines += [" & ".join(_tex(str(v)) for v in row) + " \\\\" for row in rows]
        return "\n".join(lines + ["\\bottomrule", "\\end{tabular}"])
    return tabulate(rows, headers=headers, tablefmt="pipe", disable_numparse=True)


def id_summary(run_dirs) -> pd.DataFrame:
    """Table 11: per method, in-dist accuracy, FNR at the threshold and end-to-end accuracy."""
    rows = []
    for run_dir in run_dirs_or_default(run_dirs):
        for path in RunDir(run_dir).id_rows():
            rows.append(json.loads(path.read_text()))
    frame = pd.DataFrame(rows)
    if frame.empty:
        raise ConfigError("no in-distribution records in " + ", ".join(map(str, run_dirs_or_default(run_dirs))))
    first = [
        c
        for c in ("in_dist", "method", "id_accuracy", "fnr", "e2e_accuracy", "fnr_under_attack", "threshold", "n")
        if c in frame
    ]
    frame = frame[first + [c for c in frame.columns if c not in first]]
    order = {m: i for i, m in enumerate(_method_order(frame["method"]))}
    return frame.sort_values(["in_dist", "method"], key=lambda c: c.map(order) if c.name == "method" else c)


def show_provenance(run_dirs, keys: Iterable[str]) -> str:
    """Values of dotted keys of each run's run.json (e.g. `protocol.name`, `environment.packages.torch`);
    `all` prints the whole record."""
    out = []
    for run_dir in run_dirs_or_default(run_dirs):
        path = RunDir(run_dir).run_json
        if not path.exists():
            raise ConfigError(f"'{run_dir}' has no run.json")
        record = json.loads(path.read_text())
        out.append(f"# {run_dir}")
        for key in keys:
            if key == "all":
                out.append(json.dumps(record, indent=2, sort_keys=True))
                continue
            if key == "protocol" and isinstance(record.get("protocol"), dict):
                from oodbench.config import protocol_lines

                out.extend(protocol_lines(record["protocol"]))
                continue
            value = record
            for part in key.split("."):
                if not isinstance(value, dict) or part not in value:
                    raise ConfigError(f"run.json of '{run_dir}' has no '{key}' (top-level keys: {', '.join(record)})")
                value = value[part]
            out.append(f"{key} = {json.dumps(value, sort_keys=True) if isinstance(value, (dict, list)) else value}")
    return "\n".join(out)


# --- attack-diagnostic flags ---------------------------------------------------------------------------------

MARK = {"markdown": "†", "latex": "$^\\dagger$"}


def _flag_list(value) -> list[str]:
    if isinstance(value, (list, tuple)):
        return [str(v) for v in value]
    return []


def cell_flags(cells: pd.DataFrame) -> pd.DataFrame:
    """in_dist, method (labelled as in the tables), ood_set, threat, flags (comma-separated; '' when none), with
    one `average` row per (in_dist, method, threat) carrying the union over its OOD sets."""
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


#: flags whose cell's metrics describe a degenerate score, not a ranking: such values are never shown as best
UNRANKED_FLAGS = ("ties",)


def is_unranked(flags: str) -> bool:
    """Whether a cell's comma-separated flags (`cell_flags`) include one of `UNRANKED_FLAGS`."""
    return any(name in UNRANKED_FLAGS for name in flags.split(","))


def table_marks(table: pd.DataFrame, cells: pd.DataFrame, fmt: str) -> tuple[pd.DataFrame, str, pd.DataFrame]:
    """A mark per value of a wide table (`oodbench.results.wide`) whose cell is flagged, the legend, and which
    values carry an `UNRANKED_FLAGS` flag (a constant score's 0 % FPR is not the best detector)."""
    flags = cell_flags(cells).set_index(["in_dist", "method", "ood_set", "threat"])["flags"]
    marks = pd.DataFrame("", index=table.index, columns=table.columns)
    unranked = pd.DataFrame(False, index=table.index, columns=table.columns)
    seen: set[str] = set()
    for key in table.index:
        in_dist, method = key[0], key[1]
        ood_set = key[2] if "ood_set" in table.index.names else "average"
        for column in table.columns:
            text = flags.get((in_dist, method, ood_set, column[0]), "")
            if text:
                marks.loc[key, column] = MARK.get(fmt, "†")
                seen.update(text.split(","))
                unranked.loc[key, column] = is_unranked(text)
    if not seen:
        return marks, "", unranked
    legend = "; ".join(f"{name}: {FLAGS[name]}" for name in FLAGS if name in seen)
    mark = "\\dagger" if fmt == "latex" else "†"
    note = f"{mark} attack diagnostics flagged the cell ({legend}); see `oodbench table --flags`"
    if unranked.to_numpy().any():
        note += f"; values of cells flagged {', '.join(UNRANKED_FLAGS)} are not ranked (never bold)"
    return marks, note, unranked


def flags_report(cells: pd.DataFrame, fmt: str = "markdown") -> str:
    """One row per cell: FPR, the diagnostics (in %) and the flags (`oodbench table --flags`)."""
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
