"""The reference backend: plain PyTorch, materialising the N x N / C x C maps.

This is the definition every other backend is tested against (``docs/kernels.md``).  It
computes in float32 for float16/bfloat16/float32 inputs and in float64 for float64 inputs,
with autocast disabled, and uses the
``expm1`` form of the outer softmax, so its half-precision results keep the small
attention modulation that a plain ``softmax`` in the input dtype rounds away:

    s_ij = exp(p_ij) / L_i,  L_i = N + sum_j expm1(p_ij)
    o_i  = (sum_j mu_j + sum_j expm1(p_ij) mu_j) / L_i

Gradients come from autograd through these formulas (memory O(B N^2)).
"""
from __future__ import annotations

import torch

_COMPUTE_DTYPES = (torch.float32, torch.float64)


def is_available() -> str | None:
    return None


def unsupported(op: str, device_type: str, dtype: torch.dtype, options: dict) -> str | None:
    return None


def compute_dtype(dtype: torch.dtype) -> torch.dtype:
    """float64 stays float64; every other floating dtype is computed in float32."""
    return torch.float64 if dtype == torch.float64 else torch.float32


def uniform_plus_expm1(weights_logits: torch.Tensor, values: torch.Tensor) -> torch.Tensor:
    """``softmax(m, -1) @ values`` for logits ``m`` in [0, 1], in the expm1 form.

    weights_logits: [B, R, K] with entries in [0, 1]; values: [B, K, V] -> [B, R, V].
    """
    e = torch.expm1(weights_logits)
    denom = weights_logits.shape[-1] + e.sum(-1, keepdim=True)
    return (values.sum(-2, keepdim=True) + e @ values) / denom


def spatial(theta, phi, eta, rho, mu, *, combine: str = "product",
            out_dtype: torch.dtype | None = None) -> torch.Tensor:
    """[B,N,d], [B,N,d], [B,N,dg], [B,N,dg], [B,N,C] -> [B,N,C] (before the residual)."""
    ct = compute_dtype(theta.dtype)
    with torch.autocast(theta.device.type, enabled=False):
        t, p, e, r, m = (x.to(ct) for x in (theta, phi, eta, rho, mu))
        a = t @ p.transpose(-1, -2)
        b = e @ r.transpose(-1, -2)
        if combine == "joint":  # softmax_j(a + b) = Sx * Sg renormalised: no outer softmax
            return ((a + b).softmax(-1) @ m).to(out_dtype or theta.dtype)
        if combine == "product":
            # p_ij = Sx_ij * Sg_ij computed in the log domain: no underflow to 0 * inf.
            log_p = (a - a.logsumexp(-1, keepdim=True)) + (b - b.logsumexp(-1, keepdim=True))
            pmat = log_p.exp()
        else:  # "matmul": the released code's bmm(S_x, S_g)
            pmat = a.softmax(-1) @ b.softmax(-1)
        out = uniform_plus_expm1(pmat, m)
    return out.to(out_dtype or theta.dtype)


def channel_map(y, g, *, combine: str, stabilize, scale) -> torch.Tensor:
    """The outer-softmax logits M [B, C, C] (entries in [0, 1]) in float32/float64."""
    a = y @ y.transpose(-1, -2)
    b = g @ g.transpose(-1, -2)
    if scale is not None:
        a = a * scale
        b = b * scale
    sz, sg = a.softmax(-1), b.softmax(-1)
    m = sz * sg if combine == "product" else sz @ sg
    if stabilize == "max-minus":
        m = m.amax(-1, keepdim=True) - m
    return m


def channel(y, g, *, combine: str = "product", stabilize: str | None = None,
            scale: float | None = None, out_dtype: torch.dtype | None = None) -> torch.Tensor:
    """[B,C,N], [B,C,N] -> Q @ y, [B,C,N] (before the residual)."""
    ct = compute_dtype(y.dtype)
    with torch.autocast(y.device.type, enabled=False):
        yc, gc = y.to(ct), g.to(ct)
        m = channel_map(yc, gc, combine=combine, stabilize=stabilize, scale=scale)
        out = uniform_plus_expm1(m, yc)
    return out.to(out_dtype or y.dtype)
