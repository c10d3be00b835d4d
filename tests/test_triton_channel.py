"""The Triton channel kernels (``ggnet_fast/backends/triton/channel_kernels.py``) vs float64.

Runs under ``TRITON_INTERPRET=1`` on CPU tensors without a GPU (float32 and float16;
bfloat16 is in test_triton_gpu.py), every combine/stabilize mode, with and without
``scale``.  Every test asserts that the triton backend really ran.

Tolerances (relative Frobenius errors against float64 on the same rounded inputs;
delta = out - mean over channels of y, the modulation):

=========  ==========  ==========  =====================================================
dtype      delta       gradients   why
=========  ==========  ==========  =====================================================
float32    1e-3        1e-5        float32 Grams and softmaxes; + 4x the float32 rounding
                                   of the exact output (out ~ mean + small delta)
float16    3e-3        3e-3        E - rowmean(E), dout, dA + dA^T rounded to fp16
=========  ==========  ==========  =====================================================
"""
import itertools

import pytest
import torch
import triton

from ggnet_fast import guided_channel_attention
from ggnet_fast.backends import record_dispatch, reference
from ggnet_fast.backends.triton import _config
from ggnet_fast.backends.triton import channel_kernels as tchannel

pytestmark = pytest.mark.skipif(
    not (torch.cuda.is_available() or _config.INTERPRET),
    reason="needs a CUDA device or TRITON_INTERPRET=1")

DEVICE = "cuda" if torch.cuda.is_available() else "cpu"
TOL = {torch.float32: (1e-3, 1e-5), torch.float16: (3e-3, 3e-3)}
MODES = list(itertools.product(("product", "matmul"), (None, "max-minus"), (None, 0.05)))


def rel(x, y):
    x, y = x.detach().double().cpu(), y.detach().double().cpu()
    return float((x - y).norm() / y.norm().clamp_min(1e-300))


def make_inputs(batch, c, n, dtype, magnitude=0.3):
    """Moderate magnitudes: the Gram softmaxes are neither one-hot nor uniform."""
    y = magnitude * torch.randn(batch, c, n, dtype=torch.float64) + 0.2
    g = magnitude * torch.randn(batch, c, n, dtype=torch.float64)
    return y.to(dtype).to(DEVICE), g.to(dtype).to(DEVICE)


def check(y, g, dtype, seed, combine, stabilize, scale, out_dtype=torch.float32):
    dout = torch.randn(y.shape, dtype=torch.float64).to(DEVICE)
    yt, gt = y.clone().requires_grad_(), g.clone().requires_grad_()
    with record_dispatch() as calls:
        out = guided_channel_attention(yt, gt, combine=combine, stabilize=stabilize, scale=scale,
                                       backend="triton", out_dtype=out_dtype)
    assert calls == [("channel", "triton")]
    assert out.dtype == out_dtype
    out.backward(dout.to(out_dtype))
    yr, gr = y.double().requires_grad_(), g.double().requires_grad_()
    ref = reference.channel(yr, gr, combine=combine, stabilize=stabilize, scale=scale,
                            out_dtype=torch.float64)
    ref.backward(dout)
    mean_y = y.double().mean(dim=1, keepdim=True)
    tol_delta, tol_grad = TOL[dtype]
    tol_delta += 4 * rel(ref.to(out_dtype).double() - mean_y, ref - mean_y)
    info = f"{combine}/{stabilize}/{scale} seed={seed}"
    err = rel(out.double() - mean_y, ref - mean_y)
    assert err < tol_delta, f"delta rel err {err:.2e} {info}"
    assert yt.grad.dtype == dtype and gt.grad.dtype == dtype
    err = rel(yt.grad, yr.grad)
    assert err < tol_grad, f"dy rel err {err:.2e} {info}"
    err = rel(gt.grad, gr.grad)
    assert err < tol_grad, f"dg rel err {err:.2e} {info}"


@pytest.mark.parametrize("dtype", [torch.float32, torch.float16])
@pytest.mark.parametrize("combine,stabilize,scale", MODES)
def test_all_modes_forward_delta_and_gradients(seed, dtype, combine, stabilize, scale):
    check(*make_inputs(2, 13, 7 * 9, dtype), dtype, seed, combine, stabilize, scale)


@pytest.mark.parametrize("combine", ["product", "matmul"])
def test_larger_odd_size(seed, combine):
    y, g = make_inputs(2, 37, 23 * 17, torch.float32, magnitude=0.1)
    check(y, g, torch.float32, seed, combine, "max-minus", None)


def test_small_tiles(seed, monkeypatch):
    """GPU-like small tiles: partial tiles everywhere, several k steps in every loop."""
    one = lambda **kw: [triton.Config(kw, num_warps=4, num_stages=1)]  # noqa: E731
    monkeypatch.setattr(tchannel._gram_kernel, "configs", one(BLOCK_R=16, BLOCK_S=32, BLOCK_K=16))
    monkeypatch.setattr(tchannel._map_kernel, "configs", one(BLOCK_R=16, BLOCK_K=16))
    monkeypatch.setattr(tchannel._apply_kernel, "configs", one(BLOCK_R=16, BLOCK_N=32, BLOCK_K=16))
    y, g = make_inputs(2, 37, 7 * 9, torch.float32, magnitude=0.2)
    for combine in ("product", "matmul"):
        check(y, g, torch.float32, seed, combine, "max-minus", 0.5)


