"""Informative outlier mining (paper Algorithm 1; SPEC section 5) and the auxiliary stream of every epoch."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch


@dataclass
class MiningResult:
    """One epoch's selection: positions into the candidate array, and what the log records."""

    selected: torch.Tensor  # indices into the candidates, in selection order (ascending OOD score)
    histogram: list[int]
    bin_edges: list[float]
    selected_range: tuple[float, float]
    candidates: int
    with_replacement: bool


def sample_positions(pool_size: int, count: int, mode: str, rng: np.random.Generator) -> tuple[np.ndarray, bool]:
    """`count` pool positions for one epoch.

    `uniform` (paper): a uniform draw without replacement; with replacement when `count` exceeds the pool
    (the 300K set with N = 400,000), which the run metadata records. `contiguous` (atom-code): a block of
    `count` consecutive positions from a random offset, wrapping around (the released code's
    `dataset.offset`). Returns (positions, with_replacement).
    """
    if pool_size <= 0:
        raise ValueError("empty auxiliary pool")
    if mode == "contiguous":
        offset = int(rng.integers(pool_size))
        return (offset + np.arange(count, dtype=np.int64)) % pool_size, count > pool_size
    if mode != "uniform":
        raise ValueError(f"unknown auxiliary sampling '{mode}' (uniform or contiguous)")
    if count > pool_size:
        return rng.integers(0, pool_size, size=count, dtype=np.int64), True
    return rng.choice(pool_size, size=count, replace=False).astype(np.int64), False


def mine_outliers(ood_scores: torch.Tensor, q: float, n: int) -> torch.Tensor:
    """Indices of `sorted(ood_scores)[qN : qN + n]` (ascending OOD score; Algorithm 1, line 4).

    q = 0 keeps the n candidates the model finds least OOD (the hardest); a larger q skips the hardest qN,
    which avoids near-duplicates of in-distribution data in the pool. Requires 0 <= q <= 1 - n/N.
    """
    total = len(ood_scores)
    start = int(q * total)
    if not 0.0 <= q <= 1.0 or start + n > total:
        raise ValueError(f"mining slice [qN : qN + n] = [{start} : {start + n}] exceeds the {total} candidates")
    order = torch.argsort(ood_scores.float(), stable=True)
    return order[start : start + n]


def mining_record(
    ood_scores: torch.Tensor, selected: torch.Tensor, with_replacement: bool, bins: int = 50
) -> MiningResult:
    """The epoch's log entry: histogram of candidate OOD scores in [0, 1] and the selected score range
    (the paper's Figure 5)."""
    scores = ood_scores.float().cpu().numpy()
    hist, edges = np.histogram(np.clip(scores, 0.0, 1.0), bins=bins, range=(0.0, 1.0))
    chosen = scores[selected.cpu().numpy()]
    return MiningResult(
        selected=selected,
        histogram=hist.tolist(),
        bin_edges=edges.tolist(),
        selected_range=(float(chosen.min()), float(chosen.max())),
        candidates=len(scores),
        with_replacement=with_replacement,
    )


def plot_mining_log(log: list[dict], path) -> None:
    """Save the per-epoch candidate-score histograms with the selected range shaded (Figure 5 style)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    if not log:
        return
    shown = log if len(log) <= 10 else [log[i] for i in np.linspace(0, len(log) - 1, 10).astype(int)]
    cols = min(5, len(shown))
    rows = (len(shown) + cols - 1) // cols
    fig, axes = plt.subplots(rows, cols, figsize=(3.2 * cols, 2.4 * rows), squeeze=False)
    for ax in axes.ravel()[len(shown) :]:
        ax.axis("off")
    for ax, entry in zip(axes.ravel(), shown):
        edges = np.asarray(entry["bin_edges"])
        ax.bar(edges[:-1], entry["histogram"], width=np.diff(edges), align="edge", color="#4c72b0")
        low, high = entry["selected_range"]
        ax.axvspan(low, high, color="#dd8452", alpha=0.3, label="selected")
        ax.set_title(f"{entry['stage']} epoch {entry['epoch']}", fontsize=9)
        ax.set_xlabel("OOD score (softmax K+1)", fontsize=8)
        ax.set_yscale("log")
    axes.ravel()[0].legend(fontsize=7)
    fig.suptitle("Informative outlier mining: candidate OOD scores and the selected slice")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
