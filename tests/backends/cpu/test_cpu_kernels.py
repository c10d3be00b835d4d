"""Cases specific to the CPU kernels' backward (csrc/cpu/spatial_cpu.cpp, issue 14).

The backward runs one pass per block of query rows and sums the key-side gradients
(dphi, drho, dmu) in 4 fixed query groups, reduced in a fixed order; it uses 128-row
strips while they fit the tile budget, else 64-row strips, else streaming tiles.  Checked
here: the 64-row regime (the 128-row strips and the streaming tiles are covered by
tests/backends/cpu/test_cpu_backend.py), bitwise equality for thread counts above and below
the number of groups, and half-precision inputs under ``torch.autocast``, whose modulation must stay
within 1% of float64 (docs/cpu_backend.md, "Half precision").
"""
import os

import pytest
import torch

from ggnet_fast import guided_spatial_attention
from ggnet_fast.backends import reference

from contract import (SPATIAL_NAMES, agreeing_spatial_inputs, assert_matches_float64,
                      grads_of, rel_err, spatial_inputs, spatial_reference, tolerance)

if os.environ.get("GGNET_CPU_EXT") == "0":
    pytest.skip("installed with GGNET_CPU_EXT=0: no compiled extension", allow_module_level=True)


def cpu_spatial(*x):
    return guided_spatial_attention(*x, out_dtype=torch.float32, backend="cpu")


def test_backward_with_64_row_strips_matches_float64(seed, monkeypatch):
    """A tile budget between the 64-row and the 128-row strip of N = 1073 keys (float32:
    824 KiB and 1.6 MiB for three tiles) selects 64-row strips in the backward."""
    shape = (2, 37 * 29, 16, 8, 40)
    monkeypatch.setenv("GGNET_CPU_TILE_BYTES", str(3 * 96 * shape[1] * 4))
    inputs = agreeing_spatial_inputs(shape, torch.float32)
    dout = torch.randn(shape[0], shape[1], shape[4])
    out, grads = grads_of(cpu_spatial, inputs, dout)
    ref_out, ref_grads = spatial_reference(inputs, dout)
    mean = inputs[4].double().mean(dim=1, keepdim=True)
    assert_matches_float64(out, grads, ref_out, ref_grads, inputs, mean,
                           tolerance("cpu", "spatial", torch.float32), SPATIAL_NAMES,
                           f"seed={seed}")


@pytest.mark.parametrize("n", [100, 700, 1300], ids=lambda n: f"N{n}")
def test_backward_is_bitwise_identical_for_1_to_5_threads(seed, n):
    """1 query block (one group), 6 blocks (groups of 2, 2, 1, 1) and 11 blocks, batch 2:
    fewer, as many and more threads than tasks give the same bits."""
    inputs = [x.requires_grad_() for x in spatial_inputs((2, n, 8, 6, 16), torch.float32)]
    dout = torch.randn(2, n, 16)
    results = []
    threads = torch.get_num_threads()
    try:
        for n_threads in (1, 2, 3, 5):
            torch.set_num_threads(n_threads)
            out = cpu_spatial(*inputs)
            results.append((out, *torch.autograd.grad(out, inputs, dout)))
    finally:
        torch.set_num_threads(threads)
    for other in results[1:]:
        for a, b in zip(results[0], other):
            assert torch.equal(a, b), f"seed={seed}"


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16], ids=["bf16", "f16"])
def test_autocast_half_precision_keeps_the_modulation(seed, dtype):
    """Projections computed under autocast (1x1 convolutions in bf16/fp16), attention with
    out_dtype=float32: the modulation delta = o - mean(mu) within 1% of float64 on the same
    rounded inputs, at a size where the float32 reference itself resolves it (< 0.1%)."""
    b, n, c, k = 2, 29 * 31, 24, 8
    x = torch.randn(b, c, n)
    convs = [torch.nn.Conv1d(c, k, 1), torch.nn.Conv1d(c, k, 1), torch.nn.Conv1d(c, k, 1),
             torch.nn.Conv1d(c, k, 1), torch.nn.Conv1d(c, c, 1)]
    with torch.no_grad():
        convs[2].weight.copy_(convs[0].weight)  # guidance keys agree with the features'
        convs[3].weight.copy_(convs[1].weight)
        for conv in convs[:4]:
            conv.weight.mul_(2.0)
    with torch.autocast("cpu", dtype=dtype):
        with torch.no_grad():
            inputs = [conv(x).transpose(1, 2).contiguous() for conv in convs]
        assert all(t.dtype == dtype for t in inputs)
        dout = torch.randn(b, n, c)
        out, grads = grads_of(cpu_spatial, inputs, dout)
    ref_out, ref_grads = spatial_reference(inputs, dout)
    mean = inputs[4].double().mean(dim=1, keepdim=True)
    delta_ref = ref_out - mean
    ref32 = reference.spatial(*(t.float() for t in inputs), combine="product",
                              out_dtype=torch.float32)
    assert rel_err(ref32 - mean, delta_ref) < 1e-3  # float32 resolves the modulation
    assert out.dtype == torch.float32
    assert rel_err(out.double() - mean, delta_ref) < 1e-2, f"seed={seed}"
    for name, g, r, _t in zip(SPATIAL_NAMES, grads, ref_grads, inputs):
        assert g.dtype == dtype
        assert rel_err(g, r) < 2e-2, f"d{name} seed={seed} err={rel_err(g, r):.2e}"
