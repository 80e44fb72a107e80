"""Regenerate the CSVs in this folder from the paper's extracted text (`shared/paper/atom-paper.md`).

    python results/paper/transcribe.py [PATH/TO/atom-paper.md]

The CSVs are the deliverable; this script documents how they were made and makes them reproducible. The
extracted text has a few defects that are repaired here explicitly (see README.md in this folder): the only value
that is missing from the text (Table 1, CIFAR-100, MSP, Comp. AUROC) is filled in from Table 8, which repeats that
row, and the result is checked against the mean of Table 14's per-set values.
"""

from __future__ import annotations

import csv
import os
import re
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
REPO = HERE.parents[1]
DEFAULT_PAPER = Path(os.environ.get("OODBENCH_SHARED", REPO.parent / "shared")) / "paper" / "atom-paper.md"

from oodbench.paper import COLUMNS  # noqa: E402  (one definition of the tidy columns)

THREATS4 = ["natural", "corruption", "linf", "comp"]
METRICS2 = ["fpr", "auroc"]
GROUPS = {
    "SVHN": "svhn",
    "CIFAR-10": "cifar10",
    "CIFAR-100": "cifar100",
    "LSUN-C": "lsun_c",
    "LSUN-R": "lsun_r",
    "ISUN": "isun",
    "Textures": "textures",
    "Places365": "places365",
}
METHODS = {
    "MSP": "msp",
    "ODIN": "odin",
    "Mahalanobis": "mahalanobis",
    "SOFL": "sofl",
    "OE": "oe",
    "ACET": "acet",
    "CCU": "ccu",
    "ROWL": "rowl",
    "ATOM (ours)": "atom",
    "AT (no outlier mining)": "at",
    "NTOM (no adversarial training)": "ntom",
}
NO_AUX = {"msp", "odin", "mahalanobis"}  # standard training, no auxiliary outliers
MINED_Q = {"cifar10": 0.125, "cifar100": 0.5, "svhn": 0.0}  # Table 3 / Appendix B.1, TinyImages
NUM = re.compile(r"^\d+\.\d+$")
# Table 1, CIFAR-100, MSP: the extraction lost the last cell (Comp. AUROC). Table 8 repeats the row with 2.06, and
# the mean of Table 14's six per-set values (2.31 1.78 1.82 2.28 1.91 2.29) is 2.065.
REPAIRS = {(1, "cifar100", "MSP [20]"): ["2.06"]}


def _clean(cell: str) -> str:
    return re.sub(r"</?b>", "", cell).strip()


def table_lines(text: list[str], number: int) -> list[str]:
    """The tab-separated lines of Table `number`: the block that follows its caption's header row."""
    cap = next(i for i, line in enumerate(text) if line.startswith(f"Table {number}:"))
    start = next(i for i in range(cap + 1, len(text)) if "\t" in text[i])
    end = start
    while end < len(text) and "\t" in text[end]:
        end += 1
    return text[start:end]


def parse_rows(lines: list[str], number: int, n_values: int) -> list[tuple[str, str, list[str]]]:
    """(group label, method label, values) per data row, robust to the extraction's column shifts."""
    rows, group = [], None
    for line in lines:
        cells = [c for c in (_clean(c) for c in line.split("\t")) if c]
        values = [c for c in cells if NUM.match(c)]
        labels = [c for c in cells if not NUM.match(c)]
        if not values:
            continue  # header rows
        if len(labels) == 2:
            group = labels[0]
        elif len(labels) != 1:
            raise ValueError(f"Table {number}: cannot parse {line!r}")
        label = labels[-1]
        if group not in GROUPS:
            raise ValueError(f"Table {number}: unknown group {group!r}")
        if len(values) != n_values:
            values = values + REPAIRS[(number, GROUPS[group], label)]
        assert len(values) == n_values, (number, group, label, values)
        rows.append((group, label, values))
    return rows


def method_of(label: str) -> tuple[str, str, float | None, float | None]:
    """(method, variant, q, lam) of a row label; q/lam are only the values the label itself states."""
    label = re.sub(r"\s*\[\d+\]$", "", label)
    m = re.match(r"ATOM \( \$(q|\\lambda)\s*=\s*([\d.]+)\$ \)$", label)
    if m:
        key, val = ("q", m.group(2)) if m.group(1) == "q" else ("lambda", m.group(2))
        return "atom", f"{key}={val}", (float(val) if key == "q" else None), (float(val) if key == "lambda" else None)
    return METHODS[label], "", None, None


