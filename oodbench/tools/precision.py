"""The precision experiment behind `oodbench.accel`'s adoption rule: FPR of PGD run in each attack precision on a
fixed model and fixed inputs (`python -m oodbench.tools.precision [--device cuda] [--json PATH]`). A precision is
adopted for attacks only if it lowers no FPR (see `oodbench.accel`)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import torch

from oodbench.accel import _device, attack_autocast, check_precision, fp32_scoring

if TYPE_CHECKING:
    from torch import nn


# ---------------------------------------------------------------------------------------------------------------
# the evidence behind the adoption rule
# ---------------------------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class AttackSetting:
    """One PGD budget of the precision experiment (pixel units of 1/255)."""

    eps: int
    steps: int
    step_size: int = 1


#: small budgets (where a weaker attack shows as a lower FPR) and the paper's (eps 8/255, 40 x 1/255)
EXPERIMENT_SETTINGS = (AttackSetting(eps=1, steps=5), AttackSetting(eps=2, steps=10), AttackSetting(eps=8, steps=40))
FIXED_WIDTHS = (8, 16, 32, 32)  # a narrow small_cnn: the experiment runs in seconds on a CPU


def fixed_model(device: Any = "cpu", epochs: int = 2, seed: int = 0) -> nn.Module:
    """The experiment's fixed network: a narrow small_cnn (`FIXED_WIDTHS`) trained `epochs` epochs with Outlier
    Exposure (`baselines.oe.OE.loss`: the built-in digits training split, batch 64, plus 128 built-in `photos`
    outliers per batch; SGD lr 0.05, momentum 0.9, no augmentation), so that clean OOD inputs get low MSP and the
    attacks have FPR to gain. Deterministic on the CPU for a given seed."""
    import torch

    from oodbench.data import load_aux, load_in_distribution
    from oodbench.models import create_model
    from oodbench.registry import DETECTORS

    device = _device(device)
    digits, photos = load_in_distribution("digits"), load_aux("photos")
    oe = DETECTORS.get("oe")(digits.num_classes)
    torch.manual_seed(seed)
    model = create_model("small_cnn", digits.num_classes, digits.normalization, widths=FIXED_WIDTHS).to(device)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.05, momentum=0.9)
    generator = torch.Generator().manual_seed(seed)
    images, labels = digits.train.images, digits.train.labels
    model.train()
    for _ in range(epochs):
        order = torch.randperm(len(images), generator=generator)
        outliers = torch.randperm(len(photos), generator=generator).numpy()
        for b, start in enumerate(range(0, len(order), 64)):
            index = order[start : start + 64]
            x_in = images[index].to(device).float() / 255.0
            x_out = photos.get(outliers[b * 128 : (b + 1) * 128]).to(device).float() / 255.0
            loss = oe.loss(model, x_in, labels[index].to(device), x_out)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
    return model.eval()


def precision_experiment(
    precisions: tuple[str, ...] = ("fp32", "bf16"),
    device: Any = "cpu",
    settings: tuple[AttackSetting, ...] = EXPERIMENT_SETTINGS,
    n_ood: int = 200,
    model: nn.Module | None = None,
) -> dict[str, Any]:
    """FPR (95 % TPR) of MSP under PGD run in each precision, on the same fixed model and inputs.

    In-dist: the 500 digits test images (clean; their fp32 scores give the threshold). OOD: the first `n_ood`
    built-in `tiles`, attacked with `pgd_linf` (the random starts of `attacks.linf.pgd_scores`: one per image from
    seed 0) inside `attack_autocast(precision)`; the attacked points are then scored under `fp32_scoring`. Returns,
    per setting and precision: fpr, auroc, mean score, and how many images score lower / higher than with the first
    precision (the baseline, fp32)."""
    import numpy as np
    import torch

    from attacks.base import start_noise_for_set, to_unit
    from attacks.pgd import PGDConfig, pgd_linf
    from oodbench.data import load_in_distribution, load_ood
    from oodbench.metrics import ood_metrics
    from oodbench.registry import DETECTORS

    device = _device(device)
    model = model if model is not None else fixed_model(device)
    detector = DETECTORS.get("msp")(10)
    id_images = load_in_distribution("digits").test.images.to(device)
    ood = to_unit(load_ood("tiles").images[:n_ood].to(device))
    with fp32_scoring(device), torch.no_grad():
        id_scores = detector.score(model, to_unit(id_images)).cpu().numpy()
    out: dict[str, Any] = {"device": str(device), "n_id": len(id_images), "n_ood": len(ood), "settings": {}}
    for setting in settings:
        pgd = PGDConfig(eps=setting.eps / 255, steps=setting.steps, step_size=setting.step_size / 255)
        noises = start_noise_for_set(len(ood), tuple(ood.shape[1:]), pgd, 0, device)
        row: dict[str, Any] = {}
        baseline = None
        for precision in precisions:
            with attack_autocast(precision, device):
                x_adv, _ = pgd_linf(
                    lambda z: detector.attack_objective(model, z), ood, pgd, model=model, start_noise=noises
                )
            with fp32_scoring(device), torch.no_grad():
                scores = detector.score(model, x_adv).float().cpu().numpy()
            baseline = scores if baseline is None else baseline
            metrics = ood_metrics(id_scores, scores)
            row[precision] = {
                "fpr": metrics["fpr"],
                "auroc": metrics["auroc"],
                "mean_score": float(np.mean(scores)),
                "lower_than_baseline": int(np.sum(scores < baseline)),
                "higher_than_baseline": int(np.sum(scores > baseline)),
            }
        out["settings"][f"eps{setting.eps}_steps{setting.steps}"] = row
    return out


def adoptable(experiment: dict[str, Any], precision: str, baseline: str = "fp32") -> bool:
    """The adoption rule: `precision` lowers no FPR of `baseline` in any setting of `experiment`."""
    return all(row[precision]["fpr"] >= row[baseline]["fpr"] for row in experiment["settings"].values())


def main(argv: list[str] | None = None) -> int:
    """`python -m oodbench.tools.precision [--device cuda] [--json PATH]`: run the experiment, print the verdict."""
    import argparse
    import json

    import torch

    parser = argparse.ArgumentParser(description="FPR of PGD per attack precision on a fixed model (adoption rule)")
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--precisions", default=None, help="comma-separated (default: fp32,bf16 + tf32 on CUDA)")
    parser.add_argument("--json", default=None, help="write the result here")
    args = parser.parse_args(argv)
    device = _device(args.device)
    if args.precisions:
        precisions = tuple(args.precisions.split(","))
    else:
        precisions = ("fp32", "tf32", "bf16") if device.type == "cuda" else ("fp32", "bf16")
    precisions = tuple(p for p in precisions if _usable(p, device))
    result = precision_experiment(precisions, device)
    result["adoptable"] = {p: adoptable(result, p) for p in precisions if p != "fp32"}
    text = json.dumps(result, indent=2)
    print(text)
    if args.json:
        from oodbench.io import write_json

        write_json(args.json, result)
    return 0


def _usable(precision: str, device: torch.device) -> bool:
    try:
        check_precision(precision, device)
    except ValueError as error:
        print(f"skipping {precision}: {error}")
        return False
    return True


if __name__ == "__main__":
    raise SystemExit(main())
