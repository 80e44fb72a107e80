"""Figures of results and data: `oodbench plot run RUN_DIR` and `oodbench plot samples`.

- `plot_run`: FPR at 95 % TPR (mean over the OOD sets) per detector as grouped bars, one bar per threat model,
  so the gap between natural and attacked inputs is what the eye reads (the paper's Table 1 as a picture).
- `plot_samples`: a few images of each built-in set (in-dist classes, OOD sets, auxiliary pool).
"""

from __future__ import annotations

import argparse
from collections.abc import Iterable
from pathlib import Path

import numpy as np

THREAT_COLOURS = {"natural": "#9ecae1", "corruption": "#fdae6b", "linf": "#d62728", "comp": "#7f2704"}
THREAT_LABELS = {"natural": "natural", "corruption": "corruption attack", "linf": "L-inf PGD", "comp": "compositional"}
RUN_FIGURE = "fpr_by_threat.png"  # written into the run directory by `oodbench run`


def _figure_module():
    import matplotlib

    matplotlib.use("Agg")  # files only; never a window
    import matplotlib.pyplot as plt

    return plt


def bar_marks(cells) -> dict[tuple[str, str, str], str]:
    """(in_dist, method, threat) -> the mark its bar carries: "ties" where the score is degenerate (flag `ties`:
    the FPR of a constant score reads 0 %, which a bar would show as the best detector), "†" where another
    attack diagnostic flagged the cell (`oodbench table --flags`), nothing else. Averages over the OOD sets carry
    the union of their sets' flags, as the tables do."""
    from oodbench.results import cell_flags, is_unranked

    flags = cell_flags(cells)
    flags = flags[(flags["ood_set"] == "average") & (flags["flags"] != "")]
    return {(r.in_dist, r.method, r.threat): "ties" if is_unranked(r.flags) else "†" for r in flags.itertuples()}


def plot_run(run_dirs: Iterable[str | Path], path: str | Path, metric: str = "fpr") -> Path:
    """Grouped bars of `metric` (default FPR@95%TPR with in-dist positive, the ATOM paper's convention, SPEC
    section 1; averaged over the OOD sets as in Table 1) per detector (groups) and threat model (bars) for the
    finished cells of `run_dirs` -> the PNG written. Flagged bars carry "†"; a degenerate score (flag `ties`) is
    drawn as a hatched, empty bar labelled "ties" instead of a 0 % that reads as the best detector."""
    from oodbench.registry import threat_order
    from oodbench.results import load_cells, tidy

    cells = load_cells(run_dirs)
    long = tidy(cells, metrics=[metric])
    long = long[long["ood_set"] == "average"]
    marks = bar_marks(cells)
    methods = list(dict.fromkeys(long["method"]))
    threats = sorted(set(long["threat"]), key=threat_order)
    in_dists = sorted(set(long["in_dist"]))
    plt = _figure_module()
    fig, axes = plt.subplots(
        len(in_dists), 1, figsize=(max(6.0, 0.9 * len(methods) + 1.5), 3.2 * len(in_dists) + 0.4), squeeze=False
    )
    width = 0.8 / max(len(threats), 1)
    top = 100.0 if metric in ("fpr", "auroc") else None
    for ax, in_dist in zip(axes[:, 0], in_dists):
        part = long[long["in_dist"] == in_dist]
        x = np.arange(len(methods))
        for j, threat in enumerate(threats):
            rows = part[part["threat"] == threat].set_index("method")["value"]
            offsets = x + (j - (len(threats) - 1) / 2) * width
            colour = THREAT_COLOURS.get(threat, None)
            for offset, method in zip(offsets, methods):
                value = float(rows.get(method, np.nan))
                mark = marks.get((in_dist, method, threat), "")
                if mark == "ties":  # not a result: an outline to the top, labelled
                    ax.bar(offset, top or value, width, fill=False, hatch="//", edgecolor=colour, linewidth=0.8)
                    ax.text(offset, (top or value) * 0.5, "ties", rotation=90, ha="center", va="center", fontsize=7)
                    continue
                ax.bar(offset, value, width, color=colour)
                if mark and np.isfinite(value):
                    ax.text(offset, value, mark, ha="center", va="bottom", fontsize=8)
        ax.set_xticks(x, methods)
        ax.set_ylim(0, top * 1.06 if top else None)
        ax.set_ylabel("FPR at 95 % TPR (%)" if metric == "fpr" else metric)
        ax.set_title(
            f"in-distribution {in_dist}: mean over OOD sets; in-dist positive (ATOM paper); lower is better"
            if metric == "fpr"
            else f"in-distribution {in_dist}",
            fontsize=10,
        )
        ax.grid(axis="y", alpha=0.3)
        ax.set_axisbelow(True)
    from matplotlib.patches import Patch

    handles = [Patch(color=THREAT_COLOURS.get(t), label=THREAT_LABELS.get(t, t)) for t in threats]
    labels = [handle.get_label() for handle in handles]
    note = "  († flagged by the attack diagnostics; ties: constant score, not a result)" if marks else ""
    fig.legend(handles, labels, ncol=len(threats), fontsize=8, loc="upper center", frameon=False)
    if note:
        fig.text(0.5, 0.0, note.strip(), ha="center", va="bottom", fontsize=7)
    fig.tight_layout(rect=(0, 0.03 if note else 0, 1, 0.94))
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path


