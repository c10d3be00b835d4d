"""The ``sdpa`` backend: the spatial ``combine="joint"`` mode through PyTorch's fused attention.

The joint softmax renormalises the product of the two similarity maps::

    W_ij = Sx_ij Sg_ij / sum_j Sx_ij Sg_ij = softmax_j(a_ij + b_ij),
    a = theta phi^T, b = eta rho^T,  o = W mu,

which is ordinary attention with queries ``[theta, eta]``, keys ``[phi, rho]`` (head
dimension ``d + dg``), values ``mu`` and scale 1 (docs/kernels.md).  It is computed by
:func:`torch.nn.functional.scaled_dot_product_attention`, so it runs on FlashAttention /
memory-efficient kernels on GPU and on PyTorch's fused flash kernel on CPU: O(N) memory,
forward and backward, never an N x N tensor.

Those kernels need the query/key head dimension to equal the value dimension; when
``d + dg != C`` the narrower side is zero-padded (zeros add nothing to ``q . k``, and the
padded value columns are sliced off), so the extra work is at most one more product of
the larger width.  The inputs' dtype is the compute dtype (float32 statistics inside the
kernels); ``out_dtype`` only casts the result.  Unlike the paper's outer softmax, the
joint weights are not confined to a factor e of uniform, so nothing small has to survive
a 16-bit rounding here.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F


def is_available() -> str | None:
    return None


def unsupported(op: str, device_type: str, dtype: torch.dtype, options: dict) -> str | None:
    if op != "spatial":
        return "the sdpa backend implements only the spatial operator"
    if options.get("combine", "product") != "joint":
        return ("the sdpa backend implements only combine='joint' (softmax of a + b is "
                "ordinary attention); the paper's product combine is not")
    return None


def joint_inputs(theta, phi, eta, rho, mu):
    """``[B,N,d]`` x2, ``[B,N,dg]`` x2, ``[B,N,C]`` -> q, k ``[B,1,N,E]``, v ``[B,1,N,E]``,
    zero-padded to one width ``E = max(d + dg, C)``."""
    q = torch.cat([theta, eta], dim=-1)
    k = torch.cat([phi, rho], dim=-1)
    width = max(q.shape[-1], mu.shape[-1])
    q = F.pad(q, (0, width - q.shape[-1]))
    k = F.pad(k, (0, width - k.shape[-1]))
    v = F.pad(mu, (0, width - mu.shape[-1]))
    return q.unsqueeze(1), k.unsqueeze(1), v.unsqueeze(1)


def spatial(theta, phi, eta, rho, mu, *, combine: str = "product",
            out_dtype: torch.dtype | None = None) -> torch.Tensor:
    """[B,N,d], [B,N,d], [B,N,dg], [B,N,dg], [B,N,C] -> [B,N,C] (``combine="joint"``)."""
    if combine != "joint":
        raise ValueError(f"combine: the sdpa backend implements 'joint', got {combine!r}")
    q, k, v = joint_inputs(theta, phi, eta, rho, mu)
    o = F.scaled_dot_product_attention(q, k, v, scale=1.0).squeeze(1)[..., :mu.shape[-1]]
    return o.to(out_dtype or mu.dtype)


def channel(y, g, *, combine: str = "product", stabilize=None, scale=None,
            out_dtype: torch.dtype | None = None) -> torch.Tensor:
    raise ValueError("the sdpa backend implements only the spatial operator")
