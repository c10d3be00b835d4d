"""GPU-only tests of the Triton backend: bfloat16, larger sizes, the autotuned path, the
released configuration d = dg = C = 256, and torch.compile with Inductor.

Skipped without CUDA (the interpreter cannot run bfloat16).  Tolerances are relative
Frobenius errors against float64 on the *same* rounded inputs; delta = o - mean(mu).
"""
import pytest
import torch

from conftest import requires_cuda
from contract import SPATIAL_NAMES, rel_err
from ggnet_fast import guided_channel_attention, guided_spatial_attention
from ggnet_fast.backends import record_dispatch, reference

pytestmark = requires_cuda


def agreeing_inputs(batch, n, d, dg, c, dtype, spread=1.0):
    """Features and a guidance that agree (as in a trained net), rounded to ``dtype``;
    scores scaled like 1/sqrt(d) attention, mu with a non-zero mean."""
    base = torch.randn(batch, n, max(d, dg), device="cuda")
    xs = [(base[..., :k] + 0.3 * torch.randn(batch, n, k, device="cuda")) * spread * k ** -0.25
          for k in (d, d, dg, dg)]
    xs.append(2.0 + torch.randn(batch, n, c, device="cuda"))
    return [x.to(dtype) for x in xs]


def spatial_errors(inputs, out_dtype=torch.float32):
    """(delta error, {name: gradient error}) of triton vs float64 on the same inputs."""
    ts = [x.clone().requires_grad_() for x in inputs]
    with record_dispatch() as calls:
        out = guided_spatial_attention(*ts, backend="triton", out_dtype=out_dtype)
    assert calls == [("spatial", "triton")]
    dout = torch.randn(out.shape, device="cuda", dtype=torch.float64)
    out.backward(dout.to(out.dtype))
    rs = [x.double().requires_grad_() for x in inputs]
    ref = reference.spatial(*rs, combine="product", out_dtype=torch.float64)
    ref.backward(dout)
    mean_mu = inputs[4].double().mean(dim=1, keepdim=True)
    delta_err = rel_err(out.double() - mean_mu, ref - mean_mu)
    return delta_err, {n: rel_err(t.grad, r.grad) for n, t, r in zip(SPATIAL_NAMES, ts, rs)}


@pytest.mark.parametrize("n,d,dg,c", [(32 * 32, 32, 32, 64), (23 * 17, 12, 7, 10),
                                      (48 * 48, 32, 16, 256)])
def test_spatial_bf16_delta_within_one_percent(seed, n, d, dg, c):
    """The issue's accuracy contract: bf16 inputs, out_dtype=float32 -> delta within ~1%
    of float64 (eager bf16 misses by 10% to 380%); gradients within 3%."""
    delta_err, grad_errs = spatial_errors(agreeing_inputs(2, n, d, dg, c, torch.bfloat16))
    assert delta_err < 1e-2, f"delta rel err {delta_err:.2e} seed={seed}"
    for name, err in grad_errs.items():
        assert err < 3e-2, f"d{name} rel err {err:.2e} seed={seed}"


@pytest.mark.parametrize("dtype,tol_delta,tol_grad",
                         [(torch.float16, 3e-3, 1e-2), (torch.float32, 1e-2, 1e-2)])
def test_spatial_larger_n_autotuned(seed, dtype, tol_delta, tol_grad):
    """N = 64x64 (several autotuned tiles per row), odd d/dg/C.  float32 inputs run
    TF32 products (docs/triton.md, float32 policy): the 16-bit contract's bounds."""
    inputs = agreeing_inputs(2, 64 * 64, 40, 24, 72, dtype)
    delta_err, grad_errs = spatial_errors(inputs)
    if dtype == torch.float32:  # o ~ mean(mu): add the float32 rounding of o itself
        ref = reference.spatial(*(x.double() for x in inputs), combine="product",
                                out_dtype=torch.float64)
        mean_mu = inputs[4].double().mean(dim=1, keepdim=True)
        tol_delta += 4 * rel_err(ref.float().double() - mean_mu, ref - mean_mu)
    assert delta_err < tol_delta, f"delta rel err {delta_err:.2e} seed={seed}"
    for name, err in grad_errs.items():
        assert err < tol_grad, f"d{name} rel err {err:.2e} seed={seed}"


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
def test_spatial_released_configuration_256(seed, dtype):
    """d = dg = C = 256 (the authors' configuration), N = 32x32."""
    delta_err, grad_errs = spatial_errors(agreeing_inputs(2, 32 * 32, 256, 256, 256, dtype))
    assert delta_err < 1e-2, f"delta rel err {delta_err:.2e} seed={seed}"
    for name, err in grad_errs.items():
        assert err < 3e-2, f"d{name} rel err {err:.2e} seed={seed}"


