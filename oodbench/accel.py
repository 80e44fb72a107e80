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
`oodbench.tools.precision.precision_experiment` (run by `tests/test_accel.py` on the CPU and by
`benchmarks/gpu_check.sh` on a GPU), it
lowers no FPR: the attack in that precision must be at least as strong as the fp32 attack in every setting measured.
Measured on the CPU (`fixed_model`: a narrow small_cnn trained 2 epochs with Outlier Exposure on the built-in digits
and photos; MSP; PGD on 128 built-in tiles; 500 digits test images set the 95 % TPR threshold): bf16 attacks are never
stronger and are weaker at small budgets: FPR 9.38 % vs 10.16 % (fp32) at eps 1/255 x 5 steps, 11.72 % vs 12.50 % at
2/255 x 10, equal (60.94 %) at the paper's 8/255 x 40; the AUROC is higher and the mean attacked score lower in every
setting, and 70-77 % of the images end with a lower score than under the fp32 attack (likely because bf16 objective
values are too coarse for the per-sample best-point bookkeeping). So bf16 is not adopted. TF32 cannot be
measured without a GPU (`benchmarks/gpu_check.sh` runs `python -m oodbench.tools.precision --device cuda`, which
measures it).
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
