"""The model, loss and device a :class:`TrainConfig` describes."""
from __future__ import annotations

import torch

from .config import TrainConfig


def build_model(cfg: TrainConfig):
    """GG-Net (``cfg.network == "ggnet"``) or the smp network ``cfg.network`` names."""
    from ..models.networks import is_ggnet

    if not is_ggnet(cfg.network):
        from ..integrations.smp_network import SmpNetwork
        return SmpNetwork(cfg.network, cfg.backbone, retrofit=cfg.retrofit, backend=cfg.backend)
    from ..models import build_ggnet

    return build_ggnet(preset=cfg.preset, variant=cfg.variant, backbone=cfg.backbone,
                       weights=cfg.weights, ggb_stride=cfg.ggb_stride, backend=cfg.backend,
                       **cfg.model_overrides)


def build_loss(cfg: TrainConfig):
    from ..losses import build_loss as build_registered_loss

    return build_registered_loss(cfg.loss, cfg.preset, **cfg.loss_overrides)


def resolve_device(name: str) -> torch.device:
    """The device ``name`` (``--device``) names: ``auto`` is cuda when available, else cpu.
    A name that is no device, or a CUDA device this machine lacks, is a ``ValueError``
    naming it (one line: no CUDA driver traceback)."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        dev = torch.device(name)
    except (RuntimeError, TypeError):
        raise ValueError(f"--device {name!r} is not a device: use auto, cpu, cuda or "
                         f"cuda:N") from None
    if dev.type == "cuda":
        if not torch.cuda.is_available():
            raise ValueError(f"--device {name}: no CUDA device is available on this machine "
                             f"(torch.cuda.is_available() is False); use --device cpu")
        count = torch.cuda.device_count()
        if dev.index is not None and dev.index >= count:
            raise ValueError(f"--device {name}: this machine has {count} CUDA device(s), "
                             f"cuda:0 to cuda:{count - 1}")
    return dev
