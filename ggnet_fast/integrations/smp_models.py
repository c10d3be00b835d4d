"""Retrofit of segmentation_models_pytorch (smp) models."""
from __future__ import annotations

from torch import nn

from ._imports import require
from .levels import FeatureLevel, resolve_level
from .registry import build_attention
from .slot import FeatureRetrofit, attach


def smp_levels(model: nn.Module) -> list[FeatureLevel]:
    """The feature levels of an smp model's encoder: ``model.encoder(x)`` returns a list
    whose entry ``i`` is ``[B, out_channels[i], H / 2**i, W / 2**i]`` (entry 0 is the input
    image; dilated encoders, DeepLabV3 / DPT / ViT, keep the deeper strides constant)."""
    channels = list(model.encoder.out_channels)
    return [FeatureLevel(i, int(c), "input image" if i == 0 else "")
            for i, c in enumerate(channels)]


def retrofit_smp(model: nn.Module, attention: str = "guided", level: int = -1,
                 guide_level: int = -2, combine: str | None = None, **block_kwargs) -> nn.Module:
    """Insert an attention block on one encoder level of an smp model, in place.

    ``model.encoder`` returns the list of feature maps every smp decoder reads; a forward
    hook on it replaces ``features[level]`` by ``block(features[level],
    features[guide_level])`` (``[B, C, H, W]`` guided by ``[B, Cg, H', W']``, resized to
    ``H x W``), so every architecture whose decoder takes the encoder's features works:
    Unet, UnetPlusPlus, FPN, DeepLabV3, DeepLabV3Plus, Linknet, PSPNet, MAnet, PAN,
    UPerNet, Segformer, DPT.  Level 0 is the input image; the deepest level (``-1``) is
    the one every decoder reads.  The block is registered as ``model.guided_attention``
    (outside ``model.encoder``, so ``freeze_encoder()`` leaves it trainable).

    Args:
        model: an ``smp`` segmentation model (``smp.base.SegmentationModel``).
        attention: a name of :data:`ggnet_fast.integrations.ATTENTIONS`.
        level, guide_level: indices into the encoder's feature list (``out_channels``).
        combine: the block's combine mode (``None``: the attention's default, "joint"
            for "guided").
        **block_kwargs: passed to the block (e.g. ``key_channels``, ``backend``).

    Returns ``model``.  ``ValueError`` for a level the encoder does not have (the message
    lists them with their channels) or an unknown attention; ``TypeError`` for a model
    that is not an smp model.
    """
    smp = require("segmentation_models_pytorch", "retrofit_smp")
    if not isinstance(model, smp.base.SegmentationModel):
        raise TypeError(f"retrofit_smp needs a segmentation_models_pytorch model "
                        f"(smp.base.SegmentationModel), got {type(model).__name__}")
    levels = smp_levels(model)
    target = resolve_level("level", level, levels)
    guide = resolve_level("guide_level", guide_level, levels)
    block = build_attention(attention, target.channels, guide.channels, combine=combine,
                            **block_kwargs)
    attach(model, model.encoder, FeatureRetrofit(block, target.key, guide.key))
    return model

