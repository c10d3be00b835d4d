"""Drop-in torch modules built on the guided attention operators."""
from .global_guidance import GlobalGuidanceBlock
from .guided_channel import GuidedChannelAttention, SqueezeExcitation
from .guided_non_local import GuidedNonLocal

__all__ = ["GlobalGuidanceBlock", "GuidedChannelAttention", "GuidedNonLocal", "SqueezeExcitation"]
