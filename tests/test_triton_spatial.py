"""The Triton spatial kernels (``ggnet_fast/backends/triton/spatial_kernels.py``) vs float64.

Without a GPU these run under ``TRITON_INTERPRET=1`` (set by conftest.py) on CPU tensors
in float32 and float16 (the interpreter cannot do bfloat16; bf16 is in test_triton_gpu.py).
Every test asserts that the triton backend really ran (no silent fallback).

Tolerances (relative Frobenius errors against the float64 reference on the *same*
rounded inputs; delta = o - mean_j(mu), the attention modulation):

=========  ==========  ==========  ====================================================
dtype      delta       gradients   why
=========  ==========  ==========  ====================================================
float32    2e-3        1e-4        plus 4x the error of the float64 result rounded to
                                   float32 (o = (sum mu + e mu) / L takes ~3 roundings):
                                   o ~ mean(mu) + delta, so the float32 rounding of o
                                   alone can be 1e-2 of a small delta
float16    5e-3        2e-2        e = expm1(p), do / L, da, db rounded to fp16 (2^-11)
=========  ==========  ==========  ====================================================
"""
import numpy as np
import pytest
import torch
import triton

from ggnet_fast import guided_spatial_attention
from ggnet_fast.backends import record_dispatch, reference
from ggnet_fast.backends.triton import _config
from ggnet_fast.backends.triton import spatial_kernels as tspatial

pytestmark = pytest.mark.skipif(
    not (torch.cuda.is_available() or _config.INTERPRET),
    reason="needs a CUDA device or TRITON_INTERPRET=1")

DEVICE = "cuda" if torch.cuda.is_available() else "cpu"
NAMES = ("theta", "phi", "eta", "rho", "mu")
TOL = {torch.float32: (2e-3, 1e-4), torch.float16: (5e-3, 2e-2)}


def rel(x, y):
    x, y = x.detach().double().cpu(), y.detach().double().cpu()
    return float((x - y).norm() / y.norm().clamp_min(1e-300))


def make_inputs(batch, n, d, dg, c, dtype):
    """Random inputs rounded to ``dtype``; mu has a non-zero mean (post-activation-like)."""
    shapes = [(batch, n, d), (batch, n, d), (batch, n, dg), (batch, n, dg), (batch, n, c)]
    xs = [torch.randn(s, dtype=torch.float64) for s in shapes]
    xs[4] = xs[4] + 1.5
    return [x.to(dtype).to(DEVICE) for x in xs]


def run_triton(inputs, dout, out_dtype=torch.float32):
    ts = [x.clone().requires_grad_() for x in inputs]
    with record_dispatch() as calls:
        out = guided_spatial_attention(*ts, backend="triton", out_dtype=out_dtype)
    assert calls == [("spatial", "triton")]
    out.backward(dout.to(out.dtype))
    return out, [t.grad for t in ts]


def run_reference(inputs, dout):
    ts = [x.double().requires_grad_() for x in inputs]
    out = reference.spatial(*ts, combine="product", out_dtype=torch.float64)
    out.backward(dout.double())
    return out, [t.grad for t in ts]


def check(inputs, dtype, seed, out_dtype=torch.float32):
    dout = torch.randn(inputs[4].shape, dtype=torch.float64).to(DEVICE)
    out, grads = run_triton(inputs, dout, out_dtype)
    ref, ref_grads = run_reference(inputs, dout)
    assert out.dtype == out_dtype and out.shape == ref.shape
    mean_mu = inputs[4].double().mean(dim=1, keepdim=True)
    tol_delta, tol_grad = TOL[dtype]
    # the unavoidable part: the exact result rounded to the output dtype
    tol_delta += 4 * rel(ref.to(out_dtype).double() - mean_mu, ref - mean_mu)
    err = rel(out.double() - mean_mu, ref - mean_mu)
    assert err < tol_delta, f"delta rel err {err:.2e} seed={seed}"
    for name, g, rg in zip(NAMES, grads, ref_grads):
        assert g.dtype == dtype
        err = rel(g, rg)
        assert err < tol_grad, f"d{name} rel err {err:.2e} seed={seed}"


@pytest.mark.parametrize("dtype", [torch.float32, torch.float16])
@pytest.mark.parametrize("n,d,dg,c", [(7 * 9, 5, 3, 6), (23 * 17, 12, 7, 10)])
def test_forward_delta_and_all_gradients_vs_float64(seed, dtype, n, d, dg, c):
    check(make_inputs(2, n, d, dg, c, dtype), dtype, seed)


