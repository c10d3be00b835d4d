"""The dataset registry: every dataset the pipeline trains and evaluates on, by name, with
its options declared in one place.

A dataset is a :class:`~ggnet_fast.data.base.SegmentationSource` plus one
:func:`register_dataset` call; the run configuration (``data``, ``data_options``), the
``ggnet train`` flags (``--data`` choices, one flag per option) and evaluation all read
this table::

    register_dataset("busi", BUSIDataset, help="...",
                     options={"include_normal": DatasetOption(False, "also the normal images",
                                                              flag="--include-normal")})
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable

from .base import SegmentationSource


@dataclass(frozen=True)
class DatasetOption:
    """One keyword of a dataset's builder.

    default: the value used when none is given (its type is the option's type).
    help: one line for ``ggnet train --help``.
    flag: the command-line flag; ``None``: ``--<dataset>-<option>`` (``_`` -> ``-``).
    """

    default: object
    help: str
    flag: str | None = None


@dataclass(frozen=True)
class DatasetSpec:
    """A registered dataset: ``build(root, **options)`` (``build(**options)`` when it
    needs no root folder) returns a :class:`SegmentationSource`."""

    name: str
    build: Callable[..., SegmentationSource]
    options: dict = field(default_factory=dict)
    needs_root: bool = True
    help: str = ""
    detect: Callable[[str], bool] | None = None   # does a folder hold this dataset's layout?

    def flag(self, option: str) -> str:
        return self.options[option].flag or f"--{self.name}-{option}".replace("_", "-")


_DATASETS: dict[str, DatasetSpec] = {}


def register_dataset(name: str, build: Callable[..., SegmentationSource], *,
                     options: dict[str, DatasetOption] | None = None, needs_root: bool = True,
                     help: str = "", detect: Callable[[str], bool] | None = None) -> DatasetSpec:
    """Make ``name`` usable as ``TrainConfig.data`` / ``ggnet train --data NAME``.
    ``detect(folder)``: whether a folder holds this dataset's layout, so that a data root
    given without a dataset name selects it (:func:`~ggnet_fast.data.layout.dataset_of_root`)."""
    if not isinstance(name, str) or not name.isidentifier():
        raise ValueError(f"dataset name must be an identifier, got {name!r}")
    if name in _DATASETS:
        raise ValueError(f"dataset {name!r} is already registered")
    spec = DatasetSpec(name, build, dict(options or {}), needs_root, help, detect)
    _DATASETS[name] = spec
    return spec


def registered_datasets() -> tuple[str, ...]:
    """The registered dataset names, in registration order."""
    return tuple(_DATASETS)


def dataset_spec(name: str) -> DatasetSpec:
    if name not in _DATASETS:
        raise ValueError(f"data must be one of {list(_DATASETS)}, got {name!r}")
    return _DATASETS[name]


def resolve_dataset_options(name: str, options: dict) -> dict:
    """Every option of dataset ``name``: its default unless ``options`` sets it. Unknown
    keys and values of the wrong type raise (``ValueError``/``TypeError``)."""
    spec = dataset_spec(name)
    unknown = sorted(set(options) - set(spec.options))
    if unknown:
        raise ValueError(f"data_options: {unknown} are not options of dataset {name!r} "
                         f"(its options: {sorted(spec.options) or 'none'})")
    resolved = {}
    for key, opt in spec.options.items():
        value = options.get(key, opt.default)
        kind = type(opt.default)
        ok = isinstance(value, kind) and not (isinstance(value, bool) and kind is not bool)
        if kind is float:
            ok = isinstance(value, (int, float)) and not isinstance(value, bool)
        if opt.default is not None and not ok:
            raise TypeError(f"data_options[{key!r}] of dataset {name!r} must be "
                            f"{kind.__name__}, got {value!r}")
        resolved[key] = value
    return resolved


def build_dataset(name: str, root: str | None, options: dict) -> SegmentationSource:
    """The dataset ``name`` with its options resolved (``root``: its folder, if it needs one)."""
    spec = dataset_spec(name)
    options = resolve_dataset_options(name, options)
    if not spec.needs_root:
        return spec.build(**options)
    if root is None:
        raise ValueError(f"--data-root is required for data={name!r}")
    return spec.build(root, **options)
