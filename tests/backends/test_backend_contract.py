"""The contract of docs/kernels.md, held against every registered backend.

Parametrised over registered backends x device x operator x combine/stabilize/scale mode
x dtype x odd sizes.  A case is skipped, with the reason, when the backend is not
available in this process (the registry's reason), when the device is absent, or when
the backend declines the call (its own ``unsupported`` reason): a new backend is tested
by registering it.  Forward and every input gradient are compared with the float64
reference on the same rounded inputs (tolerances: tests/contract.py, docs/kernels.md);
non-contiguous inputs, torch.compile(fullgraph=True), torch.library.opcheck of every
custom op a backend calls, autocast and the output dtype are checked once here for all
backends.  Backend-specific cases (tile paths, environment switches, saved tensors,
GPU-only paths) stay in the per-backend files.

Without a GPU, Triton runs under TRITON_INTERPRET=1 (tests/conftest.py) in float32 and
float16 (the interpreter has no bfloat16); the cuda backend and every cuda-device case
skip with their reason.  benchmarks/gpu_check.sh runs this same file on a GPU.
"""
import inspect

import pytest
import torch
from torch.overrides import TorchFunctionMode
from torch.utils._python_dispatch import TorchDispatchMode

import contract as C
from ggnet_fast import guided_channel_attention, guided_spatial_attention
from ggnet_fast.backends import (Backend, get_backend, record_dispatch, registered_backends,
                                 registry, unavailable_reason)

BACKENDS = registered_backends()
DEVICES = ("cpu", "cuda")


def backend_on(name: str, device: str) -> Backend:
    """The backend, or a skip with the reason it cannot be tested here."""
    if device == "cuda" and not torch.cuda.is_available():
        pytest.skip("no CUDA device")
    reason = unavailable_reason(name)
    if reason is not None:
        pytest.skip(f"{name} unavailable: {reason}")
    return get_backend(name)


def require(name, impl, op, device, dtype, **options):
    """Skip unless ``impl`` accepts this call (skipped with the backend's own reason)."""
    why = impl.unsupported(op, device, dtype, registry.call_options(dtype, **options))
    if why is not None:
        pytest.skip(f"{name} declines: {why}")


def bound(name, dtype, autocast=False):
    """Skip the backends the numerical contract does not bind here."""
    if name in C.NOT_BOUND:
        pytest.skip(C.NOT_BOUND[name])
    if name in C.BASELINES and (autocast or dtype in (torch.float16, torch.bfloat16)):
        pytest.skip(C.BASELINES[name])


backends = pytest.mark.parametrize("name", BACKENDS)
devices = pytest.mark.parametrize("device", DEVICES)
dtypes = pytest.mark.parametrize("dtype", C.DTYPES, ids=C.DTYPE_IDS.get)


# ------------------------------------------------------------------------ the interface
@backends
def test_implements_the_backend_protocol_with_its_defaults(name):
    reason = unavailable_reason(name)
    if reason is not None:
        pytest.skip(f"{name} unavailable: {reason}")
    impl = get_backend(name)
    assert isinstance(impl, Backend)
    for op in ("spatial", "channel"):
        want = inspect.signature(getattr(Backend, op)).parameters
        have = inspect.signature(getattr(impl, op)).parameters
        keywords = {k: p.default for k, p in want.items() if p.kind is p.KEYWORD_ONLY}
        assert {k: have[k].default for k in keywords if k in have} == keywords, (name, op)


# ------------------------------------------------------------------- against float64
@backends
@devices
@dtypes
@pytest.mark.parametrize("combine", C.SPATIAL_COMBINES)
@pytest.mark.parametrize("shape", C.SPATIAL_SIZES, ids=lambda s: "N%d" % s[1])
def test_spatial_forward_and_gradients_match_float64(seed, name, device, dtype, combine, shape):
    impl = backend_on(name, device)
    bound(name, dtype)
    b, n, d, dg, c = shape
    require(name, impl, "spatial", device, dtype, combine=combine,
            shape={"B": b, "N": n, "d": d, "dg": dg, "C": c})
    # scores of standard deviation ~4: more peaked ones make da = p dp - Sx R cancel, and
    # the fused float32 gradients lose accuracy first (Triton: ~1e-4 at 1.5x this scale)
    inputs = C.agreeing_spatial_inputs(shape, dtype, device, scale=1.0, mu_offset=1.0)
    dout = torch.randn(b, n, c, device=device)
    out_dtype = torch.float64 if dtype == torch.float64 else torch.float32
    with record_dispatch() as calls:
        out, grads = C.grads_of(lambda *x: guided_spatial_attention(
            *x, combine=combine, out_dtype=out_dtype, backend=name), inputs, dout)
    assert calls == [("spatial", name)]
    assert out.dtype == out_dtype and out.shape == (b, n, c)
    ref_out, ref_grads = C.spatial_reference(inputs, dout, combine)
    mean_mu = inputs[4].double().cpu().mean(dim=1, keepdim=True)
    assert (ref_out.cpu() - mean_mu).abs().max() > 1e-5  # the modulation is really there
    C.assert_matches_float64(out, grads, ref_out, ref_grads, inputs, mean_mu,
                             C.tolerance(name, "spatial", dtype, combine, device), C.SPATIAL_NAMES,
                             f"{name} {device} {dtype} {combine} seed={seed}")


