"""Numerics of the Triton spatial kernels at a realistic map size, N = 64x64 (and 128x128).

Item 1 of issue 11: at N = 4096 the weights p ~ 1/N^2 and p dp ~ 1/N^3 are far below
float16's smallest normal number; the kernels scale them by powers of two before every
16-bit rounding (``kernel_math.W_SCALE``, ``row_scaled``, ``spatial_kernels._scaled_rounding``)
and sum exactly the rounded values they multiply.  The float16 case runs the kernels
under the interpreter (whose float16 casts are exact numpy float16, subnormals included).

bfloat16 (which the interpreter cannot run) and float32 (TF32 products, which it does not
emulate) are checked with ``triton_emulation.py``, a float64 model that
rounds exactly where the kernels round; the first test ties that model to the kernels.

The issue's recipe: B = 1, d = dg = 16, C = 8, theta, phi ~ sigma N(0, 1), eta = theta +
0.5 N(0, 1), rho = phi + 0.5 N(0, 1) (guidance that agrees with the features), mu = 2 +
N(0, 1), grad_output ~ 4096 N(0, 1) (a GradScaler-like scale).  With the issue's sigma =
0.5 the modulation delta = o - mean(mu) is ~5e-8 of |o|: below float32's resolution
(the float32 reference itself misses it by ~100%), so there the forward is held to the
contract's float32-rounding allowance and only the gradients to 1e-2; sigma = 1 (delta
~3e-5 of |o|, which float32 resolves) holds delta to 1%.  Errors are relative Frobenius
errors against float64 on the same rounded inputs.
"""
from __future__ import annotations

import pytest
import torch

from contract import SPATIAL_NAMES, rel_err
from ggnet_fast import guided_spatial_attention
from ggnet_fast.backends import record_dispatch, reference
from ggnet_fast.backends.triton import runtime
from ggnet_fast.backends.triton import spatial_kernels as tspatial
from triton_emulation import Model
from triton_emulation import spatial as emulate

interpreted = pytest.mark.skipif(
    not (runtime.INTERPRET or torch.cuda.is_available()),
    reason="needs TRITON_INTERPRET=1 or a CUDA device")
DEVICE = "cuda" if torch.cuda.is_available() else "cpu"


def recipe(n, sigma, seed, d=16, c=8):
    """The issue's inputs (float64, [N, k]) and grad_output."""
    gen = torch.Generator().manual_seed(seed)

    def randn(*shape):
        return torch.randn(*shape, generator=gen, dtype=torch.float64)

    theta, phi = sigma * randn(n, d), sigma * randn(n, d)
    return (theta, phi, theta + 0.5 * randn(n, d), phi + 0.5 * randn(n, d),
            2.0 + randn(n, c)), 4096.0 * randn(n, c)


def delta_err(o, exact, mu):
    mean = mu.double().mean(dim=-2, keepdim=True)
    return rel_err(o.double() - mean, exact - mean)


def float32_allowance(exact, mu):
    """The contract's allowance for a float32 output: 4x the error of merely rounding
    the exact o to float32 (dominant when delta is below float32's resolution)."""
    return 4 * delta_err(exact.float(), exact, mu)


def run_triton(inputs, dout):
    """o (float32) and the five gradients of the triton backend; inputs [1, N, k]."""
    leaves = [x.to(DEVICE).requires_grad_() for x in inputs]
    with record_dispatch() as calls:
        out = guided_spatial_attention(*leaves, backend="triton", out_dtype=torch.float32)
    assert calls == [("spatial", "triton")]
    out.backward(dout.to(DEVICE, torch.float32))
    return out.detach().cpu()[0], [x.grad.cpu()[0] for x in leaves]


def exact(inputs, dout):
    """float64 reference backend on the rounded inputs, [N, k] in and out."""
    leaves = [x.double()[None].requires_grad_() for x in inputs]
    out = reference.spatial(*leaves, combine="product", out_dtype=torch.float64)
    out.backward(dout[None])
    return out.detach()[0], [x.grad[0] for x in leaves]


