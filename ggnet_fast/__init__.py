"""ggnet_fast: fused guided non-local attention kernels and a GG-Net segmentation package.

Quick start::

    from ggnet_fast import GuidedNonLocal
    block = GuidedNonLocal(256, guide_channels=128)      # x: [B,256,H,W], guide: [B,128,H,W]
    y = block(x, guide)

The names below are imported on first use (PEP 562), so ``import ggnet_fast.data`` or the
``ggnet`` command's argument errors do not pay for torch, Triton and the compiled
kernels until they need them.
"""
from __future__ import annotations

import importlib

__version__ = "0.1.0"

#: Public name -> (module, attribute or None for the module itself).
_LAZY = {
    "backends": ("ggnet_fast.backends", None),
    "ops": ("ggnet_fast.ops", None),
    "GlobalGuidanceBlock": ("ggnet_fast.nn", "GlobalGuidanceBlock"),
    "GuidedChannelAttention": ("ggnet_fast.nn", "GuidedChannelAttention"),
    "GuidedNonLocal": ("ggnet_fast.nn", "GuidedNonLocal"),
    "guided_channel_attention": ("ggnet_fast.ops", "guided_channel_attention"),
    "guided_spatial_attention": ("ggnet_fast.ops", "guided_spatial_attention"),
}

__all__ = sorted(_LAZY)


def __getattr__(name: str):
    if name not in _LAZY:
        raise AttributeError(f"module 'ggnet_fast' has no attribute {name!r}")
    module, attribute = _LAZY[name]
    value = importlib.import_module(module)
    if attribute is not None:
        value = getattr(value, attribute)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted({*globals(), *_LAZY})
