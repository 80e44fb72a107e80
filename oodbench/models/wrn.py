"""Wide residual networks (Zagoruyko & Komodakis, BMVC 2016) in the form of the OE / ATOM `WideResNet` code.

The ATOM paper's second architecture (SPEC section 3): WRN-40-4, dropout 0, He init; about 8.97 M parameters with
10 outputs.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from oodbench.models.base import OODNet, he_normal_init
from oodbench.registry import register_arch


class BasicBlock(nn.Module):
    """Pre-activation residual block: BN-ReLU-conv3x3-BN-ReLU-conv3x3, 1x1 conv shortcut when the width changes.

    As in the original WRN code, when the width changes the BN-ReLU pre-activation is shared by the shortcut
    (it sees the activated input); otherwise the identity shortcut sees the raw input.
    """

    def __init__(self, in_planes: int, out_planes: int, stride: int, drop_rate: float = 0.0):
        super().__init__()
        self.bn1 = nn.BatchNorm2d(in_planes)
        self.conv1 = nn.Conv2d(in_planes, out_planes, kernel_size=3, stride=stride, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(out_planes)
        self.conv2 = nn.Conv2d(out_planes, out_planes, kernel_size=3, stride=1, padding=1, bias=False)
        self.drop_rate = drop_rate
        self.equal_in_out = in_planes == out_planes
        # Name `convShortcut` as in the released code so its state dicts load unchanged.
        self.convShortcut = (
            None
            if self.equal_in_out
            else nn.Conv2d(in_planes, out_planes, kernel_size=1, stride=stride, padding=0, bias=False)
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        # In-place ReLU only on fresh BN outputs, never on `x` (it may be a feature map returned to the caller).
        act = F.relu(self.bn1(x), inplace=True)
        out = F.relu(self.bn2(self.conv1(act)), inplace=True)
        if self.drop_rate > 0:
            out = F.dropout(out, p=self.drop_rate, training=self.training)
        out = self.conv2(out)
        shortcut = x if self.convShortcut is None else self.convShortcut(act)
        return shortcut + out


class NetworkBlock(nn.Module):
    """`num_layers` BasicBlocks; the first changes width and stride."""

    def __init__(self, num_layers: int, in_planes: int, out_planes: int, stride: int, drop_rate: float = 0.0):
        super().__init__()
        self.layer = nn.Sequential(
            *[
                BasicBlock(in_planes if i == 0 else out_planes, out_planes, stride if i == 0 else 1, drop_rate)
                for i in range(num_layers)
            ]
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.layer(x)


class WideResNet(OODNet):
    """WRN-depth-widen for 32x32 inputs, as `WideResNet` of the Outlier Exposure / ATOM code.

    conv1 (16 channels) -> 3 groups of (depth - 4) / 6 BasicBlocks (widths 16w, 32w, 64w; strides 1, 2, 2) ->
    BN-ReLU -> 8x8 average pool -> linear. He-normal init: conv weight ~ N(0, 2 / (k * k * out_channels)),
    BN weight 1 bias 0, linear bias 0. Parameter names follow the released code (`block1.layer.0.convShortcut`).

    Args:
        num_outputs: head size (K classes plus the method's extra outputs).
        normalization: per-channel (mean, std) applied inside the model, or None (identity).
        depth: 6n + 4.
        widen: widening factor w.
        drop_rate: dropout between the two convs of a block (0 in the paper).
    """

    def __init__(self, num_outputs: int, normalization=None, depth: int = 40, widen: int = 4, drop_rate: float = 0.0):
        super().__init__(num_outputs, normalization)
        if (depth - 4) % 6 != 0:
            raise ValueError(f"WideResNet depth must be 6n+4, got {depth}")
        n = (depth - 4) // 6
        widths = [16, 16 * widen, 32 * widen, 64 * widen]
        self.conv1 = nn.Conv2d(3, widths[0], kernel_size=3, stride=1, padding=1, bias=False)
        self.block1 = NetworkBlock(n, widths[0], widths[1], 1, drop_rate)
        self.block2 = NetworkBlock(n, widths[1], widths[2], 2, drop_rate)
        self.block3 = NetworkBlock(n, widths[2], widths[3], 2, drop_rate)
        self.bn1 = nn.BatchNorm2d(widths[3])
        self.fc = nn.Linear(widths[3], num_outputs)
        self.n_channels = widths[3]
        self.reset_parameters()

    def reset_parameters(self) -> None:
        """He-normal conv init (fan-out), BN (1, 0), linear bias 0, as in the WRN / OE code."""
        he_normal_init(self)

    def forward_features(self, x: torch.Tensor) -> tuple[torch.Tensor, list[torch.Tensor]]:
        """(logits, [conv1 output, block1 output, block2 output, block3 output]), maps not pooled.

        The Mahalanobis layers for WRN (SPEC section 4; `feature_list` of the released code): block3's output is
        taken before the final BN-ReLU. Shapes for WRN-40-4 on 32x32: [B, 16, 32, 32], [B, 64, 32, 32],
        [B, 128, 16, 16], [B, 256, 8, 8].
        """
        x = self.normalize(x)
        f0 = self.conv1(x)
        f1 = self.block1(f0)
        f2 = self.block2(f1)
        f3 = self.block3(f2)
        out = F.relu(self.bn1(f3), inplace=True)
        pooled = F.avg_pool2d(out, kernel_size=out.shape[-2:]).flatten(1)
        return self.fc(pooled), [f0, f1, f2, f3]


@register_arch("wrn40_4", summary="WideResNet-40-4, dropout 0 (the paper's second network, ~9.0 M params)")
def wrn40_4(num_outputs: int, normalization=None, **kwargs) -> OODNet:
    """WRN-40-4 with dropout 0 and He init (ATOM paper, Appendix B.1 and B.12; SPEC section 3)."""
    return WideResNet(num_outputs=num_outputs, normalization=normalization, depth=40, widen=4, **kwargs)


@register_arch("wrn", summary="WideResNet of any depth (6n+4) and widening factor")
def wrn(num_outputs: int, normalization=None, depth: int = 40, widen: int = 4, **kwargs) -> OODNet:
    """A WideResNet-depth-widen (Zagoruyko & Komodakis 2016); other keywords (`drop_rate`) go to `WideResNet`."""
    return WideResNet(num_outputs=num_outputs, normalization=normalization, depth=depth, widen=widen, **kwargs)
