"""The fused C++ ``cpu`` backend (csrc/cpu/): what is specific to it.

The contract every backend meets (both operators against float64 in every dtype and
mode, non-contiguous inputs, torch.compile, opcheck, autocast, output dtype) is
tests/backends/test_backend_contract.py.  Here: the spatial operator (``combine="product"`` and
``"joint"``, csrc/cpu/spatial_cpu.cpp and joint_cpu.cpp) against float64 on both of
its tile paths (whole-row strips and streaming tiles, ``GGNET_CPU_TILE_BYTES``) with both
libraries of the tile products (oneDNN and BLAS, ``GGNET_CPU_GEMM``), at sizes up to
N ~ 1000 (several 64-query / 256-key tiles with ragged edges), gradcheck in float64 on
both tile paths, determinism across thread counts, dispatch and bad inputs at the
operator level.

Tolerances (relative Frobenius error against float64; the cpu rows of
``contract.MEASURED_TOL``):
* forward delta: 1e-3, and at most 3x (+1e-6) the error of the reference backend run in
  float32 on the same values -- float32 itself is the limit: with peaked scores (|a| ~ 30)
  the float32 reference is ~2e-4 off, the float64 path of this kernel 1e-13;
* gradients: 5e-5 for float32 (measured <= 8e-6); 1e-2 for bfloat16 inputs, whose
  gradients are returned in bf16 (rounding 2^-9 relative; measured <= 2e-3).
bfloat16 inputs are upcast exactly and accumulated in float32, with out_dtype=float32
keeping delta, so their forward meets the float32 bound.
"""
import functools
import os

import pytest
import torch

from contract import (MEASURED_TOL, SPATIAL_NAMES, agreeing_spatial_inputs, grads_of, rel_err,
                      spatial_inputs)
from ggnet_fast import guided_channel_attention, guided_spatial_attention
from ggnet_fast.backends import get_backend, record_dispatch, reference, unavailable_reason

if os.environ.get("GGNET_CPU_EXT") == "0":
    pytest.skip("installed with GGNET_CPU_EXT=0: no compiled extension", allow_module_level=True)

SPATIAL_SIZES = [  # (B, N, d, dg, C)
    (2, 7 * 9, 5, 3, 11),
    (3, 23 * 17, 8, 4, 33),
    (2, 37 * 29, 16, 8, 40),
]


def setup_module():
    assert unavailable_reason("cpu") is None, unavailable_reason("cpu")


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
    with pytest.raises(ValueError, match="GGNET_CPU_GEMM must be"):
        guided_spatial_attention(*spatial_inputs((1, 9, 2, 2, 3), torch.float32), backend="cpu")
    monkeypatch.delenv("GGNET_CPU_GEMM")
    for bad in ("16M", "0", "-5"):
        monkeypatch.setenv("GGNET_CPU_TILE_BYTES", bad)
        with pytest.raises(ValueError, match="GGNET_CPU_TILE_BYTES must be a positive"):
            guided_spatial_attention(*spatial_inputs((1, 9, 2, 2, 3), torch.float32),
                                     backend="cpu")


combines = pytest.mark.parametrize("combine", ["product", "joint"])


@combines
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16], ids=["f32", "bf16"])
@pytest.mark.parametrize("shape", SPATIAL_SIZES, ids=lambda s: "N%d" % s[1])
def test_spatial_forward_and_gradients_match_float64(seed, dtype, shape, combine, tiling,
                                                     gemm_library):
    inputs = agreeing_spatial_inputs(shape, dtype)
    dout = torch.randn(shape[0], shape[1], shape[4])
    with record_dispatch() as calls:
        out, grads = grads_of(lambda *x: guided_spatial_attention(
            *x, combine=combine, out_dtype=torch.float32, backend="auto"), inputs, dout)
    assert calls == [("spatial", "cpu")]
    ref_out, ref_grads = grads_of(
        lambda *x: reference.spatial(*x, combine=combine, out_dtype=torch.float64),
        [x.double() for x in inputs], dout.double())
    fwd_tol, grad_tol = MEASURED_TOL[("cpu", "spatial", dtype)]  # (forward delta, grads)
    mean_mu = inputs[4].double().mean(dim=1, keepdim=True)
    delta, delta_ref = out.double() - mean_mu, ref_out - mean_mu
    assert delta_ref.abs().max() > 1e-5  # the modulation is really there (>> float32 ulp of o)
    err = rel_err(delta, delta_ref)
    ref32 = reference.spatial(*(x.float() for x in inputs), combine=combine,
                              out_dtype=torch.float32)
    err_ref32 = rel_err(ref32.double() - mean_mu, delta_ref)
    assert err < fwd_tol and err <= 3 * err_ref32 + 1e-6, f"seed={seed} {err=} {err_ref32=}"
    for name, g, r, x in zip(SPATIAL_NAMES, grads, ref_grads, inputs):
        assert g.dtype == x.dtype and g.shape == x.shape
        assert rel_err(g, r) < grad_tol, f"d{name} seed={seed} err={rel_err(g, r)}"


