"""Presets, ablation variants and the resolved configuration of a GG-Net.

A model is described by a preset (which side of every paper-vs-released difference),
a variant (which components exist: Table 1-3 of the paper, the GAP and pooled ablations
and the joint softmax) and
keyword overrides of single options.  :class:`GGNetConfig` is the resolved result;
``dataclasses.asdict`` of it is JSON-serialisable and ``build_ggnet(**that)`` rebuilds
the same architecture.
"""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field

from .backbone import BACKBONES, STAGE_STRIDES
from .boundary import BOUNDARY_FORMS
from .presets import PRESET_TABLE, PRESETS
from .presets import preset as preset_row

# The model rows of the preset table (models/presets.py), by preset name.
PRESET_OPTIONS: dict[str, dict] = {name: p.model for name, p in PRESET_TABLE.items()}


@dataclass(frozen=True)
class VariantSpec:
    """Which components a variant has.

    spatial: ``None``, ``"plain"`` (SNLB), ``"guided"`` (spatial GGB) or ``"gap"``.
    channel: ``None``, ``"plain"`` (CNLB), ``"guided"`` (channel GGB) or ``"mean"``.
    side_bd: side outputs with BD modules on the four CNN layers.
    output_bd: BD on the final output: ``True``, ``False`` or ``"preset"`` (``bd_on_output``).
    boundary_supervision: return the boundary maps (so the loss supervises them).
    options: model options the variant implies, applied over the preset's (explicit
        overrides still win), e.g. ``{"spatial_combine": "joint"}``.
    """

    spatial: str | None
    channel: str | None
    side_bd: bool = False
    output_bd: bool | str = False
    boundary_supervision: bool = True
    description: str = ""
    options: dict = field(default_factory=dict)


VARIANT_SPECS: dict[str, VariantSpec] = {
    "baseline": VariantSpec(None, None, description="DeepLabV3+ (Table 1, row 1)"),
    "snlb": VariantSpec("plain", None, description="+ spatial non-local block (row 2)"),
    "cnlb": VariantSpec(None, "plain", description="+ channel non-local block (row 3)"),
    "snlb+guidance": VariantSpec("guided", None, description="+ spatial GGB (row 4)"),
    "cnlb+guidance": VariantSpec(None, "guided", description="+ channel GGB (row 5)"),
    "snlb+cnlb": VariantSpec("plain", "plain", description="both blocks, unguided (row 6)"),
    "ggb": VariantSpec("guided", "guided", description="spatial + channel GGB, no BD (row 7)"),
    "full": VariantSpec("guided", "guided", side_bd=True, output_bd="preset",
                        description="GG-Net: GGB + BD (row 8)"),
    "bd-output": VariantSpec("guided", "guided", output_bd=True,
                             description="BD on the output branch only (Table 2, Ours-BD)"),
    "no-boundary-supervision": VariantSpec(
        "guided", "guided", side_bd=True, output_bd="preset", boundary_supervision=False,
        description="BD without boundary loss (Table 3, Ours-ADS)"),
    "gap": VariantSpec("gap", "guided", side_bd=True, output_bd="preset",
                       description="full, spatial GGB replaced by mean pooling of mu (ours)"),
    "pooled": VariantSpec("gap", "mean", side_bd=True, output_bd="preset",
                          description="full, both GGBs replaced by their pooled means: mean "
                                      "pooling of mu and the channel mean; no guidance "
                                      "map (ours)"),
    "joint": VariantSpec("guided", "guided", side_bd=True, output_bd="preset",
                         options={"spatial_combine": "joint"},
                         description="full, spatial GGB with the joint softmax(a + b) (ours)"),
}
VARIANTS = tuple(VARIANT_SPECS)

_CHOICES = {
    "spatial_combine": ("product", "matmul", "joint"),
    "channel_combine": ("product", "matmul"),
    "channel_stabilize": (None, "max-minus"),
    "residual": ("learnable", "fixed"),
    "boundary_form": BOUNDARY_FORMS,
    "gram_normalization": ("none", "positions"),
    "ggb_init": ("pytorch", "kaiming"),
    "side_resize": ("direct", "stride4"),
}


