"""Retrofit of torchvision's segmentation models (deeplabv3_*, fcn_*, lraspp_*)."""
from __future__ import annotations

import torch
from torch import nn

from ._imports import require
from .levels import FeatureLevel, describe_levels, resolve_level
from .registry import build_attention
from .slot import FeatureRetrofit, attach

#: The backbone output a retrofit adds when the model returns no shallower feature to
#: guide by; the hook removes it again, so the model's heads see the original outputs.
GUIDE_KEY = "ggnet_guide"

#: Side of the zero image the backbone is run on once to read its channel counts.
PROBE_SIZE = 64


def torchvision_classes() -> tuple[type, ...]:
    """The supported model classes: ``DeepLabV3``, ``FCN``, ``LRASPP``."""
    segmentation = require("torchvision.models.segmentation", "retrofit_torchvision")
    return segmentation.DeepLabV3, segmentation.FCN, segmentation.LRASPP


def default_guide_layer(backbone: nn.Module) -> str:
    """The backbone stage torchvision's own auxiliary head reads: ``layer3`` of a ResNet,
    ``C2`` (output stride 8) of a MobileNetV3; otherwise the stage before the deepest
    returned one."""
    names = list(backbone.keys())
    strided = [i for i, child in enumerate(backbone.values()) if getattr(child, "_is_cn", False)]
    if strided:                                     # MobileNetV3 (torchvision's aux_pos)
        stages = [0, *strided, len(names) - 1]
        return names[stages[-4]]
    if "layer3" in names:                           # ResNet
        return "layer3"
    deepest = max(names.index(name) for name in backbone.return_layers)
    return names[max(deepest - 1, 0)]


def probe_channels(backbone: nn.Module, size: int = PROBE_SIZE) -> dict[str, int]:
    """Output name -> channels, from one no-grad, eval-mode pass of a zero image
    ``[1, C_in, size, size]`` (train/eval flags restored; BatchNorm statistics untouched)."""
    first_conv = next(m for m in backbone.modules() if isinstance(m, nn.Conv2d))
    weight = first_conv.weight
    modes = {module: module.training for module in backbone.modules()}
    backbone.eval()
    try:
        with torch.no_grad():
            out = backbone(torch.zeros(1, first_conv.in_channels, size, size,
                                       device=weight.device, dtype=weight.dtype))
    finally:
        for module, mode in modes.items():
            module.training = mode
    return {name: int(feature.shape[1]) for name, feature in out.items()}


def torchvision_levels(backbone: nn.Module) -> list[FeatureLevel]:
    """The backbone's outputs in depth order (keys: output names such as ``"out"``,
    ``"aux"``, ``"low"``, ``"high"``; notes: the backbone stage each comes from)."""
    channels = probe_channels(backbone)
    return [FeatureLevel(backbone.return_layers[name], channels[backbone.return_layers[name]],
                         name)
            for name in backbone if name in backbone.return_layers]


def retrofit_torchvision(model: nn.Module, attention: str = "guided", level: int | str = -1,
                         guide_level: int | str = -2, combine: str | None = None,
                         **block_kwargs) -> nn.Module:
    """Insert an attention block on a torchvision segmentation model's backbone output.

    ``model.backbone`` is an ``IntermediateLayerGetter`` returning an ordered dict of
    ``[B, C, H, W]`` maps: ``{"out"}`` or ``{"aux", "out"}`` (DeepLabV3, FCN; aux with
    ``aux_loss=True``) or ``{"low", "high"}`` (LRASPP).  A forward hook on it replaces
    ``out[level]`` by ``block(out[level], out[guide_level])``.  ``level`` and
    ``guide_level`` are indices into these outputs in depth order or their names; the
    defaults put the block on ``"out"`` (``"high"`` for LRASPP) guided by the shallower
    output (``"aux"``, ``"low"``).  When the model returns only ``"out"``, the stage
    torchvision's aux head would read (:func:`default_guide_layer`: ``layer3`` of a
    ResNet) is added to the backbone's ``return_layers`` as ``"ggnet_guide"`` and removed
    from its output by the hook, so the heads see the same keys as before.
    ``guide_level`` may also name any backbone stage (e.g. ``"layer2"``), added the same
    way.  Channels are read from one eval-mode, no-grad pass of a 64x64 zero image.

    The block is registered as ``model.guided_attention``.  Returns ``model``.
    ``ValueError`` for a level that does not exist (the message lists them with their
    channels) or an unknown attention; ``TypeError`` for another model type.
    """
    classes = torchvision_classes()
    getter = require("torchvision.models._utils", "retrofit_torchvision").IntermediateLayerGetter
    if not isinstance(model, classes) or not isinstance(getattr(model, "backbone", None), getter):
        raise TypeError(f"retrofit_torchvision needs a torchvision segmentation model "
                        f"({', '.join(c.__name__ for c in classes)}) whose backbone is an "
                        f"IntermediateLayerGetter, got {type(model).__name__}")
    backbone = model.backbone
    if GUIDE_KEY in backbone.return_layers.values():
        raise ValueError(f"this {type(model).__name__} is already retrofitted")
    extra = _extra_guide_layer(backbone, guide_level)
    if extra is not None:
        backbone.return_layers[extra] = GUIDE_KEY
    try:
        levels = torchvision_levels(backbone)
        target = resolve_level("level", _output_name(backbone, level), levels)
        guide = resolve_level("guide_level", GUIDE_KEY if extra is not None and isinstance(
            guide_level, str) else _output_name(backbone, guide_level), levels)
        if target.key == GUIDE_KEY:
            raise ValueError(f"level={level!r} is only a guide, not read by the model's heads; "
                             "available levels (key, channels): " + describe_levels(
                                 [lv for lv in levels if lv.key != GUIDE_KEY]))
        block = build_attention(attention, target.channels, guide.channels, combine=combine,
                                **block_kwargs)
        drop = (GUIDE_KEY,) if extra is not None else ()
        attach(model, backbone, FeatureRetrofit(block, target.key, guide.key, drop))
    except BaseException:
        if extra is not None:
            del backbone.return_layers[extra]
        raise
    return model


def _extra_guide_layer(backbone: nn.Module, guide_level: int | str) -> str | None:
    """The backbone stage to add as a return layer for the guide, if one is needed: a
    stage named by ``guide_level`` that is not returned, or, for an int ``guide_level``
    when the backbone returns a single output, :func:`default_guide_layer`."""
    if isinstance(guide_level, str):
        if guide_level in backbone and guide_level not in backbone.return_layers:
            return guide_level
        return None
    if len(backbone.return_layers) == 1:
        return default_guide_layer(backbone)
    return None


def _output_name(backbone: nn.Module, level: int | str) -> int | str:
    """``level`` as an output name when it names a returned backbone stage."""
    if isinstance(level, str) and level in backbone.return_layers:
        return backbone.return_layers[level]
    return level
