"""Attention blocks a retrofit can insert, selected by a short name.

Like smp's ``decoder_attention_type="scse"`` or timm's ``create_attn("se", ...)``:
``ATTENTIONS`` maps a name to a factory ``factory(in_channels, guide_channels, **kwargs)``
that returns an ``nn.Module`` called as ``block(x, guide)`` with ``x`` ``[B, C, H, W]``,
``guide`` ``[B, Cg, H', W']`` and output ``[B, C, H, W]`` (the same shape as ``x``).  A block
must compute ``x`` exactly at initialisation (a zero-initialised residual weight) so a
retrofitted model computes what the original did until it trains.

Register more with :func:`register_attention`.
"""
from __future__ import annotations

from collections.abc import Callable

from torch import nn

#: factory(in_channels, guide_channels, **block_kwargs) -> nn.Module
AttentionFactory = Callable[..., nn.Module]


def _guided(in_channels: int, guide_channels: int, *, combine: str | None = None,
            **kwargs) -> nn.Module:
    """``GuidedNonLocal``, ``combine="joint"`` unless given (the form that attends)."""
    from ..nn import GuidedNonLocal

    kwargs.setdefault("resize_guide", True)
    return GuidedNonLocal(in_channels, guide_channels, combine=combine or "joint", **kwargs)


def _guided_product(in_channels: int, guide_channels: int, *, combine: str | None = None,
                    **kwargs) -> nn.Module:
    """``GuidedNonLocal(combine="product")``, the GG-Net paper's form (Eq. 3)."""
    if combine not in (None, "product"):
        raise ValueError(f"attention 'guided-product' is GuidedNonLocal with combine='product'; "
                         f"got combine={combine!r} (use attention='guided' to choose combine)")
    from ..nn import GuidedNonLocal

    kwargs.setdefault("resize_guide", True)
    return GuidedNonLocal(in_channels, guide_channels, combine="product", **kwargs)


#: Short name -> block factory.
ATTENTIONS: dict[str, AttentionFactory] = {
    "guided": _guided,
    "guided-product": _guided_product,
}


def register_attention(name: str, factory: AttentionFactory, *, overwrite: bool = False) -> None:
    """Make ``attention=name`` build blocks with ``factory`` (see the module docstring)."""
    if not isinstance(name, str) or not name:
        raise TypeError(f"an attention name must be a non-empty string, got {name!r}")
    if name in ATTENTIONS and not overwrite:
        raise ValueError(f"attention {name!r} is already registered (pass overwrite=True)")
    ATTENTIONS[name] = factory


def build_attention(name: str, in_channels: int, guide_channels: int, **kwargs) -> nn.Module:
    """The block ``ATTENTIONS[name](in_channels, guide_channels, **kwargs)``.

    The guided factories default ``resize_guide`` to ``True`` (the guide is usually a
    shallower, larger map); ``combine=None`` is left out so each factory applies its own
    default.
    ``ValueError`` listing the known names when ``name`` is not registered."""
    if name not in ATTENTIONS:
        raise ValueError(f"unknown attention {name!r}; known: {sorted(ATTENTIONS)}")
    if "combine" in kwargs and kwargs["combine"] is None:
        del kwargs["combine"]
    return ATTENTIONS[name](in_channels, guide_channels, **kwargs)
