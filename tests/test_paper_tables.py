"""The paper's reference numbers (results/paper/*.csv): schema, hand-checked cells, and the paper's own
internal consistency (claims in the prose, rows that tables repeat, per-set cells that average to the means)."""

from __future__ import annotations

import shutil
from pathlib import Path

import pandas as pd
import pytest

from oodbench.errors import ConfigError
from oodbench.paper import COLUMNS, SETTINGS, load_paper, paper_value

PAPER_DIR = Path(__file__).resolve().parents[1] / "results" / "paper"
KEY = ["table", "in_dist", "method", "variant", "ood_set", "threat", "metric", *SETTINGS[1:]]
BASELINES = ["msp", "odin", "mahalanobis", "sofl", "oe", "acet", "ccu", "rowl"]
ALL_METHODS = [*BASELINES, "atom"]
THREATS = ["natural", "corruption", "linf", "comp"]


@pytest.fixture(scope="module")
def df() -> pd.DataFrame:
    return load_paper()


def cells(df: pd.DataFrame, table: int, **where) -> pd.DataFrame:
    sel = df[df["table"] == table]
    for key, value in where.items():
        sel = sel[sel[key] == value]
    return sel


def test_schema_and_dtypes(df):
    assert list(df.columns) == COLUMNS
    assert df["table"].dtype == "int64"
    for col in ("value", "q", "lam"):
        assert df[col].dtype == "float64", col
    for col in ("in_dist", "method", "variant", "ood_set", "threat", "metric", "arch", "aux", "attack"):
        assert pd.api.types.is_string_dtype(df[col]), col
        assert df[col].notna().all(), col
    assert sorted(df["table"].unique()) == [1, 2, 3, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14]
    assert set(df["in_dist"]) == {"cifar10", "cifar100", "svhn"}
    assert set(df["method"]) == {*ALL_METHODS, "ntom", "at"}
    assert set(df["threat"]) == set(THREATS)
    assert set(df["metric"]) == {"fpr", "auroc", "fnr", "id_accuracy", "e2e_accuracy"}
    assert set(df["arch"]) == {"densenet100", "wrn40_4"}
    assert set(df["aux"]) == {"none", "tinyimages", "imagenet_rc"}
    assert set(df["attack"]) == {"", "pgd40", "pgd100x5"}
    assert set(df["ood_set"]) == {
        "average",
        "",
        "tinyimages_val",
        "svhn",
        "cifar10",
        "textures",
        "places365",
        "lsun_c",
        "lsun_r",
        "isun",
    }
    # attack is set exactly for the white-box threats; q only for mining methods; lam only for ATOM
    assert ((df["attack"] != "") == df["threat"].isin(["linf", "comp"])).all()
    assert df.loc[df["q"].notna(), "method"].isin(["atom", "ntom"]).all()
    assert df.loc[df["method"].isin(["atom", "ntom"]), "q"].notna().all()
    assert (df["lam"].notna() == (df["method"] == "atom")).all()


def test_row_counts_and_files(df):
    expected = {
        1: 2 * 9 * 8,
        2: 2 * 3 * 8,
        3: 3 * 5 * 8,
        5: 9 * 8,
        6: 3 * 5 * 8,
        7: 5 * 8,
        8: 3 * 9 * 8,
        9: 3 * 9 * 8,
        10: 3 * 2 * 4,
        11: 3 * 9 * 3,
        12: 6 * 9 * 8,
        13: 6 * 9 * 8,
        14: 6 * 9 * 8,
    }
    assert df["table"].value_counts().sort_index().to_dict() == expected
    parts = pd.concat(
        [pd.read_csv(PAPER_DIR / f"table{t:02d}.csv", dtype=str, keep_default_na=False) for t in expected],
        ignore_index=True,
    )
    whole = pd.read_csv(PAPER_DIR / "all.csv", dtype=str, keep_default_na=False)
    pd.testing.assert_frame_equal(parts, whole)
    runtime = pd.read_csv(PAPER_DIR / "table04_runtime.csv")
    assert list(runtime.columns) == ["method", "training_hours", "evaluation_hours"]
    assert runtime.set_index("method").loc["atom"].tolist() == [21, 4]
    assert runtime.set_index("method").loc["mahalanobis", "evaluation_hours"] == 20


