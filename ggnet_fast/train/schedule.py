"""The optimisation schedule of a run: total steps, lr milestones, validation interval,
and the SGD optimizer with its step-decay scheduler."""
from __future__ import annotations

from dataclasses import dataclass

import torch

from .config import TrainConfig


@dataclass(frozen=True)
class Schedule:
    """Steps of one run (``iters_per_epoch`` optimizer steps make an epoch)."""

    iters_per_epoch: int
    total_steps: int
    milestones: tuple          # steps after which the lr is multiplied by ``lr_gamma``
    val_every: int             # steps between validations

    @classmethod
    def from_config(cls, cfg: TrainConfig, iters_per_epoch: int) -> "Schedule":
        """``epochs``: ``cfg.epochs`` epochs, lr step every ``lr_step_epochs`` epochs;
        ``iterations``: ``cfg.iterations`` steps, one lr step at ``lr_step_iters``."""
        if cfg.schedule == "epochs":
            total = cfg.epochs * iters_per_epoch
            milestones = [cfg.lr_step_epochs * iters_per_epoch * k
                          for k in range(1, cfg.epochs // max(cfg.lr_step_epochs, 1) + 1)]
        else:
            total = cfg.iterations
            milestones = [cfg.lr_step_iters] if cfg.lr_step_iters > 0 else []
        return cls(iters_per_epoch, total, tuple(m for m in milestones if 0 < m < total),
                   cfg.val_every or iters_per_epoch)

    def validates_at(self, step: int) -> bool:
        return step % self.val_every == 0 or step >= self.total_steps


def param_groups(model, lr: float, weight_decay: float, bias_lr_mult: float):
    """Two SGD groups: weights, and biases with ``bias_lr_mult`` x lr (released code: 2)."""
    weights, biases = [], []
    for name, p in model.named_parameters():
        if p.requires_grad:
            (biases if name.endswith("bias") else weights).append(p)
    groups = [{"params": weights, "lr": lr, "weight_decay": weight_decay, "name": "weights"}]
    if biases:
        groups.append({"params": biases, "lr": lr * bias_lr_mult, "weight_decay": weight_decay,
                       "name": "biases"})
    return groups


def build_optimizer(model, cfg: TrainConfig, schedule: Schedule):
    """``(SGD, MultiStepLR)`` for ``model`` (unwrapped) under ``schedule``."""
    optimizer = torch.optim.SGD(param_groups(model, cfg.lr, cfg.weight_decay, cfg.bias_lr_mult),
                                lr=cfg.lr, momentum=cfg.momentum)
    scheduler = torch.optim.lr_scheduler.MultiStepLR(optimizer, list(schedule.milestones),
                                                     gamma=cfg.lr_gamma)
    return optimizer, scheduler
