"""Retrofit of timm feature backbones (``timm.create_model(..., features_only=True)``)."""
from __future__ import annotations

from torch import nn

from ._imports import require
from .levels import FeatureLevel, resolve_level
from .registry import build_attention
from .slot import FeatureRetrofit, attach


def timm_feature_classes() -> tuple[type, ...]:
    """timm's feature-extraction wrappers: FeatureListNet / FeatureDictNet (module
    rewriting), FeatureHookNet (hooks), FeatureGetterNet (``forward_intermediates``, ViTs)
    and FeatureGraphNet (torch.fx)."""
    features = require("timm.models._features", "retrofit_timm")
    classes = [features.FeatureDictNet, features.FeatureHookNet, features.FeatureGetterNet]
    try:
        from timm.models._features_fx import FeatureGraphNet
        classes.append(FeatureGraphNet)
    except ImportError:                     # timm's fx support needs torchvision
        pass
    return tuple(classes)


def is_timm_feature_model(model: nn.Module) -> bool:
    """Whether ``model`` came from ``timm.create_model(..., features_only=True)``: one of
    :func:`timm_feature_classes`, or a model with its own feature mode (EfficientNet,
    MobileNetV3, ... return ``EfficientNetFeatures`` and the like), recognisable by a
    ``feature_info`` that is a ``FeatureInfo`` (a classifier's is a plain list)."""
    feature_info = require("timm.models._features", "retrofit_timm").FeatureInfo
    return (isinstance(model, timm_feature_classes())
            or isinstance(getattr(model, "feature_info", None), feature_info))


def timm_levels(model: nn.Module) -> list[FeatureLevel]:
    """One level per output of a timm feature net, in its order: entry ``i`` is
    ``[B, feature_info.channels()[i], H / reduction[i], W / reduction[i]]``."""
    info = model.feature_info
    return [FeatureLevel(i, int(c), f"{name}, stride {r}")
            for i, (c, r, name) in enumerate(zip(info.channels(), info.reduction(),
                                                 info.module_name()))]


def retrofit_timm(model: nn.Module, attention: str = "guided", level: int = -1,
                  guide_level: int = -2, combine: str | None = None, **block_kwargs) -> nn.Module:
    """Insert an attention block on one output of a timm feature backbone, in place.

    ``model`` is what ``timm.create_model(name, features_only=True)`` returns; its
    ``forward(x)`` returns feature maps ``[B, C_i, H_i, W_i]`` (a list, or a dict for
    ``feature_cls="dict"``), ``C_i = model.feature_info.channels()[i]``.  A forward hook
    on ``model`` replaces output ``level`` by ``block(out[level], out[guide_level])``
    (indices in ``feature_info`` order; the guide is resized to the level's size).

    Every ``features_only`` kind is supported: timm's wrappers (FeatureListNet,
    FeatureDictNet, FeatureHookNet, FeatureGetterNet, FeatureGraphNet) and the models
    with their own feature mode (``EfficientNetFeatures``, ...).

    The block is registered as ``model.guided_attention``.  FeatureListNet /
    FeatureDictNet / FeatureHookNet are ``nn.ModuleDict``s that run their children in
    order, so it is appended as their last child and passes its input through unchanged
    (with ``set_grad_checkpointing()``, timm therefore checkpoints the backbone's last
    stage too, which it otherwise skips).

    Returns ``model``.  ``ValueError`` for a level that does not exist (the message lists
    them with their channels) or an unknown attention; ``TypeError`` for a model that is
    not a timm feature net (a classifier: create it with ``features_only=True``).
    """
    if not is_timm_feature_model(model):
        hint = (" (a timm classifier: create it with features_only=True)"
                if type(model).__module__.startswith("timm.") else "")
        raise TypeError(f"retrofit_timm needs a timm feature backbone "
                        f"(timm.create_model(name, features_only=True)), got "
                        f"{type(model).__name__}{hint}")
    levels = timm_levels(model)
    target = resolve_level("level", level, levels)
    guide = resolve_level("guide_level", guide_level, levels)
    block = build_attention(attention, target.channels, guide.channels, combine=combine,
                            **block_kwargs)
    attach(model, model, FeatureRetrofit(block, target.key, guide.key))
    return model
