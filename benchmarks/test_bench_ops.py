"""Speed and peak memory of both operators, every available backend and the baselines.

Providers: each registered backend that can run the call on this device (reference,
triton, cuda, cpu, ...) plus the two compositions a user would otherwise write: the
released code's eager formula ("eager") and the same under torch.compile ("compile").
"""
from __future__ import annotations

import os

import pytest
import torch

import harness
from ggnet_fast.backends import unavailable_reason
from ggnet_fast.ops import spatial_flops

DEV = harness.device()
ON_GPU = DEV.type == "cuda"
DTYPE = torch.bfloat16 if ON_GPU else torch.float32
BATCH = 4 if ON_GPU else 1
#: GGNET_BENCH_GPU_GRID=1: the GPU's sizes on any device, so that
#: ``gpu_check.sh --dry-run`` can check that its selections collect (not for running).
GPU_GRID = ON_GPU or os.environ.get("GGNET_BENCH_GPU_GRID") == "1"
SIDES = (32, 64, 128) if GPU_GRID else (16, 32)
# (d, dg, C): the released configuration and the reduced-key one.
SPATIAL_DIMS = ((256, 256, 256), (32, 32, 256)) if GPU_GRID else ((32, 32, 64),)
CHANNEL_DIMS = (256,) if GPU_GRID else (64,)
MAX_EAGER_BYTES = 24 * 2**30  # skip materialising baselines that cannot fit


def _info(benchmark, **kw):
    benchmark.extra_info.update({"device": torch.cuda.get_device_name() if ON_GPU else "cpu",
                                 "dtype": str(DTYPE), "torch": torch.__version__, **kw})


def _run(benchmark, fn, rounds):
    def call():
        out = fn()
        harness.synchronize(DEV)
        return out
    benchmark.pedantic(call, rounds=rounds, warmup_rounds=1, iterations=1)


def _spatial_inputs(n, d, dg, c, grad):
    shapes = [(BATCH, n, d), (BATCH, n, d), (BATCH, n, dg), (BATCH, n, dg), (BATCH, n, c)]
    scale = [d ** -0.25, d ** -0.25, dg ** -0.25, dg ** -0.25, 1.0]
    return [(s * torch.randn(shape, device=DEV)).to(DTYPE).requires_grad_(grad)
            for shape, s in zip(shapes, scale)]


def _spatial_step(fn, n, d, dg, c, backward):
    """One call of ``fn`` on fresh spatial inputs (and its backward when asked)."""
    inputs = _spatial_inputs(n, d, dg, c, backward)
    grad_out = torch.randn(BATCH, n, c, device=DEV, dtype=DTYPE)

    def step():
        out = fn(*inputs)
        if backward:
            torch.autograd.grad(out, inputs, grad_out.to(out.dtype))
        return out
    return step


def _materialises(provider):
    return provider in ("eager", "compile", "reference")


def _skip_if_too_big(provider, n, backward):
    """Skip a materialising provider whose N x N maps would not fit in memory."""
    if _materialises(provider) and 4 * BATCH * n * n * 4 * (2 if backward else 1) > MAX_EAGER_BYTES:
        pytest.skip(f"{provider} would materialise > {MAX_EAGER_BYTES >> 30} GB of N x N maps")


def _bench_spatial(benchmark, provider, side, dims, mode, combine):
    """Time one spatial case of ``combine`` (skipped with the provider's reason when it
    cannot run it, or when it would materialise too much); records its peak memory."""
    n = side * side
    d, dg, c = dims
    backward = mode != "forward"
    if provider not in ("eager", "compile") and unavailable_reason(provider):
        pytest.skip(f"{provider}: {unavailable_reason(provider)}")
    options = {} if combine == "product" else {"combine": combine}
    why = harness.unsupported_reason(provider, "spatial", DEV, DTYPE,
                                     {"B": BATCH, "N": n, "d": d, "dg": dg, "C": c}, **options)
    if why:
        pytest.skip(f"{provider}: {why}")
    _skip_if_too_big(provider, n, backward)
    op = "spatial" if combine == "product" else f"spatial-{combine}"
    step = _spatial_step(harness.op_fn(op, provider), n, d, dg, c, backward)
    step()  # compile / autotune outside the measurement
    peak = harness.peak_extra_bytes(step, DEV)
    flops = {"flops": spatial_flops(BATCH, n, d, dg, c, backward)} if combine == "product" else {}
    _info(benchmark, op=op, provider=provider, B=BATCH, N=n, d=d, dg=dg, C=c, mode=mode,
          peak_extra_bytes=peak, **flops)
    _run(benchmark, step, rounds=5 if ON_GPU else 2)


