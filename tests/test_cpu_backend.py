"""The fused C++ ``cpu`` backend (csrc/cpu/) against the float64 reference.

Both operators, forward (the spatial output is checked on its modulation
delta = o - mean(mu), the channel output on out - mean_c(y)) and every input gradient,
at odd sizes spanning several 64-query / 256-key tiles with ragged edges, batch > 1,
float32 and bfloat16 (float64 reference on the same bf16-rounded values), with both
libraries of the tile products (oneDNN and BLAS), plus gradcheck in float64,
torch.library.opcheck, torch.compile(fullgraph=True), dispatch, determinism across
thread counts and bad inputs.

Tolerances (relative Frobenius error against float64):
* forward delta: 1e-3, and at most 3x (+1e-6) the error of the reference backend run in
  float32 on the same values -- float32 itself is the limit: with peaked scores (|a| ~ 30)
  the float32 reference is ~2e-4 off, the float64 path of this kernel 1e-13;
* gradients: 5e-5 for float32 (measured <= 8e-6); 1e-2 for bfloat16 inputs, whose
  gradients are returned in bf16 (rounding 2^-9 relative; measured <= 2e-3).
bfloat16 inputs are upcast exactly and accumulated in float32, with out_dtype=float32
keeping delta, so their forward meets the float32 bound.
"""
import os

import pytest
import torch

from ggnet_fast import guided_channel_attention, guided_spatial_attention
from ggnet_fast.backends import record_dispatch, reference, unavailable_reason

from compile_check import assert_compile_matches_eager

if os.environ.get("GGNET_CPU_EXT") == "0":
    pytest.skip("installed with GGNET_CPU_EXT=0: no compiled extension", allow_module_level=True)

from ggnet_fast.backends import cpu  # noqa: E402

SPATIAL_NAMES = ("theta", "phi", "eta", "rho", "mu")
TOL = {torch.float32: (1e-3, 5e-5), torch.bfloat16: (1e-3, 1e-2)}  # (forward delta, grads)
SPATIAL_SIZES = [  # (B, N, d, dg, C)
    (2, 7 * 9, 5, 3, 11),
    (3, 23 * 17, 8, 4, 33),
    (2, 37 * 29, 16, 8, 40),
]


def setup_module():
    assert unavailable_reason("cpu") is None, unavailable_reason("cpu")


def rel_err(x: torch.Tensor, y: torch.Tensor) -> float:
    x, y = x.detach().double(), y.detach().double()
    return float((x - y).norm() / y.norm().clamp_min(1e-300))


def spatial_inputs(shape, dtype, scale=1.5):
    b, n, d, dg, c = shape
    dims = (d, d, dg, dg, c)
    return [(scale * torch.randn(b, n, k)).to(dtype) for k in dims]


def agreeing_spatial_inputs(shape, dtype, scale=1.5):
    """Like :func:`spatial_inputs`, but the guidance keys agree with the feature keys (as in
    a trained GG-Net), so the modulation delta stands well above float32 rounding of o.
    With independent random guidance, delta can be so small at N ~ 1000 that even the
    float32 reference misses it by more than the forward tolerance."""
    theta, phi, eta, rho, mu = spatial_inputs(shape, torch.float32, scale)
    dg = eta.shape[-1]
    eta = theta[..., :dg] + 0.5 * eta
    rho = phi[..., :dg] + 0.5 * rho
    return [x.to(dtype) for x in (theta, phi, eta, rho, mu)]


def grads_of(fn, inputs, dout):
    leaves = [x.detach().requires_grad_() for x in inputs]
    out = fn(*leaves)
    grads = torch.autograd.grad(out, leaves, dout.to(out.dtype))
    return out.detach(), grads


@pytest.fixture(params=["strip", "streaming"])
def tiling(request, monkeypatch):
    """Whole-row strips (the default up to N ~ 21845) or small tiles streaming over keys
    with recomputation (what larger N use), forced by a 20 KiB per-thread tile budget."""
    if request.param == "streaming":
        monkeypatch.setenv("GGNET_CPU_TILE_BYTES", str(20 * 1024))
    return request.param