def test_the_float64_model_is_the_reference():
    """The model without rounding (float64 everywhere) is the operator itself."""
    raw, dout = recipe(7 * 9, 1.0, 0, d=5, c=6)
    o, grads, _ = emulate(Model(torch.float64), *raw, dout, rows=16)
    ref_o, ref_grads = exact(raw, dout)
    assert delta_err(o, ref_o, raw[4]) < 1e-9
    for name, g, rg in zip(SPATIAL_NAMES, grads, ref_grads):
        assert rel_err(g, rg) < 1e-9, name


def _rows_matching(x, y):
    """Fraction of rows of ``x`` equal to ``y`` to 1e-6 of the row's size."""
    x, y = x.double().cpu().reshape(len(x), -1), y.double().cpu().reshape(len(y), -1)
    size = y.abs().amax(1).clamp_min(1e-30)
    return float(((x - y).abs().amax(1) <= 1e-6 * size).double().mean())


@interpreted
def test_emulation_tracks_the_interpreted_kernels(seed):
    """float16, which the interpreter computes exactly: the model rounds where the
    kernels round.

    Forward (its rounding points set the saved L - N = sum of the rounded e, q and o2):
    the model matches the kernels' rows to 1e-6 on >= 90% of the rows (the rest: a
    rounding decided differently by the kernels' float32 p), the unrounded float64 on
    few (q, o2).  Backward: the model's gradients, rounded to float16 like the kernels', are
    >= 2x closer to the kernels' than float64's are (typically 10-100x; the rest is the
    float16 rounding of the results and float32 cancellation in the kernels' da)."""
    n = 23 * 17
    raw, dout = recipe(n, 0.7, seed)
    inputs = [x.to(torch.float16) for x in raw]
    _, grads = run_triton([x[None] for x in inputs], dout[None])
    with torch.no_grad():
        _, stats, o2 = tspatial.spatial_fwd(*(x[None].to(DEVICE) for x in inputs), True)
    wide = [x.double() for x in inputs]
    _, mgrads, msaved = emulate(Model(torch.float16), *wide, dout)
    _, rgrads, rsaved = emulate(Model(torch.float64), *wide, dout)
    stored_e_sum = lambda big_l: big_l.float() - n  # noqa: E731 - L - N as the kernels store it
    for name, kernel, model, ref in [("L - N", stats[0, 2] - n, stored_e_sum(msaved["L"]),
                                      stored_e_sum(rsaved["L"])),
                                     ("q", stats[0, 3], msaved["q"], rsaved["q"]),
                                     ("o2", o2[0], msaved["o2"], rsaved["o2"])]:
        to_model, to_ref = _rows_matching(kernel, model), _rows_matching(kernel, ref)
        assert to_model >= 0.9, f"{name}: {to_model:.2f} of the rows match, seed={seed}"
        # L's float32 storage (ulp 3e-5 at N = 391) hides most of sum e's rounding
        assert name == "L - N" or to_ref < 0.5, f"{name}: float64 matches {to_ref:.2f}"
    for name, g, mg, rg in zip(SPATIAL_NAMES, grads, mgrads, rgrads):
        to_model, to_ref = rel_err(g, mg.half()), rel_err(g, rg)
        assert to_model < 0.5 * to_ref, f"d{name}: {to_model:.1e} vs {to_ref:.1e} seed={seed}"


@pytest.mark.slow
@interpreted
@pytest.mark.parametrize("sigma", [0.5, 1.0])
def test_float16_at_64x64_issue_recipe(sigma):
    """The kernels in float16 at N = 4096: every gradient within 1e-2 of float64 (before
    the fix: dtheta 1.6e-2, deta 4.1e-2, and delta lost entirely at sigma = 1)."""
    raw, dout = recipe(64 * 64, sigma, 11)
    inputs = [x.to(torch.float16) for x in raw]
    o, grads = run_triton([x[None] for x in inputs], dout[None])
    ref_o, ref_grads = exact(inputs, dout)
    tol = 1e-2 + float32_allowance(ref_o, inputs[4])
    if sigma == 1.0:
        assert tol < 2e-2, "delta must be resolvable in float32 in this case"
    err = delta_err(o, ref_o, inputs[4])
    assert err < tol, f"delta {err:.2e} (allowed {tol:.2e})"
    for name, g, rg in zip(SPATIAL_NAMES, grads, ref_grads):
        assert g.dtype == torch.float16
        assert rel_err(g, rg) < 1e-2, f"d{name} {rel_err(g, rg):.2e}"


