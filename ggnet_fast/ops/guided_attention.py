"""The two public operators of ggnet_fast: checks once, then dispatch to a backend.

Definitions, gradients and numerics: ``docs/kernels.md`` (summarised in the
docstrings below).  Guarantees, for every backend:

* finite inputs give finite outputs and gradients (all softmaxes are max/lse
  stabilised, and the outer softmax's logits are bounded in [0, 1]);
* accumulation and softmax statistics are float32 (float64 for float64 inputs);
* empty tensors are rejected (every size must be >= 1); NaN/Inf inputs are not
  checked (that would cost a device sync) and propagate.
"""
from __future__ import annotations

import torch

from ..backends import registry
from .checks import check_choice, check_dim, check_same, check_tensor, resolve_out_dtype

COMBINE_MODES = ("product", "matmul")
#: The spatial operator also has the joint softmax (docs/kernels.md, "Joint softmax").
SPATIAL_COMBINE_MODES = (*COMBINE_MODES, "joint")
STABILIZE_MODES = (None, "max-minus")


def guided_spatial_attention(
    theta: torch.Tensor,
    phi: torch.Tensor,
    eta: torch.Tensor,
    rho: torch.Tensor,
    mu: torch.Tensor,
    *,
    combine: str = "product",
    out_dtype: torch.dtype | None = None,
    backend: str = "auto",
) -> torch.Tensor:
    """Guided spatial attention (the spatial-wise GGB, GG-Net Eq. 1-3), before the residual.

    Args:
        theta, phi: ``[B, N, d]`` query/key projections of the features X.
        eta, rho:   ``[B, N, dg]`` query/key projections of the guidance map G.
        mu:         ``[B, N, C]`` value projection of X.
        combine:    ``"product"`` (the paper): ``p = softmax(theta phi^T) * softmax(eta rho^T)``;
                    ``"matmul"`` (the released code):
                    ``p = softmax(theta phi^T) @ softmax(eta rho^T)``;
                    ``"joint"``: ``o = softmax(theta phi^T + eta rho^T) @ mu``, the product
                    ``Sx * Sg`` renormalised over j (ordinary attention over the
                    concatenated projections, scale 1; not the paper's Eq. 3).
        out_dtype:  ``None`` for the input dtype, or ``torch.float32`` to keep the small
                    attention modulation of half-precision inputs.
        backend:    ``"auto"`` (fastest available; ``GGNET_BACKEND`` overrides) or a name
                    from :func:`ggnet_fast.backends.registered_backends`.

    Returns:
        ``o = softmax_j(p) @ mu``, ``[B, N, C]``.  Every outer weight lies within a factor
        e of 1/N, so ``o`` is ``mean_j(mu)`` plus a modulation of order ``(e-1)/N``
        (``"joint"`` has no outer softmax: its weights can be as peaked as the scores).
    """
    layout_k, layout_g, layout_v = "[B, N, d]", "[B, N, dg]", "[B, N, C]"
    check_tensor("theta", theta, 3, layout_k)
    check_tensor("phi", phi, 3, layout_k)
    check_tensor("eta", eta, 3, layout_g)
    check_tensor("rho", rho, 3, layout_g)
    check_tensor("mu", mu, 3, layout_v)
    named = [("theta", theta), ("phi", phi), ("eta", eta), ("rho", rho), ("mu", mu)]
    check_same(named)
    batch, n, d = theta.shape
    if phi.shape != theta.shape:
        raise ValueError(f"phi must have the shape of theta {tuple(theta.shape)} = [B, N, d], "
                         f"got {tuple(phi.shape)}")
    for name, x, layout in (("eta", eta, layout_g), ("rho", rho, layout_g), ("mu", mu, layout_v)):
        check_dim(name, x, 0, batch, "B (theta's batch)", layout)
        check_dim(name, x, 1, n, "N (theta's positions)", layout)
    if rho.shape != eta.shape:
        raise ValueError(f"rho must have the shape of eta {tuple(eta.shape)} = [B, N, dg], "
                         f"got {tuple(rho.shape)}")
    check_choice("combine", combine, SPATIAL_COMBINE_MODES)
    out_dtype = resolve_out_dtype(out_dtype, theta.dtype)
    options = {"combine": combine, "out_dtype": out_dtype,
               "shape": {"B": batch, "N": n, "d": d, "dg": eta.shape[2], "C": mu.shape[2]}}
    name, impl = registry.resolve("spatial", backend, theta.device, theta.dtype, options)
    registry._record("spatial", name)
    return impl.spatial(theta, phi, eta, rho, mu, combine=combine, out_dtype=out_dtype)


def guided_channel_attention(
    y: torch.Tensor,
    g: torch.Tensor,
    *,
    combine: str = "product",
    stabilize: str | None = None,
    scale: float | None = None,
    out_dtype: torch.dtype | None = None,
    backend: str = "auto",
) -> torch.Tensor:
    """Guided channel attention (the channel-wise GGB, GG-Net Eq. 4-5), before the residual.

    Args:
        y: ``[B, C, N]`` the feature map Y, positions flattened.
        g: ``[B, C, N]`` the (SE-weighted) guidance map G-hat.
        combine:   ``"product"`` (paper): ``M = softmax(Y Y^T) * softmax(G G^T)``;
                   ``"matmul"`` (released code): ``M = softmax(Y Y^T) @ softmax(G G^T)``.
        stabilize: ``None`` (paper): ``Q = softmax(M)``; ``"max-minus"`` (released code,
                   DANet's trick): ``Q = softmax(rowmax(M) - M)``.
        scale:     optional factor on both Gram matrices before their softmaxes (e.g.
                   ``1/N``); ``None`` is the paper's definition, whose Gram entries grow
                   with N and saturate the softmaxes towards one-hot rows.
        out_dtype: ``None`` for the input dtype, or ``torch.float32``.
        backend:   as for :func:`guided_spatial_attention`.

    Returns:
        ``Q @ y``, ``[B, C, N]``.
    """
    layout = "[B, C, N]"
    check_tensor("y", y, 3, layout)
    check_tensor("g", g, 3, layout)
    check_same([("y", y), ("g", g)])
    if g.shape != y.shape:
        raise ValueError(f"g must have the shape of y {tuple(y.shape)} = {layout}, "
                         f"got {tuple(g.shape)} (project the guidance to C channels first)")
    check_choice("combine", combine, COMBINE_MODES)
    check_choice("stabilize", stabilize, STABILIZE_MODES)
    if scale is not None:
        if isinstance(scale, bool) or not isinstance(scale, (int, float)):
            raise TypeError(f"scale must be a float or None, got {type(scale).__name__}")
        if not scale > 0:
            raise ValueError(f"scale must be > 0, got {scale}")
        scale = float(scale)
    out_dtype = resolve_out_dtype(out_dtype, y.dtype)
    batch, c, n = y.shape
    options = {"combine": combine, "stabilize": stabilize, "scale": scale,
               "out_dtype": out_dtype, "shape": {"B": batch, "C": c, "N": n}}
    name, impl = registry.resolve("channel", backend, y.device, y.dtype, options)
    registry._record("channel", name)
    return impl.channel(y, g, combine=combine, stabilize=stabilize, scale=scale,
                        out_dtype=out_dtype)
