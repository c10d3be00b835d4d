"""Public operators: ``guided_spatial_attention`` and ``guided_channel_attention``
(contract: ``docs/kernels.md``), and their FLOP count (``flops.spatial_flops``)."""
from .flops import spatial_flops
from .guided_attention import (
    COMBINE_MODES,
    STABILIZE_MODES,
    guided_channel_attention,
    guided_spatial_attention,
)

__all__ = [
    "COMBINE_MODES",
    "STABILIZE_MODES",
    "guided_channel_attention",
    "guided_spatial_attention",
    "spatial_flops",
]
