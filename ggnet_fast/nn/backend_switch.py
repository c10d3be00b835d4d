"""Switching the operator backend of every guided attention block inside a model."""
from __future__ import annotations

from torch import nn

from .guided_channel import GuidedChannelAttention
from .guided_non_local import GuidedNonLocal
from .layers import check_options


def set_attention_backend(model: nn.Module, backend: str) -> nn.Module:
    """Set ``backend`` (``"auto"``, ``"reference"``, ...) on every ``GuidedNonLocal`` and
    ``GuidedChannelAttention`` in ``model``; returns ``model``."""
    check_options(backend=backend)
    for m in model.modules():
        if isinstance(m, (GuidedNonLocal, GuidedChannelAttention)):
            m.backend = backend
    return model
