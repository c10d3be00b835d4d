"""GG-Net (Xue et al., "Global guidance network for breast lesion segmentation in
ultrasound images", MedIA 2021): the network, for every preset and ablation variant.

Data flow (strides relative to the input; ``docs/model.md`` has the figure)::

    images -> backbone stages s0 (2), s1 (4), s2 (8), s3 (16)
    s3 -> ASPP (16) -> resize to the GGB stride -> GGB(x, guide) -> resize to 4
    s0..s3 -> 1x1 reductions -> MLIF guidance map at the GGB stride     (guided variants)
    cat(x, 1x1(s1) -> 48 ch) -> 3x3, 3x3, 1x1 -> logits (4) -> input size [-> BD]
    reductions -> 1x1 side heads -> input size -> BD -> side logits, boundary maps
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from ..nn import GlobalGuidanceBlock
from ..nn.backend_switch import set_attention_backend
from ..nn.layers import check_feature_map, check_options, conv_bn_relu
from .ablation_blocks import ChannelMeanBlock, ChannelNonLocalBlock, MeanPoolBlock, NonLocalBlock
from .aspp import build_aspp
from .backbone import STAGE_STRIDES, ResNetStages
from .boundary import BoundaryDetection
from .config import GGNetConfig
from .guidance import MultiLayerGuidance, StageReduction


@dataclass
class GGNetOutput:
    """What :class:`GGNet` returns in full mode.

    logits:      ``[B, 1, H, W]`` final segmentation logits at the input size.
    side_logits: side segmentation logits of the four CNN layers (stem, layer1, layer2,
                 layer3), each ``[B, 1, H, W]``; ``()`` when the variant has no side BD.
    boundaries:  boundary maps ``[B, 1, H, W]``: the side ones in the same order, then the
                 final output's when BD runs on the output; ``()`` when there are none or
                 the variant is not boundary-supervised.
    """

    logits: torch.Tensor
    side_logits: tuple[torch.Tensor, ...] = ()
    boundaries: tuple[torch.Tensor, ...] = ()


# A pytree node, so torch.export / ONNX export can flatten the full output (docs/export.md).
torch.export.register_dataclass(GGNetOutput,
                                serialized_type_name="ggnet_fast.models.ggnet.GGNetOutput")


def _resize(x: torch.Tensor, size) -> torch.Tensor:
    size = tuple(size)
    if tuple(x.shape[-2:]) == size:
        return x
    return F.interpolate(x, size=size, mode="bilinear", align_corners=False)


def _build_block(kind: str | None, which: str, config: GGNetConfig):
    """The spatial/channel entry of :class:`GlobalGuidanceBlock` for a variant."""
    c = config.aspp_channels
    if kind is None:
        return None
    if which == "spatial":
        if kind == "guided":
            return {"key_channels": config.key_channels,
                    "guide_key_channels": config.guide_key_channels,
                    "combine": config.spatial_combine, "residual": config.residual,
                    "key_bias": False}
        if kind == "plain":
            return NonLocalBlock(c, key_channels=config.key_channels, residual=config.residual)
        if kind == "gap":
            return MeanPoolBlock(c, residual=config.residual)
    else:
        if kind == "guided":
            return {"use_se": config.use_se, "se_reduction": config.se_reduction,
                    "combine": config.channel_combine, "stabilize": config.channel_stabilize,
                    "gram_normalization": config.gram_normalization,
                    "residual": config.residual}
        if kind == "plain":
            return ChannelNonLocalBlock(c, stabilize=config.channel_stabilize,
                                        residual=config.residual)
        if kind == "mean":
            return ChannelMeanBlock(c, residual=config.residual)
    raise ValueError(f"unknown {which} block kind {kind!r}")


class GGNet(nn.Module):
    """GG-Net for binary segmentation; build it with :func:`ggnet_fast.models.build_ggnet`.

    Args:
        config: a validated :class:`GGNetConfig`.
        weights: backbone weights (``None``, a state-dict path, a torchvision weights enum).
        backend: the attention operators' backend (``"auto"``, ``"reference"``...): how
            the model runs, not part of ``config``; :meth:`set_backend` switches it.

    ``forward(images)`` takes ``[B, 3, H, W]`` (ImageNet-normalised) and returns a
    :class:`GGNetOutput`; ``forward(images, final_only=True)`` returns only the final
    logits ``[B, 1, H, W]`` (and skips the side heads).
    """

    def __init__(self, config: GGNetConfig, weights=None, backend: str = "auto") -> None:
        super().__init__()
        config.validate()
        check_options(backend=backend)
        self._config = config
        spec = config.spec
        self.backbone = ResNetStages(config.backbone, weights)
        c0, c1, c2, c3 = self.backbone.channels
        self.stage_index = STAGE_STRIDES.index(config.ggb_stride)
        self.aspp = build_aspp(c3, config.aspp_channels, config.aspp_dilations)

        needs_guide = "guided" in (spec.spatial, spec.channel)
        self.reduce = (StageReduction(self.backbone.channels, config.reduced_channels)
                       if needs_guide or spec.side_bd else None)
        self.guidance = (MultiLayerGuidance(4, config.reduced_channels, config.guide_channels)
                         if needs_guide else None)
        if spec.spatial is None and spec.channel is None:
            self.ggb = None
        else:
            self.ggb = GlobalGuidanceBlock(
                config.aspp_channels, config.guide_channels,
                spatial=_build_block(spec.spatial, "spatial", config),
                channel=_build_block(spec.channel, "channel", config),
                backend=backend)

        self.low_level = conv_bn_relu(c1, config.low_level_channels, 1)
        width = config.aspp_channels
        self.decoder = nn.Sequential(
            nn.Conv2d(width + config.low_level_channels, width, 3, padding=1, bias=False),
            nn.BatchNorm2d(width), nn.ReLU(), nn.Dropout(0.5),
            nn.Conv2d(width, width, 3, padding=1, bias=False),
            nn.BatchNorm2d(width), nn.ReLU(), nn.Dropout(0.1),
            nn.Conv2d(width, 1, 1),
        )
        self.side_heads = (nn.ModuleList(nn.Conv2d(config.reduced_channels, 1, 1) for _ in range(4))
                           if spec.side_bd else None)
        self.bd = (BoundaryDetection(config.boundary_form)
                   if spec.side_bd or config.output_bd else None)
        self._init_weights([self.aspp, self.low_level, self.decoder])
        if config.ggb_init == "kaiming":
            # The released Decoder._init_weight() runs after its guidance block is built:
            # every conv of the block and the guidance map's last 1x1 conv get
            # kaiming_normal_ weights (biases keep PyTorch's default initialisation).
            roots = [self.ggb, self.guidance.fuse[-1] if self.guidance is not None else None]
            self._init_weights([r for r in roots if r is not None], zero_bias=False)

    @staticmethod
    def _init_weights(modules, zero_bias: bool = True) -> None:
        for root in modules:
            for m in root.modules():
                if isinstance(m, nn.Conv2d):
                    nn.init.kaiming_normal_(m.weight, nonlinearity="relu")
                    if m.bias is not None and zero_bias:
                        nn.init.zeros_(m.bias)

    @property
    def config(self) -> dict:
        """JSON-serialisable; ``build_ggnet(**model.config)`` rebuilds this architecture."""
        return self._config.to_dict()

    @property
    def weights_source(self) -> str | None:
        """Where the backbone weights came from (``None``: random initialisation)."""
        return self.backbone.weights_source

    def set_backend(self, backend: str) -> "GGNet":
        """Switch the attention operators' backend (``"auto"``, ``"reference"``, ...)."""
        return set_attention_backend(self, backend)

    def forward(self, images: torch.Tensor, final_only: bool = False):
        check_feature_map("images", images, 3)
        spec = self._config.spec
        size = images.shape[-2:]
        stages = self.backbone(images)
        x = self.aspp(stages[3])
        reduced = self.reduce(stages) if self.reduce is not None else None
        if self.ggb is not None:
            ggb_size = stages[self.stage_index].shape[-2:]
            guide = self.guidance(reduced, ggb_size) if self.guidance is not None else None
            x = self.ggb(_resize(x, ggb_size), guide)
        low = self.low_level(stages[1])
        x = _resize(x, low.shape[-2:])
        logits = _resize(self.decoder(torch.cat([x, low], dim=1)), size)
        final_edge = None
        if self._config.output_bd:
            logits, final_edge = self.bd(logits)
        if final_only:
            return logits
        sides, boundaries = [], []
        if self.side_heads is not None:
            # released: every side map goes to layer-1 size first (daf_ds.py), then to the
            # input size; 1x1 heads commute with bilinear resizing, two resizes do not
            via = stages[1].shape[-2:] if self._config.side_resize == "stride4" else None
            for head, r in zip(self.side_heads, reduced):
                side_logits = head(r)
                if via is not None and side_logits.shape[-2:] != via:
                    side_logits = _resize(side_logits, via)
                side, edge = self.bd(_resize(side_logits, size))
                sides.append(side)
                boundaries.append(edge)
        if final_edge is not None:
            boundaries.append(final_edge)
        if not spec.boundary_supervision:
            boundaries = []
        return GGNetOutput(logits, tuple(sides), tuple(boundaries))

    def extra_repr(self) -> str:
        c = self._config
        return (f"preset={c.preset!r}, variant={c.variant!r}, backbone={c.backbone!r}, "
                f"ggb_stride={c.ggb_stride}")
