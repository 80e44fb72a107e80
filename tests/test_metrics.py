"""Golden tests of the metrics (SPEC section 1): threshold rule, strict comparison, ties, non-finite scores."""

import numpy as np
import pytest
from sklearn.metrics import roc_auc_score

from oodbench.errors import ScoreError
from oodbench.metrics import (
    aupr_in,
    aupr_out,
    auroc,
    detection_error,
    fpr_at_tpr,
    id_metrics,
    ood_metrics,
    threshold_at_tpr,
)


def test_threshold_index_uses_half_to_even_rounding():
    assert threshold_at_tpr(np.arange(30, dtype=np.float32)) == 2.0  # round(1.5) = 2
    assert threshold_at_tpr(np.arange(50, dtype=np.float32)) == 2.0  # round(2.5) = 2


def test_threshold_rule_and_fnr_of_5_01_percent():
    ids = np.arange(10_000, dtype=np.float32)
    thr = threshold_at_tpr(ids)
    assert thr == 500.0  # sort(id)[round(0.05 * 10000)]
    m = id_metrics(ids, np.zeros(10_000), np.zeros(10_000))
    assert m["fnr"] == pytest.approx(5.01)  # 501 scores <= 500 (the paper's Table 11)
    assert m["e2e_accuracy"] == pytest.approx(94.99)


def test_fpr_counts_strictly_greater_only():
    ids = np.arange(20, dtype=np.float32)  # thr = sort[round(1.0)] = 1.0
    assert threshold_at_tpr(ids) == 1.0
    ood = np.array([1.0, 1.0, 1.0001, 0.5, 5.0])
    assert fpr_at_tpr(ids, ood) == pytest.approx(2 / 5)


def test_ties_at_one_give_fpr_100_and_tie_aware_auroc():
    # softmax values of exactly 1.0 tie: the MSP L-inf cells of the paper (FPR 100, AUROC 13.82) come from this
    ids = np.array([1.0] * 8 + [0.9, 0.8], dtype=np.float32)
    ood = np.array([1.0] * 10, dtype=np.float32)
    assert threshold_at_tpr(ids) == pytest.approx(0.8, abs=1e-7)  # round(0.05 * 10) = round(0.5) = 0 (half to even)
    assert fpr_at_tpr(ids, ood) == 1.0
    # ties count one half: 8 id at 1.0 tie with all ood; 2 id below every ood
    assert auroc(ids, ood) == pytest.approx((8 * 0.5) / 10)
    assert auroc(ids, ood) == pytest.approx(roc_auc_score(np.r_[np.ones(10), np.zeros(10)], np.r_[ids, ood]))


def test_perfect_and_inverted_separation():
    ids = np.linspace(1, 2, 100)
    ood = np.linspace(-1, 0, 50)
    m = ood_metrics(ids, ood)
    assert m["fpr"] == 0.0 and m["auroc"] == 100.0 and m["detection_error"] == 0.0
    assert m["aupr_in"] == pytest.approx(100.0) and m["aupr_out"] == pytest.approx(100.0)
    m = ood_metrics(ood, ids)
    assert m["fpr"] == 100.0 and m["auroc"] == 0.0


def test_known_values_small_case():
    ids = np.array([0.9, 0.8, 0.7, 0.6])
    ood = np.array([0.75, 0.5])
    # 3 of 4 id above 0.75 ... pairs: (0.9>.75,.5) (0.8>.75,.5) (0.7<.75,>.5) (0.6<.75,>.5) -> 6/8
    assert auroc(ids, ood) == pytest.approx(0.75)
    # accept the top 2 id (threshold 0.75): FNR 0.5, FPR 0 -> 0.25; no threshold does better
    assert detection_error(ids, ood) == pytest.approx(0.25)
    assert 0 < aupr_in(ids, ood) <= 1 and 0 < aupr_out(ids, ood) <= 1


def test_binary_score_auroc_is_two_point_roc():
    # ROWL: score 0 = accepted, -1 = rejected, fixed threshold -0.5
    ids = np.array([0] * 90 + [-1] * 10, dtype=np.float32)
    ood = np.array([0] * 30 + [-1] * 70, dtype=np.float32)
    tpr, fpr = 0.9, 0.3
    assert auroc(ids, ood) == pytest.approx((1 + tpr - fpr) / 2)
    assert fpr_at_tpr(ids, ood, threshold=-0.5) == pytest.approx(fpr)


@pytest.mark.parametrize("bad", [np.nan, np.inf, -np.inf])
def test_non_finite_scores_raise(bad):
    with pytest.raises(ScoreError, match="not finite"):
        fpr_at_tpr(np.array([1.0, bad]), np.array([0.0]))
    with pytest.raises(ScoreError, match="not finite"):
        auroc(np.array([1.0, 2.0]), np.array([bad]))


def test_float32_scores_are_compared_in_float64_without_changing_them():
    ids = np.array([0.1, 0.2, 0.3], dtype=np.float32)
    ood = np.array([np.float32(0.1)], dtype=np.float32)
    # float32(0.1) compared to itself: not strictly greater
    assert fpr_at_tpr(ids, ood) == 0.0
