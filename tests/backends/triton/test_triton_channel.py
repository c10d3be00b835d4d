"""The Triton channel kernels (``ggnet_fast/backends/triton/channel_kernels.py``): what is
specific to them.

The contract (every combine/stabilize mode, with and without ``scale``, forward delta and
both gradients against float64 in float32/float16, non-contiguous inputs, torch.compile,
opcheck, autocast, output dtype) is tests/backends/test_backend_contract.py.  Here: GPU-like small
tiles, the backend's unsupported reasons and explicit requests it refuses, and
compilation of every kernel for sm_90/sm_80.  Runs under ``TRITON_INTERPRET=1`` on CPU
tensors without a GPU; every test asserts that the triton backend really ran.
"""
import pytest
import torch
import triton

from contract import (CHANNEL_NAMES, assert_matches_float64, channel_inputs,
                      channel_reference, grads_of, tolerance)
from ggnet_fast import guided_channel_attention
from ggnet_fast.backends import get_backend, record_dispatch
from ggnet_fast.backends.triton import runtime
from ggnet_fast.backends.triton import channel_kernels as tchannel
import repo_paths

pytestmark = pytest.mark.skipif(
    not (torch.cuda.is_available() or runtime.INTERPRET),
    reason="needs a CUDA device or TRITON_INTERPRET=1")

DEVICE = "cuda" if torch.cuda.is_available() else "cpu"


def check(y, g, seed, **modes):
    """float32 inputs: the triton backend against float64 (the contract's tolerances)."""
    dout = torch.randn(y.shape, device=DEVICE)
    with record_dispatch() as calls:
        out, grads = grads_of(lambda a, b: guided_channel_attention(
            a, b, backend="triton", out_dtype=torch.float32, **modes), (y, g), dout)
    assert calls == [("channel", "triton")]
    ref, ref_grads = channel_reference((y, g), dout, **modes)
    mean_y = y.double().cpu().mean(dim=1, keepdim=True)
    assert_matches_float64(out, grads, ref, ref_grads, (y, g), mean_y,
                           tolerance("triton", "channel", torch.float32), CHANNEL_NAMES,
                           f"{modes} seed={seed}")


def test_small_tiles(seed, monkeypatch):
    """GPU-like small tiles: partial tiles everywhere, several k steps in every loop."""
    one = lambda **kw: [triton.Config(kw, num_warps=4, num_stages=1)]  # noqa: E731
    monkeypatch.setattr(tchannel._gram_kernel, "configs", one(BLOCK_R=16, BLOCK_S=32, BLOCK_K=16))
    monkeypatch.setattr(tchannel._map_kernel, "configs", one(BLOCK_R=16, BLOCK_K=16))
    monkeypatch.setattr(tchannel._apply_kernel, "configs", one(BLOCK_R=16, BLOCK_N=32, BLOCK_K=16))
    y, g = channel_inputs((2, 37, 7 * 9), torch.float32, DEVICE, magnitude=0.2)
    for combine in ("product", "matmul"):
        check(y, g, seed, combine=combine, stabilize="max-minus", scale=0.5)


def test_unsupported_reasons():
    tb = get_backend("triton")
    opts = {"combine": "matmul", "stabilize": "max-minus", "scale": None,
            "out_dtype": torch.float32, "shape": {"B": 1, "C": 64, "N": 100}}
    assert tb.unsupported("channel", "cuda", torch.float16, opts) is None
    assert "float64" in tb.unsupported("channel", "cuda", torch.float64, opts)
    assert "C = 4096" in tb.unsupported("channel", "cuda", torch.float16,
                                        {**opts, "shape": {"B": 1, "C": 4096, "N": 10}})
    assert "unknown operator" in tb.unsupported("nope", "cuda", torch.float16, opts)
    if runtime.INTERPRET:
        assert "bfloat16" in tb.unsupported("channel", "cpu", torch.bfloat16, opts)


def test_explicit_request_the_backend_cannot_run_raises():
    """Interpreted: bfloat16 is refused; compiled (GPU): CPU tensors are refused."""
    if runtime.INTERPRET:
        y, g = channel_inputs((1, 5, 9), torch.bfloat16)
        match = "bfloat16"
    else:
        y, g = channel_inputs((1, 5, 9), torch.float32)
        match = "TRITON_INTERPRET"
    with pytest.raises(ValueError, match=match):
        guided_channel_attention(y, g, backend="triton")


def test_kernels_compile_for_hopper_and_ampere_without_a_gpu():
    """All channel kernels (every combine/stabilize specialisation) through Triton's GPU
    pipeline for sm_90 and sm_80: the interpreter never lowers them."""
    import os
    import subprocess
    import sys
    env = {k: v for k, v in os.environ.items() if k != "TRITON_INTERPRET"}
    proc = subprocess.run(
        [sys.executable, str(repo_paths.ROOT / "benchmarks" / "triton_static.py"), "--arch",
         "90,80", "--op", "channel", "--dims", "1,1,40"], env=env, capture_output=True,
        text=True, timeout=900)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert proc.stdout.count("shared=") == 13 * 2, proc.stdout
