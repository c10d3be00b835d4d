"""segmentation_models_pytorch networks run by ggnet_fast's own pipeline.

``ggnet train --network smp:Unet --backbone resnet18 [--retrofit guided]`` trains an smp
model with the same data, folds, augmentation, loss (the final-output terms of Eq. 6),
schedule, checkpoints and evaluation as GG-Net; :class:`SmpNetwork` gives it GG-Net's
calling convention so every part of the pipeline takes it unchanged.
"""
from __future__ import annotations

import torch
from torch import nn

from ..nn.backend_switch import set_attention_backend
from ..nn.layers import check_feature_map, check_options
from ._imports import require

PREFIX = "smp:"


def architectures() -> dict[str, type]:
    """``{lowercase name: class}`` of smp's architectures (``unet``, ``fpn``, ...)."""
    smp = require("segmentation_models_pytorch", "--network smp:...")
    return dict(smp.MODEL_ARCHITECTURES_MAPPING)


def architecture_of(network: str) -> str:
    """The smp class name a ``network`` string (``"smp:Unet"``, any case) names.
    ``ValueError`` naming the architectures for an unknown one."""
    if not isinstance(network, str) or not network.startswith(PREFIX):
        raise ValueError(f"network must be 'ggnet' or 'smp:<architecture>', got {network!r}")
    known = architectures()
    cls = known.get(network[len(PREFIX):].lower())
    if cls is None:
        names = ", ".join(PREFIX + c.__name__ for c in known.values())
        raise ValueError(f"network {network!r}: segmentation_models_pytorch has no such "
                         f"architecture; choose one of {names}")
    return cls.__name__


def check_smp_network(network: str, encoder: str, attention: str | None,
                      image_size: int | None = None) -> None:
    """Every setting of an smp network checked without building it (``ValueError``)."""
    architecture_of(network)
    smp = require("segmentation_models_pytorch", "--network smp:...")
    encoders = smp.encoders.get_encoder_names()
    if encoder not in encoders:
        raise ValueError(f"backbone {encoder!r} is not an encoder of segmentation_models_"
                         f"pytorch; e.g. resnet18, resnet34, resnet50, efficientnet-b0 "
                         f"({len(encoders)} in all: smp.encoders.get_encoder_names())")
    if attention is not None:
        from .registry import ATTENTIONS
        if attention not in ATTENTIONS:
            raise ValueError(f"retrofit must be one of {sorted(ATTENTIONS)} or None, "
                             f"got {attention!r}")
    if image_size is not None and image_size % 32:
        raise ValueError(f"image_size {image_size}: smp encoders reduce the input 32 times, "
                         f"so the image size must be a multiple of 32")


class SmpNetwork(nn.Module):
    """An smp segmentation model with one output channel, from scratch, optionally with a
    guided attention block inserted by :func:`~ggnet_fast.integrations.retrofit` (its
    defaults: deepest encoder level, guided by the next shallower one, joint softmax).

    Args:
        network: ``"smp:<architecture>"`` (``"smp:Unet"``, ``"smp:FPN"``...).
        backbone: an smp encoder name (``"resnet18"``...); randomly initialised.
        retrofit: ``None`` or a name of :data:`~ggnet_fast.integrations.ATTENTIONS`.
        backend: the attention block's operator backend.

    ``forward(images)`` takes ``[B, 3, H, W]`` (H, W multiples of 32) and returns a
    :class:`~ggnet_fast.models.GGNetOutput` with only ``logits`` ``[B, 1, H, W]``;
    ``forward(images, final_only=True)`` returns the logits tensor.
    """

    def __init__(self, network: str = "smp:Unet", backbone: str = "resnet18",
                 retrofit: str | None = None, backend: str = "auto") -> None:
        super().__init__()
        check_options(backend=backend)
        check_smp_network(network, backbone, retrofit)
        name = architecture_of(network)
        self.net = architectures()[name.lower()](encoder_name=backbone, encoder_weights=None,
                                                 in_channels=3, classes=1)
        if retrofit is not None:
            from .smp_models import retrofit_smp
            retrofit_smp(self.net, attention=retrofit, backend=backend)
        self._config = {"network": PREFIX + name, "backbone": backbone, "retrofit": retrofit}

    @property
    def config(self) -> dict:
        """JSON-serialisable; ``SmpNetwork(**model.config)`` rebuilds this architecture."""
        return dict(self._config)

    def set_backend(self, backend: str) -> "SmpNetwork":
        """Switch the attention block's backend (``"auto"``, ``"reference"``, ...)."""
        return set_attention_backend(self, backend)

    def forward(self, images: torch.Tensor, final_only: bool = False):
        from ..models.ggnet import GGNetOutput

        check_feature_map("images", images, 3)
        logits = self.net(images)
        return logits if final_only else GGNetOutput(logits)

    def extra_repr(self) -> str:
        c = self._config
        return f"network={c['network']!r}, backbone={c['backbone']!r}, retrofit={c['retrofit']!r}"
