"""``GuidedChannelAttention``: the channel-wise global guidance block (GG-Net Eq. 4-5)."""
from __future__ import annotations

import torch
from torch import nn

from ..ops import guided_channel_attention
from ..ops.guided_attention import COMBINE_MODES, STABILIZE_MODES
from .layers import add_gamma, check_feature_map, check_options, match_guide

GRAM_NORMALIZATIONS = ("none", "positions")


class SqueezeExcitation(nn.Module):
    """``v = sigmoid(W2 relu(W1 mean_hw(g)))``; returns ``v * g``.  [B, C, H, W] -> same."""

    def __init__(self, channels: int, reduction: int = 2) -> None:
        super().__init__()
        hidden = max(1, channels // reduction)
        self.fc1 = nn.Linear(channels, hidden, bias=False)
        self.fc2 = nn.Linear(hidden, channels, bias=False)

    def forward(self, g: torch.Tensor) -> torch.Tensor:
        beta = g.mean(dim=(2, 3))
        v = torch.sigmoid(self.fc2(torch.relu(self.fc1(beta))))
        return g * v[:, :, None, None]


class GuidedChannelAttention(nn.Module):
    """Channel non-local block guided by an SE-weighted guidance map.

    ``z = gamma * Q @ y + y`` with ``Q = softmax(softmax(Y Y^T) * softmax(G^ G^T))`` over
    channels, ``G^ = SE(proj(g))``.  A guidance map with another channel count is
    projected to C channels by a 1x1 convolution first (the released code's ``seconv``).

    Args:
        in_channels: C of ``y``.
        guide_channels: channels of the guidance map (default ``in_channels``).
        use_se: apply the squeeze-and-excitation weighting to the guidance (paper: yes;
            the released decoder switches it off).
        se_reduction: SE bottleneck ratio (released: 2).
        combine: ``"product"`` (paper) or ``"matmul"`` (released).
        stabilize: ``None`` (paper) or ``"max-minus"`` (released).
        gram_normalization: ``"none"`` (paper) or ``"positions"`` (Gram matrices divided by
            H*W, so the inner softmaxes do not saturate on large maps).
        residual, resize_guide, backend, out_dtype: as for :class:`GuidedNonLocal`.

    Shapes: ``y`` ``[B, C, H, W]``, ``guide`` ``[B, Cg, H', W']`` -> ``[B, C, H, W]``.
    """

    def __init__(
        self,
        in_channels: int,
        guide_channels: int | None = None,
        *,
        use_se: bool = True,
        se_reduction: int = 2,
        combine: str = "product",
        stabilize: str | None = None,
        gram_normalization: str = "none",
        residual: str = "learnable",
        resize_guide: bool = False,
        backend: str = "auto",
        out_dtype: torch.dtype | None = None,
    ) -> None:
        super().__init__()
        check_options(backend=backend, combine=(combine, COMBINE_MODES),
                      stabilize=(stabilize, STABILIZE_MODES),
                      gram_normalization=(gram_normalization, GRAM_NORMALIZATIONS))
        guide_channels = guide_channels or in_channels
        self.in_channels, self.guide_channels = in_channels, guide_channels
        self.combine, self.stabilize = combine, stabilize
        self.gram_normalization = gram_normalization
        self.resize_guide, self.backend, self.out_dtype = resize_guide, backend, out_dtype
        self.guide_proj = (nn.Identity() if guide_channels == in_channels
                           else nn.Conv2d(guide_channels, in_channels, 1))
        self.se = SqueezeExcitation(in_channels, se_reduction) if use_se else nn.Identity()
        add_gamma(self, residual)

    def guide_map(self, y: torch.Tensor, guide: torch.Tensor) -> torch.Tensor:
        """``G^ = SE(proj(guide))`` at ``y``'s size, ``[B, C, H, W]`` (checked inputs)."""
        check_feature_map("y", y, self.in_channels)
        check_feature_map("guide", guide, self.guide_channels)
        guide = match_guide(y, guide, self.resize_guide)
        return self.se(self.guide_proj(guide))

    def gram_scale(self, y: torch.Tensor) -> float | None:
        """The factor on both Gram matrices: ``1 / (H W)`` under ``"positions"``, else None."""
        h, w = y.shape[-2:]
        return 1.0 / (h * w) if self.gram_normalization == "positions" else None

    def attention(self, y: torch.Tensor, guide: torch.Tensor) -> torch.Tensor:
        """``Q @ y`` before the residual, ``[B, C, H, W]``."""
        g_hat = self.guide_map(y, guide)
        b, c, h, w = y.shape
        scale = self.gram_scale(y)
        out = guided_channel_attention(
            y.flatten(2), g_hat.flatten(2), combine=self.combine, stabilize=self.stabilize,
            scale=scale, out_dtype=self.out_dtype, backend=self.backend,
        )
        return out.reshape(b, c, h, w)

    def forward(self, y: torch.Tensor, guide: torch.Tensor) -> torch.Tensor:
        return y + self.gamma * self.attention(y, guide)  # y first: y's memory format

    def extra_repr(self) -> str:
        return (f"in_channels={self.in_channels}, guide_channels={self.guide_channels}, "
                f"combine={self.combine!r}, stabilize={self.stabilize!r}, "
                f"gram_normalization={self.gram_normalization!r}, residual={self.residual!r}")
