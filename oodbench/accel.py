"""Precision and compilation options for the attacks (DESIGN "Performance principles").

Mixed precision and `torch.compile` are options for the **attacks only** (the forward/backward passes of PGD, APGD
and the corruption search's ranking scores are candidates); the deployed scores that the metrics use are always
computed in IEEE fp32 (SPEC section 1: "Never change scoring precision"; softmax values of exactly 1.0 tie and
those ties are part of the published numbers).

- `attack_autocast(precision, device)`: context manager around an attack's forward/backward passes.
  `fp32`: IEEE float32 (on CUDA this also turns TF32 *off*: PyTorch runs cuDNN convolutions in TF32 by default,
  `torch.backends.cudnn.conv.fp32_precision == "tf32"`, so without it "fp32" is TF32 for every conv layer);
  `tf32`: TF32 for convolutions and matmuls (CUDA, Ampere or newer); `bf16`: `torch.autocast` to bfloat16
  (CPU and CUDA).
- `fp32_scoring(device)`: context manager for deployed scores: autocast off, TF32 off.
- `maybe_compile(model, enabled)`: `torch.compile(model)` with a clear fallback message when it is unavailable.

**Adoption rule.** A precision is used for attacks by default only if, on the fixed model and inputs of
`precision_experiment` (run by `tests/test_accel.py` on the CPU and by `benchmarks/gpu_check.sh` on a GPU), it
lowers no FPR: the attack in that precision must be at least as strong as the fp32 attack in every setting measured.
Measured on the CPU (`fixed_model`: a narrow small_cnn trained 2 epochs with Outlier Exposure on the built-in digits
and photos; MSP; PGD on 128 built-in tiles; 500 digits test images set the 95 % TPR threshold): bf16 attacks are never
stronger and are weaker at small budgets: FPR 9.38 % vs 10.16 % (fp32) at eps 1/255 x 5 steps, 11.72 % vs 12.50 % at
2/255 x 10, equal (60.94 %) at the paper's 8/255 x 40; the AUROC is higher and the mean attacked score lower in every
setting, and 70-77 % of the images end with a lower score than under the fp32 attack (likely because bf16 objective
values are too coarse for the per-sample best-point bookkeeping). So bf16 is not adopted. TF32 cannot be
measured without a GPU (`benchmarks/gpu_check.sh` runs `python -m oodbench.accel --device cuda`, which measures it).
Hence `DEFAULT_ATTACK_PRECISION = "fp32"`; tf32 and bf16 stay opt-in.

How the runner uses it (`oodbench run --precision P --compile`):

    check_precision(precision, device)                         # at planning time: fail before any compute
    attack_model = maybe_compile(model, options.compile)       # used only inside the attacks
    with attack_autocast(precision, device):
        x_adv, _ = pgd_linf(lambda z: detector.attack_objective(attack_model, z), x, pgd, model=model, ...)
    with fp32_scoring(device):
        scores = detector.score(model, x_adv)                  # deployed score: eager model, IEEE fp32
"""

from __future__ import annotations

import contextlib
import warnings
from collections.abc import Iterator
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import torch
    from torch import nn

PRECISIONS = ("fp32", "tf32", "bf16")
DEFAULT_ATTACK_PRECISION = "fp32"  # see the adoption rule above


def _device(device: Any) -> torch.device:
    import torch

    return device if isinstance(device, torch.device) else torch.device(device)


def check_precision(precision: str, device: Any) -> None:
    """ValueError for an unknown precision or one the device cannot run (tf32 needs CUDA; bf16 on CUDA needs
    hardware support). Call it while planning a run, before any compute."""
    import torch

    device = _device(device)
    if precision not in PRECISIONS:
        raise ValueError(f"unknown precision '{precision}' (choose from {', '.join(PRECISIONS)})")
    if precision == "tf32" and device.type != "cuda":
        raise ValueError("precision 'tf32' needs a CUDA device (Ampere or newer); use fp32 or bf16 on the CPU")
    if precision == "bf16" and device.type == "cuda" and not torch.cuda.is_bf16_supported():
        raise ValueError("this GPU does not support bfloat16; use fp32 or tf32")


