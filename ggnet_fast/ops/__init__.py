"""Public operators: ``guided_spatial_attention`` and ``guided_channel_attention``."""
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
]
