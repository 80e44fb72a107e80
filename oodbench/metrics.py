"""OOD detection metrics (SPEC section 1). In-distribution is the positive class; higher score = more in-dist.

All metrics are computed in float64 from the stored float32 scores. Values are fractions in [0, 1]; the
results tables show them in percent.
"""

from __future__ import annotations

import numpy as np
from sklearn.metrics import average_precision_score, roc_auc_score, roc_curve

from oodbench.errors import ScoreError


def _as_scores(scores, what: str) -> np.ndarray:
    """Scores as a 1-D float64 array; non-finite values or an empty array raise ScoreError."""
    array = np.asarray(scores.detach().cpu() if hasattr(scores, "detach") else scores).astype(np.float64).ravel()
    if array.size == 0:
        raise ScoreError(f"{what}: no scores")
    bad = ~np.isfinite(array)
    if bad.any():
        raise ScoreError(
            f"{what}: {int(bad.sum())} of {array.size} scores are not finite (NaN or inf); "
            "the detector or checkpoint is broken, so no metric is computed"
        )
    return array


def threshold_at_tpr(id_scores, tpr: float = 0.95) -> float:
    """The acceptance threshold of the released code: `sort(id)[round((1 - tpr) * N_id)]`.

    An input is accepted as in-distribution iff its score is strictly greater than the threshold, so
    with 10,000 in-dist images the FNR is 5.01 % (the paper's Table 11).
    """
    ids = np.sort(_as_scores(id_scores, "in-distribution scores"))
    fnr = round(1.0 - tpr, 12)  # 0.05, not 0.050000000000000044: the code's literal `round(0.05 * N)`
    index = round(fnr * len(ids))  # Python's round: half to even, as in the released code
    return float(ids[min(index, len(ids) - 1)])


def fpr_at_tpr(id_scores, ood_scores, tpr: float = 0.95, threshold: float | None = None) -> float:
    """FPR at `tpr` TPR ("FPR (5 % FNR)" in the paper): fraction of OOD scores strictly above the threshold.

    `threshold` overrides the data-driven one (ROWL's fixed -0.5, SPEC section 1).
    """
    thr = threshold_at_tpr(id_scores, tpr) if threshold is None else threshold
    return float(np.mean(_as_scores(ood_scores, "OOD scores") > thr))


def _labelled(id_scores, ood_scores) -> tuple[np.ndarray, np.ndarray]:
    ids = _as_scores(id_scores, "in-distribution scores")
    oods = _as_scores(ood_scores, "OOD scores")
    labels = np.concatenate([np.ones(len(ids)), np.zeros(len(oods))])
    return labels, np.concatenate([ids, oods])


def auroc(id_scores, ood_scores) -> float:
    """Area under the tie-aware ROC curve (equals sklearn's roc_auc_score with in-dist labelled 1).

    For a binary score (ROWL) this is the two-point ROC area (1 + TPR - FPR) / 2.
    """
    labels, scores = _labelled(id_scores, ood_scores)
    return float(roc_auc_score(labels, scores))


def aupr_in(id_scores, ood_scores) -> float:
    """Average precision with in-distribution as the positive class."""
    labels, scores = _labelled(id_scores, ood_scores)
    return float(average_precision_score(labels, scores))


def aupr_out(id_scores, ood_scores) -> float:
    """Average precision with OOD as the positive class (scores negated)."""
    labels, scores = _labelled(id_scores, ood_scores)
    return float(average_precision_score(1 - labels, -scores))


def detection_error(id_scores, ood_scores) -> float:
    """min over thresholds of 0.5 * FNR + 0.5 * FPR (ODIN's detection error)."""
    labels, scores = _labelled(id_scores, ood_scores)
    fpr, tpr, _ = roc_curve(labels, scores)
    return float(np.min(0.5 * (1.0 - tpr) + 0.5 * fpr))


def ood_metrics(id_scores, ood_scores, tpr: float = 0.95, threshold: float | None = None) -> dict[str, float]:
    """Every OOD metric of one (in-dist, OOD set) pair, in percent: fpr, auroc, aupr_in, aupr_out, detection_error."""
    return {
        "fpr": 100.0 * fpr_at_tpr(id_scores, ood_scores, tpr, threshold),
        "auroc": 100.0 * auroc(id_scores, ood_scores),
        "aupr_in": 100.0 * aupr_in(id_scores, ood_scores),
        "aupr_out": 100.0 * aupr_out(id_scores, ood_scores),
        "detection_error": 100.0 * detection_error(id_scores, ood_scores),
    }


def id_metrics(id_scores, predictions, labels, tpr: float = 0.95, threshold: float | None = None) -> dict[str, float]:
    """In-distribution test metrics of the paper's Table 11, in percent.

    `id_accuracy`: predictions vs labels; `fnr`: in-dist images not accepted (score <= threshold);
    `e2e_accuracy`: accepted and correctly classified.
    """
    scores = _as_scores(id_scores, "in-distribution scores")
    predictions = np.asarray(predictions).ravel()
    labels = np.asarray(labels).ravel()
    if not (len(scores) == len(predictions) == len(labels)):
        raise ValueError("id_metrics: scores, predictions and labels differ in length")
    thr = threshold_at_tpr(scores, tpr) if threshold is None else threshold
    accepted = scores > thr
    correct = predictions == labels
    return {
        "id_accuracy": 100.0 * float(np.mean(correct)),
        "fnr": 100.0 * float(np.mean(~accepted)),
        "e2e_accuracy": 100.0 * float(np.mean(accepted & correct)),
        "threshold": thr,
    }


OOD_METRICS = ("fpr", "auroc", "aupr_in", "aupr_out", "detection_error")
ID_METRICS = ("id_accuracy", "fnr", "e2e_accuracy")