#: what `plot samples` shows: (title, loader kind, name)
SAMPLE_SETS = (
    ("in-dist shapes", "in", "shapes"),
    ("OOD photo_digits", "ood", "photo_digits"),
    ("OOD tiles", "ood", "tiles"),
    ("OOD scenes_resize", "ood", "scenes_resize"),
    ("aux shape_aux", "aux", "shape_aux"),
)


def sample_images(per_set: int = 10) -> list[tuple[str, list[tuple[np.ndarray, str]]]]:
    """(row title, [(HxWx3 uint8 image, caption)]) per built-in set of SAMPLE_SETS: for the in-dist set one image
    per class (its first training image of each class), else the first `per_set` images."""
    from oodbench import data
    from oodbench.data.shapes import SHAPE_CLASSES

    rows = []
    for title, kind, name in SAMPLE_SETS:
        if kind == "in":
            train = data.load_in_distribution(name).train
            first = [int(np.flatnonzero(train.labels.numpy() == c)[0]) for c in range(len(SHAPE_CLASSES))]
            images = [(train.images[i].permute(1, 2, 0).numpy(), SHAPE_CLASSES[c]) for c, i in enumerate(first)]
        elif kind == "ood":
            batch = data.load_ood(name).images[:per_set]
            images = [(im.permute(1, 2, 0).numpy(), "") for im in batch]
        else:
            batch = data.load_aux(name).get(np.arange(per_set))
            images = [(im.permute(1, 2, 0).numpy(), "") for im in batch]
        rows.append((title, images[:per_set]))
    return rows


def plot_samples(path: str | Path, per_set: int = 10) -> Path:
    """A grid of built-in images, one row per set of SAMPLE_SETS -> the PNG written."""
    rows = sample_images(per_set)
    plt = _figure_module()
    fig, axes = plt.subplots(len(rows), per_set, figsize=(per_set * 0.8, len(rows) * 0.95), squeeze=False)
    for r, (title, images) in enumerate(rows):
        for c in range(per_set):
            ax = axes[r, c]
            ax.set_xticks([])
            ax.set_yticks([])
            for spine in ax.spines.values():
                spine.set_visible(False)
            if c < len(images):
                ax.imshow(images[c][0], interpolation="nearest")
                if images[c][1]:
                    ax.set_title(images[c][1], fontsize=6, pad=2)
        axes[r, 0].set_ylabel(title.replace(" ", "\n", 1), fontsize=7, rotation=0, ha="right", va="center")
    fig.subplots_adjust(left=0.13, right=0.995, top=0.96, bottom=0.01, wspace=0.06, hspace=0.3)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=80)
    plt.close(fig)
    return path


def cmd_plot_run(args: argparse.Namespace) -> int:
    """`oodbench plot run RUN_DIR...`: the grouped-bar figure of one or more run directories."""
    run_dirs = [Path(p) for p in args.run_dirs]
    out = Path(args.out) if args.out else run_dirs[0] / RUN_FIGURE
    print(f"wrote {plot_run(run_dirs, out, metric=args.metric).resolve()}")
    return 0


def cmd_plot_samples(args: argparse.Namespace) -> int:
    """`oodbench plot samples`: a few images of each built-in set."""
    print(f"wrote {plot_samples(args.out, per_set=args.per_set).resolve()}")
    return 0


def add_figure_parsers(figures) -> None:
    """Add the `run` and `samples` figures to the `oodbench plot` subcommand's sub-parsers."""
    run = figures.add_parser(
        "run",
        help="FPR per detector and threat model as grouped bars (natural vs attacked) for run directories",
        description="Draw the mean FPR at 95 %% TPR over the OOD sets of each detector, one bar per threat model.",
    )
    run.add_argument("run_dirs", nargs="+", help="run directories (as written by `oodbench run`)")
    run.add_argument("--out", default=None, help=f"PNG to write (default: RUN_DIR/{RUN_FIGURE})")
    run.add_argument("--metric", default="fpr", choices=("fpr", "auroc"), help="metric drawn (default: %(default)s)")
    run.set_defaults(func=cmd_plot_run)
    samples = figures.add_parser("samples", help="a few images of each built-in data set")
    samples.add_argument("--out", default="builtin_samples.png", help="PNG to write (default: %(default)s)")
    samples.add_argument("--per-set", type=int, default=10, help="images per set (default: %(default)s)")
    samples.set_defaults(func=cmd_plot_samples)
