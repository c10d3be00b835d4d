"""Unguided attention blocks for the ablation rows of GG-Net's Table 1, and the GAP block.

They are called as ``block(x, guide)`` like the guided blocks (``guide`` is ignored), so
:class:`ggnet_fast.nn.GlobalGuidanceBlock` can hold them in place of the guided ones.

* :class:`NonLocalBlock` ("SNLB"): ``y = gamma * softmax(theta(x) phi(x)^T) mu(x) + x``
  (the DANet position-attention form, no 1/sqrt(d) scaling), through
  ``torch.nn.functional.scaled_dot_product_attention`` (memory-efficient where PyTorch has
  a fused kernel).
* :class:`ChannelNonLocalBlock` ("CNLB"): ``z = gamma * softmax(Y Y^T) Y + Y`` over
  channels, optionally with DANet's ``rowmax - energy`` trick.
* :class:`MeanPoolBlock` ("GAP"): ``y = gamma * mean_hw(mu(x)) + x``.  The guided spatial
  block's outer softmax keeps every weight within a factor e of 1/N, so its output is
  ``mean(mu)`` plus a small modulation; this block is that limit.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from ..nn.layers import add_gamma, check_feature_map, positions_major

CHANNEL_STABILIZE = (None, "max-minus")


class _Residual(nn.Module):
    """``gamma * attention(x) + x`` with gamma learnable (init 0) or fixed to 1."""

    def __init__(self, residual: str) -> None:
        super().__init__()
        add_gamma(self, residual)

    def attention(self, x: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    def forward(self, x: torch.Tensor, guide: torch.Tensor | None = None) -> torch.Tensor:
        return x + self.gamma * self.attention(x)  # x first: x's memory format


class NonLocalBlock(_Residual):
    """Spatial non-local block (SNLB).  ``[B, C, H, W]`` -> ``[B, C, H, W]``."""

    def __init__(self, in_channels: int, *, key_channels: int | None = None,
                 residual: str = "learnable") -> None:
        super().__init__(residual)
        key_channels = key_channels or in_channels
        self.in_channels = in_channels
        self.theta = nn.Conv2d(in_channels, key_channels, 1)
        # A key bias shifts every score of a row equally: the softmax cancels it.
        self.phi = nn.Conv2d(in_channels, key_channels, 1, bias=False)
        self.mu = nn.Conv2d(in_channels, in_channels, 1)

    def attention(self, x: torch.Tensor) -> torch.Tensor:
        check_feature_map("x", x, self.in_channels)
        b, c, h, w = x.shape
        q, k, v = (positions_major(f(x)).unsqueeze(1) for f in (self.theta, self.phi, self.mu))
        out = F.scaled_dot_product_attention(q, k, v, scale=1.0)     # [B, 1, N, C]
        return out.squeeze(1).transpose(1, 2).reshape(b, c, h, w)


class ChannelNonLocalBlock(_Residual):
    """Channel non-local block (CNLB), parameter-free but gamma.  ``[B, C, H, W]`` -> same."""

    def __init__(self, in_channels: int, *, stabilize: str | None = None,
                 residual: str = "learnable") -> None:
        super().__init__(residual)
        if stabilize not in CHANNEL_STABILIZE:
            raise ValueError(f"stabilize must be one of {list(CHANNEL_STABILIZE)}, "
                             f"got {stabilize!r}")
        self.in_channels, self.stabilize = in_channels, stabilize

    def attention(self, x: torch.Tensor) -> torch.Tensor:
        check_feature_map("x", x, self.in_channels)
        b, c, h, w = x.shape
        y = x.flatten(2)
        y = y.double() if y.dtype == torch.float64 else y.float()   # softmax statistics >= fp32
        energy = y @ y.transpose(1, 2)                                # [B, C, C]
        if self.stabilize == "max-minus":
            energy = energy.amax(-1, keepdim=True) - energy
        out = energy.softmax(-1) @ y
        return out.to(x.dtype).reshape(b, c, h, w)


class MeanPoolBlock(_Residual):
    """Global average pooling of ``mu(x)`` broadcast back (GAP).  ``[B, C, H, W]`` -> same."""

    def __init__(self, in_channels: int, *, residual: str = "learnable") -> None:
        super().__init__(residual)
        self.in_channels = in_channels
        self.mu = nn.Conv2d(in_channels, in_channels, 1)

    def attention(self, x: torch.Tensor) -> torch.Tensor:
        check_feature_map("x", x, self.in_channels)
        return self.mu(x).mean(dim=(2, 3), keepdim=True).expand_as(x)


class ChannelMeanBlock(_Residual):
    """The channel mean at each position broadcast to every channel, parameter-free but
    gamma: ``z = gamma * mean_c(y) + y``.  ``[B, C, H, W]`` -> same."""

    def __init__(self, in_channels: int, *, residual: str = "learnable") -> None:
        super().__init__(residual)
        self.in_channels = in_channels

    def attention(self, x: torch.Tensor) -> torch.Tensor:
        check_feature_map("x", x, self.in_channels)
        return x.mean(dim=1, keepdim=True).expand_as(x)
