"""The ATOM paper's published numbers (Tables 1-3 and 5-14) as one tidy table.

The numbers live in `results/paper/all.csv` (one row per published cell, transcribed from the paper; see
`results/paper/README.md`). Columns:

    table, in_dist, method, variant, ood_set, threat, metric, value, arch, aux, q, lam, attack

`value` is the percentage as printed. `variant` is the row's setting label in the ablation tables (`q=0.125`,
`lambda=2.0`), empty elsewhere; `q` and `lam` are empty (NaN) where they do not apply; `ood_set` is `average` for
the mean over the six OOD test sets, a set name in Tables 12-14, `tinyimages_val` in Table 6 (the validation set)
and empty in Table 11 (in-distribution metrics only). Table 4 (runtimes) is in `table04_runtime.csv`.

    >>> paper_value(1, "cifar10", "atom", "linf", "fpr")
    20.55
    >>> paper_value(3, "cifar100", "atom", "natural", "fpr", q=0.25)
    32.43
"""

from __future__ import annotations

import math
import os
from functools import lru_cache
from pathlib import Path

import pandas as pd

from oodbench.errors import ConfigError
from oodbench.resources import bundled

ENV_VAR = "OODBENCH_PAPER_DIR"
COLUMNS = [
    "table",
    "in_dist",
    "method",
    "variant",
    "ood_set",
    "threat",
    "metric",
    "value",
    "arch",
    "aux",
    "q",
    "lam",
    "attack",
]
TEXT_COLUMNS = ["in_dist", "method", "variant", "ood_set", "threat", "metric", "arch", "aux", "attack"]
NUMERIC_SETTINGS = ("q", "lam")
SETTINGS = ("variant", "arch", "aux", "q", "lam", "attack")
TABLES = (1, 2, 3, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14)


def paper_dir() -> Path:
    """The folder holding the paper's CSVs: $OODBENCH_PAPER_DIR, else `results/paper` of the source checkout or
    of the installed package (`oodbench.resources.bundled`)."""
    override = os.environ.get(ENV_VAR)
    folder = Path(override) if override else bundled("paper")
    if folder is None or not (folder / "all.csv").is_file():
        where = f"${ENV_VAR}={override}" if override else "results/paper (source checkout or installed package)"
        raise ConfigError(
            f"the paper's reference numbers are missing: no all.csv in {folder or 'results/paper'} ({where}). "
            "Reinstall oodbench "
            f"(`pip install .` carries them), or set {ENV_VAR} to a folder containing all.csv (regenerate it with "
            "`python results/paper/transcribe.py`)."
        )
    return folder


@lru_cache(maxsize=4)
def _read(path: str, mtime_ns: int) -> pd.DataFrame:
    df = pd.read_csv(path, dtype={c: str for c in TEXT_COLUMNS}, keep_default_na=False)
    missing = [c for c in COLUMNS if c not in df.columns]
    if missing:
        raise ConfigError(f"{path} is not the paper's table: missing columns {missing}")
    df = df[COLUMNS].copy()
    df["table"] = df["table"].astype("int64")
    df["value"] = pd.to_numeric(df["value"]).astype("float64")
    for col in NUMERIC_SETTINGS:
        df[col] = pd.to_numeric(df[col].replace("", float("nan"))).astype("float64")
    return df


def load_paper(tables: list[int] | None = None) -> pd.DataFrame:
    """The paper's published cells as a tidy DataFrame (columns: see the module docstring).

    `tables` selects table numbers (default: all of 1-3 and 5-14). Text columns hold "" where a field does not
    apply; `q` and `lam` are float with NaN there; `value` is float (percent). Raises ConfigError when the CSV
    cannot be found or a requested table number is not transcribed.
    """
    path = paper_dir() / "all.csv"
    df = _read(str(path), path.stat().st_mtime_ns)
    if tables is not None:
        unknown = sorted(set(tables) - set(TABLES))
        if unknown:
            hint = " (Table 4 holds runtimes: see table04_runtime.csv)" if 4 in unknown else ""
            raise ConfigError(f"no paper table {unknown}; transcribed tables are {list(TABLES)}{hint}")
        df = df[df["table"].isin(tables)]
    return df.reset_index(drop=True).copy()


def _matches(column: pd.Series, wanted: object) -> pd.Series:
    if column.name in NUMERIC_SETTINGS:
        if wanted is None or (isinstance(wanted, float) and math.isnan(wanted)):
            return column.isna()
        return (column - float(wanted)).abs() < 1e-9
    return column == ("" if wanted is None else str(wanted))


def paper_value(
    table: int, in_dist: str, method: str, threat: str, metric: str, ood_set: str = "average", **setting: object
) -> float:
    """One published number (percent) from the paper.

    `ood_set` is "average" (the mean over the six OOD test sets) or, in Tables 12-14, one set's name. Left at
    its default it is ignored by tables with a single ood_set value (Table 6: "tinyimages_val", the validation
    set; Table 11: "", in-distribution metrics only). `setting` narrows rows that differ only in `variant`,
    `arch`, `aux`, `q`, `lam` or `attack`, e.g. `paper_value(3, "cifar10", "atom", "linf", "fpr", q=0.25)` or
    `variant="lambda=2.0"`. Raises ConfigError when no cell or more than one cell matches, naming the values
    that are available.
    """
    unknown = sorted(set(setting) - set(SETTINGS))
    if unknown:
        raise ConfigError(f"unknown setting {unknown}; settings are {list(SETTINGS)}")
    df = load_paper([table])
    query = {"in_dist": in_dist, "method": method, "threat": threat, "metric": metric}
    if not (ood_set == "average" and df["ood_set"].nunique() == 1):
        query["ood_set"] = ood_set
    query.update(setting)
    for key, wanted in query.items():
        hit = df[_matches(df[key], wanted)]
        if hit.empty:
            known = sorted({str(v) for v in df[key].tolist()})
            raise ConfigError(
                f"Table {table} has no cell with {key}={wanted!r} (given {query}); {key} there is one of {known}"
            )
        df = hit
    if len(df) > 1:
        differ = {c: sorted({str(v) for v in df[c].tolist()}) for c in SETTINGS if df[c].astype(str).nunique() > 1}
        raise ConfigError(f"Table {table} has {len(df)} cells for {query}; narrow it with one of {differ}")
    return float(df["value"].iloc[0])