def test_result_does_not_depend_on_the_r_variant(seed, monkeypatch):
    """R from the forward's o2/q accumulators vs R from a separate backward loop."""
    inputs = make_inputs(2, 23 * 17, 6, 5, 9, torch.float32)
    dout = torch.randn(inputs[4].shape, dtype=torch.float32, device=DEVICE)
    results = {}
    for mode in ("o2", "pass"):
        monkeypatch.setattr(tspatial, "R_MODE", mode)
        results[mode] = run_triton(inputs, dout)
    ref, ref_grads = run_reference(inputs, dout)
    for name, g1, g2, rg in zip(NAMES, results["o2"][1], results["pass"][1], ref_grads):
        assert rel(g1, rg) < 1e-4 and rel(g2, rg) < 1e-4, f"d{name} seed={seed}"
        assert rel(g1, g2) < 1e-5, f"d{name}: variants differ, seed={seed}"


def test_small_tiles_multiple_c_chunks(seed, monkeypatch):
    """GPU-like small tiles: many row/key tiles, partial tiles on both axes, C split in
    two chunks (the interpreter otherwise runs one large-tile configuration)."""
    one = lambda **kw: [triton.Config(kw, num_warps=4, num_stages=1)]  # noqa: E731
    monkeypatch.setattr(tspatial._lse_kernel, "configs", one(BLOCK_M=32, BLOCK_N=16))
    monkeypatch.setattr(tspatial._fwd_kernel, "configs", one(BLOCK_M=16, BLOCK_N=32, C_SPLIT=2))
    monkeypatch.setattr(tspatial._bwd_dq_kernel, "configs", one(BLOCK_M=32, BLOCK_N=16))
    monkeypatch.setattr(tspatial._bwd_dkv_kernel, "configs", one(BLOCK_M=16, BLOCK_N=32))
    check(make_inputs(2, 7 * 9, 5, 3, 40, torch.float32), torch.float32, seed)


def test_half_output_dtype(seed):
    """out_dtype=None returns float16; o itself (not delta) is then within fp16 rounding."""
    inputs = make_inputs(2, 7 * 9, 5, 3, 6, torch.float16)
    with record_dispatch() as calls:
        out = guided_spatial_attention(*inputs, backend="triton")
    assert calls == [("spatial", "triton")] and out.dtype == torch.float16
    ref = reference.spatial(*(x.double() for x in inputs), combine="product",
                            out_dtype=torch.float64)
    err = (out.double() - ref).abs().max().item()
    assert err < 2e-3 * ref.abs().max().item(), f"max abs err {err:.2e} seed={seed}"


def test_autograd_saves_only_per_row_statistics(seed):
    """Nothing N x N is saved: only the inputs and O(N) tensors (o, stats, o2)."""
    batch, n, d, dg, c = 2, 23 * 17, 5, 3, 6
    inputs = [x.requires_grad_() for x in make_inputs(batch, n, d, dg, c, torch.float32)]
    shapes = []

    def pack(t):
        shapes.append(tuple(t.shape))
        return t

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        with record_dispatch() as calls:
            out = guided_spatial_attention(*inputs, backend="triton")
    assert calls == [("spatial", "triton")]
    out.sum().backward()
    assert shapes, "the op saved nothing: the hook did not see the autograd context"
    allowed = {(batch, n, d), (batch, n, dg), (batch, n, c), (batch, 4, n), (0,)}
    assert set(shapes) <= allowed, f"unexpected saved shapes {shapes}"
    assert max(int(np.prod(s)) for s in shapes) <= batch * n * max(d, dg, c, 4) < n * n


def test_no_grad_forward_skips_the_o2_accumulator():
    inputs = make_inputs(1, 7 * 9, 5, 3, 6, torch.float32)
    with torch.no_grad():
        out = guided_spatial_attention(*inputs, backend="triton")
        _, stats, o2 = tspatial.spatial_fwd(*inputs, False)
    ref = reference.spatial(*inputs, combine="product", out_dtype=torch.float32)
    assert o2.numel() == 0 and stats.shape == (1, 4, 7 * 9)
    assert (out - ref).abs().max().item() < 1e-5


def test_autocast_runs_in_the_input_dtype(seed):
    inputs = make_inputs(2, 7 * 9, 5, 3, 6, torch.float32)
    with torch.autocast(DEVICE, dtype=torch.float16 if DEVICE == "cpu" else torch.bfloat16):
        with record_dispatch() as calls:
            out = guided_spatial_attention(*inputs, backend="triton")
    assert calls == [("spatial", "triton")] and out.dtype == torch.float32
    ref = reference.spatial(*inputs, combine="product", out_dtype=torch.float32)
    assert (out - ref).abs().max().item() < 1e-5, f"seed={seed}"