CHANNEL_CASES = ([(C.CHANNEL_SIZES[0], mode) for mode in C.CHANNEL_MODES]
                 + [(C.CHANNEL_SIZES[1], (combine, "max-minus", None)) for combine in C.COMBINES])


@backends
@devices
@dtypes
@pytest.mark.parametrize("size,mode", CHANNEL_CASES,
                         ids=lambda v: "C%d" % v[1] if len(v) == 4 else "-".join(map(str, v)))
def test_channel_forward_and_gradients_match_float64(seed, name, device, dtype, size, mode):
    impl = backend_on(name, device)
    bound(name, dtype)
    b, c, n, magnitude = size
    combine, stabilize, scale = mode
    modes = dict(combine=combine, stabilize=stabilize, scale=scale)
    require(name, impl, "channel", device, dtype, shape={"B": b, "C": c, "N": n}, **modes)
    inputs = C.channel_inputs((b, c, n), dtype, device, magnitude)
    dout = torch.randn(b, c, n, device=device)
    out_dtype = torch.float64 if dtype == torch.float64 else torch.float32
    with record_dispatch() as calls:
        out, grads = C.grads_of(lambda y, g: guided_channel_attention(
            y, g, out_dtype=out_dtype, backend=name, **modes), inputs, dout)
    assert calls == [("channel", name)]
    assert out.dtype == out_dtype and out.shape == (b, c, n)
    ref_out, ref_grads = C.channel_reference(inputs, dout, **modes)
    mean_y = inputs[0].double().cpu().mean(dim=1, keepdim=True)
    C.assert_matches_float64(out, grads, ref_out, ref_grads, inputs, mean_y,
                             C.tolerance(name, "channel", dtype, device=device), C.CHANNEL_NAMES,
                             f"{name} {device} {dtype} {mode} seed={seed}")


# ------------------------------------------------------------------------ once each
@backends
@devices
def test_non_contiguous_inputs(seed, name, device):
    """Strided views (a transposed projection, every other channel) give the result of
    contiguous copies."""
    impl = backend_on(name, device)
    bound(name, torch.float32)
    require(name, impl, "spatial", device, torch.float32)
    require(name, impl, "channel", device, torch.float32)
    b, n, d, c = 2, 50, 6, 9
    theta = torch.randn(b, d, n, device=device).transpose(1, 2)
    mu = torch.randn(b, c, n, device=device).transpose(1, 2) + 1.0
    phi, eta, rho = (torch.randn(b, n, 2 * d, device=device)[..., ::2] for _ in range(3))
    spatial = [theta, phi, eta, rho, mu]
    assert not any(x.is_contiguous() for x in spatial)
    out = guided_spatial_attention(*spatial, backend=name)
    expected = guided_spatial_attention(*(x.contiguous() for x in spatial), backend=name)
    torch.testing.assert_close(out, expected, rtol=1e-6, atol=1e-6)
    ref, _ = C.spatial_reference(spatial, torch.zeros(b, n, c, device=device))
    mean_mu = mu.double().cpu().mean(dim=1, keepdim=True)
    assert C.rel_err(out.double().cpu() - mean_mu, ref - mean_mu) < 2e-3, f"seed={seed}"
    y, g = (x[..., ::2] for x in C.channel_inputs((2, 13, 2 * 63), torch.float32, device))
    assert not y.is_contiguous()
    z = guided_channel_attention(y, g, stabilize="max-minus", backend=name)
    torch.testing.assert_close(
        z, guided_channel_attention(y.contiguous(), g.contiguous(), stabilize="max-minus",
                                    backend=name), rtol=1e-6, atol=1e-6)


fused_combines = pytest.mark.parametrize("combine", ["product", "joint"])


@backends
@devices
@fused_combines
def test_torch_compile_fullgraph(seed, name, device, combine):
    impl = backend_on(name, device)
    require(name, impl, "spatial", device, torch.float32, combine=combine)
    require(name, impl, "channel", device, torch.float32, stabilize="max-minus")
    spatial = C.spatial_inputs((2, 40, 6, 4, 8), torch.float32, device, scale=1.0)
    y, g = C.channel_inputs((2, 8, 40), torch.float32, device)
    C.assert_compile_matches_eager(name, spatial, y, g, seed, combine)