def onednn_expected() -> bool:
    """Where ``auto`` must pick oneDNN's float32 matmul: x86-64, torch built with MKLDNN
    and enabled, and a CPU torch allows it on (the check torch's ``mkldnn_matmul`` makes:
    AVX-512 BW/VL/DQ or AVX-NE-CONVERT). True on the CI machines."""
    import platform
    return (platform.machine() in ("x86_64", "AMD64") and torch.backends.mkldnn.is_available()
            and torch.backends.mkldnn.enabled
            and torch.ops.mkldnn._is_mkldnn_bf16_supported())


@pytest.fixture(params=["onednn", "blas"])
def gemm_library(request, monkeypatch):
    """The library of the kernels' tile products (csrc/cpu/tile_gemm.h), forced through
    GGNET_CPU_GEMM; float32 products use it, float64 ones always use BLAS."""
    if request.param == "onednn" and not onednn_expected():
        pytest.skip("no oneDNN float32 matmul expected on this platform")
    monkeypatch.setenv("GGNET_CPU_GEMM", request.param)
    assert torch.ops.ggnet_fast.spatial_cpu_gemm(torch.zeros(1)) == request.param
    return request.param


def test_gemm_library_selection(monkeypatch):
    monkeypatch.delenv("GGNET_CPU_GEMM", raising=False)
    auto = torch.ops.ggnet_fast.spatial_cpu_gemm(torch.zeros(1))
    assert auto == ("onednn" if onednn_expected() else "blas")
    assert torch.ops.ggnet_fast.spatial_cpu_gemm(torch.zeros(1, dtype=torch.float64)) == "blas"
    assert torch.ops.ggnet_fast.spatial_cpu_gemm(torch.zeros(1, dtype=torch.bfloat16)) == auto
    with torch.backends.mkldnn.flags(enabled=False):  # the user switched oneDNN off
        assert torch.ops.ggnet_fast.spatial_cpu_gemm(torch.zeros(1)) == "blas"
    monkeypatch.setenv("GGNET_CPU_GEMM", "mkl")
    with pytest.raises(RuntimeError, match="GGNET_CPU_GEMM must be"):
        guided_spatial_attention(*spatial_inputs((1, 9, 2, 2, 3), torch.float32), backend="cpu")


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16], ids=["f32", "bf16"])
@pytest.mark.parametrize("shape", SPATIAL_SIZES, ids=lambda s: "N%d" % s[1])
def test_spatial_forward_and_gradients_match_float64(seed, dtype, shape, tiling, gemm_library):
    inputs = agreeing_spatial_inputs(shape, dtype)
    dout = torch.randn(shape[0], shape[1], shape[4])
    with record_dispatch() as calls:
        out, grads = grads_of(
            lambda *x: guided_spatial_attention(*x, out_dtype=torch.float32, backend="auto"),
            inputs, dout)
    assert calls == [("spatial", "cpu")]
    ref_out, ref_grads = grads_of(
        lambda *x: reference.spatial(*x, combine="product", out_dtype=torch.float64),
        [x.double() for x in inputs], dout.double())
    fwd_tol, grad_tol = TOL[dtype]
    mean_mu = inputs[4].double().mean(dim=1, keepdim=True)
    delta, delta_ref = out.double() - mean_mu, ref_out - mean_mu
    assert delta_ref.abs().max() > 1e-5  # the modulation is really there (>> float32 ulp of o)
    err = rel_err(delta, delta_ref)
    ref32 = reference.spatial(*(x.float() for x in inputs), combine="product",
                              out_dtype=torch.float32)
    err_ref32 = rel_err(ref32.double() - mean_mu, delta_ref)
    assert err < fwd_tol and err <= 3 * err_ref32 + 1e-6, f"seed={seed} {err=} {err_ref32=}"
    for name, g, r, x in zip(SPATIAL_NAMES, grads, ref_grads, inputs):
        assert g.dtype == x.dtype and g.shape == x.shape
        assert rel_err(g, r) < grad_tol, f"d{name} seed={seed} err={rel_err(g, r)}"