def _emulated_errors(dtype, precision, n, sigma, seed):
    raw, dout = recipe(n, sigma, seed)
    inputs = [x.to(dtype).double() for x in raw]
    o, grads, _ = emulate(Model(dtype, precision), *inputs, dout, rows=1024)
    ref_o, ref_grads, _ = emulate(Model(torch.float64), *inputs, dout, rows=1024)
    return (delta_err(o, ref_o, inputs[4]), float32_allowance(ref_o, inputs[4]),
            [rel_err(g, rg) for g, rg in zip(grads, ref_grads)])


@pytest.mark.parametrize("n,sigmas", [(64 * 64, (1.0, 0.5)),
                                      pytest.param(128 * 128, (1.0,), marks=pytest.mark.slow)])
def test_bfloat16_rounding_points_at_realistic_n(n, sigmas):
    """bf16 as the kernels round it: delta within 1% where float32 resolves it (64x64,
    sigma = 1; the forward's row sums add the rounded weights, so rounding leaves no
    bias in o - mean(mu)); at 128x128 delta is ~2e-2 below float32's resolution even at
    sigma = 1, so there it gets the contract's float32 allowance; every gradient within
    1e-2 (the backward's p dp uses the forward's rounded weights: with float32 ones the
    gradients missed by 2e-2 to 4e-2 at 64x64).  128x128: ~18 min on the loaded 2-core
    machine (float64 N x N work), slow-marked."""
    for sigma in sigmas:
        err, allowance, grad_errs = _emulated_errors(torch.bfloat16, "ieee", n, sigma, 3)
        if sigma == 1.0 and n == 64 * 64:
            assert allowance < 1e-2, "delta must be resolvable in float32 in this case"
        assert err < 1e-2 + allowance, f"sigma={sigma}: delta {err:.2e}"
        for name, e in zip(SPATIAL_NAMES, grad_errs):
            assert e < 1e-2, f"sigma={sigma}: d{name} {e:.2e}"


def test_float32_policy_accuracy():
    """float32 inputs run TF32 products (``runtime.dot_precision``: IEEE and tf32x3 do not
    fit H100/H200 at d = 256): delta and every gradient within the 16-bit contract's 1e-2
    at N = 64x64 (measured ~1e-3 and ~4e-3)."""
    err, allowance, grad_errs = _emulated_errors(torch.float32, "tf32", 64 * 64, 1.0, 5)
    assert allowance < 1e-2 and err < 1e-2, f"delta {err:.2e}"
    for name, e in zip(SPATIAL_NAMES, grad_errs):
        assert e < 1e-2, f"d{name} {e:.2e}"


@pytest.mark.skipif(not torch.cuda.is_available(), reason="bfloat16 kernels need a GPU")
@pytest.mark.parametrize("sigma", [0.5, 1.0])
def test_bfloat16_at_64x64_issue_recipe_on_gpu(sigma):
    """What the emulation predicts, on the GPU: the issue's recipe in bfloat16."""
    raw, dout = recipe(64 * 64, sigma, 12)
    inputs = [x.to(torch.bfloat16) for x in raw]
    o, grads = run_triton([x[None] for x in inputs], dout[None])
    ref_o, ref_grads = exact(inputs, dout)
    tol = 1e-2 + float32_allowance(ref_o, inputs[4])
    err = delta_err(o, ref_o, inputs[4])
    assert err < tol, f"delta {err:.2e} (allowed {tol:.2e})"
    for name, g, rg in zip(SPATIAL_NAMES, grads, ref_grads):
        assert rel_err(g, rg) < 1e-2, f"d{name} {rel_err(g, rg):.2e}"
