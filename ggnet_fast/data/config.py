"""Which images a run uses and how they are split: the dataset part of a run's
``config.json``, shared by training and evaluation so both see the same folds."""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field

import numpy as np

from .folds import kfold_indices, split_train_val
from .layout import absolute_root
from .registry import build_dataset, dataset_spec, resolve_dataset_options
from .scan import scan_source

SPLITS = ("kfold", "holdout")

# config.json keys written before the dataset registry, as (dataset, option) of data_options
LEGACY_KEYS = {"phantom_n": ("phantom", "n"), "phantom_seed": ("phantom", "seed"),
               "phantom_size": ("phantom", "size"), "phantom_jitter": ("phantom", "size_jitter"),
               "include_normal": ("busi", "include_normal")}


def migrate_legacy_keys(d: dict) -> dict:
    """A copy of a saved configuration with the pre-registry dataset keys (``phantom_n``,
    ``include_normal``...) moved into ``data_options`` of the dataset they belong to."""
    d = dict(d)
    if not set(LEGACY_KEYS) & set(d):
        return d
    options = dict(d.get("data_options") or {})
    for key, (dataset, option) in LEGACY_KEYS.items():
        if key in d:
            value = d.pop(key)
            if d.get("data", "phantom") == dataset:
                options.setdefault(option, value)
    d["data_options"] = options
    return d


@dataclass
class DataConfig:
    """The dataset (a name of :func:`~ggnet_fast.data.registry.registered_datasets`, its
    folder and options) and the split: k-fold (test = fold ``fold`` of ``folds``,
    stratified by class label) or a seeded hold-out of ``test_fraction``; ``val_fraction``
    of the rest is kept for validation."""

    data: str = "phantom"
    data_root: str | None = None
    data_options: dict = field(default_factory=dict)
    split: str = "kfold"                # kfold | holdout
    folds: int = 3
    fold: int = 0
    fold_seed: int = 42
    test_fraction: float = 0.2          # holdout only
    val_fraction: float = 0.1           # of the training part, for model selection

    def validate(self):
        """Check the dataset and split settings, fill in the dataset's default options (so
        the saved configuration names every one) and make the data root absolute; training
        and evaluation both call this. Returns ``self``."""
        self.data_options = resolve_dataset_options(self.data, self.data_options)
        if self.data_root is not None:
            if not dataset_spec(self.data).needs_root:
                raise ValueError(f"data_root {self.data_root!r} given, but data={self.data!r} "
                                 f"reads no folder; name the dataset of that folder "
                                 f"(--data busi or --data folder)")
            self.data_root = absolute_root(self.data_root)
        if self.split not in SPLITS:
            raise ValueError(f"split must be one of {list(SPLITS)}, got {self.split!r}")
        folds_ok = isinstance(self.folds, int) and not isinstance(self.folds, bool) \
            and self.folds >= 2
        if self.split == "kfold" and not folds_ok:
            raise ValueError(f"folds (--folds) must be an integer >= 2, got {self.folds!r}")
        if self.split == "kfold" and not 0 <= self.fold < self.folds:
            raise ValueError(f"fold must be in [0, {self.folds}), got {self.fold}")
        if not 0.0 < self.test_fraction < 1.0:
            raise ValueError(f"test_fraction must be in (0, 1), got {self.test_fraction}")
        if not 0.0 <= self.val_fraction < 1.0:
            raise ValueError(f"val_fraction must be in [0, 1), got {self.val_fraction}")
        return self

    def build_source(self, progress: bool | None = None):
        """The dataset these settings name, its files scanned (:func:`scan_source`: one
        :class:`DataError` listing every unreadable image or mask, or mask of the wrong
        size or mode; ``progress``: the scan's progress bar, ``None``: on a terminal)."""
        source = build_dataset(self.data, self.data_root, self.data_options)
        scan_source(source, progress=progress)
        return source

    def split_indices(self, source) -> dict[str, np.ndarray]:
        """``{"train", "val", "test"}`` sorted index arrays into ``source``."""
        n = len(source)
        if self.split == "kfold":
            test = kfold_indices(n, self.folds, self.fold_seed, labels=source.labels)[self.fold]
        else:
            perm = np.random.default_rng(self.fold_seed).permutation(n)
            test = np.sort(perm[:max(1, int(round(n * self.test_fraction)))])
        rest = np.setdiff1d(np.arange(n), test)
        train, val = split_train_val(rest, self.val_fraction, self.fold_seed)
        return {"train": train, "val": val, "test": test}

    @classmethod
    def from_run_config(cls, d: dict) -> "DataConfig":
        """The dataset part of a saved run configuration (``config.json`` as a dict)."""
        d = migrate_legacy_keys(d)
        return cls(**{f.name: d[f.name] for f in dataclasses.fields(DataConfig) if f.name in d})
