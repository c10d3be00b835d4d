"""Training configuration (one JSON-serialisable dataclass) and the two schedule presets.

``paper``:    SGD (momentum 0.9, weight decay 1e-4), batch 4, lr 1e-3, x0.1 every 50
              epochs, 100 epochs, validation each epoch, no early stopping.
``released``: the authors' code: same SGD with 2x lr for biases, 13,400 iterations, lr
              x0.1 at 6,700, validation every ``val_every`` iterations and early stopping
              after 30 validations without a better validation Dice.
"""
from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass, field

SCHEDULES = ("epochs", "iterations")


def preset_schedule(preset: str) -> dict:
    """Schedule fields implied by a model/loss preset."""
    if preset == "paper":
        return dict(schedule="epochs", epochs=100, lr_step_epochs=50, bias_lr_mult=1.0,
                    early_stop_patience=0)
    if preset == "released":
        return dict(schedule="iterations", iterations=13400, lr_step_iters=6700,
                    bias_lr_mult=2.0, early_stop_patience=30)
    raise ValueError(f"preset must be 'paper' or 'released', got {preset!r}")


@dataclass
class TrainConfig:
    """Everything a run needs; saved as ``config.json`` in the run folder."""

    out_dir: str = "runs/ggnet"
    # data
    data: str = "phantom"               # phantom | busi | folder
    data_root: str | None = None
    include_normal: bool = False
    phantom_n: int = 300
    phantom_seed: int = 0
    phantom_size: int = 128
    phantom_jitter: float = 0.0
    split: str = "kfold"                # kfold | holdout
    folds: int = 3
    fold: int = 0
    fold_seed: int = 42
    test_fraction: float = 0.2          # holdout only
    val_fraction: float = 0.1           # of the training part, for model selection
    # model and loss
    preset: str = "paper"
    variant: str = "full"
    backbone: str = "resnext101_32x8d"
    weights: str | None = None
    ggb_stride: int | None = None       # None: the preset's (paper 8, released 4)
    backend: str = "auto"
    model_overrides: dict = field(default_factory=dict)
    loss_overrides: dict = field(default_factory=dict)
    # input
    image_size: int = 256
    rotation: float = 10.0
    hflip: float = 0.5
    # optimisation
    schedule: str = "epochs"            # epochs | iterations
    epochs: int = 100
    lr_step_epochs: int = 50
    iterations: int = 13400
    lr_step_iters: int = 6700
    val_every: int = 0                  # iterations between validations; 0 = once per epoch
    early_stop_patience: int = 0        # validations without gain before stopping; 0 = never
    batch_size: int = 4
    lr: float = 1e-3
    momentum: float = 0.9
    weight_decay: float = 1e-4
    lr_gamma: float = 0.1
    bias_lr_mult: float = 1.0
    # execution
    device: str = "auto"                # auto | cpu | cuda | cuda:N
    amp: str = "auto"                   # auto (on CUDA) | on | off
    workers: int = 2
    seed: int = 0
    deterministic: bool = False
    ckpt_every: int = 0                 # extra mid-epoch checkpoints every N iterations
    log_every: int = 10
    tensorboard: bool = True
    progress: bool = True
    sync_bn: bool = True                # SyncBatchNorm under multi-GPU DDP
    max_steps: int = 0                  # stop (with a checkpoint) after this global step; 0 = off

    def validate(self) -> "TrainConfig":
        if self.data not in ("phantom", "busi", "folder"):
            raise ValueError(f"data must be phantom, busi or folder, got {self.data!r}")
        if self.split not in ("kfold", "holdout"):
            raise ValueError(f"split must be kfold or holdout, got {self.split!r}")
        if self.schedule not in SCHEDULES:
            raise ValueError(f"schedule must be one of {SCHEDULES}, got {self.schedule!r}")
        if self.split == "kfold" and not 0 <= self.fold < self.folds:
            raise ValueError(f"fold must be in [0, {self.folds}), got {self.fold}")
        if self.batch_size < 2:
            raise ValueError(f"batch_size must be >= 2 (batch norm), got {self.batch_size}")
        if self.amp not in ("auto", "on", "off"):
            raise ValueError(f"amp must be auto, on or off, got {self.amp!r}")
        if self.image_size < 32:
            raise ValueError(f"image_size must be >= 32, got {self.image_size}")
        return self

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, d: dict) -> "TrainConfig":
        names = {f.name for f in dataclasses.fields(cls)}
        unknown = set(d) - names
        if unknown:
            raise ValueError(f"unknown config keys: {sorted(unknown)}")
        return cls(**d)

    def save(self, path: str) -> None:
        from .checkpoint import atomic_write_text
        atomic_write_text(path, json.dumps(self.to_dict(), indent=2, sort_keys=True) + "\n")

    @classmethod
    def load(cls, path: str) -> "TrainConfig":
        with open(path, encoding="utf-8") as fh:
            return cls.from_dict(json.load(fh))
