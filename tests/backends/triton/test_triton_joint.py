"""The Triton kernels of ``combine="joint"`` (``backends/triton/joint_kernels.py``): what is
specific to them.

The contract suite (tests/backends/test_backend_contract.py) holds them to float64 at odd sizes in
float32 and float16 (under ``TRITON_INTERPRET=1`` without a GPU), with opcheck and
torch.compile.  Here: the 16-bit rounding points at the sizes where they break.

* N = 64x64 in float16: the weights W ~ 1/N and a loss-scaled ``do`` (256 N(0, 1), as a
  GradScaler gives; 4096 would make the exact drho exceed float16's 65504) against
  float64 (the recipe of the product kernels' test: d = dg = 16, C = 8).
* A tiny ``do`` (1e-7 N(0, 1): float16 subnormals, 60% rounding steps, if rounded as is)
  and a large ``mu`` (|do . mu| far above 65504 after the do scaling if ``dz`` were
  rounded unscaled): the per-batch power of two on ``do`` and the per-row one on ``dz``
  keep every gradient within the float16 contract.

Tolerances: the float16 contract (docs/kernels.md): forward 5e-3 relative to float64 on
the same rounded inputs (joint weights are not near uniform, so ``o`` itself is judged),
gradients 2e-2, each gradient's bound raised by 4x the error of merely rounding the exact
gradient to float16 (what a float16 result cannot avoid: 2e-4 here, more where the
gradients are subnormal).  Measured at N = 4096: forward 3e-5, gradients 3.5e-4 to 4.6e-4.
"""
from __future__ import annotations

import pytest
import torch

from contract import CONTRACT_TOL, SPATIAL_NAMES, grads_of, rel_err, spatial_reference
from ggnet_fast import guided_spatial_attention
from ggnet_fast.backends import record_dispatch
from ggnet_fast.backends.triton import runtime

pytestmark = pytest.mark.skipif(not (runtime.INTERPRET or torch.cuda.is_available()),
                                reason="needs TRITON_INTERPRET=1 or a CUDA device")
DEVICE = "cuda" if torch.cuda.is_available() else "cpu"
FWD_TOL, GRAD_TOL = CONTRACT_TOL[("spatial", torch.float16)]


def recipe(n, d, c, sigma=1.0, mu_scale=1.0):
    """theta, phi ~ sigma N(0, 1); guidance keys that agree with them; mu = 2 + N(0, 1)
    (times ``mu_scale``), float16 [1, n, *]."""
    theta, phi = (sigma * torch.randn(1, n, d) for _ in range(2))
    eta, rho = theta + 0.5 * torch.randn(1, n, d), phi + 0.5 * torch.randn(1, n, d)
    mu = mu_scale * (2.0 + torch.randn(1, n, c))
    return [x.to(torch.float16).to(DEVICE) for x in (theta, phi, eta, rho, mu)]


def check(inputs, dout, info):
    with record_dispatch() as calls:
        out, grads = grads_of(lambda *x: guided_spatial_attention(
            *x, combine="joint", out_dtype=torch.float32, backend="triton"), inputs, dout)
    assert calls == [("spatial", "triton")]
    ref_out, ref_grads = spatial_reference(inputs, dout, "joint")
    err = rel_err(out, ref_out)
    assert err < FWD_TOL, f"o {info} {err=:.2e}"
    for name, g, r, x in zip(SPATIAL_NAMES, grads, ref_grads, inputs):
        assert g.dtype == x.dtype and torch.isfinite(g).all(), f"d{name} {info}"
        floor = rel_err(r.to(torch.float16), r)
        assert rel_err(g, r) < GRAD_TOL + 4 * floor, f"d{name} {info} {rel_err(g, r)=:.2e}"


def test_float16_at_64x64(seed):
    """W ~ 1/4096 and a loss-scaled do, at the realistic map size."""
    inputs = recipe(64 * 64, 16, 8)
    check(inputs, 256.0 * torch.randn(1, 64 * 64, 8, device=DEVICE), f"seed={seed}")


@pytest.mark.parametrize("case", ["tiny-do", "large-mu"])
def test_float16_scaling_of_do_and_dz(seed, case):
    """do ~ 1e-7 would round to float16 subnormals (mu ~ 3000 keeps dtheta .. drho normal);
    |do . mu| ~ 2^14 * 400 * 8 (after the do scaling) would overflow float16 in dz
    without the per-row scaling."""
    n, c = 391, 8
    inputs = recipe(n, 12, c, mu_scale=1500.0 if case == "tiny-do" else 200.0)
    dout = torch.randn(1, n, c, device=DEVICE) * (1e-7 if case == "tiny-do" else 1.0)
    check(inputs, dout, f"{case} seed={seed}")
