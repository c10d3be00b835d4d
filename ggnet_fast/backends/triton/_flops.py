"""FLOP counts of the Triton backend's streaming algorithms (for TFLOP/s reports).

One multiply-add counts as 2 FLOPs; only the matrix products (tensor-core work) are
counted, not the exponentials or element-wise work.  See ``docs/triton.md``.
"""
from __future__ import annotations


def flops_spatial(B: int, N: int, d: int, dg: int, C: int, backward: bool,
                  r_pass: bool = False) -> int:
    """FLOPs of the fused spatial operator as executed (forward, or forward + backward).

    Forward: pass 1 computes both score products (2 N^2 (d + dg)); pass 2 recomputes
    them as one product of the concatenations (2 N^2 (d + dg)) plus the value product
    e @ mu (2 N^2 C).  With ``backward`` the forward also accumulates o2 (2 N^2 C, the
    default one-pass variant) and the backward adds, in the dq kernel, the two scores,
    ds = do mu^T and the two gradient products (2 N^2 (2 (d + dg) + C)) and, in the dk/dmu
    kernel, the same plus dmu (2 N^2 (2 (d + dg) + 2 C)).  ``r_pass=True`` counts the
    R-pass variant instead: no o2 in the forward, one more score + ds loop in the backward.
    """
    k, n2 = d + dg, N * N
    fwd = 2 * n2 * k + 2 * n2 * k + 2 * n2 * C
    if not backward:
        return B * fwd
    fwd_extra = 0 if r_pass else 2 * n2 * C
    dq = 2 * n2 * (2 * k + C) + (2 * n2 * (k + C) if r_pass else 0)
    dkv = 2 * n2 * (2 * k + 2 * C)
    return B * (fwd + fwd_extra + dq + dkv)


def flops_channel(B: int, C: int, N: int, backward: bool, combine: str = "product") -> int:
    """FLOPs of the fused channel operator: two Grams (4 C^2 N) and E @ y (2 C^2 N);
    backward: dQ = dout y^T (2 C^2 N), dy and dg (6 C^2 N); "matmul" adds C^3 products."""
    fwd = 6 * C * C * N + (2 * C ** 3 if combine == "matmul" else 0)
    if not backward:
        return B * fwd
    bwd = 8 * C * C * N + (4 * C ** 3 if combine == "matmul" else 0)
    return B * (fwd + bwd)
