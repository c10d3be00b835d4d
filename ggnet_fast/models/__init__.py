"""GG-Net: backbone, ASPP, MLIF guidance, global guidance block, boundary detection.

    from ggnet_fast.models import build_ggnet
    model = build_ggnet(preset="paper", variant="full", backbone="resnext101_32x8d")
    out = model(images)          # GGNetOutput(logits, side_logits, boundaries)
"""
from .backbone import BACKBONES, ResNetStages
from .boundary import BOUNDARY_FORMS, BoundaryDetection, boundary_map
from .config import PRESET_OPTIONS, PRESETS, VARIANT_SPECS, VARIANTS, GGNetConfig, VariantSpec
from .ggnet import GGNet, GGNetOutput
from .params import count_parameters, parameter_table, variant_table
from .build import build_ggnet
from .presets import PRESET_TABLE, Preset

__all__ = [
    "BACKBONES", "BOUNDARY_FORMS", "BoundaryDetection", "GGNet", "GGNetConfig", "GGNetOutput",
    "PRESETS", "PRESET_OPTIONS", "PRESET_TABLE", "Preset", "ResNetStages", "VARIANTS",
    "VARIANT_SPECS", "VariantSpec",
    "boundary_map", "build_ggnet", "count_parameters", "parameter_table", "variant_table",
]