def _tf32_settings() -> list[tuple[Any, str]]:
    """(object, attribute) pairs that switch TF32 for cuDNN convolutions and CUDA matmuls (PyTorch >= 2.9 API)."""
    import torch

    pairs = []
    conv = getattr(torch.backends.cudnn, "conv", None)
    if conv is not None and hasattr(conv, "fp32_precision"):
        pairs.append((conv, "fp32_precision"))
    matmul = torch.backends.cuda.matmul
    if hasattr(matmul, "fp32_precision"):
        pairs.append((matmul, "fp32_precision"))
    return pairs


@contextlib.contextmanager
def tf32_mode(enabled: bool) -> Iterator[None]:
    """TF32 on (`enabled`) or off (IEEE fp32) for cuDNN convolutions and CUDA matmuls inside the block; the previous
    settings are restored afterwards. Uses `fp32_precision` where PyTorch has it (mixing it with the legacy
    `allow_tf32` flags is an error in recent PyTorch), else the legacy flags. No effect on CPU computations."""
    import torch

    pairs = _tf32_settings()
    if pairs:
        saved = [(obj, attr, getattr(obj, attr)) for obj, attr in pairs]
        try:
            for obj, attr in pairs:
                setattr(obj, attr, "tf32" if enabled else "ieee")
            yield
        finally:
            for obj, attr, value in saved:
                setattr(obj, attr, value)
        return
    saved_legacy = (torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32)
    try:
        torch.backends.cudnn.allow_tf32 = enabled
        torch.backends.cuda.matmul.allow_tf32 = enabled
        yield
    finally:
        torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32 = saved_legacy


@contextlib.contextmanager
def attack_autocast(precision: str, device: Any) -> Iterator[None]:
    """Run an attack's forward/backward passes in `precision` ("fp32", "tf32" or "bf16") on `device`.

    Wrap only the attack (the iterate search); compute the deployed scores afterwards under `fp32_scoring`. Under
    bf16 the attack's objective values (and so its best-point bookkeeping) are bfloat16 too."""
    import torch

    device = _device(device)
    check_precision(precision, device)
    if precision == "bf16":
        with tf32_mode(False), torch.autocast(device_type=device.type, dtype=torch.bfloat16):
            yield
        return
    with tf32_mode(precision == "tf32"):
        yield


@contextlib.contextmanager
def fp32_scoring(device: Any) -> Iterator[None]:
    """Deployed scores in IEEE fp32: autocast disabled and TF32 off (SPEC section 1)."""
    import torch

    device = _device(device)
    with tf32_mode(False), torch.autocast(device_type=device.type, enabled=False):
        yield


def maybe_compile(model: nn.Module, enabled: bool, example: torch.Tensor | None = None, **options: Any) -> nn.Module:
    """`torch.compile(model, **options)` when `enabled`, else `model` itself.

    Compilation happens lazily at the first call; pass `example` (a batch) to compile now, so that an unusable
    compiler (no C++ toolchain, unsupported Python or platform, Triton missing on the GPU) shows up here: then a
    warning says why and the eager model is returned. The compiled module shares the parameters of `model`; use it
    for the attacks only and score with the eager model (compiled kernels may round differently)."""
    if not enabled:
        return model
    import torch

    reason = None
    if not hasattr(torch, "compile"):
        reason = f"torch {torch.__version__} has no torch.compile (needs torch >= 2.0)"
    else:
        try:
            compiled = torch.compile(model, **options)
            if example is not None:
                compiled(example)
            return compiled
        except Exception as error:  # the backends raise many types (BackendCompilerFailed, RuntimeError, ...)
            reason = f"{type(error).__name__}: {str(error).strip().splitlines()[0][:300] if str(error) else ''}"
    warnings.warn(
        f"--compile: torch.compile is unavailable here ({reason}); continuing with the eager model",
        RuntimeWarning,
        stacklevel=2,
    )
    return model


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
    """`python -m oodbench.accel [--device cuda] [--json PATH]`: run the precision experiment and print the verdict."""
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