def test_half_output_dtype(seed):
    y, g = make_inputs(2, 13, 7 * 9, torch.float16)
    with record_dispatch() as calls:
        out = guided_channel_attention(y, g, backend="triton")
    assert calls == [("channel", "triton")] and out.dtype == torch.float16
    ref = reference.channel(y.double(), g.double(), combine="product", stabilize=None,
                            scale=None, out_dtype=torch.float64)
    err = (out.double() - ref).abs().max().item()
    assert err < 2e-3 * ref.abs().max().item(), f"max abs err {err:.2e} seed={seed}"


def test_autocast_runs_in_the_input_dtype(seed):
    y, g = make_inputs(2, 13, 7 * 9, torch.float32)
    with torch.autocast(DEVICE, dtype=torch.float16 if DEVICE == "cpu" else torch.bfloat16):
        with record_dispatch() as calls:
            out = guided_channel_attention(y, g, combine="matmul", backend="triton")
    assert calls == [("channel", "triton")] and out.dtype == torch.float32
    ref = reference.channel(y, g, combine="matmul", stabilize=None, scale=None,
                            out_dtype=torch.float32)
    assert (out - ref).abs().max().item() < 1e-5, f"seed={seed}"


def test_opcheck_forward_and_backward_ops():
    y, g = (x.requires_grad_() for x in make_inputs(2, 6, 11, torch.float32))
    for combine, stabilize, scale in (("matmul", "max-minus", 0.5),):
        torch.library.opcheck(tchannel.channel_fwd, (y, g, combine, stabilize, scale))
        with torch.no_grad():
            _, a, b, ec, lrow, crow = tchannel.channel_fwd(y, g, combine, stabilize, scale)
        dout = torch.randn(y.shape, device=DEVICE)
        torch.library.opcheck(
            tchannel.channel_bwd,
            (dout, y.detach(), g.detach(), a, b, ec, lrow, crow, combine, stabilize, scale))


def test_torch_compile_fullgraph(seed):
    y, g = make_inputs(2, 13, 7 * 9, torch.float32)

    def f(a, b):
        out = guided_channel_attention(a, b, combine="matmul", stabilize="max-minus",
                                       backend="triton")
        return out.square().sum()

    compiled = torch.compile(f, fullgraph=True, backend="aot_eager")
    ye, ge = y.clone().requires_grad_(), g.clone().requires_grad_()
    yc, gc = y.clone().requires_grad_(), g.clone().requires_grad_()
    f(ye, ge).backward()
    compiled(yc, gc).backward()
    assert rel(yc.grad, ye.grad) < 1e-6 and rel(gc.grad, ge.grad) < 1e-6, f"seed={seed}"


def test_unsupported_reasons():
    from ggnet_fast.backends import triton as tb
    opts = {"combine": "matmul", "stabilize": "max-minus", "scale": None,
            "out_dtype": torch.float32, "shape": {"B": 1, "C": 64, "N": 100}}
    assert tb.unsupported("channel", "cuda", torch.float16, opts) is None
    assert "float64" in tb.unsupported("channel", "cuda", torch.float64, opts)
    assert "C = 4096" in tb.unsupported("channel", "cuda", torch.float16,
                                        {**opts, "shape": {"B": 1, "C": 4096, "N": 10}})
    assert "unknown operator" in tb.unsupported("nope", "cuda", torch.float16, opts)
    if _config.INTERPRET:
        assert "bfloat16" in tb.unsupported("channel", "cpu", torch.bfloat16, opts)


def test_explicit_request_the_backend_cannot_run_raises():
    """Interpreted: bfloat16 is refused; compiled (GPU): CPU tensors are refused."""
    if _config.INTERPRET:
        y, g = (x.cpu() for x in make_inputs(1, 5, 9, torch.bfloat16))
        match = "bfloat16"
    else:
        y, g = (x.cpu() for x in make_inputs(1, 5, 9, torch.float32))
        match = "TRITON_INTERPRET"
    with pytest.raises(ValueError, match=match):
        guided_channel_attention(y, g, backend="triton")


def test_non_contiguous_inputs(seed):
    y, g = make_inputs(2, 13, 2 * 63, torch.float32)
    y, g = y[..., ::2], g[..., ::2]
    assert not y.is_contiguous()
    check(y, g, torch.float32, seed, "product", "max-minus", None)


def test_kernels_compile_for_hopper_and_ampere_without_a_gpu():
    """All channel kernels (every combine/stabilize specialisation) through Triton's GPU
    pipeline for sm_90 and sm_80: the interpreter never lowers them."""
    import os
    import subprocess
    import sys
    env = {k: v for k, v in os.environ.items() if k != "TRITON_INTERPRET"}
    proc = subprocess.run(
        [sys.executable, "-m", "ggnet_fast.backends.triton._aot", "--arch", "90,80", "--op",
         "channel", "--dims", "1,1,40"], env=env, capture_output=True, text=True, timeout=900)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert proc.stdout.count("shared=") == 13 * 2, proc.stdout