def test_values_in_range_and_keys_unique(df):
    assert df["value"].between(0, 100).all()
    assert not df.duplicated(KEY).any()


# (table, in_dist, method, threat, metric, value, extra lookup arguments), read from the paper by hand
HAND = [
    (1, "cifar10", "msp", "natural", "fpr", 50.54, {}),
    (1, "cifar10", "msp", "natural", "auroc", 91.79, {}),
    (1, "cifar10", "atom", "linf", "fpr", 20.55, {}),
    (1, "cifar10", "acet", "linf", "fpr", 74.45, {}),
    (1, "cifar100", "msp", "comp", "auroc", 2.06, {}),  # the cell the extraction lost
    (1, "cifar100", "odin", "natural", "fpr", 56.77, {}),  # shifted rows
    (1, "cifar100", "mahalanobis", "linf", "auroc", 15.87, {}),
    (1, "cifar100", "rowl", "natural", "auroc", 53.02, {}),
    (1, "cifar100", "atom", "comp", "auroc", 69.15, {}),
    (2, "cifar100", "at", "linf", "fpr", 70.33, {}),
    (2, "cifar10", "ntom", "natural", "auroc", 99.28, {}),
    (2, "cifar10", "at", "comp", "auroc", 72.62, {}),
    (3, "svhn", "atom", "comp", "auroc", 49.52, {"q": 0.0}),
    (3, "cifar10", "atom", "linf", "auroc", 94.83, {"variant": "q=0.25"}),
    (3, "cifar100", "atom", "corruption", "fpr", 97.59, {"q": 0.75}),
    (5, "svhn", "sofl", "natural", "fpr", 0.06, {}),
    (5, "svhn", "mahalanobis", "linf", "auroc", 8.89, {}),
    (5, "svhn", "rowl", "comp", "auroc", 50.00, {}),
    (6, "svhn", "atom", "natural", "fpr", 0.01, {"q": 0.0, "ood_set": "tinyimages_val"}),
    (6, "cifar10", "atom", "linf", "fpr", 5.42, {"q": 0.125}),
    (6, "cifar100", "atom", "comp", "fpr", 89.57, {"q": 0.5}),
    (7, "cifar10", "atom", "natural", "fpr", 4.25, {"lam": 0.01}),
    (7, "cifar10", "atom", "comp", "auroc", 94.27, {"variant": "lambda=5.0"}),
    (8, "cifar100", "atom", "natural", "fpr", 15.49, {"aux": "imagenet_rc", "q": 0.0}),
    (8, "svhn", "acet", "linf", "fpr", 2.37, {"aux": "imagenet_rc"}),
    (8, "cifar10", "sofl", "corruption", "fpr", 22.30, {}),
    (9, "cifar10", "atom", "comp", "auroc", 88.99, {"arch": "wrn40_4"}),
    (9, "svhn", "mahalanobis", "natural", "fpr", 6.94, {}),
    (9, "cifar100", "rowl", "natural", "fpr", 96.93, {}),
    (10, "cifar10", "acet", "linf", "fpr", 76.66, {"attack": "pgd100x5"}),
    (10, "cifar100", "atom", "comp", "auroc", 65.88, {}),
    (10, "svhn", "atom", "linf", "fpr", 8.33, {}),
    (11, "svhn", "rowl", "natural", "fnr", 0.22, {}),
    (11, "cifar10", "atom", "natural", "id_accuracy", 95.20, {}),
    (11, "cifar100", "ccu", "natural", "e2e_accuracy", 74.60, {}),
    (12, "svhn", "acet", "linf", "fpr", 0.09, {"ood_set": "lsun_c"}),
    (12, "svhn", "atom", "comp", "auroc", 44.28, {"ood_set": "cifar10"}),
    (12, "svhn", "mahalanobis", "natural", "fpr", 34.83, {"ood_set": "places365"}),
    (13, "cifar10", "atom", "natural", "fpr", 0.69, {"ood_set": "svhn"}),
    (13, "cifar10", "atom", "linf", "fpr", 52.76, {"ood_set": "lsun_r"}),
    (13, "cifar10", "sofl", "linf", "auroc", 2.06, {"ood_set": "textures"}),
    (14, "cifar100", "atom", "comp", "auroc", 70.23, {"ood_set": "svhn"}),  # the text's last, unterminated line
    (14, "cifar100", "mahalanobis", "natural", "auroc", 96.75, {"ood_set": "isun"}),
    (14, "cifar100", "odin", "linf", "auroc", 0.00, {"ood_set": "places365"}),
]


