"""FlexAttention baseline for the spatial operator (GPU only): the strongest composition a
user could write today without a custom kernel.

    lse_a = flex_attention(theta, phi, v0, return_lse=True)[1]     (v0: a dummy 16-wide V)
    lse_b = flex_attention(eta, rho, v0, return_lse=True)[1]
    o     = flex_attention([theta, eta], [phi, rho], mu,
                           score_mod = exp(s - lse_a[b, q] - lse_b[b, q]))

The last call's softmax over exp(...) is the outer softmax of p.  FlexAttention rounds P to
the input dtype (bf16) before the value product, so this is a speed peer, not an accuracy
one (see docs/triton.md).  Every call is compiled (FlexAttention is only fast compiled).
If the installed FlexAttention cannot differentiate through the captured lse, the
backward runs with the lse detached (same work minus the lse gradient) and
``extra_info["lse_grad"]`` says so.  Shapes FlexAttention rejects (e.g. a head dim of
d + dg = 512) are skipped with its reason.
"""
from __future__ import annotations

import pytest
import torch

import harness
from ggnet_fast.ops import spatial_flops

pytestmark = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")

DTYPE = torch.bfloat16
BATCH = 4
SIDES = (64, 128)
SPATIAL_DIMS = ((256, 256, 256), (32, 32, 256))


def make_flex_spatial(detach_lse: bool):
    from torch.nn.attention.flex_attention import flex_attention

    # a fresh compile per case: without the reset, Dynamo's per-code-object cache
    # recompiles flex_attention for each shape until the recompile limit (8) and later
    # cases silently run it uncompiled
    torch._dynamo.reset()
    flex = torch.compile(flex_attention, dynamic=False)

    def spatial(theta, phi, eta, rho, mu):
        t, p, e, r, m = (x.unsqueeze(1) for x in (theta, phi, eta, rho, mu))  # [B, 1, N, k]
        v0 = torch.zeros(*t.shape[:3], 16, device=t.device, dtype=t.dtype)
        _, lse_a = flex(t, p, v0, scale=1.0, return_lse=True)
        _, lse_b = flex(e, r, v0, scale=1.0, return_lse=True)
        lse = (lse_a + lse_b).float()
        if detach_lse:
            lse = lse.detach()

        def score_mod(score, b, h, q_idx, kv_idx):
            return torch.exp(score - lse[b, h, q_idx])

        out = flex(torch.cat([t, e], -1), torch.cat([p, r], -1), m, score_mod=score_mod,
                   scale=1.0)
        return out.squeeze(1)

    return spatial


def _inputs(n, d, dg, c, grad):
    dev = torch.device("cuda")
    shapes = [(BATCH, n, d), (BATCH, n, d), (BATCH, n, dg), (BATCH, n, dg), (BATCH, n, c)]
    scale = [d ** -0.25, d ** -0.25, dg ** -0.25, dg ** -0.25, 1.0]
    return [(s * torch.randn(shape, device=dev)).to(DTYPE).requires_grad_(grad)
            for shape, s in zip(shapes, scale)]


@pytest.mark.parametrize("mode", ["forward", "forward+backward"])
@pytest.mark.parametrize("dims", SPATIAL_DIMS, ids=lambda t: "d{}-dg{}-C{}".format(*t))
@pytest.mark.parametrize("side", SIDES, ids=lambda s: f"N{s}x{s}")
def test_spatial_flex(benchmark, side, dims, mode):
    n = side * side
    d, dg, c = dims
    backward = mode != "forward"
    inputs = _inputs(n, d, dg, c, backward)
    grad_out = torch.randn(BATCH, n, c, device="cuda", dtype=DTYPE)
    lse_grad = True

    def build(detach):
        fn = make_flex_spatial(detach)

        def step():
            out = fn(*inputs)
            if backward:
                torch.autograd.grad(out, inputs, grad_out)
            return out
        return step

    step = build(False)
    try:
        step()  # compile outside the measurement
    except Exception as exc:  # noqa: BLE001 - FlexAttention's own limits
        if not backward:
            pytest.skip(f"FlexAttention cannot run this shape: {type(exc).__name__}: {exc}"[:300])
        lse_grad = False
        step = build(True)
        try:
            step()
        except Exception as exc2:  # noqa: BLE001
            pytest.skip(f"FlexAttention cannot run this shape: {type(exc2).__name__}: {exc2}"[:300])
    peak = harness.peak_extra_bytes(step, torch.device("cuda"))
    benchmark.extra_info.update({
        "device": torch.cuda.get_device_name(), "dtype": str(DTYPE), "torch": torch.__version__,
        "op": "spatial", "provider": "flex", "B": BATCH, "N": n, "d": d, "dg": dg, "C": c,
        "mode": mode, "peak_extra_bytes": peak, "lse_grad": lse_grad,
        "flops": spatial_flops(BATCH, n, d, dg, c, backward)})

    def call():
        out = step()
        torch.cuda.synchronize()
        return out

    benchmark.pedantic(call, rounds=5, warmup_rounds=1, iterations=1)


