"""``build_ggnet``: a GG-Net from a preset, a variant and overrides."""
from __future__ import annotations

from .config import resolve_config
from .ggnet import GGNet


def build_ggnet(preset: str = "paper", variant: str = "full", backbone: str = "resnext101_32x8d",
                weights=None, ggb_stride: int | None = None, backend: str = "auto",
                **overrides) -> GGNet:
    """Build a GG-Net.

    Args:
        preset: ``"paper"`` or ``"released"`` (:data:`~ggnet_fast.models.presets.PRESET_TABLE`).
        variant: one of :data:`VARIANTS` (Table 1-3 ablations, ``"gap"``, ``"pooled"``
            and ``"joint"``).
        backbone: ``"resnext101_32x8d"``, ``"resnext50_32x4d"``, ``"resnet18"``, ``"resnet34"``,
            ``"resnet50"`` or ``"resnext101_32x4d"`` (the released code's; no torchvision weights).
        weights: ``None``, a path to a torchvision-format state dict, or a torchvision weights
            enum/name already in torchvision's cache.  Not stored in ``model.config``.
        ggb_stride: 4 (released), 8 (paper), 2 or 16; ``None`` takes the preset's.
        backend: attention operator backend (``"auto"``, ``"reference"``, ``"triton"``...):
            how the model runs, not part of its architecture (not in ``model.config``;
            :meth:`GGNet.set_backend` switches it).
        **overrides: any other field of :class:`~ggnet_fast.models.config.GGNetConfig`
            (``spatial_combine``, ``residual``, ``use_se``, ``boundary_form``, ``key_channels``...).
    """
    config = resolve_config(preset, variant, backbone, ggb_stride, **overrides)
    return GGNet(config, weights=weights, backend=backend)

