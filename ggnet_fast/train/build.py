"""The model, loss and device a :class:`TrainConfig` describes."""
from __future__ import annotations

import torch

from .config import TrainConfig


def build_model(cfg: TrainConfig):
    from ..models import build_ggnet

    return build_ggnet(preset=cfg.preset, variant=cfg.variant, backbone=cfg.backbone,
                       weights=cfg.weights, ggb_stride=cfg.ggb_stride, backend=cfg.backend,
                       **cfg.model_overrides)


def build_loss(cfg: TrainConfig):
    from ..losses import build_loss as build_registered_loss

    return build_registered_loss(cfg.loss, cfg.preset, **cfg.loss_overrides)


def resolve_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    dev = torch.device(name)
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise ValueError(f"device {name!r} requested but CUDA is not available")
    return dev