def test_gradcheck_float64(seed, tiling):
    spatial = [x.requires_grad_()
               for x in spatial_inputs((2, 11, 3, 2, 4), torch.float64, scale=1.0)]
    for combine in ("product", "joint"):
        op = functools.partial(guided_spatial_attention, combine=combine, backend="cpu")
        assert torch.autograd.gradcheck(op, spatial)
    for combine, stabilize, scale in [("product", None, None), ("matmul", "max-minus", 0.1)]:
        y, g = (torch.randn(2, 5, 9, dtype=torch.float64, requires_grad=True) for _ in range(2))
        op = functools.partial(guided_channel_attention, combine=combine, stabilize=stabilize,
                               scale=scale, backend="cpu")
        assert torch.autograd.gradcheck(op, (y, g))


@combines
def test_results_do_not_depend_on_thread_count(seed, combine, tiling, gemm_library):
    inputs = [x.requires_grad_() for x in spatial_inputs((2, 700, 8, 8, 16), torch.float32)]
    dout = torch.randn(2, 700, 16)
    results = []
    threads = torch.get_num_threads()
    try:
        for n_threads in (1, 2):
            torch.set_num_threads(n_threads)
            out = guided_spatial_attention(*inputs, combine=combine, backend="cpu")
            results.append((out, *torch.autograd.grad(out, inputs, dout)))
    finally:
        torch.set_num_threads(threads)
    for a, b in zip(*results):
        assert torch.equal(a, b), f"seed={seed}"


def test_auto_dispatch_and_unsupported_cases():
    inputs = spatial_inputs((1, 20, 4, 4, 4), torch.float32)
    with record_dispatch() as calls:
        guided_spatial_attention(*inputs, combine="matmul")
    assert calls == [("spatial", "reference")]  # the cpu backend declines N x N products
    with pytest.raises(ValueError, match="matmul"):
        guided_spatial_attention(*inputs, combine="matmul", backend="cpu")
    with record_dispatch() as calls:
        guided_spatial_attention(*inputs, combine="joint")
    assert calls == [("spatial", "cpu")]  # measured faster than sdpa (docs/cpu_backend.md)
    cpu = get_backend("cpu")
    assert cpu.unsupported("spatial", "cuda", torch.float32, {"combine": "product"})
    assert cpu.unsupported("spatial", "cpu", torch.float64, {"combine": "joint"}) is None
    from ggnet_fast.backends.extension import CUDA  # no joint kernels on CUDA (triton, sdpa)
    assert "CPU only" in CUDA.unsupported("spatial", "cuda", torch.float32, {"combine": "joint"})
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
    with pytest.raises(ValueError, match="phi"):
        ops.joint(t[0], torch.randn(2, 10, 5), t[2], t[3], t[4])
    with pytest.raises(TypeError, match="mu"):
        ops.joint(t[0], t[1], t[2], t[3], t[4].double())
    o, lse = ops.joint_fwd(*t)
    with pytest.raises(ValueError, match="lse must be"):
        ops.joint_bwd(torch.ones_like(o), *t, o, lse[:, :5])
    with pytest.raises(ValueError, match="combine"):
        ops.channel(t[0], t[1], "sum", None, None)
    with pytest.raises(ValueError, match="stabilize"):
        ops.channel(t[0], t[1], "product", "min-plus", None)
    with pytest.raises(ValueError, match="g must have"):
        ops.channel(t[0], t[4], "product", None, None)
