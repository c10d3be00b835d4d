"""The Triton spatial kernels (``ggnet_fast/backends/triton/spatial_kernels.py``): what is
specific to them.

The contract (forward delta and every gradient against float64 in float32/float16 at odd
sizes, non-contiguous inputs, torch.compile, opcheck, autocast, output dtype) is
tests/backends/test_backend_contract.py.  Here: both variants of the backward's R_i, GPU-like
small tiles with C split in chunks, the tensors autograd saves (nothing N x N), the
no-grad forward, the backend's unsupported reasons, and compilation for sm_90/sm_80.
Without a GPU these run under ``TRITON_INTERPRET=1`` (set by conftest.py) on CPU tensors;
bfloat16 is in test_triton_gpu.py.  Every test asserts that the triton backend really ran.
Tolerances as in the contract (tests/contract.py): float32 delta 2e-3 plus 4x the error of
the float64 result rounded to float32, gradients 1e-4.
"""
import numpy as np
import pytest
import torch
import triton

from contract import (SPATIAL_NAMES, assert_matches_float64, rel_err, spatial_inputs,
                      spatial_reference, tolerance)
from ggnet_fast import guided_spatial_attention
from ggnet_fast.backends import get_backend, record_dispatch, reference
from ggnet_fast.backends.triton import runtime, tile_policy
from ggnet_fast.backends.triton import spatial_kernels as tspatial
import repo_paths

pytestmark = pytest.mark.skipif(
    not (torch.cuda.is_available() or runtime.INTERPRET),
    reason="needs a CUDA device or TRITON_INTERPRET=1")

DEVICE = "cuda" if torch.cuda.is_available() else "cpu"


def make_inputs(batch, n, d, dg, c, dtype):
    """Random inputs rounded to ``dtype``; mu has a non-zero mean (post-activation-like)."""
    return spatial_inputs((batch, n, d, dg, c), dtype, DEVICE, scale=1.0, mu_offset=1.5)


def run_triton(inputs, dout, out_dtype=torch.float32):
    ts = [x.clone().requires_grad_() for x in inputs]
    with record_dispatch() as calls:
        out = guided_spatial_attention(*ts, backend="triton", out_dtype=out_dtype)
    assert calls == [("spatial", "triton")]
    out.backward(dout.to(out.dtype))
    return out, [t.grad for t in ts]


def check(inputs, dtype, seed):
    dout = torch.randn(inputs[4].shape, device=DEVICE)
    out, grads = run_triton(inputs, dout)
    ref, ref_grads = spatial_reference(inputs, dout)
    mean_mu = inputs[4].double().cpu().mean(dim=1, keepdim=True)
    assert_matches_float64(out, grads, ref, ref_grads, inputs, mean_mu,
                           tolerance("triton", "spatial", dtype), SPATIAL_NAMES, f"seed={seed}")


#: Resolution of the kernels' float32 products: exact float32 under the interpreter, TF32
#: (10 mantissa bits) on a GPU (docs/triton.md, "float32 policy"; not yet run on one).
PRODUCT_EPS = torch.finfo(torch.float32).eps if DEVICE == "cpu" else 2.0 ** -10


