"""``retrofit``: one call that dispatches on the model's library."""
from __future__ import annotations

from torch import nn

from ._imports import loaded


def retrofit(model: nn.Module, attention: str = "guided", level: int | str = -1,
             guide_level: int | str = -2, combine: str | None = None,
             **block_kwargs) -> nn.Module:
    """Insert a guided attention block into another library's segmentation model, in place.

    ``model = retrofit(model)`` puts ``ggnet_fast.nn.GuidedNonLocal`` (``combine="joint"``)
    on the deepest backbone feature ``[B, C, H, W]``, guided by the next shallower one
    ``[B, Cg, H', W']`` (resized to ``H x W``), and returns ``model``.  Its residual weight
    gamma starts at 0, so the model computes exactly what it did until it trains.

    Dispatch:

    * an ``segmentation_models_pytorch`` model -> :func:`retrofit_smp` (levels index the
      encoder's feature list, ``model.encoder.out_channels``);
    * a timm feature backbone (``timm.create_model(..., features_only=True)``) ->
      :func:`retrofit_timm` (levels index ``model.feature_info``);
    * a torchvision ``DeepLabV3`` / ``FCN`` / ``LRASPP`` -> :func:`retrofit_torchvision`
      (levels index or name the backbone's outputs, ``"out"``, ``"aux"``, ``"low"``,
      ``"high"``).

    Args:
        attention: a name of :data:`ATTENTIONS` (``"guided"``, ``"guided-product"``).
        level: the feature the block is applied to (default: the deepest).
        guide_level: the feature that guides it (default: the next shallower).
        combine: the block's combine mode; ``None`` is the attention's default
            (``"joint"`` for ``"guided"``, ``"product"`` for ``"guided-product"``).
        **block_kwargs: passed to the block factory (``key_channels``, ``backend``,
            ``resize_guide`` (default True), ...).

    Raises ``TypeError`` for an unsupported model, ``ValueError`` for a level the model
    does not have (naming the available ones and their channels) or an unknown attention.
    """
    kwargs = dict(attention=attention, level=level, guide_level=guide_level, combine=combine,
                  **block_kwargs)
    smp = loaded("segmentation_models_pytorch")
    if smp is not None and isinstance(model, smp.base.SegmentationModel):
        from .smp_models import retrofit_smp
        return retrofit_smp(model, **kwargs)
    if loaded("timm") is not None:
        from .timm_backbones import is_timm_feature_model, retrofit_timm
        if is_timm_feature_model(model):
            return retrofit_timm(model, **kwargs)
    if loaded("torchvision.models.segmentation") is not None:
        from .torchvision_models import retrofit_torchvision, torchvision_classes
        if isinstance(model, torchvision_classes()):
            return retrofit_torchvision(model, **kwargs)
    raise TypeError(
        f"retrofit does not support {type(model).__module__}.{type(model).__name__}; "
        "supported: segmentation_models_pytorch models (Unet, UnetPlusPlus, FPN, DeepLabV3, "
        "DeepLabV3Plus, Linknet, PSPNet, MAnet, PAN, UPerNet, Segformer, DPT), timm "
        "feature backbones (timm.create_model(..., features_only=True)) and torchvision "
        "segmentation models (deeplabv3_*, fcn_*, lraspp_*)")
