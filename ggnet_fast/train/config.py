"""Training configuration: one JSON-serialisable dataclass, saved as ``config.json``.

The preset word (``paper``/``released``) selects the model, loss and schedule rows of the
one preset table (:mod:`ggnet_fast.models.presets`); :func:`preset_schedule` gives the
schedule fields.
"""
from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass, field

from ..data.config import DataConfig, migrate_legacy_keys
from ..fileio import atomic_write_text, read_run_config
from ..models.presets import preset
from ..nn.layers import check_options

SCHEDULES = ("epochs", "iterations")
# Settings of one invocation, never saved with the run (a step limit is not a property of
# the run: a later plain ``--resume`` trains to the end of the schedule).
INVOCATION_FIELDS = ("max_steps",)
AMP_MODES = ("auto", "on", "off")


# Command-line flags whose name is not the field's (``--<field with dashes>``).
FLAGS = {"early_stop_patience": "--early-stop", "log_every": "config.json only"}


def _flag(name: str) -> str:
    return "--" + name.replace("_", "-")


def preset_schedule(name: str) -> dict:
    """Schedule fields implied by preset ``name``."""
    return dict(preset(name).schedule)


@dataclass
class TrainConfig(DataConfig):
    """Everything a run needs: the dataset and split (:class:`DataConfig`'s fields), the
    model and loss, the optimisation schedule and how to execute it."""

    out_dir: str = "runs/ggnet"
    # model and loss
    network: str = "ggnet"              # ggnet, or smp:<architecture> (e.g. smp:Unet)
    retrofit: str | None = None         # smp networks: an attention inserted by retrofit()
    preset: str = "paper"
    variant: str = "full"
    backbone: str = "resnext101_32x8d"
    weights: str | None = None
    ggb_stride: int | None = None       # None: the preset's (paper 8, released 4)
    backend: str = "auto"
    model_overrides: dict = field(default_factory=dict)
    loss: str = "ggnet"                 # a name of ggnet_fast.losses.registered_losses()
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
    tensorboard: bool | None = None    # None: TensorBoard logs when tensorboard is installed
    progress: bool = True
    sync_bn: bool = True                # SyncBatchNorm under multi-GPU DDP
    max_steps: int = 0                  # stop (with a checkpoint) after this global step; 0 = off

    def validate(self) -> "TrainConfig":
        """Check every setting (dataset and split, schedule, model and loss options
        included) without building anything; raises ``ValueError``. Returns ``self``."""
        super().validate()  # the dataset, its root (made absolute) and the split
        if self.schedule not in SCHEDULES:
            raise ValueError(f"schedule must be one of {list(SCHEDULES)}, got {self.schedule!r}")
        self._validate_counts()
        if self.batch_size < 2:
            raise ValueError(f"batch_size must be >= 2 (batch norm), got {self.batch_size}")
        if self.amp not in AMP_MODES:
            raise ValueError(f"amp must be one of {list(AMP_MODES)}, got {self.amp!r}")
        if self.image_size < 32:
            raise ValueError(f"image_size must be >= 32, got {self.image_size}")
        check_options(backend=self.backend)
        self._validate_model_and_loss()
        return self

    def _validate_counts(self) -> None:
        """The schedule's length is at least one step (a run of zero steps would write no
        checkpoint); step counts and intervals are not negative, the lr is positive."""
        length = "epochs" if self.schedule == "epochs" else "iterations"
        minimum = {length: 1, "lr_step_epochs": 0, "lr_step_iters": 0, "val_every": 0,
                   "early_stop_patience": 0, "ckpt_every": 0, "max_steps": 0, "workers": 0,
                   "log_every": 1}
        for name, low in minimum.items():
            value = getattr(self, name)
            if not isinstance(value, int) or isinstance(value, bool) or value < low:
                raise ValueError(f"{name} ({FLAGS.get(name, _flag(name))}) must be an "
                                 f"integer >= {low}, got {value!r}")
        if not self.lr > 0:
            raise ValueError(f"lr (--lr) must be > 0, got {self.lr!r}")

    def _validate_model_and_loss(self) -> None:
        from ..losses import build_loss
        from ..models.config import resolve_config
        from ..models.networks import is_ggnet

        try:
            if is_ggnet(self.network):
                if self.retrofit is not None:
                    raise ValueError("retrofit (--retrofit) inserts a block into an smp "
                                     "network (--network smp:...); GG-Net has its own")
                resolve_config(self.preset, self.variant, self.backbone, self.ggb_stride,
                               **self.model_overrides)
            else:
                self._validate_smp_network()
        except (TypeError, ValueError) as exc:
            raise ValueError(f"invalid model setting: {exc}") from exc
        try:
            build_loss(self.loss, self.preset, **self.loss_overrides)
        except (TypeError, ValueError) as exc:
            raise ValueError(f"invalid loss setting: {exc}") from exc

    @property
    def model_name(self) -> str:
        """What trains, in words: the GG-Net variant, or the smp network (+ retrofit)."""
        from ..models.networks import model_name

        return model_name(self.network, self.variant, self.retrofit)

    def _validate_smp_network(self) -> None:
        """An smp network: its settings, and none of GG-Net's architecture settings."""
        from ..integrations.smp_network import check_smp_network

        check_smp_network(self.network, self.backbone, self.retrofit, self.image_size)
        gg_only = {"variant": self.variant != "full", "ggb_stride": self.ggb_stride is not None,
                   "model_overrides": bool(self.model_overrides),
                   "weights": self.weights is not None}
        given = [_flag(name) if name != "model_overrides" else "--model-opt"
                 for name, set_ in gg_only.items() if set_]
        if given:
            raise ValueError(f"{', '.join(given)} describe GG-Net, not --network "
                             f"{self.network} (trained from scratch); drop them")

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    def run_dict(self) -> dict:
        """:meth:`to_dict` without the :data:`INVOCATION_FIELDS` (what ``config.json`` and
        the checkpoints hold)."""
        return {k: v for k, v in self.to_dict().items() if k not in INVOCATION_FIELDS}

    @classmethod
    def from_dict(cls, d: dict) -> "TrainConfig":
        """From a configuration dict (one written before the dataset registry too)."""
        d = migrate_legacy_keys(d)
        names = {f.name for f in dataclasses.fields(cls)}
        unknown = set(d) - names
        if unknown:
            raise ValueError(f"unknown config keys: {sorted(unknown)}")
        return cls(**d)

    def save(self, path: str) -> None:
        atomic_write_text(path, json.dumps(self.run_dict(), indent=2, sort_keys=True) + "\n")

    @classmethod
    def from_saved(cls, d: dict) -> "TrainConfig":
        """From a saved run configuration: :meth:`from_dict` without the
        :data:`INVOCATION_FIELDS` that older runs saved."""
        return cls.from_dict({k: v for k, v in d.items() if k not in INVOCATION_FIELDS})

    @classmethod
    def load(cls, path: str) -> "TrainConfig":
        """From a ``config.json`` (:meth:`from_saved`)."""
        return cls.from_saved(read_run_config(path))