def settings(number: int, in_dist: str, method: str, q: float | None, lam: float | None) -> dict:
    """arch / aux / q / lam of a row, from the table's caption and the paper's stated defaults."""
    arch = "wrn40_4" if number == 9 else "densenet100"
    if method in NO_AUX:
        aux = "none"
    elif number == 8 and method != "rowl":
        aux = "imagenet_rc"  # Table 8 retrains SOFL, OE, ACET, CCU, (NTOM,) ATOM with ImageNet-RC
    else:
        aux = "tinyimages"  # ROWL's rows in Table 8 are copied from the TinyImages tables
    if method in ("atom", "ntom") and q is None:
        q = 0.0 if number == 8 else MINED_Q[in_dist]
    if method == "atom" and lam is None:
        lam = 1.0
    return {"arch": arch, "aux": aux, "q": "" if q is None else repr(q), "lam": "" if lam is None else repr(lam)}


def build(paper: Path) -> dict[int, list[dict]]:
    """Every numeric table as tidy long rows, keyed by table number (Table 4 excluded: runtimes)."""
    text = paper.read_text(encoding="utf-8").splitlines()
    out: dict[int, list[dict]] = {}
    for number in (1, 2, 3, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14):
        n_values = {10: 4, 11: 3}.get(number, 8)
        rows = []
        for group, label, values in parse_rows(table_lines(text, number), number, n_values):
            method, variant, q, lam = method_of(label)
            if number in (12, 13, 14):
                in_dist, ood_set = {12: "svhn", 13: "cifar10", 14: "cifar100"}[number], GROUPS[group]
            else:
                in_dist, ood_set = GROUPS[group], "average"
            if number == 6:
                ood_set = "tinyimages_val"  # Appendix B.9: a 10,000-image TinyImages validation set
            if number == 11:
                ood_set = ""  # measured on in-distribution test data only
                cells = [("natural", metric) for metric in ("fnr", "id_accuracy", "e2e_accuracy")]
            elif number == 10:
                cells = [(t, m) for t in ("linf", "comp") for m in METRICS2]
            else:
                cells = [(t, m) for t in THREATS4 for m in METRICS2]
            base = {"table": number, "in_dist": in_dist, "method": method, "variant": variant, "ood_set": ood_set}
            base.update(settings(number, in_dist, method, q, lam))
            for (threat, metric), value in zip(cells, values, strict=True):
                attack = "" if threat in ("natural", "corruption") else ("pgd100x5" if number == 10 else "pgd40")
                rows.append({**base, "threat": threat, "metric": metric, "value": value, "attack": attack})
        out[number] = rows
    return out


def runtime(paper: Path) -> list[dict]:
    """Table 4: estimated training and evaluation hours per method (DenseNet, one GPU)."""
    rows = []
    for line in table_lines(paper.read_text(encoding="utf-8").splitlines(), 4):
        cells = [c.strip() for c in line.split("\t") if c.strip()]
        if len(cells) == 3 and cells[1].endswith(" h"):
            rows.append(
                {"method": METHODS[cells[0]], "training_hours": cells[1][:-2], "evaluation_hours": cells[2][:-2]}
            )
    assert len(rows) == 9, rows
    return rows


def _write(path: Path, columns: list[str], rows: list[dict]) -> None:
    with path.open("w", newline="", encoding="utf-8") as f:
        writer = csv.DictWriter(f, fieldnames=columns, lineterminator="\n")
        writer.writeheader()
        writer.writerows(rows)


def main(argv: list[str]) -> None:
    paper = Path(argv[1]) if len(argv) > 1 else DEFAULT_PAPER
    tables = build(paper)
    everything = []
    for number, rows in tables.items():
        _write(HERE / f"table{number:02d}.csv", COLUMNS, rows)
        everything += rows
        print(f"table{number:02d}.csv: {len(rows)} rows")
    _write(HERE / "all.csv", COLUMNS, everything)
    _write(HERE / "table04_runtime.csv", ["method", "training_hours", "evaluation_hours"], runtime(paper))
    print(f"all.csv: {len(everything)} rows; table04_runtime.csv: 9 rows")


if __name__ == "__main__":
    main(sys.argv)