class _CustomOpCalls(TorchFunctionMode):
    """Records every call of a non-ATen operator (the backends' custom ops) with its
    arguments: the public (autograd) ops at the function level, their forward/backward
    ops below autograd through :class:`_CustomOpKernels`."""

    def __init__(self):
        super().__init__()
        self.calls = {}

    def __torch_function__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        if isinstance(func, torch._ops.OpOverloadPacket):
            func = func.default
        if isinstance(func, torch._ops.OpOverload) and func.namespace not in ("aten", "prim"):
            self.calls.setdefault(func, (args, kwargs))
        return func(*args, **kwargs)


class _CustomOpKernels(TorchDispatchMode):
    """Below autograd: the custom ops' kernels, recorded with detached arguments (they are
    not differentiable themselves; the op above them is)."""

    def __init__(self, calls):
        super().__init__()
        self.calls = calls

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        if func.namespace not in ("aten", "prim", "prims") and func not in self.calls:
            detach = lambda x: x.detach() if isinstance(x, torch.Tensor) else x  # noqa: E731
            self.calls[func] = (tuple(map(detach, args)),
                                {k: detach(v) for k, v in kwargs.items()})
        return func(*args, **kwargs)


@backends
@devices
@fused_combines
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64], ids=["f32", "f64"])
def test_opcheck_every_custom_op_the_backend_calls(seed, name, device, dtype, combine):
    """torch.library.opcheck (schema, fake tensors, autograd registration, AOT dispatch)
    on every custom operator the backend runs for both operators, forward and backward,
    with the arguments it really passes."""
    impl = backend_on(name, device)
    require(name, impl, "spatial", device, dtype, combine=combine)
    require(name, impl, "channel", device, dtype, combine="matmul", stabilize="max-minus")
    spatial = [x.requires_grad_() for x in C.spatial_inputs((2, 19, 4, 3, 5), dtype, device)]
    y, g = (x.requires_grad_() for x in C.channel_inputs((2, 6, 10), dtype, device))
    recorder = _CustomOpCalls()
    with recorder, _CustomOpKernels(recorder.calls):
        guided_spatial_attention(*spatial, combine=combine, backend=name).sum().backward()
        for modes in (("matmul", "max-minus", 0.2), ("product", None, None)):
            z = guided_channel_attention(y, g, combine=modes[0], stabilize=modes[1],
                                         scale=modes[2], backend=name)
            z.square().sum().backward()
    if name in ("reference", "eager"):
        assert recorder.calls == {}, "plain PyTorch backends call ATen only"
    for op, (args, kwargs) in recorder.calls.items():
        torch.library.opcheck(op, args, kwargs)


@backends
@devices
def test_output_dtype_follows_out_dtype(seed, name, device):
    impl = backend_on(name, device)
    dtype = torch.float16 if device == "cpu" else torch.bfloat16  # (the interpreter: no bf16)
    require(name, impl, "spatial", device, dtype)
    require(name, impl, "channel", device, dtype)
    spatial = C.spatial_inputs((2, 30, 4, 4, 6), dtype, device, mu_offset=1.5)
    y, g = C.channel_inputs((2, 13, 63), dtype, device)
    for out, ref in ((guided_spatial_attention(*spatial, backend=name),
                      C.spatial_reference(spatial, torch.zeros(2, 30, 6, device=device))[0]),
                     (guided_channel_attention(y, g, backend=name),
                      C.channel_reference((y, g), torch.zeros_like(y))[0])):
        # o itself (not delta) in the input dtype: within its rounding of the exact result
        assert out.dtype == dtype
        err = (out.double().cpu() - ref.cpu()).abs().max().item()
        assert err < 2e-3 * ref.abs().max().item(), f"{name} max abs err {err:.2e} seed={seed}"
    assert guided_spatial_attention(*spatial, backend=name,
                                    out_dtype=torch.float32).dtype == torch.float32
    assert guided_channel_attention(y, g, backend=name,
                                    out_dtype=torch.float32).dtype == torch.float32


@backends
@devices
def test_autocast_does_not_change_the_result(seed, name, device):
    """Under autocast the operators compute from the inputs' dtype: float32 inputs give
    the float32 result, bit for bit close to the one without autocast."""
    impl = backend_on(name, device)
    bound(name, torch.float32, autocast=True)
    require(name, impl, "spatial", device, torch.float32)
    require(name, impl, "channel", device, torch.float32, combine="matmul")
    spatial = C.spatial_inputs((2, 63, 5, 3, 6), torch.float32, device, scale=1.0)
    y, g = C.channel_inputs((2, 13, 63), torch.float32, device)
    plain = (guided_spatial_attention(*spatial, backend=name),
             guided_channel_attention(y, g, combine="matmul", backend=name))
    half = torch.float16 if device == "cpu" else torch.bfloat16
    with torch.autocast(device, dtype=half):
        auto = (guided_spatial_attention(*spatial, backend=name),
                guided_channel_attention(y, g, combine="matmul", backend=name))
    for a, p in zip(auto, plain):
        assert a.dtype == torch.float32
        torch.testing.assert_close(a, p, rtol=1e-5, atol=1e-5)
