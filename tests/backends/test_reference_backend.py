"""The reference backend against an independent float64 NumPy implementation.

Forward (checked on the modulation delta = o - mean(mu), not only on o) and every
input gradient, at sizes that are not powers of two, both combine modes; plus
torch.autograd.gradcheck in float64 and the half-precision accuracy contract.
"""
import numpy as np
import pytest
import torch

from ggnet_fast import guided_channel_attention, guided_spatial_attention
from ggnet_fast.backends import record_dispatch

import numpy_reference as npref
from contract import SPATIAL_NAMES, rel_err, spatial_inputs

def numpy_spatial(tensors, dout, combine):
    outs, grads = [], {k: [] for k in SPATIAL_NAMES}
    arrays = [t.detach().double().numpy() for t in tensors]
    for i in range(arrays[0].shape[0]):
        o, g = npref.spatial_forward_backward(*(a[i] for a in arrays), dout[i].numpy(), combine)
        outs.append(o)
        for k in SPATIAL_NAMES:
            grads[k].append(g[k])
    return np.stack(outs), {k: np.stack(v) for k, v in grads.items()}


@pytest.mark.parametrize("combine", ["product", "matmul", "joint"])
@pytest.mark.parametrize("n,d,dg,c", [(7 * 9, 5, 3, 6), (23 * 17, 12, 7, 10)])
def test_spatial_matches_numpy_forward_and_gradients(seed, combine, n, d, dg, c):
    inputs = spatial_inputs((3, n, d, dg, c), torch.float64, scale=1.0, requires_grad=True)
    with record_dispatch() as calls:
        out = guided_spatial_attention(*inputs, combine=combine, backend="reference")
    assert calls == [("spatial", "reference")]
    dout = torch.randn_like(out)
    out.backward(dout)
    expected, grads = numpy_spatial(inputs, dout, combine)

    mean_mu = inputs[4].detach().mean(dim=1, keepdim=True).numpy()
    delta, delta_ref = out.detach().numpy() - mean_mu, expected - mean_mu
    assert rel_err(delta, delta_ref) < 1e-9, f"seed={seed}"
    assert np.abs(out.detach().numpy() - expected).max() < 1e-12, f"seed={seed}"
    for name, t in zip(SPATIAL_NAMES, inputs):
        assert rel_err(t.grad.numpy(), grads[name]) < 1e-9, f"d{name} seed={seed}"


@pytest.mark.parametrize("combine", ["product", "matmul"])
@pytest.mark.parametrize("stabilize", [None, "max-minus"])
@pytest.mark.parametrize("scale", [None, 0.05])
def test_channel_matches_numpy_forward_and_gradients(seed, combine, stabilize, scale):
    batch, c, n = 2, 11, 5 * 7
    # Moderate magnitudes so the Gram softmaxes are neither one-hot nor uniform.
    y = (0.3 * torch.randn(batch, c, n, dtype=torch.float64)).requires_grad_()
    g = (0.3 * torch.randn(batch, c, n, dtype=torch.float64)).requires_grad_()
    out = guided_channel_attention(y, g, combine=combine, stabilize=stabilize, scale=scale,
                                   backend="reference")
    dout = torch.randn_like(out)
    out.backward(dout)
    for i in range(batch):
        o, grads = npref.channel_forward_backward(
            y[i].detach().numpy(), g[i].detach().numpy(), dout[i].numpy(), combine, stabilize,
            scale)
        mean_y = y[i].detach().mean(dim=0, keepdim=True).numpy()
        assert rel_err(out[i].detach().numpy() - mean_y, o - mean_y) < 1e-9, f"seed={seed}"
        assert rel_err(y.grad[i].numpy(), grads["y"]) < 1e-9, f"dy seed={seed}"
        assert rel_err(g.grad[i].numpy(), grads["g"]) < 1e-9, f"dg seed={seed}"


@pytest.mark.parametrize("combine", ["product", "matmul", "joint"])
def test_spatial_gradcheck_float64(seed, combine):
    inputs = spatial_inputs((2, 3 * 5, 4, 3, 5), torch.float64, scale=1.0, requires_grad=True)
    assert torch.autograd.gradcheck(
        lambda *a: guided_spatial_attention(*a, combine=combine, backend="reference"), inputs)


@pytest.mark.parametrize("combine", ["product", "matmul"])
@pytest.mark.parametrize("stabilize", [None, "max-minus"])
def test_channel_gradcheck_float64(seed, combine, stabilize):
    y = (0.5 * torch.randn(2, 6, 13, dtype=torch.float64)).requires_grad_()
    g = (0.5 * torch.randn(2, 6, 13, dtype=torch.float64)).requires_grad_()
    assert torch.autograd.gradcheck(
        lambda a, b: guided_channel_attention(a, b, combine=combine, stabilize=stabilize,
                                              backend="reference"), (y, g))


