"""The FLOP count of the guided spatial operator, the one used for every TFLOP/s figure.

What it counts: the matrix products of the streaming algorithm of ``docs/kernels.md``,
one multiply-add = 2 FLOPs, the same number for every provider (so rates compare the
providers' speed, not their algorithms).  Exponentials, softmax statistics and other
element-wise work are not counted; neither is extra work a particular kernel does
(the Triton backward recomputes the scores once more per kernel and its forward may
accumulate ``o2``; see ``docs/triton.md``), nor the N x N products a materialising
provider does only once.
"""
from __future__ import annotations


def spatial_flops(B: int, N: int, d: int, dg: int, C: int, backward: bool = False) -> int:
    """FLOPs of ``guided_spatial_attention`` (forward, or forward + backward).

    Per batch element, ``K = d + dg``:

    * forward: pass 1 computes both score products (``2 N^2 K``), pass 2 recomputes them
      (``2 N^2 K``) and forms the value product ``e @ mu`` (``2 N^2 C``);
    * backward: the scores once more (``2 N^2 K``), ``ds = do mu^T`` (``2 N^2 C``), ``dmu``
      (``2 N^2 C``) and the four key/query gradient products (``4 N^2 K``).
    """
    k, n2 = d + dg, N * N
    forward = 2 * n2 * k + 2 * n2 * k + 2 * n2 * C
    backward_part = 2 * n2 * k + 4 * n2 * C + 4 * n2 * k
    return B * (forward + (backward_part if backward else 0))
