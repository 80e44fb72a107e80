"""DenseNet-BC (Huang et al., CVPR 2017) in the `DenseNet3` form of the ODIN / Outlier Exposure / ATOM code.

The ATOM paper's main architecture (SPEC section 3): DenseNet-BC-100, growth 12, reduction 0.5, bottleneck
layers, dropout 0; channels 24 -> 216 -> 108 -> 300 -> 150 -> 342; final BN-ReLU, 8x8 average pool, linear head.
About 0.77 M parameters with 10 outputs.
"""

from __future__ import annotations

import math
from typing import Literal

import torch
import torch.nn.functional as F
from torch import nn

from oodbench.models.base import OODNet, he_normal_init
from oodbench.registry import register_arch

InitScheme = Literal["standard", "atom-code"]


class BottleneckBlock(nn.Module):
    """BN-ReLU-conv1x1 (to 4 * growth) - BN-ReLU-conv3x3 (to growth), concatenated to the input (DenseNet-BC)."""

    def __init__(self, in_planes: int, growth: int, drop_rate: float = 0.0):
        super().__init__()
        inter_planes = 4 * growth
        self.bn1 = nn.BatchNorm2d(in_planes)
        self.conv1 = nn.Conv2d(in_planes, inter_planes, kernel_size=1, stride=1, padding=0, bias=False)
        self.bn2 = nn.BatchNorm2d(inter_planes)
        self.conv2 = nn.Conv2d(inter_planes, growth, kernel_size=3, stride=1, padding=1, bias=False)
        self.drop_rate = drop_rate

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        # In-place ReLU only on fresh BN outputs: never on `x`, which is concatenated and may be a returned feature.
        out = self.conv1(F.relu(self.bn1(x), inplace=True))
        if self.drop_rate > 0:
            out = F.dropout(out, p=self.drop_rate, training=self.training)
        out = self.conv2(F.relu(self.bn2(out), inplace=True))
        if self.drop_rate > 0:
            out = F.dropout(out, p=self.drop_rate, training=self.training)
        return torch.cat([x, out], 1)


class BasicDenseBlock(nn.Module):
    """BN-ReLU-conv3x3 (to growth), concatenated to the input (DenseNet without bottleneck)."""

    def __init__(self, in_planes: int, growth: int, drop_rate: float = 0.0):
        super().__init__()
        self.bn1 = nn.BatchNorm2d(in_planes)
        self.conv1 = nn.Conv2d(in_planes, growth, kernel_size=3, stride=1, padding=1, bias=False)
        self.drop_rate = drop_rate

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.conv1(F.relu(self.bn1(x), inplace=True))
        if self.drop_rate > 0:
            out = F.dropout(out, p=self.drop_rate, training=self.training)
        return torch.cat([x, out], 1)


class TransitionBlock(nn.Module):
    """BN-ReLU-conv1x1 (compression) followed by 2x2 average pooling."""

    def __init__(self, in_planes: int, out_planes: int, drop_rate: float = 0.0):
        super().__init__()
        self.bn1 = nn.BatchNorm2d(in_planes)
        self.conv1 = nn.Conv2d(in_planes, out_planes, kernel_size=1, stride=1, padding=0, bias=False)
        self.drop_rate = drop_rate

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.conv1(F.relu(self.bn1(x), inplace=True))
        if self.drop_rate > 0:
            out = F.dropout(out, p=self.drop_rate, training=self.training)
        return F.avg_pool2d(out, 2)


class DenseBlock(nn.Module):
    """`num_layers` dense layers; layer i sees `in_planes + i * growth` channels."""

    def __init__(self, num_layers: int, in_planes: int, growth: int, bottleneck: bool, drop_rate: float = 0.0):
        super().__init__()
        block = BottleneckBlock if bottleneck else BasicDenseBlock
        # Attribute name `layer` as in DenseNet3, so state dicts of the released code map one to one.
        self.layer = nn.Sequential(*[block(in_planes + i * growth, growth, drop_rate) for i in range(num_layers)])

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.layer(x)


