"""ggnet_fast: fused guided non-local attention kernels and a GG-Net segmentation package.

Quick start::

    from ggnet_fast import GuidedNonLocal
    block = GuidedNonLocal(256, guide_channels=128)      # x: [B,256,H,W], guide: [B,128,H,W]
    y = block(x, guide)
"""
from . import backends, ops
from .nn import GlobalGuidanceBlock, GuidedChannelAttention, GuidedNonLocal
from .ops import guided_channel_attention, guided_spatial_attention

__version__ = "0.1.0"

__all__ = [
    "GlobalGuidanceBlock",
    "GuidedChannelAttention",
    "GuidedNonLocal",
    "backends",
    "guided_channel_attention",
    "guided_spatial_attention",
    "ops",
]
