"""``GlobalGuidanceBlock``: spatial-wise GGB, then channel-wise GGB (GG-Net Fig. 2)."""
from __future__ import annotations

import torch
from torch import nn

from .layers import check_feature_map, conv_bn_prelu
from .guided_channel import GuidedChannelAttention
from .guided_non_local import GuidedNonLocal


class GlobalGuidanceBlock(nn.Module):
    """Spatial GGB -> (3x3, 1x1 conv-BN-PReLU) -> channel GGB -> (3x3, 1x1) -> 1x1.

    The convolutions between and after the two blocks are those of the released code
    (``DGNLB``); its three unused prediction heads are not reproduced.

    Args:
        in_channels: C of ``x``.
        guide_channels: channels of the guidance map (default ``in_channels``).
        spatial: keyword arguments for :class:`GuidedNonLocal`, or ``None`` to skip it, or
            any ``nn.Module`` called as ``module(x, guide)`` (e.g. an unguided ablation block).
        channel: keyword arguments for :class:`GuidedChannelAttention`, or ``None`` to skip it,
            or any ``nn.Module`` called as ``module(x, guide)``.
        resize_guide, backend: passed to both blocks (when built from keyword arguments).

    Shapes: ``x`` ``[B, C, H, W]``, ``guide`` ``[B, Cg, H', W']`` -> ``[B, C, H, W]``.
    """

    def __init__(
        self,
        in_channels: int,
        guide_channels: int | None = None,
        *,
        spatial: dict | None = None,
        channel: dict | None = None,
        resize_guide: bool = False,
        backend: str = "auto",
    ) -> None:
        super().__init__()
        guide_channels = guide_channels or in_channels
        self.in_channels, self.guide_channels = in_channels, guide_channels
        common = {"resize_guide": resize_guide, "backend": backend}
        self.spatial = (spatial if spatial is None or isinstance(spatial, nn.Module) else
                        GuidedNonLocal(in_channels, guide_channels, **{**common, **spatial}))
        self.spatial_conv = nn.Sequential(conv_bn_prelu(in_channels, in_channels, 3),
                                          conv_bn_prelu(in_channels, in_channels, 1))
        self.channel = (channel if channel is None or isinstance(channel, nn.Module) else
                        GuidedChannelAttention(in_channels, guide_channels,
                                               **{**common, **channel}))
        self.channel_conv = nn.Sequential(conv_bn_prelu(in_channels, in_channels, 3),
                                          conv_bn_prelu(in_channels, in_channels, 1))
        self.fuse = conv_bn_prelu(in_channels, in_channels, 1)

    def forward(self, x: torch.Tensor, guide: torch.Tensor) -> torch.Tensor:
        check_feature_map("x", x, self.in_channels)
        if guide is not None:  # None: unguided ablation blocks
            check_feature_map("guide", guide, self.guide_channels)
        if self.spatial is not None:
            x = self.spatial(x, guide)
        x = self.spatial_conv(x)
        if self.channel is not None:
            x = self.channel(x, guide)
        x = self.channel_conv(x)
        return self.fuse(x)