def r_resolution_shift(inputs, dout) -> dict:
    """``{input name: how far float32's resolution of R can move its gradient}`` (float64
    tensors shaped like the inputs; dense: the test sizes are small).

    ``R_i = sum_j p dp`` comes from the forward's weights (o2 variant) or the backward's
    (R-pass variant); each computes ``p = exp(a + b - lse_a - lse_b)`` in float32, so
    each p carries a relative error of ``eps (|a| + |b| + |lse_a| + |lse_b|)``, and R one
    of ``dR_i = eps sum_j |p dp| (|a| + |b| + |lse_a| + |lse_b| + 1)``. R enters the
    gradients as ``da = p dp - sx R``, ``db = p dp - sg R``; dmu does not use it.  Rows
    with sharp attention (large scores, one dominant key) have large R and large
    ``|a| + |b|``: there the difference reaches ~1e-4 of the gradient (seed 1760240508:
    dtheta 4.9e-5 against a floor of 6.2e-5)."""
    eps = PRODUCT_EPS
    theta, phi, eta, rho, mu = (x.detach().double().cpu() for x in inputs)
    a, b = theta @ phi.transpose(1, 2), eta @ rho.transpose(1, 2)
    lse_a, lse_b = a.logsumexp(-1, keepdim=True), b.logsumexp(-1, keepdim=True)
    p = torch.exp(a + b - lse_a - lse_b)
    o = torch.softmax(p, -1) @ mu
    dol = dout.double().cpu() / torch.exp(p).sum(-1, keepdim=True)
    p_dp = p * torch.exp(p) * (dol @ mu.transpose(1, 2) - (dol * o).sum(-1, keepdim=True))
    d_r = eps * (p_dp.abs() * (a.abs() + b.abs() + lse_a.abs() + lse_b.abs() + 1)).sum(-1)
    d_r = d_r[..., None]
    sx, sg = torch.softmax(a, -1), torch.softmax(b, -1)
    return {"theta": d_r * (sx @ phi), "eta": d_r * (sg @ rho),
            "phi": sx.transpose(1, 2) @ (d_r * theta), "rho": sg.transpose(1, 2) @ (d_r * eta)}


def test_result_does_not_depend_on_the_r_variant(seed, monkeypatch):
    """R from the forward's o2/q accumulators vs R from a separate backward loop: the
    gradients agree to 4x float32's resolution of R (:func:`r_resolution_shift`, at
    most ~1e-4 of the gradient, usually ~5e-6); dmu, which does not use R, to 1e-6.  A
    variant whose R were off by 1e-3 of itself would differ by ~1e-3 of dtheta."""
    inputs = make_inputs(2, 23 * 17, 6, 5, 9, torch.float32)
    dout = torch.randn(inputs[4].shape, dtype=torch.float32, device=DEVICE)
    results = {}
    for mode in ("o2", "pass"):
        monkeypatch.setattr(tspatial, "R_MODE", mode)
        results[mode] = run_triton(inputs, dout)
    ref, ref_grads = spatial_reference(inputs, dout)
    moved = r_resolution_shift(inputs, dout)
    grad_tol = tolerance("triton", "spatial", torch.float32, device=DEVICE)[1]
    for name, g1, g2, rg in zip(SPATIAL_NAMES, results["o2"][1], results["pass"][1], ref_grads):
        assert rel_err(g1, rg) < grad_tol and rel_err(g2, rg) < grad_tol, f"d{name} seed={seed}"
        floor = float(moved[name].norm() / rg.double().cpu().norm()) if name in moved else 0.0
        assert floor < 10 * grad_tol, \
            f"d{name}: float32 cannot resolve R here ({floor=:.2e}), seed={seed}"
        err = rel_err(g1, g2)
        assert err < 4 * floor + 1e-6, \
            f"d{name}: variants differ, seed={seed} {err=:.2e} float32 {floor=:.2e}"


def test_small_tiles_multiple_c_chunks(seed, monkeypatch):
    """GPU-like small tiles: many row/key tiles, partial tiles on both axes, C split in
    two chunks (the interpreter otherwise runs one large-tile configuration)."""
    one = lambda **kw: [triton.Config(kw, num_warps=4, num_stages=1)]  # noqa: E731
    monkeypatch.setattr(tspatial._lse_kernel, "configs", one(BLOCK_M=32, BLOCK_N=16))
    monkeypatch.setattr(tspatial._fwd_kernel, "configs", one(BLOCK_M=16, BLOCK_N=32, C_SPLIT=2))
    monkeypatch.setattr(tspatial._bwd_dq_kernel, "configs", one(BLOCK_M=32, BLOCK_N=16))
    monkeypatch.setattr(tspatial._bwd_dkv_kernel, "configs", one(BLOCK_M=16, BLOCK_N=32))
    check(make_inputs(2, 7 * 9, 5, 3, 40, torch.float32), torch.float32, seed)


