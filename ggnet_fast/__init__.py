"""ggnet_fast: fused guided non-local attention kernels and a GG-Net segmentation package.

Quick start::

    from ggnet_fast import GuidedNonLocal
    block = GuidedNonLocal(256, guide_channels=128)      # x: [B,256,H,W], guide: [B,128,H,W]
    y = block(x, guide)

The names below are imported on first use (PEP 562), so ``import ggnet_fast.data`` or the
``ggnet`` command's argument errors do not pay for torch, Triton and the compiled
kernels until they need them.
"""
from ._lazy import lazy_attributes

__version__ = "0.1.0"

#: Public name -> the submodule that defines it (``backends`` and ``ops`` are submodules).
_WHERE = {"backends": ".backends", "ops": ".ops", "GlobalGuidanceBlock": ".nn",
          "GuidedChannelAttention": ".nn", "GuidedNonLocal": ".nn",
          "guided_channel_attention": ".ops", "guided_spatial_attention": ".ops"}

__all__ = sorted(_WHERE)
__getattr__, __dir__ = lazy_attributes(__name__, _WHERE)