def test_opcheck_forward_and_backward_ops():
    inputs = [x.requires_grad_() for x in make_inputs(2, 5 * 3, 5, 3, 6, torch.float32)]
    for save_o2 in (True, False):
        torch.library.opcheck(tspatial.spatial_fwd, (*inputs, save_o2))
    with torch.no_grad():
        o, stats, o2 = tspatial.spatial_fwd(*inputs, True)
    dout = torch.randn_like(o)
    torch.library.opcheck(tspatial.spatial_bwd,
                          (dout, *(x.detach() for x in inputs), o, stats, o2))


def test_torch_compile_fullgraph(seed):
    inputs = make_inputs(2, 7 * 9, 5, 3, 6, torch.float32)

    def f(*xs):  # the public operator: checks, dispatch and the custom ops
        out = guided_spatial_attention(*xs, backend="triton", out_dtype=torch.float32)
        return out.square().sum()

    compiled = torch.compile(f, fullgraph=True, backend="aot_eager")
    eager_in = [x.clone().requires_grad_() for x in inputs]
    comp_in = [x.clone().requires_grad_() for x in inputs]
    f(*eager_in).backward()
    compiled(*comp_in).backward()
    for a, b in zip(eager_in, comp_in):
        assert rel(b.grad, a.grad) < 1e-6, f"seed={seed}"


# ------------------------------------------------------------------ unsupported / errors
def test_matmul_combine_is_rejected_and_auto_falls_back():
    from ggnet_fast.backends import triton as tb
    opts = {"combine": "matmul", "out_dtype": torch.float32, "shape": {"d": 4, "dg": 4, "C": 4}}
    reason = tb.unsupported("spatial", "cuda", torch.float16, opts)
    assert reason is not None and "combine" in reason
    inputs = make_inputs(1, 10, 3, 3, 4, torch.float32)
    with pytest.raises(ValueError, match="combine"):
        guided_spatial_attention(*inputs, combine="matmul", backend="triton")
    with pytest.raises(ValueError, match="combine"):
        tb.spatial(*inputs, combine="matmul", out_dtype=torch.float32)


def test_unsupported_reasons():
    from ggnet_fast.backends import triton as tb
    opts = {"combine": "product", "out_dtype": torch.float32, "shape": {"d": 4, "dg": 4, "C": 4}}
    assert tb.unsupported("spatial", "cuda", torch.float16, opts) is None
    assert "float64" in tb.unsupported("spatial", "cuda", torch.float64, opts)
    assert "C = 4096" in tb.unsupported(
        "spatial", "cuda", torch.float16, {**opts, "shape": {"d": 4, "dg": 4, "C": 4096}})
    assert "device type" in tb.unsupported("spatial", "mps", torch.float32, opts)
    if _config.INTERPRET:
        assert tb.unsupported("spatial", "cpu", torch.float32, opts) is None
        assert "bfloat16" in tb.unsupported("spatial", "cpu", torch.bfloat16, opts)
    else:
        assert "TRITON_INTERPRET" in tb.unsupported("spatial", "cpu", torch.float32, opts)


def test_explicit_request_for_unsupported_dtype_raises():
    inputs = make_inputs(1, 10, 3, 3, 4, torch.float64)
    with pytest.raises(ValueError, match="float64"):
        guided_spatial_attention(*inputs, backend="triton")


def test_non_contiguous_inputs(seed):
    """Strided views (e.g. channel slices of a projection) give the same result."""
    wide = make_inputs(2, 7 * 9, 10, 6, 12, torch.float32)
    views = [x[..., ::2] for x in wide]  # d = 5, dg = 3, C = 6, non-contiguous
    assert not any(v.is_contiguous() for v in views)
    check(views, torch.float32, seed)


def _compile_for_gpu(op, dims):
    import os
    import subprocess
    import sys
    env = {k: v for k, v in os.environ.items() if k != "TRITON_INTERPRET"}
    return subprocess.run(
        [sys.executable, "-m", "ggnet_fast.backends.triton._aot", "--arch", "90,80", "--op", op,
         "--dims", dims], env=env, capture_output=True, text=True, timeout=900)


def test_kernels_compile_for_hopper_and_ampere_without_a_gpu():
    """The interpreter never lowers a kernel: compile each one for sm_90 and sm_80 through
    Triton's real pipeline (PTX and cubin with the bundled ptxas), no GPU needed."""
    proc = _compile_for_gpu("spatial", "24,8,40")
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert proc.stdout.count("shared=") == 4 * 2, proc.stdout