@pytest.mark.parametrize("table,in_dist,method,threat,metric,value,extra", HAND)
def test_hand_checked_cells(table, in_dist, method, threat, metric, value, extra):
    assert paper_value(table, in_dist, method, threat, metric, **extra) == pytest.approx(value, abs=1e-9)


def test_prose_claims(df):
    """Section 4.2's improvement figures follow from Tables 1 and 2."""

    def v(table, in_dist, method, threat):
        return paper_value(table, in_dist, method, threat, "fpr")

    def best_baseline(threat):
        return min(v(1, "cifar10", m, threat) for m in BASELINES)

    assert v(1, "cifar10", "acet", "linf") - v(1, "cifar10", "atom", "linf") == pytest.approx(53.90)
    assert best_baseline("corruption") - v(1, "cifar10", "atom", "corruption") == pytest.approx(30.99)
    assert best_baseline("comp") - v(1, "cifar10", "atom", "comp") == pytest.approx(57.99)
    assert v(2, "cifar10", "ntom", "linf") - v(2, "cifar10", "atom", "linf") == pytest.approx(79.35)
    assert v(2, "cifar10", "at", "linf") - v(2, "cifar10", "atom", "linf") == pytest.approx(23.76)
    assert v(2, "cifar100", "at", "linf") - v(2, "cifar100", "atom", "linf") == pytest.approx(31.61)
    assert (v(1, "cifar100", "atom", "natural"), v(8, "cifar100", "atom", "natural")) == (32.30, 15.49)


def test_every_row_has_fpr_and_auroc(df):
    sel = df[df["metric"].isin(["fpr", "auroc"])]
    assert set(sel["table"]) == {1, 2, 3, 5, 6, 7, 8, 9, 10, 12, 13, 14}
    per_row = sel.groupby([k for k in KEY if k != "metric"], dropna=False)["metric"].agg(lambda m: sorted(m))
    assert all(metrics == ["auroc", "fpr"] for metrics in per_row)
    main = sel[sel["table"].isin([1, 5, 8, 9])]
    methods = main.groupby(["table", "in_dist"])["method"].agg(lambda m: sorted(set(m)))
    assert len(methods) == 2 + 1 + 3 + 3 and all(m == sorted(ALL_METHODS) for m in methods)
    assert (main.groupby(["table", "in_dist", "method"])["threat"].nunique() == 4).all()


def _merge(df, a, b, on, **where_b):
    left = df[df["table"].isin(a)]
    right = df[df["table"] == b]
    for key, value in where_b.items():
        right = right[right[key] == value]
    merged = right.merge(left, on=on, suffixes=("", "_src"))
    assert len(merged) == len(right), "every repeated row has a source row"
    return merged


