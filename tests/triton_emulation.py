"""A float64 model of the Triton spatial kernels' rounding points (``spatial_kernels.py``).

The Triton interpreter cannot run bfloat16 and does not emulate TF32, so what a GPU
does to bf16 / TF32 inputs is checked here instead: every value is float64 except where
the kernels round, and there it is rounded exactly as the kernels round it.

Rounding points (kernel line -> model), with ``rnd`` = round to the input format's
significand (8 bits bf16, 11 bits fp16, 11 bits TF32), exponent range unbounded (the
kernels' power-of-two scales keep float16 weights normal; bf16/TF32 have float32's range):

* ``_fwd_kernel``: ``e = rnd(expm1 p)``, ``w = rnd(p (1 + e))`` (``_weights``),
  ``L = N + sum e``, ``acc = e @ mu``, ``q = sum w / L``, ``o2 = w @ mu / L``;
* ``_bwd_impl`` (PyTorch): ``dolr = rnd(do / L)``, ``dl = dolr . o``,
  ``R = L (dolr . o2 - dl q)``, ``dmub = sum_i do_i / L_i``;
* ``_bwd_dq_kernel`` and ``_bwd_dkv_kernel``: ``e``, ``w`` as in the forward,
  ``dsl = dolr @ mu^T``, ``t = w (dsl - dl)``, ``da = rnd(t - sx R)``,
  ``db = rnd(t - sg R)``, ``dtheta = da @ phi``, ``dphi = da^T @ theta`` (likewise
  deta, drho), ``dmu = dmub + e^T @ dolr``.

Every ``tl.dot`` of float32 operands is modelled by ``precision``: "ieee" (exact) or
"tf32" (both operands rounded to 11 bits, what ``runtime.dot_precision`` chooses).
For 16-bit inputs the operands are 16-bit values and the products exact.

Kept in sync with the kernels by ``test_triton_numerics.py::test_emulation_tracks_the_
interpreted_kernels``: in float16 (which the interpreter runs exactly) the model and the
kernels agree far more closely than either agrees with float64, so the model rounds
where the kernels round; bf16 only changes ``rnd``'s width.  A change of a rounding
point in the kernels must be mirrored here (the docstring table lists them).
"""
from __future__ import annotations

import torch

BITS = {torch.bfloat16: 8, torch.float16: 11, "tf32": 11}


def rnd(x: torch.Tensor, bits: int | None) -> torch.Tensor:
    """Round float64 ``x`` to ``bits`` significant bits (nearest), any exponent
    (Veltkamp's splitting: exact in float64 for |x| < 2^970)."""
    if bits is None:
        return x
    c = x * float(2 ** (53 - bits) + 1)
    return c - (c - x)


class Model:
    """The kernels' arithmetic for one input format.

    ``dtype``: torch.float16 / torch.bfloat16 (16-bit inputs; explicit casts round) or
    torch.float32 (casts are no-ops; ``precision`` decides what a ``tl.dot`` rounds).
    """

    def __init__(self, dtype: torch.dtype, precision: str = "ieee"):
        self.cast_bits = BITS.get(dtype)              # explicit .to(input dtype) casts
        self.precision = precision if dtype == torch.float32 else "ieee"

    def cast(self, x):
        return rnd(x, self.cast_bits)

    def dot(self, a, b):
        """``tl.dot(a, b)`` with float32 accumulation modelled in float64."""
        if self.precision == "ieee":
            return a @ b
        return rnd(a, 11) @ rnd(b, 11)                                  # tf32


def spatial(model: Model, theta, phi, eta, rho, mu, dout, rows: int = 512):
    """``(o, grads, saved)`` as the kernels compute them, all float64, one batch element:
    inputs [N, d], [N, d], [N, dg], [N, dg], [N, C], dout [N, C] -> o [N, C], the five
    gradients, and the forward's saved row statistics ``{"L": [N], "q": [N], "o2": [N, C]}``.
    ``rows`` query rows at a time, so N x N never exists at once."""
    n = theta.shape[0]
    dot, cast = model.dot, model.cast

    def scores(i0, i1):
        a = dot(theta[i0:i1], phi.T)
        b = dot(eta[i0:i1], rho.T)
        return a, b

    lse_a, lse_b = torch.empty(n, dtype=torch.float64), torch.empty(n, dtype=torch.float64)
    big_l, q = torch.empty_like(lse_a), torch.empty_like(lse_a)
    acc, acc2 = torch.empty_like(mu), torch.empty_like(mu)
    for i0 in range(0, n, rows):                          # pass 1 + pass 2
        i1 = min(n, i0 + rows)
        a, b = scores(i0, i1)
        lse_a[i0:i1], lse_b[i0:i1] = a.logsumexp(1), b.logsumexp(1)
        s = dot(torch.cat([theta[i0:i1], eta[i0:i1]], 1), torch.cat([phi, rho], 1).T)
        p = torch.exp(s - (lse_a[i0:i1] + lse_b[i0:i1])[:, None])
        e = cast(torch.expm1(p))
        big_l[i0:i1] = n + e.sum(1)
        acc[i0:i1] = dot(e, mu)
        w = cast(p * (1 + e))
        q[i0:i1] = w.sum(1)
        acc2[i0:i1] = dot(w, mu)
    o = (mu.sum(0) + acc) / big_l[:, None]
    o2, q = acc2 / big_l[:, None], q / big_l

    dol = dout / big_l[:, None]
    dmub = dol.sum(0)
    dolr = cast(dol)
    dl = (dolr * o).sum(1)
    r = big_l * ((dolr * o2).sum(1) - dl * q)
    grads = [torch.zeros_like(x) for x in (theta, phi, eta, rho, mu)]
    for i0 in range(0, n, rows):                          # dq and dkv (sums over i)
        i1 = min(n, i0 + rows)
        a, b = scores(i0, i1)
        sx = torch.exp(a - lse_a[i0:i1, None])
        sg = torch.exp(b - lse_b[i0:i1, None])
        p = sx * sg
        e = cast(torch.expm1(p))
        dsl = dot(dolr[i0:i1], mu.T)
        t = cast(p * (1 + e)) * (dsl - dl[i0:i1, None])
        da = cast(t - sx * r[i0:i1, None])
        db = cast(t - sg * r[i0:i1, None])
        grads[0][i0:i1] = dot(da, phi)
        grads[2][i0:i1] = dot(db, rho)
        grads[1] += dot(da.T, theta[i0:i1])
        grads[3] += dot(db.T, eta[i0:i1])
        grads[4] += dot(e.T, dolr[i0:i1])
    grads[4] += dmub
    return o, grads, {"L": big_l, "q": q, "o2": o2}