#: (kernel name, class, default configuration dict) of every GPU tile list.
DEFAULT_TILES = [(name, cls, rows[0])
                 for name, lists in (("_lse_kernel", tile_policy.LSE_TILES),
                                     ("_fwd_kernel", tile_policy.FWD_TILES),
                                     ("_bwd_dq_kernel", tile_policy.DQ_TILES),
                                     ("_bwd_dkv_kernel", tile_policy.DKV_TILES))
                 for cls, rows in lists.items()]


@pytest.mark.parametrize("kernel, cls, tiles", DEFAULT_TILES,
                         ids=[f"{k.strip('_')}-{c}" for k, c, _ in DEFAULT_TILES])
def test_every_default_tile_shape(seed, monkeypatch, kernel, cls, tiles):
    """Each kernel with each GPU default tile shape (the interpreter otherwise runs its
    own large tiles): ragged row and key tiles (N = 150), and C = 40 in one chunk of 64
    or several of 32 / 16, against float64."""
    meta = {k: v for k, v in tiles.items() if k not in ("num_warps", "num_stages")}
    monkeypatch.setattr(getattr(tspatial, kernel), "configs",
                        [triton.Config(meta, num_warps=tiles["num_warps"],
                                       num_stages=tiles["num_stages"])])
    check(make_inputs(1, 150, 5, 3, 40, torch.float32), torch.float32, seed)


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


# ------------------------------------------------------------------ unsupported / errors
def test_matmul_combine_is_rejected_and_auto_falls_back():
    tb = get_backend("triton")
    opts = {"combine": "matmul", "out_dtype": torch.float32, "shape": {"d": 4, "dg": 4, "C": 4}}
    reason = tb.unsupported("spatial", "cuda", torch.float16, opts)
    assert reason is not None and "combine" in reason
    inputs = make_inputs(1, 10, 3, 3, 4, torch.float32)
    with pytest.raises(ValueError, match="combine"):
        guided_spatial_attention(*inputs, combine="matmul", backend="triton")
    with record_dispatch() as calls:
        guided_spatial_attention(*inputs, combine="matmul", backend="auto")
    assert calls[0][1] != "triton"


def test_unsupported_reasons():
    tb = get_backend("triton")
    opts = {"combine": "product", "out_dtype": torch.float32, "shape": {"d": 4, "dg": 4, "C": 4}}
    assert tb.unsupported("spatial", "cuda", torch.float16, opts) is None
    assert "float64" in tb.unsupported("spatial", "cuda", torch.float64, opts)
    assert "C = 4096" in tb.unsupported(
        "spatial", "cuda", torch.float16, {**opts, "shape": {"d": 4, "dg": 4, "C": 4096}})
    assert "device type" in tb.unsupported("spatial", "mps", torch.float32, opts)
    if runtime.INTERPRET:
        assert tb.unsupported("spatial", "cpu", torch.float32, opts) is None
        assert "bfloat16" in tb.unsupported("spatial", "cpu", torch.bfloat16, opts)
    else:
        assert "TRITON_INTERPRET" in tb.unsupported("spatial", "cpu", torch.float32, opts)


def test_explicit_request_for_unsupported_dtype_raises():
    inputs = make_inputs(1, 10, 3, 3, 4, torch.float64)
    with pytest.raises(ValueError, match="float64"):
        guided_spatial_attention(*inputs, backend="triton")


def _compile_for_gpu(op, dims):
    import os
    import subprocess
    import sys
    env = {k: v for k, v in os.environ.items() if k != "TRITON_INTERPRET"}
    return subprocess.run(
        [sys.executable, str(repo_paths.ROOT / "benchmarks" / "triton_static.py"), "--arch",
         "90,80", "--op", op, "--dims", dims], env=env, capture_output=True, text=True,
        timeout=900)


def test_kernels_compile_for_hopper_and_ampere_without_a_gpu():
    """The interpreter never lowers a kernel: compile each one for sm_90 and sm_80 through
    Triton's real pipeline (PTX and cubin with the bundled ptxas), no GPU needed."""
    proc = _compile_for_gpu("spatial", "24,8,40")
    assert proc.returncode == 0, proc.stdout + proc.stderr
    # 4 product + 3 joint kernels, 2 archs
    assert proc.stdout.count("shared=") == 7 * 2, proc.stdout