def test_wrong_softmax_axis_is_caught_by_the_gradients_not_the_forward(seed):
    """Why the tests compare gradients: a transposed outer softmax barely moves o."""
    n = 16 * 16
    theta, phi, eta, rho, mu = spatial_inputs((1, n, 16, 16, 8), torch.float64, scale=0.5)
    right = [t.clone().requires_grad_() for t in (theta, phi, eta, rho, mu)]
    wrong = [t.clone().requires_grad_() for t in (theta, phi, eta, rho, mu)]
    o_right = guided_spatial_attention(*right, backend="reference")
    sx = torch.softmax(wrong[0] @ wrong[1].transpose(1, 2), -1)
    sg = torch.softmax(wrong[2] @ wrong[3].transpose(1, 2), -1)
    o_wrong = torch.softmax(sx * sg, dim=1).transpose(1, 2) @ wrong[4]  # softmax over queries
    dout = torch.randn_like(o_right)
    o_right.backward(dout)
    o_wrong.backward(dout)
    forward_gap = (o_right - o_wrong).abs().max().item()
    grad_gap = rel_err(wrong[0].grad.numpy(), right[0].grad.numpy())
    assert forward_gap < 1e-2, "o is almost mean(mu) either way"
    assert grad_gap > 1e-2, "but dtheta differs clearly, so gradient tests catch the bug"


def _agreeing_guidance_inputs(n, d, c, dtype):
    """Features and a guidance that agree (as in a trained net), rounded to ``dtype``."""
    torch.manual_seed(int.from_bytes(__import__("os").urandom(4), "little"))
    base = torch.randn(1, n, d)
    theta = base + 0.3 * torch.randn(1, n, d)
    phi = base + 0.3 * torch.randn(1, n, d)
    eta = base + 0.3 * torch.randn(1, n, d)
    rho = base + 0.3 * torch.randn(1, n, d)
    mu = 2.0 + torch.randn(1, n, c)  # post-activation features have a non-zero mean
    return [t.to(dtype) for t in (theta, phi, eta, rho, mu)]


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_half_inputs_keep_the_modulation_with_float32_output(dtype):
    """Contract: reference + out_dtype=float32 keeps delta within ~1% of float64 on the
    same rounded inputs; eager half-precision code (the released formula) misses it."""
    n, d, c = 32 * 32, 32, 16
    rounded = _agreeing_guidance_inputs(n, d, c, dtype)
    exact = guided_spatial_attention(*(t.double() for t in rounded), backend="reference")
    mean_mu = rounded[4].double().mean(dim=1, keepdim=True)
    delta_exact = exact - mean_mu
    ours = guided_spatial_attention(*rounded, out_dtype=torch.float32, backend="reference")
    assert ours.dtype == torch.float32
    err_ours = rel_err((ours.double() - mean_mu).numpy(), delta_exact.numpy())
    eager = guided_spatial_attention(*rounded, backend="eager")
    err_eager = rel_err((eager.double() - mean_mu).numpy(), delta_exact.numpy())
    assert err_ours < 0.01, err_ours
    assert err_eager > 0.10, f"eager {dtype} unexpectedly kept delta ({err_eager:.3f})"


def test_half_inputs_default_output_dtype_is_the_input_dtype():
    rounded = _agreeing_guidance_inputs(50, 8, 4, torch.bfloat16)
    assert guided_spatial_attention(*rounded, backend="reference").dtype == torch.bfloat16
    y = torch.randn(1, 4, 9, dtype=torch.float16)
    assert guided_channel_attention(y, y, backend="reference").dtype == torch.float16
    assert guided_channel_attention(y, y, out_dtype=torch.float32).dtype == torch.float32


def test_outputs_are_finite_for_large_scores(seed):
    """Scores far beyond exp's range: every softmax is stabilised, so no inf/NaN."""
    inputs = spatial_inputs((2, 40, 6, 6, 5), torch.float32, scale=30.0, requires_grad=True)
    out = guided_spatial_attention(*inputs, backend="reference")
    out.sum().backward()
    assert torch.isfinite(out).all()
    assert all(torch.isfinite(t.grad).all() for t in inputs)
    y = (50 * torch.randn(2, 7, 30)).requires_grad_()
    z = guided_channel_attention(y, y.detach() * 2, backend="reference")
    z.sum().backward()
    assert torch.isfinite(z).all() and torch.isfinite(y.grad).all()


def test_reference_is_not_changed_by_autocast(seed):
    inputs = spatial_inputs((2, 30, 5, 4, 3), torch.float32, scale=1.0)
    plain = guided_spatial_attention(*inputs, backend="reference")
    with torch.autocast("cpu", dtype=torch.bfloat16):
        auto = guided_spatial_attention(*inputs, backend="reference")
    assert auto.dtype == torch.float32
    torch.testing.assert_close(auto, plain, rtol=0, atol=0)
