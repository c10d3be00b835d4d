"""The ``eager`` backend: the formula as the authors' released code writes it.

Softmaxes and products in the *input* dtype (``softmax(S_x * S_g) @ mu``), exactly
what a user composes by hand.  It is a baseline for benchmarks and accuracy
comparisons, never chosen by ``auto``: in float16/bfloat16 it rounds the attention
modulation away (see ``docs/kernels.md``, "Numerics").
"""
from __future__ import annotations

import torch


def is_available() -> str | None:
    return None


def unsupported(op: str, device_type: str, dtype: torch.dtype, options: dict) -> str | None:
    return None


def spatial(theta, phi, eta, rho, mu, *, combine: str = "product",
            out_dtype: torch.dtype | None = None) -> torch.Tensor:
    """[B,N,d], [B,N,d], [B,N,dg], [B,N,dg], [B,N,C] -> [B,N,C]."""
    a = theta @ phi.transpose(-1, -2)
    b = eta @ rho.transpose(-1, -2)
    if combine == "joint":  # the plain composition a user would write
        return (torch.softmax(a + b, dim=-1) @ mu).to(out_dtype or mu.dtype)
    sx, sg = torch.softmax(a, dim=-1), torch.softmax(b, dim=-1)
    combined = sx * sg if combine == "product" else sx @ sg
    return (torch.softmax(combined, dim=-1) @ mu).to(out_dtype or mu.dtype)


def channel(y, g, *, combine: str = "product", stabilize: str | None = None,
            scale: float | None = None, out_dtype: torch.dtype | None = None) -> torch.Tensor:
    """[B,C,N], [B,C,N] -> [B,C,N]."""
    a = y @ y.transpose(-1, -2)
    b = g @ g.transpose(-1, -2)
    if scale is not None:
        a, b = a * scale, b * scale
    sz, sg = torch.softmax(a, dim=-1), torch.softmax(b, dim=-1)
    combined = sz * sg if combine == "product" else sz @ sg
    if stabilize == "max-minus":
        combined = combined.amax(-1, keepdim=True) - combined
    return (torch.softmax(combined, dim=-1) @ y).to(out_dtype or y.dtype)
