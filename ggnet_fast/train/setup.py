"""Build the data splits, model and loss that a :class:`TrainConfig` describes
(shared by training and evaluation so both see the same folds)."""
from __future__ import annotations

import numpy as np
import torch

from ..data import build_source as data_build_source
from ..data import kfold_indices, split_train_val
from .config import TrainConfig


def build_source(cfg: TrainConfig):
    """The dataset ``cfg.data`` names (see :func:`ggnet_fast.data.build_source`)."""
    return data_build_source(cfg.data, cfg.data_root, include_normal=cfg.include_normal,
                             n=cfg.phantom_n, seed=cfg.phantom_seed, size=cfg.phantom_size,
                             size_jitter=cfg.phantom_jitter)


def split_indices(cfg: TrainConfig, source) -> dict[str, np.ndarray]:
    """``{"train", "val", "test"}`` index arrays: k-fold (test = fold ``cfg.fold``,
    stratified by class label) or a seeded hold-out; ``val`` is ``cfg.val_fraction`` of
    the remaining images."""
    n = len(source)
    if cfg.split == "kfold":
        folds = kfold_indices(n, cfg.folds, cfg.fold_seed, labels=source.labels)
        test = folds[cfg.fold]
    else:
        perm = np.random.default_rng(cfg.fold_seed).permutation(n)
        n_test = max(1, int(round(n * cfg.test_fraction)))
        test = np.sort(perm[:n_test])
    rest = np.setdiff1d(np.arange(n), test)
    train, val = split_train_val(rest, cfg.val_fraction, cfg.fold_seed)
    return {"train": train, "val": val, "test": test}


def build_model(cfg: TrainConfig):
    from ..models import build_ggnet

    return build_ggnet(preset=cfg.preset, variant=cfg.variant, backbone=cfg.backbone,
                       weights=cfg.weights, ggb_stride=cfg.ggb_stride, backend=cfg.backend,
                       **cfg.model_overrides)


def build_loss(cfg: TrainConfig):
    from ..losses import GGNetLoss

    return GGNetLoss(preset=cfg.preset, **cfg.loss_overrides)


def resolve_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    dev = torch.device(name)
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise ValueError(f"device {name!r} requested but CUDA is not available")
    return dev