def test_spatial_output_dtype_follows_out_dtype(seed):
    inputs = spatial_inputs((2, 30, 4, 4, 6), torch.bfloat16)
    assert guided_spatial_attention(*inputs, backend="cpu").dtype == torch.bfloat16
    assert guided_spatial_attention(*inputs, backend="cpu",
                                    out_dtype=torch.float32).dtype == torch.float32


def test_spatial_float16_inputs(seed):
    inputs = spatial_inputs((2, 45, 6, 5, 7), torch.float16)
    out = guided_spatial_attention(*inputs, backend="cpu", out_dtype=torch.float32)
    ref = reference.spatial(*(x.double() for x in inputs), combine="product",
                            out_dtype=torch.float64)
    mean_mu = inputs[4].double().mean(dim=1, keepdim=True)
    assert rel_err(out.double() - mean_mu, ref - mean_mu) < 2e-4, f"seed={seed}"


CHANNEL_MODES = [(c, s, k) for c in ("product", "matmul") for s in (None, "max-minus")
                 for k in (None, 0.05)]


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16], ids=["f32", "bf16"])
@pytest.mark.parametrize("combine,stabilize,scale", CHANNEL_MODES)
def test_channel_forward_and_gradients_match_float64(seed, dtype, combine, stabilize, scale):
    b, c, n = 2, 13, 7 * 11
    inputs = [(0.3 * torch.randn(b, c, n)).to(dtype) for _ in range(2)]
    dout = torch.randn(b, c, n)
    kw = dict(combine=combine, stabilize=stabilize, scale=scale)
    with record_dispatch() as calls:
        out, grads = grads_of(
            lambda y, g: guided_channel_attention(y, g, out_dtype=torch.float32, **kw),
            inputs, dout)
    assert calls == [("channel", "cpu")]
    ref_out, ref_grads = grads_of(
        lambda y, g: reference.channel(y, g, out_dtype=torch.float64, **kw),
        [x.double() for x in inputs], dout.double())
    fwd_tol, grad_tol = TOL[dtype]
    mean_y = inputs[0].double().mean(dim=1, keepdim=True)
    ref32 = reference.channel(*(x.float() for x in inputs), out_dtype=torch.float32, **kw)
    err = rel_err(out.double() - mean_y, ref_out - mean_y)
    err_ref32 = rel_err(ref32.double() - mean_y, ref_out - mean_y)
    assert err < fwd_tol and err <= 3 * err_ref32 + 1e-6, f"seed={seed} {err=} {err_ref32=}"
    for name, g, r, x in zip(("y", "g"), grads, ref_grads, inputs):
        assert g.dtype == x.dtype
        assert rel_err(g, r) < grad_tol, f"d{name} seed={seed} err={rel_err(g, r)}"


def test_gradcheck_float64(seed, tiling):
    spatial = [x.requires_grad_() for x in spatial_inputs((2, 11, 3, 2, 4), torch.float64, 1.0)]
    assert torch.autograd.gradcheck(
        lambda *x: guided_spatial_attention(*x, backend="cpu"), spatial)
    for combine, stabilize, scale in [("product", None, None), ("matmul", "max-minus", 0.1)]:
        y, g = (torch.randn(2, 5, 9, dtype=torch.float64, requires_grad=True) for _ in range(2))
        assert torch.autograd.gradcheck(
            lambda y, g: guided_channel_attention(y, g, combine=combine, stabilize=stabilize,
                                                  scale=scale, backend="cpu"), (y, g))


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_opcheck(seed, dtype):
    spatial = [x.requires_grad_() for x in spatial_inputs((2, 19, 4, 3, 5), dtype)]
    torch.library.opcheck(torch.ops.ggnet_fast.spatial.default, spatial)
    torch.library.opcheck(torch.ops.ggnet_fast.spatial_fwd.default, [x.detach() for x in spatial])
    y, g = (torch.randn(2, 6, 10, dtype=dtype, requires_grad=True) for _ in range(2))
    torch.library.opcheck(torch.ops.ggnet_fast.channel.default, (y, g, "matmul", "max-minus", 0.2))
    torch.library.opcheck(torch.ops.ggnet_fast.channel.default, (y, g, "product", None, None))