@pytest.mark.parametrize("r_mode", ["o2", "pass"])
@pytest.mark.parametrize("dims", SPATIAL_DIMS, ids=lambda t: "d{}-dg{}-C{}".format(*t))
def test_spatial_triton_r_variant(benchmark, monkeypatch, dims, r_mode):
    """The Triton backward's R_i: from the forward's o2/q accumulators (one-pass, default)
    or from a separate loop in the backward; forward+backward at B = 4, N = 64x64."""
    from ggnet_fast import guided_spatial_attention
    from ggnet_fast.backends.triton import spatial_kernels
    monkeypatch.setattr(spatial_kernels, "R_MODE", r_mode)
    n = 64 * 64
    d, dg, c = dims
    inputs = _inputs(n, d, dg, c, True)
    grad_out = torch.randn(BATCH, n, c, device="cuda", dtype=DTYPE)

    def step():
        out = guided_spatial_attention(*inputs, backend="triton")
        torch.autograd.grad(out, inputs, grad_out)
        torch.cuda.synchronize()
        return out

    step()  # autotune outside the measurement
    peak = harness.peak_extra_bytes(step, torch.device("cuda"))
    benchmark.extra_info.update({
        "device": torch.cuda.get_device_name(), "dtype": str(DTYPE), "torch": torch.__version__,
        "op": "spatial", "provider": f"triton-r-{r_mode}", "B": BATCH, "N": n, "d": d, "dg": dg,
        "C": c, "mode": "forward+backward", "peak_extra_bytes": peak,
        "flops": spatial_flops(BATCH, n, d, dg, c, True)})
    benchmark.pedantic(step, rounds=5, warmup_rounds=1, iterations=1)


@pytest.mark.parametrize("mode", ["forward", "forward+backward"])
@pytest.mark.parametrize("dims", SPATIAL_DIMS, ids=lambda t: "d{}-dg{}-C{}".format(*t))
@pytest.mark.parametrize("side", SIDES, ids=lambda s: f"N{s}x{s}")
def test_joint_flex(benchmark, side, dims, mode):
    """``combine="joint"`` as FlexAttention runs it: ordinary attention over
    [theta, eta] . [phi, rho] (head dim d + dg, scale 1) with values mu (C wide, no
    padding where FlexAttention accepts a value width other than the query's)."""
    from torch.nn.attention.flex_attention import flex_attention

    n = side * side
    d, dg, c = dims
    backward = mode != "forward"
    inputs = _inputs(n, d, dg, c, backward)
    grad_out = torch.randn(BATCH, n, c, device="cuda", dtype=DTYPE)
    torch._dynamo.reset()  # a fresh compile per case (see make_flex_spatial)
    flex = torch.compile(flex_attention, dynamic=False)

    def step():
        t, p, e, r, m = (x.unsqueeze(1) for x in inputs)
        out = flex(torch.cat([t, e], -1), torch.cat([p, r], -1), m, scale=1.0).squeeze(1)
        if backward:
            torch.autograd.grad(out, inputs, grad_out)
        return out

    try:
        step()  # compile outside the measurement
    except Exception as exc:  # noqa: BLE001 - FlexAttention's own limits
        pytest.skip(f"FlexAttention cannot run this shape: {type(exc).__name__}: {exc}"[:300])
    peak = harness.peak_extra_bytes(step, torch.device("cuda"))
    benchmark.extra_info.update({
        "device": torch.cuda.get_device_name(), "dtype": str(DTYPE), "torch": torch.__version__,
        "op": "spatial-joint", "provider": "flex", "B": BATCH, "N": n, "d": d, "dg": dg, "C": c,
        "mode": mode, "peak_extra_bytes": peak})

    def call():
        out = step()
        torch.cuda.synchronize()
        return out

    benchmark.pedantic(call, rounds=5, warmup_rounds=1, iterations=1)
