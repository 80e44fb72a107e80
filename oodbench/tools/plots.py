"""Figures: `oodbench plot boundary` draws the ATOM paper's Figure 2 (the toy example of section 3).

    oodbench plot boundary [--out gauss2d_boundary.png] [--seed 0] [--adversarial/--no-adversarial] [--epochs 30]

It trains two (K+1)-way detectors on the `gauss2d` toy (oodbench.tools.toy) from the same initialisation, one with
randomly sampled auxiliary outliers and one with informative outlier mining (Algorithm 1, q = 0), with ATOM's
objective (eq. 1; `--no-adversarial`: NTOM's, eq. 4), and draws them side by side: the in-distribution points by
class, the outliers trained on in the last epoch (grey; the mined ones ring the data), the learned decision
boundary (softmax_{K+1} = 1/2, solid, with the accepted in-distribution region shaded), the 95 % TPR contour
(dashed), and held-out outliers near the data moved by L-inf PGD (arrows; red where the attack carries them into
the accepted region). Under each panel: the accepted area and the FPR on held-out uniform outliers, clean and
under attack.
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import TYPE_CHECKING

from oodbench.commands import add_command
from oodbench.errors import ConfigError

if TYPE_CHECKING:
    from oodbench.tools.toy import Gauss2d, ToyDetector

CLASS_COLOURS = ("#1f77b4", "#ff7f0e", "#2ca02c", "#9467bd", "#8c564b", "#e377c2", "#17becf", "#bcbd22")
REGION_COLOUR = "#dbe9f6"
CROSS_COLOUR = "#d62728"
HELD_COLOUR = "#444444"
ARROWS = 48  # held-out outliers attacked in the figure


def arrow_sources(data: Gauss2d, count: int = ARROWS):
    """Held-out outliers within 1.5 std of the support, spread evenly by angle around the data: the ones an
    attack could carry across a tight boundary (far ones cannot move far enough at this eps)."""
    import torch

    near = data.ood_test[data.mahalanobis(data.ood_test) < data.config.support + 1.5]
    order = torch.argsort(torch.atan2(near[:, 1], near[:, 0]))
    pick = torch.linspace(0, len(order) - 1, min(count, len(order))).round().long()
    return near[order[pick]]


def _panel(ax, detector: ToyDetector, data: Gauss2d, title: str, resolution: int = 300) -> None:
    import numpy as np

    from oodbench.tools.toy import LEARNED_GAMMA, grid

    box = data.config.box
    axis, points = grid(box, resolution)
    scores = detector.ood_score(points).view(resolution, resolution).numpy()
    xs = axis.numpy()
    ax.contourf(xs, xs, scores, levels=[-1.0, LEARNED_GAMMA], colors=[REGION_COLOUR], zorder=0)
    ax.contour(xs, xs, scores, levels=[LEARNED_GAMMA], colors="black", linewidths=1.6, zorder=4)
    ax.contour(xs, xs, scores, levels=[detector.gamma95], colors="#555555", linewidths=1.0, linestyles="--", zorder=4)

    outliers = detector.last_outliers.numpy()
    ax.scatter(outliers[:, 0], outliers[:, 1], s=3, c="#9a9a9a", alpha=0.55, linewidths=0, zorder=1)
    x, y = data.x_train.numpy(), data.y_train.numpy()
    for c in range(data.num_classes):
        ax.scatter(
            x[y == c, 0], x[y == c, 1], s=5, c=CLASS_COLOURS[c % len(CLASS_COLOURS)], alpha=0.7, linewidths=0, zorder=2
        )

    source = arrow_sources(data)
    moved = detector.attack(source)
    crossed = detector.accepts(moved).numpy()
    src, delta = source.numpy(), (moved - source).numpy()
    colours = np.where(crossed, CROSS_COLOUR, HELD_COLOUR)
    ax.quiver(
        src[:, 0],
        src[:, 1],
        delta[:, 0],
        delta[:, 1],
        color=colours,
        angles="xy",
        scale_units="xy",
        scale=1.0,
        width=0.004,
        headwidth=4,
        headlength=4,
        headaxislength=3.5,
        zorder=5,
    )
    ax.scatter(src[:, 0], src[:, 1], s=9, c=colours, linewidths=0, zorder=5)

    learned, tpr95 = detector.learned, detector.tpr95
    ax.set_title(title, fontsize=12)
    ax.set_xlabel(
        f"in-dist region {learned.area:.1f} units$^2$ · FPR {100 * learned.fpr:.2f} % · "
        f"under PGD {100 * learned.robust_fpr:.2f} % ({int(crossed.sum())}/{len(crossed)} arrows cross)\n"
        f"95 % TPR contour: {tpr95.area:.1f} units$^2$ · FPR {100 * tpr95.fpr:.2f} % · "
        f"under PGD {100 * tpr95.robust_fpr:.2f} %",
        fontsize=9,
    )
    ax.set_xlim(-box, box)
    ax.set_ylim(-box, box)
    ax.set_aspect("equal")
    ax.tick_params(labelsize=8)


def plot_boundary(random: ToyDetector, mined: ToyDetector, data: Gauss2d, path: Path | str) -> Path:
    """Save the two-panel Figure 2 (random outliers left, mined right) as a PNG at `path`."""
    from oodbench.tools.toy import single_thread

    with single_thread():  # scoring the grid and attacking the arrows' outliers: tiny tensors
        return _plot_boundary(random, mined, data, Path(path))


def _plot_boundary(random: ToyDetector, mined: ToyDetector, data: Gauss2d, path: Path) -> Path:
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure
    from matplotlib.lines import Line2D
    from matplotlib.patches import Patch

    path.parent.mkdir(parents=True, exist_ok=True)
    fig = Figure(figsize=(13.0, 7.3))
    FigureCanvasAgg(fig)  # Agg, without pyplot's global state
    axes = fig.subplots(1, 2)
    _panel(axes[0], random, data, "without outlier mining")
    _panel(axes[1], mined, data, "with informative outlier mining")

    config, cfg = data.config, mined.config
    objective = "ATOM, eq. 1 (PGD on half of each outlier batch)" if cfg.adversarial else "NTOM, eq. 4"
    fig.suptitle(
        f"Figure 2 toy: {config.num_classes} Gaussians (std {config.std:g}), uniform outliers outside Mahalanobis "
        f"radius {config.support:g}; {objective}; {cfg.epochs} epochs, seed {data.seed}",
        fontsize=11,
    )
    handles = [
        Line2D([], [], ls="", marker="o", ms=4, color=CLASS_COLOURS[c % len(CLASS_COLOURS)], label=f"class {c + 1}")
        for c in range(data.num_classes)
    ]
    handles += [
        Line2D([], [], ls="", marker="o", ms=3, color="#9a9a9a", label="outliers trained on (last epoch)"),
        Patch(facecolor=REGION_COLOUR, edgecolor="black", label="classified in-dist (softmax$_{K+1}$ < 1/2)"),
        Line2D([], [], color="black", lw=1.6, label="learned decision boundary (softmax$_{K+1}$ = 1/2)"),
        Line2D([], [], color="#555555", lw=1.0, ls="--", label="95 % TPR contour"),
        Line2D([], [], color=CROSS_COLOUR, lw=1.5, marker=">", ms=4, label=f"PGD (eps {cfg.eps:g}): crosses"),
        Line2D([], [], color=HELD_COLOUR, lw=1.5, marker=">", ms=4, label="PGD: stays out"),
    ]
    fig.legend(handles=handles, loc="lower center", bbox_to_anchor=(0.5, 0.0), ncol=5, fontsize=8.5, frameon=False)
    fig.subplots_adjust(left=0.05, right=0.98, top=0.92, bottom=0.18, wspace=0.12)
    fig.savefig(path, dpi=110)
    return path


def cmd_plot_boundary(args: argparse.Namespace) -> int:
    """`oodbench plot boundary`: train both toy detectors, save the figure, print the path and the numbers."""
    from oodbench.tools.toy import ToyTrainConfig, compare

    config = ToyTrainConfig(adversarial=args.adversarial)
    if args.epochs is not None:
        if args.epochs < 1:
            raise ConfigError(f"--epochs must be at least 1, got {args.epochs}")
        config = ToyTrainConfig(adversarial=args.adversarial, epochs=args.epochs)
    random, mined, data = compare(seed=args.seed, config=config)
    path = plot_boundary(random, mined, data, args.out)
    print(f"wrote {path.resolve()}")
    for name, det in (("without outlier mining", random), ("with informative outlier mining", mined)):
        b, t = det.learned, det.tpr95
        print(
            f"{name:<32s} in-dist area {b.area:6.2f} units^2  FPR {100 * b.fpr:5.2f} %  under PGD "
            f"{100 * b.robust_fpr:5.2f} %   | 95 % TPR: area {t.area:6.2f}  FPR {100 * t.fpr:5.2f} %"
        )
    return 0


def register(subparsers) -> None:
    """Add `oodbench plot {boundary,run,samples}` to the CLI (recorded with oodbench.commands.add_command)."""
    plot = subparsers.add_parser(
        "plot", help="figures (boundary: the paper's Figure 2 toy; run: FPR bars of a run; samples: built-in images)"
    )
    figures = plot.add_subparsers(dest="figure", required=True, metavar="FIGURE")
    boundary = figures.add_parser(
        "boundary",
        help="decision boundary with and without informative outlier mining on the 2-D toy (Figure 2)",
        description="Train two (K+1)-way detectors on the gauss2d toy (random outliers vs. informative outlier "
        "mining) and draw their decision boundaries side by side, like the ATOM paper's Figure 2.",
    )
    boundary.add_argument("--out", default="gauss2d_boundary.png", help="PNG to write (default: %(default)s)")
    boundary.add_argument("--seed", type=int, default=0, help="data, initialisation and sampling seed")
    boundary.add_argument(
        "--adversarial",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="ATOM's objective (eq. 1, PGD eps 0.3 on outliers; default) or NTOM's (eq. 4, --no-adversarial)",
    )
    boundary.add_argument("--epochs", type=int, default=None, help="training epochs (default: 30)")
    boundary.set_defaults(func=cmd_plot_boundary)
    from oodbench.figures import add_figure_parsers

    add_figure_parsers(figures)  # `plot run`, `plot samples`


add_command(register)
