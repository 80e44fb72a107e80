"""Paper-scale (CIFAR-10) costs projected from the measured rates."""

from __future__ import annotations

from typing import Any

from oodbench.tools.bench.common import CIFAR10_OOD_SIZES, CIFAR10_TEST, CIFAR10_TRAIN, PAPER_COSTS_HOURS


# ---------------------------------------------------------------------------------------------------------------
# projections
# ---------------------------------------------------------------------------------------------------------------
def project_cifar10(
    rates: dict[str, float],
    variants: tuple[int, ...] = (75, 95),
    pgd_steps: int = 40,
    ood_sizes: dict[str, int] | None = None,
    n_id: int = CIFAR10_TEST,
    epochs: int = 100,
    n_train: int = CIFAR10_TRAIN,
    outliers_per_epoch: int = 2 * CIFAR10_TRAIN,
    candidates_per_epoch: int = 8 * CIFAR10_TRAIN,
) -> dict[str, Any]:
    """Paper-scale costs from measured rates (all per second):

    - `clean` images, `pgd` images x iterations, `corruption_search` images x variants, `corruption_generation`
      images x variants, `mining` candidates, `atom_step` training images (in-dist + outliers, adversarial half
      included).

    Evaluation of one method on the six CIFAR-10 OOD sets (N = 54,565 images): natural N / clean; corruption
    N x V / search + N / clean (the final deployed scores); linf N x steps / pgd; comp N x steps / pgd (the search
    is shared with corruption); in-dist 10,000 / clean once. The variant generation N x V / generation is one-off
    (shared by every method) and reported apart. ATOM training: per epoch (n_train + outliers) / atom_step +
    candidates / mining, times `epochs`."""
    sizes = ood_sizes or CIFAR10_OOD_SIZES
    n = sum(sizes.values())
    out: dict[str, Any] = {"ood_images": n, "ood_sets": dict(sizes), "pgd_steps": pgd_steps, "evaluation": {}}
    for v in variants:
        threats = {
            "natural": n / rates["clean"],
            "corruption": n * v / rates["corruption_search"] + n / rates["clean"],
            "linf": n * pgd_steps / rates["pgd"],
            "comp": n * pgd_steps / rates["pgd"],
        }
        in_dist = n_id / rates["clean"]
        total = sum(threats.values()) + in_dist
        out["evaluation"][f"{v}_variants"] = {
            "threats_s": threats,
            "in_dist_s": in_dist,
            "total_s": total,
            "total_h": total / 3600,
            "one_off_generation_s": n * v / rates["corruption_generation"]
            if rates.get("corruption_generation")
            else None,
        }
    if rates.get("atom_step") and rates.get("mining"):
        step_s = (n_train + outliers_per_epoch) / rates["atom_step"]
        mining_s = candidates_per_epoch / rates["mining"]
        epoch_s = step_s + mining_s
        out["atom_training"] = {
            "epochs": epochs,
            "per_epoch": {
                "train_images": n_train + outliers_per_epoch,
                "adversarial_images": outliers_per_epoch // 2,
                "mining_candidates": candidates_per_epoch,
                "sgd_s": step_s,
                "mining_s": mining_s,
                "total_s": epoch_s,
            },
            "total_s": epochs * epoch_s,
            "total_h": epochs * epoch_s / 3600,
        }
    out["paper_costs_h"] = PAPER_COSTS_HOURS
    return out


def rates_for_projection(stages: dict[str, dict[str, Any]]) -> dict[str, float]:
    """The rates `project_cifar10` needs, from measured stages (missing stages are left out)."""
    keys = {
        "clean": "clean_scoring",
        "pgd": "pgd",
        "corruption_search": "corruption_search",
        "corruption_generation": "corruption_generation",
        "mining": "mining",
        "atom_step": "train/atom-like",
    }
    return {k: stages[s]["images_per_s"] for k, s in keys.items() if s in stages}
