"""Where the post-hoc detectors' gradients vanish (issue 11 point 5: "ReAct's clipping and ASH's pruning are where
gradients mislead").

Re-plans a finished run (same options, same run directory: the vanilla checkpoint and the fitted detectors are
loaded, nothing is trained or fitted anew) and reports, per post-hoc detector and OOD set, on the clean OOD images:
the share whose attack objective has an all-zero input gradient, the mean share of ReAct's penultimate units
above its clip (they pass no gradient) and of the units ASH prunes (90 % by construction).

    python benchmarks/posthoc_gradients.py --out oodbench-runs/smoke-posthoc --profile smoke
"""

from __future__ import annotations

import argparse

import torch

from oodbench.features import penultimate
from oodbench.runner import RunOptions, fit_detector, obtain_model, plan_run


def gradient_report(plan, batch: int = 64) -> list[tuple[str, str, float, float]]:
    """(method, OOD set, % images with an all-zero objective gradient, % units clipped (ReAct) or -1)."""
    rows = []
    models: dict[str, torch.nn.Module] = {}
    for method in plan.methods:
        if method.train_key not in models:
            models[method.train_key] = obtain_model(plan, method, lambda _: None)
        model = models[method.train_key]
        fit_detector(plan, method, model, lambda _: None)
        detector = method.detector
        for name, images in plan.ood_sets.items():
            zero, clipped, total = 0, 0.0, 0
            for start in range(0, len(images), batch):
                x = (images.images[start : start + batch].float() / 255.0).to(plan.device).requires_grad_(True)
                (grad,) = torch.autograd.grad(detector.attack_objective(model, x).sum(), x)
                zero += int((grad.flatten(1).abs().sum(dim=1) == 0).sum())
                if hasattr(detector, "threshold"):
                    with torch.no_grad():
                        features = penultimate(model, x)[1]
                    clipped += float((features > detector.threshold).float().mean(dim=1).sum())
                total += len(x)
            rows.append((method.name, name, 100.0 * zero / total, 100.0 * clipped / total if clipped else -1.0))
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", required=True, help="the finished run directory")
    parser.add_argument("--profile", default="smoke")
    parser.add_argument("--methods", default="posthoc")
    parser.add_argument("--ood", default=None, help="the run's --ood, if it had one")
    parser.add_argument("--epochs", type=int, default=None, help="the run's --epochs, if it had one")
    parser.add_argument("--max-ood", type=int, default=None, help="the run's --max-ood, if it had one")
    args = parser.parse_args()
    options = RunOptions(
        methods=args.methods.split(","),
        profile=args.profile,
        out=args.out,
        ood=args.ood.split(",") if args.ood else None,
        epochs=args.epochs,
        max_ood=args.max_ood,
        threats=["natural"],
        progress=False,
    )
    plan = plan_run(options, log=lambda _: None)
    print(f"{'method':<10} {'OOD set':<14} {'zero grad %':>11} {'units clipped %':>15}")
    for method, ood, zero, clipped in gradient_report(plan):
        print(f"{method:<10} {ood:<14} {zero:>11.2f} {'' if clipped < 0 else f'{clipped:.2f}':>15}")


if __name__ == "__main__":
    main()
