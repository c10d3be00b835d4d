"""The multi-layer integrated feature (MLIF) map: GG-Net's guidance map.

Each of the four stage maps is reduced to ``reduced_channels`` by a 1x1 conv-BN-PReLU,
resized (bilinearly) to one size, concatenated and fused by 3x3, 3x3 and 1x1
conv-BN-PReLU layers to ``out_channels``; a last 1x1 conv-BN-ReLU (the released
decoder's ``conv1`` on the guidance) follows.  The reduced maps are also returned: the
boundary-detection heads predict from them.
"""
from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import nn

from ..nn.layers import conv_bn_prelu, conv_bn_relu


class StageReduction(nn.Module):
    """1x1 conv-BN-PReLU per stage: four maps ``[B, C_i, h_i, w_i]`` -> ``[B, r, h_i, w_i]``."""

    def __init__(self, stage_channels: Sequence[int], reduced_channels: int = 128) -> None:
        super().__init__()
        self.reduce = nn.ModuleList(conv_bn_prelu(c, reduced_channels, 1) for c in stage_channels)

    def forward(self, stages: Sequence[torch.Tensor]) -> list[torch.Tensor]:
        if len(stages) != len(self.reduce):
            raise ValueError(f"expected {len(self.reduce)} stage maps, got {len(stages)}")
        return [layer(s) for layer, s in zip(self.reduce, stages)]


class MultiLayerGuidance(nn.Module):
    """Fuses reduced stage maps into the guidance map.

    Shapes: four maps ``[B, r, h_i, w_i]`` and a target ``size`` ``(h, w)`` ->
    ``[B, out_channels, h, w]``.
    """

    def __init__(self, num_stages: int = 4, reduced_channels: int = 128,
                 out_channels: int = 256) -> None:
        super().__init__()
        self.num_stages = num_stages
        self.fuse = nn.Sequential(
            conv_bn_prelu(num_stages * reduced_channels, out_channels, 3),
            conv_bn_prelu(out_channels, out_channels, 3),
            conv_bn_prelu(out_channels, out_channels, 1),
            conv_bn_relu(out_channels, out_channels, 1),
        )

    def forward(self, reduced: Sequence[torch.Tensor], size: tuple[int, int]) -> torch.Tensor:
        if len(reduced) != self.num_stages:
            raise ValueError(f"expected {self.num_stages} reduced stage maps, got {len(reduced)}")
        resized = [r if tuple(r.shape[-2:]) == tuple(size)
                   else F.interpolate(r, size=size, mode="bilinear", align_corners=False)
                   for r in reduced]
        return self.fuse(torch.cat(resized, dim=1))