class DenseNet3(OODNet):
    """DenseNet-BC for 32x32 inputs, as `DenseNet3` of the ODIN / OE / ATOM code (Huang et al. 2017).

    conv1 (3x3, 2 * growth channels) -> dense block 1 -> transition 1 -> dense block 2 -> transition 2 ->
    dense block 3 -> BN-ReLU -> 8x8 average pool -> linear. Parameter names follow the released code
    (`conv1`, `block1.layer.0.bn1`, `trans1`, `bn1`, `fc`), so its checkpoints load after adding the
    `normalize.*` buffers.

    Args:
        num_outputs: head size (K classes plus the method's extra outputs).
        normalization: per-channel (mean, std) applied inside the model, or None (identity, e.g. SVHN).
        depth: total depth; (depth - 4) / 3 layers per dense block, halved with bottlenecks (100 -> 16).
        growth: growth rate k.
        reduction: transition compression factor (0.5 for DenseNet-BC).
        bottleneck: use BottleneckBlocks (DenseNet-BC) instead of single 3x3 layers.
        drop_rate: dropout after each conv (0 in the paper).
        init: "standard" is the He-normal initialisation of DenseNet3 in the ODIN / OE code: every conv
            weight ~ N(0, 2 / (k * k * out_channels)), BN weight 1 and bias 0, linear bias 0 (linear weight keeps
            PyTorch's default). "atom-code" reproduces the released ATOM code (models/densenet.py), whose init
            loop dropped the line `n = k * k * out_channels` and so reuses the stale `n` = layers per dense block
            (16 for depth 100): every conv weight ~ N(0, 2 / 16), i.e. std sqrt(2/16) ~= 0.354 regardless of
            kernel size or width (SPEC section 3, "a scoping quirk"). BN and linear are initialised as in
            "standard".
    """

    def __init__(
        self,
        num_outputs: int,
        normalization=None,
        depth: int = 100,
        growth: int = 12,
        reduction: float = 0.5,
        bottleneck: bool = True,
        drop_rate: float = 0.0,
        init: InitScheme = "standard",
    ):
        super().__init__(num_outputs, normalization)
        if (depth - 4) % 3 != 0 or (bottleneck and (depth - 4) % 6 != 0):
            raise ValueError(f"DenseNet depth must be 3n+4 (6n+4 with bottlenecks), got {depth}")
        if init not in ("standard", "atom-code"):
            raise ValueError(f"unknown DenseNet init {init!r}; expected 'standard' or 'atom-code'")
        n = (depth - 4) // 3
        if bottleneck:
            n //= 2
        self.layers_per_block = n
        self.init_scheme = init

        in_planes = 2 * growth
        self.conv1 = nn.Conv2d(3, in_planes, kernel_size=3, stride=1, padding=1, bias=False)
        self.block1 = DenseBlock(n, in_planes, growth, bottleneck, drop_rate)
        in_planes += n * growth
        out_planes = int(math.floor(in_planes * reduction))
        self.trans1 = TransitionBlock(in_planes, out_planes, drop_rate)
        in_planes = out_planes
        self.block2 = DenseBlock(n, in_planes, growth, bottleneck, drop_rate)
        in_planes += n * growth
        out_planes = int(math.floor(in_planes * reduction))
        self.trans2 = TransitionBlock(in_planes, out_planes, drop_rate)
        in_planes = out_planes
        self.block3 = DenseBlock(n, in_planes, growth, bottleneck, drop_rate)
        in_planes += n * growth
        self.bn1 = nn.BatchNorm2d(in_planes)
        self.fc = nn.Linear(in_planes, num_outputs)
        self.in_planes = in_planes
        self.reset_parameters()

    def reset_parameters(self) -> None:
        """Initialise the weights with the scheme chosen at construction (see the class docstring)."""
        # "atom-code": the released code's fan is the stale loop variable (layers per block)
        he_normal_init(self, self.layers_per_block if self.init_scheme == "atom-code" else None)

    def forward_features(self, x: torch.Tensor) -> tuple[torch.Tensor, list[torch.Tensor]]:
        """(logits, [conv1 output, after trans1, after trans2, after the final BN-ReLU]), maps not pooled.

        These are the four layers the Mahalanobis detector scores for DenseNet (SPEC section 4; `feature_list`
        of the released code). Shapes for 32x32 inputs and DenseNet-BC-100-12: [B, 24, 32, 32], [B, 108, 16, 16],
        [B, 150, 8, 8], [B, 342, 8, 8].
        """
        x = self.normalize(x)
        f0 = self.conv1(x)
        f1 = self.trans1(self.block1(f0))
        f2 = self.trans2(self.block2(f1))
        f3 = F.relu(self.bn1(self.block3(f2)), inplace=True)
        # 8x8 pool in the released code; a whole-map pool is the same for 32x32 inputs and sane for others.
        pooled = F.avg_pool2d(f3, kernel_size=f3.shape[-2:]).flatten(1)
        return self.fc(pooled), [f0, f1, f2, f3]


@register_arch(
    "densenet100", options=("init",), summary="DenseNet-BC-100, growth 12 (the paper's main network, ~0.77 M params)"
)
def densenet100(num_outputs: int, normalization=None, **kwargs) -> OODNet:
    """DenseNet-BC-100 with growth 12, reduction 0.5, dropout 0 (ATOM paper, Appendix B.1; SPEC section 3).

    Extra keyword arguments (e.g. `init="atom-code"`, `drop_rate`) go to `DenseNet3`; for another depth or growth
    use `densenet`.
    """
    return DenseNet3(num_outputs=num_outputs, normalization=normalization, depth=100, growth=12, **kwargs)


@register_arch(
    "densenet", options=("init",), summary="DenseNet-BC of any depth / growth (DenseNet3 of the ODIN / OE code)"
)
def densenet(num_outputs: int, normalization=None, depth: int = 100, growth: int = 12, **kwargs) -> OODNet:
    """A DenseNet3 of the given `depth` and `growth` (Huang et al. 2017); other keywords go to `DenseNet3`."""
    return DenseNet3(num_outputs=num_outputs, normalization=normalization, depth=depth, growth=growth, **kwargs)