def test_per_set_tables_average_to_the_main_tables(df):
    """Tables 12-14 (per OOD set, all four threats) average to Tables 1 and 5 within rounding."""
    per_set = df[df["table"].isin([12, 13, 14])]
    assert (per_set.groupby(["in_dist", "method", "threat", "metric"])["ood_set"].nunique() == 6).all()
    means = per_set.groupby(["in_dist", "method", "threat", "metric"], as_index=False)["value"].mean()
    main = df[df["table"].isin([1, 5])]
    merged = means.merge(main, on=["in_dist", "method", "threat", "metric"], suffixes=("_mean", ""))
    assert len(merged) == len(means) == 3 * 9 * 8
    assert ((merged["value_mean"] - merged["value"]).abs() <= 0.02).all()
    expected_sets = {"cifar10": "svhn", "cifar100": "svhn", "svhn": "cifar10"}
    for in_dist, first in expected_sets.items():
        sets = set(per_set.loc[per_set["in_dist"] == in_dist, "ood_set"])
        assert sets == {first, "textures", "places365", "lsun_c", "lsun_r", "isun"}


def test_repeated_rows_equal_their_source(df):
    on = ["in_dist", "method", "threat", "metric"]
    # Table 8 copies the methods it does not retrain from Tables 1 (CIFAR) and 5 (SVHN)
    for method, aux in [("msp", "none"), ("odin", "none"), ("mahalanobis", "none"), ("rowl", "tinyimages")]:
        copied = _merge(df, [1, 5], 8, on, method=method)
        assert (copied["value"] == copied["value_src"]).all(), method
        assert (copied["aux"] == aux).all() and (copied["aux_src"] == aux).all()
    retrained = cells(df, 8)
    assert set(retrained.loc[retrained["aux"] == "imagenet_rc", "method"]) == {"sofl", "oe", "acet", "ccu", "atom"}
    assert (retrained.loc[retrained["method"] == "atom", "q"] == 0.0).all()
    # Table 2's ATOM rows are Table 1's; Table 3 at the chosen q and Table 7 at lambda=1 are the ATOM rows
    for table, where in [(2, {"method": "atom"}), (7, {"variant": "lambda=1.0"})]:
        same = _merge(df, [1], table, on, **where)
        assert (same["value"] == same["value_src"]).all(), table
    for in_dist, q in [("svhn", 0.0), ("cifar10", 0.125), ("cifar100", 0.5)]:
        chosen = cells(df, 3, in_dist=in_dist)
        chosen = chosen[chosen["q"] == q].merge(cells(df, 1 if in_dist != "svhn" else 5, method="atom"), on=on)
        assert len(chosen) == 8 and (chosen["value_x"] == chosen["value_y"]).all(), in_dist
        assert (chosen["q_y"] == q).all()


def test_table11_is_self_consistent(df):
    t11 = cells(df, 11).pivot(index=["in_dist", "method"], columns="metric", values="value")
    assert len(t11) == 27
    assert (t11["e2e_accuracy"] <= t11["id_accuracy"]).all()
    rowl = t11.xs("rowl", level="method")
    assert (rowl["e2e_accuracy"] == rowl["id_accuracy"]).all()  # ROWL's rejected images count as wrong
    others = t11.drop("rowl", level="method")
    assert (others["fnr"] == 5.01).all()


def test_paper_value_errors(df):
    with pytest.raises(ConfigError, match="q=0.0"):
        paper_value(3, "cifar10", "atom", "linf", "fpr")  # five q rows: ambiguous
    with pytest.raises(ConfigError, match="lsun_c"):
        paper_value(13, "cifar10", "atom", "linf", "fpr")  # no average in the per-set tables
    with pytest.raises(ConfigError, match="did not|one of"):
        paper_value(1, "cifar10", "atm", "linf", "fpr")
    with pytest.raises(ConfigError, match="unknown setting"):
        paper_value(1, "cifar10", "atom", "linf", "fpr", lambda_=1.0)
    with pytest.raises(ConfigError, match="table04_runtime"):
        load_paper([4])


def test_paper_dir_override(tmp_path, monkeypatch):
    monkeypatch.setenv("OODBENCH_PAPER_DIR", str(tmp_path))
    with pytest.raises(ConfigError, match="OODBENCH_PAPER_DIR"):
        load_paper()
    shutil.copy(PAPER_DIR / "all.csv", tmp_path / "all.csv")
    assert len(load_paper([10])) == 24
