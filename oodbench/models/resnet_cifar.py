"""CIFAR ResNets (He et al., CVPR 2016, section 4.2) with option-A shortcuts, as akamaster/pytorch_resnet_cifar10.

ResNet-20/32/44/56 (0.27 / 0.46 / 0.66 / 0.85 M parameters with 10 outputs). `load_pretrained_resnet` loads that
repository's released CIFAR-10 weights (`resnet20-12fca82f.th`, ...; BSD-2-Clause, Yerlan Idelbayev), which
expect ImageNet mean/std normalisation; the loaded model normalises inside like every oodbench architecture.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from oodbench.errors import CheckpointError
from oodbench.models.base import OODNet
from oodbench.registry import register_arch

#: Normalisation the akamaster weights were trained with (torchvision's ImageNet statistics).
IMAGENET_NORMALIZATION = ((0.485, 0.456, 0.406), (0.229, 0.224, 0.225))

_DEPTHS = (20, 32, 44, 56)


class OptionAShortcut(nn.Module):
    """Parameter-free shortcut 'A' of He et al.: subsample by 2 and zero-pad planes // 4 channels on each side.

    Equivalent to akamaster's `LambdaLayer(lambda x: F.pad(x[:, :, ::2, ::2], (0, 0, 0, 0, p, p)))`, as a named
    module so the model pickles and prints.
    """

    def __init__(self, planes: int):
        super().__init__()
        self.pad = planes // 4

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.pad(x[:, :, ::2, ::2], (0, 0, 0, 0, self.pad, self.pad), "constant", 0.0)

    def extra_repr(self) -> str:
        return f"pad={self.pad}"


class BasicBlock(nn.Module):
    """conv3x3-BN-ReLU-conv3x3-BN, plus the (option A) shortcut, then ReLU (post-activation ResNet)."""

    def __init__(self, in_planes: int, planes: int, stride: int = 1):
        super().__init__()
        self.conv1 = nn.Conv2d(in_planes, planes, kernel_size=3, stride=stride, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(planes)
        self.conv2 = nn.Conv2d(planes, planes, kernel_size=3, stride=1, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(planes)
        self.shortcut: nn.Module = nn.Identity()
        if stride != 1 or in_planes != planes:
            self.shortcut = OptionAShortcut(planes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = F.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        return F.relu(out + self.shortcut(x))


class CifarResNet(OODNet):
    """ResNet-(6n+2) for CIFAR: conv1 (16) -> 3 stages of n BasicBlocks (16, 32, 64 channels; strides 1, 2, 2)
    -> global average pool -> linear, as akamaster/pytorch_resnet_cifar10 `resnet.py`.

    Init as there: `kaiming_normal_` (fan-in) on every conv and linear weight; BN and linear bias keep PyTorch's
    defaults. Parameter names match the released weights (after stripping `module.`).

    Args:
        num_outputs: head size (K classes plus the method's extra outputs).
        normalization: per-channel (mean, std) applied inside the model, or None (identity).
        depth: 6n + 2 (20, 32, 44, 56, 110, ...).
    """

    def __init__(self, num_outputs: int, normalization=None, depth: int = 20):
        super().__init__(num_outputs, normalization)
        if (depth - 2) % 6 != 0 or depth < 8:
            raise ValueError(f"CIFAR ResNet depth must be 6n+2, got {depth}")
        n = (depth - 2) // 6
        self.depth = depth
        self.conv1 = nn.Conv2d(3, 16, kernel_size=3, stride=1, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(16)
        self.layer1 = self._make_layer(16, 16, n, stride=1)
        self.layer2 = self._make_layer(16, 32, n, stride=2)
        self.layer3 = self._make_layer(32, 64, n, stride=2)
        self.linear = nn.Linear(64, num_outputs)
        self.reset_parameters()

    @staticmethod
    def _make_layer(in_planes: int, planes: int, num_blocks: int, stride: int) -> nn.Sequential:
        blocks = [BasicBlock(in_planes, planes, stride)]
        blocks += [BasicBlock(planes, planes, 1) for _ in range(num_blocks - 1)]
        return nn.Sequential(*blocks)

    def reset_parameters(self) -> None:
        """akamaster's `_weights_init`: kaiming_normal_ on conv and linear weights; everything else default."""
        for m in self.modules():
            if isinstance(m, (nn.Conv2d, nn.Linear)):
                nn.init.kaiming_normal_(m.weight)

    def forward_features(self, x: torch.Tensor) -> tuple[torch.Tensor, list[torch.Tensor]]:
        """(logits, [conv1 output after BN-ReLU, layer1 output, layer2 output, layer3 output]), maps not pooled.

        Shapes on 32x32: [B, 16, 32, 32], [B, 16, 32, 32], [B, 32, 16, 16], [B, 64, 8, 8].
        """
        x = self.normalize(x)
        f0 = F.relu(self.bn1(self.conv1(x)))
        f1 = self.layer1(f0)
        f2 = self.layer2(f1)
        f3 = self.layer3(f2)
        pooled = F.avg_pool2d(f3, kernel_size=f3.shape[-2:]).flatten(1)
        return self.linear(pooled), [f0, f1, f2, f3]


def _resnet_factory(depth: int):
    def factory(num_outputs: int, normalization=None, **kwargs) -> OODNet:
        return CifarResNet(num_outputs=num_outputs, normalization=normalization, depth=depth, **kwargs)

    factory.__name__ = factory.__qualname__ = f"resnet{depth}"
    factory.__doc__ = (
        f"CIFAR ResNet-{depth} with option-A shortcuts (He et al. 2016; akamaster/pytorch_resnet_cifar10)."
    )
    return factory


resnet20 = register_arch("resnet20", summary="CIFAR ResNet-20, option-A shortcut (~0.27 M)")(_resnet_factory(20))
resnet32 = register_arch("resnet32", summary="CIFAR ResNet-32, option-A shortcut (~0.46 M)")(_resnet_factory(32))
resnet44 = register_arch("resnet44", summary="CIFAR ResNet-44, option-A shortcut (~0.66 M)")(_resnet_factory(44))
resnet56 = register_arch("resnet56", summary="CIFAR ResNet-56, option-A shortcut (~0.85 M)")(_resnet_factory(56))


def _infer_depth(state: Mapping[str, torch.Tensor]) -> int:
    """Depth 6n+2 from the number of blocks in `layer1` of a state dict (keys without `module.`)."""
    blocks = {int(m.group(1)) for key in state if (m := re.match(r"layer1\.(\d+)\.", key))}
    if not blocks:
        raise ValueError("no 'layer1.<i>.' keys")
    return 6 * (max(blocks) + 1) + 2


def load_pretrained_resnet(path: str | Path, arch: str | None = None, num_outputs: int | None = None) -> OODNet:
    """Load akamaster's released CIFAR-10 ResNet weights into a `CifarResNet` with ImageNet normalisation inside.

    The file is a legacy torch pickle `{'state_dict': ..., 'best_prec1': ...}` whose keys carry the `module.`
    prefix of `nn.DataParallel`. It is read with `torch.load(weights_only=True)`: it holds only tensors, an
    OrderedDict and a float, which the restricted unpickler accepts (no pickle code runs).

    Args:
        path: the `.th` file (e.g. `resnet20-12fca82f.th`).
        arch: "resnet20", "resnet32", "resnet44" or "resnet56"; None infers the depth from the state dict. A
            given arch that does not match the file is an error.
        num_outputs: head size; None keeps the checkpoint's (10). A larger head (e.g. 11 for a K+1 method)
            copies the checkpoint's rows into the first outputs and initialises the extra rows as the
            architecture does (kaiming-normal weight, PyTorch's default uniform bias), so the first 10 logits
            equal those of the 10-class model. A smaller head is an error (it would drop classes).

    Returns:
        the model in eval mode (BatchNorm uses the trained running statistics); call `.train()` to fine-tune.

    Raises:
        CheckpointError: missing, truncated or unreadable file, or a state dict that does not fit the
            architecture (the message names the path, what was expected and what was found).
    """
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"checkpoint {path} not found (expected an akamaster CIFAR ResNet '.th' file)")
    try:
        ckpt = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # truncated pickles raise EOFError, RuntimeError or UnpicklingError
        raise CheckpointError(
            f"cannot read checkpoint {path} (expected a torch pickle of tensors with 'state_dict'; the file may "
            f"be truncated, not a torch checkpoint, or hold objects that weights_only loading refuses): "
            f"{type(exc).__name__}: {exc}"
        ) from exc
    state = ckpt.get("state_dict", ckpt) if isinstance(ckpt, Mapping) else None
    if not isinstance(state, Mapping) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        found = sorted(ckpt)[:5] if isinstance(ckpt, Mapping) else type(ckpt).__name__
        raise CheckpointError(f"checkpoint {path}: expected a dict with a tensor 'state_dict', found {found}")
    state = {k.removeprefix("module."): v for k, v in state.items()}

    try:
        found_depth = _infer_depth(state)
    except ValueError:
        raise CheckpointError(
            f"checkpoint {path}: expected a CIFAR ResNet state dict (keys 'layer1.<i>....'), "
            f"found keys {sorted(state)[:5]}..."
        ) from None
    if arch is not None:
        if arch not in {f"resnet{d}" for d in _DEPTHS}:
            raise CheckpointError(f"checkpoint {path}: arch must be one of resnet20/32/44/56, got {arch!r}")
        if arch != f"resnet{found_depth}":
            raise CheckpointError(f"checkpoint {path}: expected {arch}, found a ResNet-{found_depth} state dict")
    if "linear.weight" not in state or state["linear.weight"].ndim != 2:
        raise CheckpointError(f"checkpoint {path}: expected a 'linear.weight' matrix, found none")
    ckpt_outputs = state["linear.weight"].shape[0]
    num_outputs = ckpt_outputs if num_outputs is None else num_outputs
    if num_outputs < ckpt_outputs:
        raise CheckpointError(
            f"checkpoint {path}: has {ckpt_outputs} outputs, cannot load into a smaller head of {num_outputs}"
        )

    model = CifarResNet(num_outputs=num_outputs, normalization=IMAGENET_NORMALIZATION, depth=found_depth)
    if num_outputs > ckpt_outputs:
        # Keep the fresh (architecture-initialised) rows for the extra outputs; copy the trained ones on top.
        for name in ("linear.weight", "linear.bias"):
            merged = model.state_dict()[name].clone()
            merged[:ckpt_outputs] = state[name]
            state[name] = merged
    # The checkpoint has no normalisation buffers: they come from the model (ImageNet statistics).
    state.update({k: v for k, v in model.state_dict().items() if k.startswith("normalize.")})
    try:
        result = model.load_state_dict(state, strict=False)
    except RuntimeError as exc:  # shape mismatches
        raise CheckpointError(f"checkpoint {path}: does not fit CIFAR ResNet-{found_depth}: {exc}") from exc
    # Old checkpoints predate BatchNorm's `num_batches_tracked`; it is a counter that does not affect eval.
    missing = [k for k in result.missing_keys if not k.endswith("num_batches_tracked")]
    if missing or result.unexpected_keys:
        raise CheckpointError(
            f"checkpoint {path}: does not fit CIFAR ResNet-{found_depth}: missing keys {missing}, "
            f"unexpected keys {result.unexpected_keys}"
        )
    return model.eval()  # ready to score; call .train() to fine-tune