@pytest.mark.parametrize("mode", ["forward", "forward+backward"])
@pytest.mark.parametrize("dims", SPATIAL_DIMS, ids=lambda t: "d{}-dg{}-C{}".format(*t))
@pytest.mark.parametrize("side", SIDES, ids=lambda s: f"N{s}x{s}")
@pytest.mark.parametrize("provider", harness.providers("spatial", DEV, DTYPE))
def test_spatial(benchmark, provider, side, dims, mode):
    _bench_spatial(benchmark, provider, side, dims, mode, "product")


@pytest.mark.parametrize("mode", ["forward", "forward+backward"])
@pytest.mark.parametrize("dims", SPATIAL_DIMS, ids=lambda t: "d{}-dg{}-C{}".format(*t))
@pytest.mark.parametrize("side", SIDES, ids=lambda s: f"N{s}x{s}")
@pytest.mark.parametrize("provider", ["triton", "cpu", "sdpa", "reference", "eager", "compile"])
def test_spatial_joint(benchmark, provider, side, dims, mode):
    """``combine="joint"`` (softmax(a + b) @ mu): our fused kernels (triton on a GPU, cpu
    on the CPU) and the sdpa backend (PyTorch's fused attention over [theta, eta] .
    [phi, rho], zero-padded to C) against the materialising compositions."""
    _bench_spatial(benchmark, provider, side, dims, mode, "joint")


@pytest.mark.parametrize("mode", ["forward", "forward+backward"])
@pytest.mark.parametrize("c", CHANNEL_DIMS, ids=lambda c: f"C{c}")
@pytest.mark.parametrize("side", SIDES, ids=lambda s: f"N{s}x{s}")
@pytest.mark.parametrize("provider", harness.providers("channel", DEV, DTYPE))
def test_channel(benchmark, provider, side, c, mode):
    n = side * side
    backward = mode != "forward"
    why = harness.unsupported_reason(provider, "channel", DEV, DTYPE, {"B": BATCH, "C": c, "N": n})
    if why:
        pytest.skip(f"{provider}: {why}")
    y = (torch.randn(BATCH, c, n, device=DEV) / n ** 0.5).to(DTYPE).requires_grad_(backward)
    g = (torch.randn(BATCH, c, n, device=DEV) / n ** 0.5).to(DTYPE).requires_grad_(backward)
    fn = harness.op_fn("channel", provider)
    grad_out = torch.randn(BATCH, c, n, device=DEV, dtype=DTYPE)

    def step():
        out = fn(y, g)
        if backward:
            torch.autograd.grad(out, (y, g), grad_out.to(out.dtype))
        return out

    step()
    peak = harness.peak_extra_bytes(step, DEV)
    _info(benchmark, op="channel", provider=provider, B=BATCH, N=n, C=c, mode=mode,
          peak_extra_bytes=peak)
    _run(benchmark, step, rounds=5 if ON_GPU else 2)


@pytest.mark.parametrize("layout", ["module-views", "contiguous", "copies-only"])
def test_spatial_layout_copies(benchmark, layout):
    """What the copies of the modules' layout cost (docs/kernels.md, "Layouts").

    ``GuidedNonLocal`` passes its [B, k, H, W] projections as [B, N, k] views (position
    stride 1) and transposes the [B, N, C] result back; the fused kernels copy the views
    to contiguous tensors.  "module-views" times forward + backward of the first fused
    provider on exactly that path, "contiguous" the same on inputs copied outside the
    measurement (no output transpose), "copies-only" the five input copies and the
    output transpose alone."""
    fused = [p for p in harness.providers("spatial", DEV, DTYPE)
             if not _materialises(p)]
    if not fused:
        pytest.skip("no fused spatial backend on this device")
    provider, side = fused[0], 64
    n, (d, dg, c) = side * side, SPATIAL_DIMS[-1]
    channel_major = [torch.randn(BATCH, k, n, device=DEV).to(DTYPE) for k in (d, d, dg, dg, c)]
    views = [x.requires_grad_().transpose(1, 2) for x in channel_major]
    copies = [v.detach().contiguous().requires_grad_() for v in views]
    fn = harness.op_fn("spatial", provider)
    grad_out = torch.randn(BATCH, c, n, device=DEV, dtype=DTYPE)
    out_like = torch.randn(BATCH, n, c, device=DEV, dtype=DTYPE)

    def step():
        if layout == "copies-only":
            return [v.contiguous() for v in views] + [out_like.transpose(1, 2).contiguous()]
        if layout == "contiguous":
            out = fn(*copies)
            return torch.autograd.grad(out, copies, grad_out.transpose(1, 2))
        out = fn(*views).transpose(1, 2).contiguous()  # back to [B, C, N] (then [B, C, H, W])
        return torch.autograd.grad(out, channel_major, grad_out)

    step()
    _info(benchmark, op="spatial-layout", provider=f"{provider}-{layout}", B=BATCH, N=n, d=d,
          dg=dg, C=c, mode="forward+backward")
    _run(benchmark, step, rounds=10)
