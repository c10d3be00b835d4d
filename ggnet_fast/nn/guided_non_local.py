"""``GuidedNonLocal``: the spatial-wise global guidance block (GG-Net Eq. 1-3)."""
from __future__ import annotations

import torch
from torch import nn

from ..ops import guided_spatial_attention
from ._common import add_gamma, check_feature_map, match_guide, positions_major


class GuidedNonLocal(nn.Module):
    """Non-local block whose attention is guided by a second feature map.

    ``y = gamma * softmax_j(Sx * Sg) @ mu(x) + x`` with ``Sx = softmax(theta(x) phi(x)^T)``
    and ``Sg = softmax(eta(g) rho(g)^T)`` over all H*W positions; ``theta, phi, mu, eta,
    rho`` are 1x1 convolutions.  Drop it into any network that has a feature map and a
    guidance map (any channel count; same spatial size, or ``resize_guide=True``).

    Args:
        in_channels: C of ``x``.
        guide_channels: channels of the guidance map (default ``in_channels``).
        key_channels: d of theta/phi (default ``in_channels``, as released).
        guide_key_channels: dg of eta/rho (default ``guide_channels``, as released).
        combine: ``"product"`` (paper), ``"matmul"`` (released code, O(N^3)) or ``"joint"``
            (``softmax(a + b)``: the product of the two maps renormalised, run by PyTorch's
            fused attention; docs/kernels.md).
        residual: ``"learnable"`` (gamma initialised to 0, released) or ``"fixed"`` (gamma = 1, paper).
        resize_guide: resize a guidance map of another spatial size bilinearly.
        key_bias: give the key projections phi and rho a bias (default ``True``, as
            released).  A key bias adds the same amount to every score of a row, which
            every softmax cancels, so its gradient is identically zero: models that
            check for dead parameters pass ``False``.
        backend: operator backend (``"auto"``, ``"triton"``, ``"cuda"``, ``"cpu"``, ``"reference"``...).
        out_dtype: dtype of the attention output before the residual (``None``: x's dtype).

    Shapes: ``x`` ``[B, C, H, W]``, ``guide`` ``[B, Cg, H', W']`` -> ``[B, C, H, W]``.
    """

    def __init__(
        self,
        in_channels: int,
        guide_channels: int | None = None,
        *,
        key_channels: int | None = None,
        guide_key_channels: int | None = None,
        combine: str = "product",
        residual: str = "learnable",
        resize_guide: bool = False,
        backend: str = "auto",
        out_dtype: torch.dtype | None = None,
        key_bias: bool = True,
    ) -> None:
        super().__init__()
        guide_channels = guide_channels or in_channels
        key_channels = key_channels or in_channels
        guide_key_channels = guide_key_channels or guide_channels
        self.in_channels, self.guide_channels = in_channels, guide_channels
        self.combine, self.resize_guide, self.backend = combine, resize_guide, backend
        self.out_dtype = out_dtype
        self.theta = nn.Conv2d(in_channels, key_channels, 1)
        self.phi = nn.Conv2d(in_channels, key_channels, 1, bias=key_bias)
        self.mu = nn.Conv2d(in_channels, in_channels, 1)
        self.eta = nn.Conv2d(guide_channels, guide_key_channels, 1)
        self.rho = nn.Conv2d(guide_channels, guide_key_channels, 1, bias=key_bias)
        add_gamma(self, residual)

    def attention(self, x: torch.Tensor, guide: torch.Tensor) -> torch.Tensor:
        """The operator's output before the residual, ``[B, C, H, W]``."""
        check_feature_map("x", x, self.in_channels)
        check_feature_map("guide", guide, self.guide_channels)
        guide = match_guide(x, guide, self.resize_guide)
        b, c, h, w = x.shape
        out = guided_spatial_attention(
            positions_major(self.theta(x)),
            positions_major(self.phi(x)),
            positions_major(self.eta(guide)),
            positions_major(self.rho(guide)),
            positions_major(self.mu(x)),
            combine=self.combine,
            out_dtype=self.out_dtype,
            backend=self.backend,
        )
        return out.transpose(1, 2).reshape(b, c, h, w)

    def forward(self, x: torch.Tensor, guide: torch.Tensor) -> torch.Tensor:
        return self.gamma * self.attention(x, guide) + x

    def extra_repr(self) -> str:
        return (f"in_channels={self.in_channels}, guide_channels={self.guide_channels}, "
                f"combine={self.combine!r}, residual={self.residual!r}, backend={self.backend!r}")
