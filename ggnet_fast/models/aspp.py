"""Atrous spatial pyramid pooling (DeepLabV3/V3+), from torchvision.

torchvision's ``ASPP`` is the block the released code uses: a 1x1 branch, three dilated
3x3 branches and an image-pooling branch (each conv-BN-ReLU, 256 channels), concatenated,
then 1x1 conv-BN-ReLU and dropout 0.5.  Its pooling branch has a BatchNorm over a 1x1
map, so in training mode a batch needs at least two images.
"""
from __future__ import annotations

from collections.abc import Sequence

from torch import nn
from torchvision.models.segmentation.deeplabv3 import ASPP

# Dilations for an output stride of 16 (DeepLabV3+; the released code).
DEFAULT_DILATIONS = (6, 12, 18)


def build_aspp(in_channels: int, out_channels: int = 256,
               dilations: Sequence[int] = DEFAULT_DILATIONS) -> nn.Module:
    """ASPP: ``[B, in_channels, h, w]`` -> ``[B, out_channels, h, w]``."""
    dilations = tuple(int(d) for d in dilations)
    if not dilations or any(d < 1 for d in dilations):
        raise ValueError(f"aspp_dilations must be positive integers, got {dilations}")
    return ASPP(in_channels, dilations, out_channels)
