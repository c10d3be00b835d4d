"""The loss registry: every training loss by name (``TrainConfig.loss``, ``ggnet train
--loss``).

A loss is an ``nn.Module`` class (or factory) called as ``cls(preset, **options)``, where
``preset`` is the run's preset word (``"paper"``/``"released"``; a loss without preset
variants may ignore it) and ``options`` are ``TrainConfig.loss_overrides``; unknown or
invalid options raise ``TypeError``/``ValueError`` there. The module is called as
``loss(out, masks) -> scalar tensor``, ``out`` being the model's output (a
:class:`~ggnet_fast.models.GGNetOutput`; ``out.logits`` are the final ``[B, 1, H, W]``
logits) and ``masks`` float ``[B, 1, H, W]`` in {0, 1}.
"""
from __future__ import annotations

from typing import Callable

from torch import nn

_LOSSES: dict[str, Callable[..., nn.Module]] = {}


def register_loss(name: str, factory: Callable[..., nn.Module]) -> None:
    """Make ``name`` usable as ``TrainConfig.loss``; ``factory(preset, **options)``."""
    if not isinstance(name, str) or not name.isidentifier():
        raise ValueError(f"loss name must be an identifier, got {name!r}")
    if name in _LOSSES:
        raise ValueError(f"loss {name!r} is already registered")
    _LOSSES[name] = factory


def registered_losses() -> tuple[str, ...]:
    """The registered loss names, in registration order."""
    return tuple(_LOSSES)


def build_loss(name: str, preset: str, **options) -> nn.Module:
    """The loss ``name`` for ``preset`` with ``options``."""
    if name not in _LOSSES:
        raise ValueError(f"loss must be one of {list(_LOSSES)}, got {name!r}")
    return _LOSSES[name](preset, **options)