def test_torch_compile_fullgraph(seed):
    inputs = spatial_inputs((2, 40, 6, 4, 8), torch.float32)
    y, g = (0.3 * torch.randn(2, 8, 40) for _ in range(2))
    assert_compile_matches_eager("cpu", inputs, y, g, seed)


def test_results_do_not_depend_on_thread_count(seed, tiling, gemm_library):
    inputs = [x.requires_grad_() for x in spatial_inputs((2, 700, 8, 8, 16), torch.float32)]
    dout = torch.randn(2, 700, 16)
    results = []
    threads = torch.get_num_threads()
    try:
        for n_threads in (1, 2):
            torch.set_num_threads(n_threads)
            out = guided_spatial_attention(*inputs, backend="cpu")
            results.append((out, *torch.autograd.grad(out, inputs, dout)))
    finally:
        torch.set_num_threads(threads)
    for a, b in zip(*results):
        assert torch.equal(a, b), f"seed={seed}"


def test_non_contiguous_inputs(seed):
    b, n, d, c = 2, 50, 6, 9
    theta = torch.randn(b, d, n).transpose(1, 2)
    mu = torch.randn(b, c, n).transpose(1, 2)
    rest = [torch.randn(b, n, d) for _ in range(3)]
    inputs = [theta, rest[0], rest[1], rest[2], mu]
    out = guided_spatial_attention(*inputs, backend="cpu")
    ref = reference.spatial(*(x.double() for x in inputs), combine="product",
                            out_dtype=torch.float64)
    mean_mu = mu.double().mean(dim=1, keepdim=True)
    assert rel_err(out.double() - mean_mu, ref - mean_mu) < 2e-4, f"seed={seed}"


def test_auto_dispatch_and_unsupported_cases():
    inputs = spatial_inputs((1, 20, 4, 4, 4), torch.float32)
    with record_dispatch() as calls:
        guided_spatial_attention(*inputs, combine="matmul")
    assert calls == [("spatial", "reference")]  # the cpu backend declines N x N products
    with pytest.raises(ValueError, match="matmul"):
        guided_spatial_attention(*inputs, combine="matmul", backend="cpu")
    assert cpu.unsupported("spatial", "cuda", torch.float32, {"combine": "product"})
    assert cpu.unsupported("channel", "cpu", torch.bfloat16, {"combine": "matmul"}) is None


def test_bad_inputs_raise_named_errors():
    ops = torch.ops.ggnet_fast
    t = [torch.randn(2, 10, 4) for _ in range(4)] + [torch.randn(2, 10, 3)]
    with pytest.raises(ValueError, match="phi"):
        ops.spatial(t[0], torch.randn(2, 10, 5), t[2], t[3], t[4])
    with pytest.raises(ValueError, match="mu"):
        ops.spatial(t[0], t[1], t[2], t[3], torch.randn(2, 11, 3))
    with pytest.raises(ValueError, match="eta"):
        ops.spatial(t[0], t[1], torch.randn(10, 4), t[3], t[4])
    with pytest.raises(TypeError, match="rho"):
        ops.spatial(t[0], t[1], t[2], t[3].double(), t[4])
    with pytest.raises(ValueError, match="combine"):
        ops.channel(t[0], t[1], "sum", None, None)
    with pytest.raises(ValueError, match="stabilize"):
        ops.channel(t[0], t[1], "product", "min-plus", None)
    with pytest.raises(ValueError, match="g must have"):
        ops.channel(t[0], t[4], "product", None, None)
    # the public API checks first, naming the argument
    with pytest.raises(ValueError, match="rho"):
        guided_spatial_attention(t[0], t[1], t[2], torch.randn(2, 9, 4), t[4], backend="cpu")
    with pytest.raises(TypeError, match="theta"):
        guided_spatial_attention(t[0].int(), t[1], t[2], t[3], t[4], backend="cpu")
