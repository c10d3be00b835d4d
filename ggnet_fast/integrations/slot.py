"""``FeatureRetrofit``: holds the inserted block and applies it to a backbone's output
through a forward hook, so no library code is edited or subclassed."""
from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import torch
from torch import nn

#: The attribute a retrofit registers its ``FeatureRetrofit`` under (state_dict prefix).
ATTRIBUTE = "guided_attention"


class FeatureRetrofit(nn.Module):
    """Replaces one feature map of a backbone's output by ``block(feature, guide)``.

    ``hook`` is registered as a forward hook of the backbone (smp encoder, timm feature
    net, torchvision ``IntermediateLayerGetter``); it returns a copy of the backbone's
    output with ``out[level] = block(out[level], out[guide_level])`` and the keys in
    ``drop`` (feature maps added only to guide the block) removed.  The output may be a
    list/tuple of ``[B, C_i, H_i, W_i]`` maps (keys are positions), a dict of them (keys
    are names, or positions in the dict's order), or smp DPT's ``(features,
    prefix_tokens)`` pair.

    The module itself is only a parameter holder: ``forward(x)`` returns ``x`` unchanged,
    because timm's feature nets are ``nn.ModuleDict``s that call every child in order.
    The hook is a bound method, so ``copy.deepcopy`` and pickling carry it to the copy.
    """

    def __init__(self, block: nn.Module, level: int | str, guide_level: int | str,
                 drop: Iterable[str] = ()) -> None:
        super().__init__()
        self.block = block
        self.level, self.guide_level, self.drop = level, guide_level, tuple(drop)

    def forward(self, x: Any) -> Any:
        """Identity (see the class docstring)."""
        return x

    def replace(self, features: Any) -> Any:
        """``features`` with the block applied at ``level`` (a new container)."""
        if (isinstance(features, tuple) and len(features) == 2
                and isinstance(features[0], (list, tuple))):      # smp DPT: (maps, prefix tokens)
            return self.replace(features[0]), features[1]
        if isinstance(features, dict):
            level, guide = self._key(features, self.level), self._key(features, self.guide_level)
            out = features.copy()
            for key in self.drop:
                del out[key]
            out[level] = self.apply_block(features[level], features[guide])
            return out
        if isinstance(features, (list, tuple)):
            out = list(features)
            out[self.level] = self.apply_block(features[self.level], features[self.guide_level])
            return out if isinstance(features, list) else tuple(out)
        raise TypeError(f"cannot retrofit a backbone output of type {type(features).__name__}; "
                        "expected a list, tuple or dict of feature maps")

    def apply_block(self, x: torch.Tensor, guide: torch.Tensor) -> torch.Tensor:
        """``block(x, guide)`` laid out in memory like ``x``.

        ``GuidedNonLocal`` keeps ``x``'s layout; a registered block that returned another
        one (channels-last for a contiguous ``x``) would make the next convolution take
        another kernel and round differently, so the layout is restored to keep the
        gamma = 0 output bit-identical."""
        y = self.block(x, guide)
        if y.stride() != x.stride():
            for memory_format in (torch.contiguous_format, torch.channels_last):
                if x.is_contiguous(memory_format=memory_format):
                    return y.contiguous(memory_format=memory_format)
        return y

    @staticmethod
    def _key(features: dict, key: int | str) -> Any:
        """A dict output's key: ``key`` itself, or the ``key``-th key for an int."""
        return list(features)[key] if isinstance(key, int) else key

    def hook(self, module: nn.Module, args: Any, output: Any) -> Any:
        """Forward hook: the backbone's ``output`` through :meth:`replace`."""
        return self.replace(output)

    def extra_repr(self) -> str:
        drop = f", drop={list(self.drop)}" if self.drop else ""
        return f"level={self.level!r}, guide_level={self.guide_level!r}{drop}"


def attach(owner: nn.Module, backbone: nn.Module, slot: FeatureRetrofit) -> None:
    """Register ``slot`` as ``owner.guided_attention`` and its hook on ``backbone``.

    The slot takes the device and floating dtype of ``owner``'s parameters and its
    train/eval mode.  ``ValueError`` if ``owner`` was already retrofitted (one block per
    model)."""
    if ATTRIBUTE in owner._modules or hasattr(owner, ATTRIBUTE):
        raise ValueError(f"this {type(owner).__name__} is already retrofitted "
                         f"(it has a {ATTRIBUTE!r} submodule); retrofit a fresh model")
    reference = next(owner.parameters(), None)
    if reference is not None:
        slot.to(device=reference.device, dtype=reference.dtype)
    slot.train(owner.training)
    owner.add_module(ATTRIBUTE, slot)
    backbone.register_forward_hook(slot.hook)