def test_spatial_r_variants_agree_on_gpu(seed, monkeypatch):
    from ggnet_fast.backends.triton import spatial_kernels
    inputs = agreeing_inputs(2, 40 * 40, 32, 32, 64, torch.float16)
    grads = {}
    for mode in ("o2", "pass"):
        monkeypatch.setattr(spatial_kernels, "R_MODE", mode)
        _, grads[mode] = spatial_errors(inputs)
    for name in SPATIAL_NAMES:
        assert grads["o2"][name] < 1e-2 and grads["pass"][name] < 1e-2, f"d{name} seed={seed}"


def test_spatial_bf16_output_dtype_is_bf16():
    inputs = agreeing_inputs(1, 20 * 20, 32, 32, 32, torch.bfloat16)
    out = guided_spatial_attention(*inputs, backend="triton")
    ref = reference.spatial(*(x.double() for x in inputs), combine="product",
                            out_dtype=torch.float64)
    assert out.dtype == torch.bfloat16
    assert (out.double() - ref).abs().max().item() < 1e-2 * ref.abs().max().item()


def test_auto_picks_triton_on_cuda():
    inputs = agreeing_inputs(1, 9 * 9, 8, 8, 8, torch.bfloat16)
    with record_dispatch() as calls:
        guided_spatial_attention(*inputs)
        guided_spatial_attention(*inputs, combine="matmul")  # not fused: falls back
    assert calls[0] == ("spatial", "triton") and calls[1][1] != "triton"


@pytest.mark.parametrize("combine", ["product", "matmul"])
@pytest.mark.parametrize("stabilize", [None, "max-minus"])
@pytest.mark.parametrize("c,n", [(256, 64 * 64), (37, 23 * 17)])
def test_channel_bf16(seed, combine, stabilize, c, n):
    y = (0.05 * torch.randn(2, c, n, device="cuda") + 0.1).to(torch.bfloat16)
    g = (0.05 * torch.randn(2, c, n, device="cuda")).to(torch.bfloat16)
    scale = 1.0 / n ** 0.5
    yt, gt = y.clone().requires_grad_(), g.clone().requires_grad_()
    with record_dispatch() as calls:
        out = guided_channel_attention(yt, gt, combine=combine, stabilize=stabilize, scale=scale,
                                       backend="triton", out_dtype=torch.float32)
    assert calls == [("channel", "triton")]
    dout = torch.randn(out.shape, device="cuda", dtype=torch.float64)
    out.backward(dout.float())
    yr, gr = y.double().requires_grad_(), g.double().requires_grad_()
    ref = reference.channel(yr, gr, combine=combine, stabilize=stabilize, scale=scale,
                            out_dtype=torch.float64)
    ref.backward(dout)
    mean_y = y.double().mean(dim=1, keepdim=True)
    err = rel_err(out.double() - mean_y, ref - mean_y)
    assert err < 1e-2, f"delta rel err {err:.2e} seed={seed}"
    assert rel_err(yt.grad, yr.grad) < 3e-2, f"dy seed={seed}"
    assert rel_err(gt.grad, gr.grad) < 3e-2, f"dg seed={seed}"


def test_inductor_compile_fullgraph(seed):
    inputs = agreeing_inputs(2, 24 * 24, 32, 32, 64, torch.bfloat16)

    def f(*xs):
        return guided_spatial_attention(*xs, backend="triton", out_dtype=torch.float32)

    compiled = torch.compile(f, fullgraph=True)
    a = [x.clone().requires_grad_() for x in inputs]
    b = [x.clone().requires_grad_() for x in inputs]
    f(*a).square().sum().backward()
    compiled(*b).square().sum().backward()
    for x, y in zip(a, b):
        assert rel_err(y.grad, x.grad) < 1e-5, f"seed={seed}"
