"""``GuidedNonLocal``: the spatial-wise global guidance block (GG-Net Eq. 1-3)."""
from __future__ import annotations

import torch
from torch import nn

from ..ops import guided_spatial_attention
from ..ops.guided_attention import SPATIAL_COMBINE_MODES
from .layers import add_gamma, check_feature_map, check_options, match_guide, positions_major


class GuidedNonLocal(nn.Module):
    """Non-local block whose attention is guided by a second feature map.

    ``y = gamma * W @ mu(x) + x`` over all H*W positions, with the scores of the features,
    ``a = theta(x) phi(x)^T``, and of the guidance, ``b = eta(g) rho(g)^T`` (``theta, phi,
    mu, eta, rho`` are 1x1 convolutions) combined by ``combine``:

    * ``"joint"`` (default): ``W = softmax_j(a + b)``, the product of the two attention
      maps renormalised: a position is attended where both maps agree.  Ordinary
      attention over the concatenated projections, run by fused kernels (cpu, triton)
      or PyTorch's (sdpa).  On BUSI it attends (what it adds varies over positions,
      0.2 of ``||x||``) and was the best of the compared forms (docs/results.md).
    * ``"product"`` (the GG-Net paper, Eq. 3): ``W = softmax_j(Sx * Sg)`` with ``Sx =
      softmax(a)``, ``Sg = softmax(b)``.  Its outer softmax sees values in (0, 1], so every
      weight is within a factor e of ``1/N``: in practice the block adds ``gamma`` times
      the mean of ``mu(x)`` over positions plus a modulation of order ``1/N`` (measured
      ~1e-5 of ``||x||`` on trained BUSI models), i.e. global average pooling, and its
      projections theta, phi, eta, rho receive 100-10,000x smaller gradients than the
      joint form's.  Kept exact for reproducing the paper (the GG-Net presets use it).
    * ``"matmul"`` (the authors' released code): ``W = softmax_j(Sx @ Sg)``, O(N^3), the
      reference backend only.

    Drop it into any network that has a feature map and a guidance map (any channel
    count; same spatial size, or ``resize_guide=True``).  With the default
    ``residual="learnable"`` (gamma = 0 at initialisation) the network computes exactly
    what it did without the block until it trains.

    Args:
        in_channels: C of ``x``.
        guide_channels: channels of the guidance map (default ``in_channels``).
        key_channels: d of theta/phi (default ``in_channels``, as released).
        guide_key_channels: dg of eta/rho (default ``guide_channels``, as released).
        combine: ``"joint"`` (default), ``"product"`` (paper) or ``"matmul"`` (released);
            see above and docs/kernels.md.
        residual: ``"learnable"`` (gamma initialised to 0, released) or ``"fixed"``
            (gamma = 1, paper).
        resize_guide: resize a guidance map of another spatial size bilinearly.
        key_bias: give the key projections phi and rho a bias (default ``True``, as
            released).  A key bias adds the same amount to every score of a row, which
            every softmax cancels, so its gradient is identically zero: models that
            check for dead parameters pass ``False``.
        backend: operator backend (``"auto"``, ``"triton"``, ``"cuda"``, ``"cpu"``, ``"sdpa"``,
            ``"reference"``...; checked when the module is built).
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
        combine: str = "joint",
        residual: str = "learnable",
        resize_guide: bool = False,
        backend: str = "auto",
        out_dtype: torch.dtype | None = None,
        key_bias: bool = True,
    ) -> None:
        super().__init__()
        check_options(backend=backend, combine=(combine, SPATIAL_COMBINE_MODES))
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
        # x first: the sum takes x's memory format (the attention output is channels-last
        # whatever x is), so the next layer sees the layout it would without the block.
        return x + self.gamma * self.attention(x, guide)

    def extra_repr(self) -> str:
        return (f"in_channels={self.in_channels}, guide_channels={self.guide_channels}, "
                f"combine={self.combine!r}, residual={self.residual!r}, backend={self.backend!r}")