@dataclass
class GGNetConfig:
    """Everything that defines a GG-Net architecture (see ``docs/model.md``)."""

    preset: str = "paper"
    variant: str = "full"
    backbone: str = "resnext101_32x8d"
    weights: None = None            # never stored: the architecture does not depend on it
    ggb_stride: int = 8
    spatial_combine: str = "product"
    channel_combine: str = "product"
    channel_stabilize: str | None = None
    residual: str = "fixed"
    use_se: bool = True
    boundary_form: str = "paper"
    bd_on_output: bool = False
    key_channels: int | None = None
    guide_key_channels: int | None = None
    se_reduction: int = 2
    gram_normalization: str = "none"
    ggb_init: str = "pytorch"
    side_resize: str = "direct"
    aspp_channels: int = 256
    aspp_dilations: list = field(default_factory=lambda: [6, 12, 18])
    reduced_channels: int = 128
    guide_channels: int = 256
    low_level_channels: int = 48

    @property
    def spec(self) -> VariantSpec:
        return VARIANT_SPECS[self.variant]

    @property
    def output_bd(self) -> bool:
        spec = self.spec
        return self.bd_on_output if spec.output_bd == "preset" else bool(spec.output_bd)

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    def validate(self) -> None:
        if self.preset not in PRESETS:
            raise ValueError(f"preset must be one of {list(PRESETS)}, got {self.preset!r}")
        if self.variant not in VARIANT_SPECS:
            raise ValueError(f"variant must be one of {list(VARIANTS)}, got {self.variant!r}")
        if self.backbone not in BACKBONES:
            raise ValueError(f"backbone must be one of {list(BACKBONES)}, got {self.backbone!r}")
        if self.ggb_stride not in STAGE_STRIDES:
            raise ValueError(f"ggb_stride must be one of {list(STAGE_STRIDES)}, "
                             f"got {self.ggb_stride!r}")
        for name, choices in _CHOICES.items():
            if getattr(self, name) not in choices:
                raise ValueError(f"{name} must be one of {list(choices)}, "
                                 f"got {getattr(self, name)!r}")
        for name in ("use_se", "bd_on_output"):
            if not isinstance(getattr(self, name), bool):
                raise TypeError(f"{name} must be a bool, got {getattr(self, name)!r}")
        for name in ("se_reduction", "aspp_channels", "reduced_channels", "guide_channels",
                     "low_level_channels"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"{name} must be a positive int, got {value!r}")
        for name in ("key_channels", "guide_key_channels"):
            value = getattr(self, name)
            bad = isinstance(value, bool) or not isinstance(value, int) or value < 1
            if value is not None and bad:
                raise ValueError(f"{name} must be None or a positive int, got {value!r}")


def resolve_config(preset: str = "paper", variant: str = "full",
                   backbone: str = "resnext101_32x8d", ggb_stride: int | None = None,
                   **overrides) -> GGNetConfig:
    """Preset defaults, then explicit arguments and ``overrides``; validated. The
    architecture only: which backend runs it is chosen when it is built or run."""
    defaults = preset_row(preset).model  # ValueError naming the presets if unknown
    known = {f.name for f in dataclasses.fields(GGNetConfig)}
    unknown = sorted(set(overrides) - known)
    if unknown:
        raise TypeError(f"unknown GG-Net option(s) {unknown}; known: {sorted(known)}")
    implied = VARIANT_SPECS[variant].options if variant in VARIANT_SPECS else {}
    values = {**defaults, **implied, "preset": preset, "variant": variant,
              "backbone": backbone}
    if ggb_stride is not None:
        values["ggb_stride"] = ggb_stride
    values.update(overrides)
    values["weights"] = None
    values.pop("backend", None)  # saved by models before the backend left the architecture
    if "aspp_dilations" in values:
        values["aspp_dilations"] = [int(d) for d in values["aspp_dilations"]]
    config = GGNetConfig(**values)
    config.validate()
    return config
