"""What the backend tests share: the contract's tolerances, sizes and modes, input makers,
error measures and the checks every backend goes through (docs/kernels.md, "Tolerances").

Used by tests/backends/test_backend_contract.py (every registered backend) and by the per-backend
files for their backend-specific cases.  Errors are relative Frobenius errors against
float64 on the *same* rounded inputs; the spatial forward is judged on its modulation
``delta = o - mean_j(mu)`` and the channel forward on ``out - mean_c(y)``, never on the
output alone (it is within ~1e-3 of the mean, see docs/kernels.md).
"""
from __future__ import annotations

import itertools

import torch

from ggnet_fast import guided_channel_attention, guided_spatial_attention
from ggnet_fast.backends import reference

SPATIAL_NAMES = ("theta", "phi", "eta", "rho", "mu")
CHANNEL_NAMES = ("y", "g")
DTYPES = (torch.float64, torch.float32, torch.float16, torch.bfloat16)
DTYPE_IDS = {torch.float64: "f64", torch.float32: "f32", torch.float16: "f16",
             torch.bfloat16: "bf16"}
COMBINES = ("product", "matmul")
SPATIAL_COMBINES = (*COMBINES, "joint")
CHANNEL_MODES = list(itertools.product(COMBINES, (None, "max-minus"), (None, 0.05)))

# (B, N, d, dg, C): odd sizes, no tile multiple, batch > 1; small, for the Triton interpreter.
SPATIAL_SIZES = [(2, 7 * 9, 5, 3, 11), (2, 23 * 17, 12, 7, 10)]
# (B, C, N, magnitude of the inputs): every mode at the first, the larger one for max-minus.
CHANNEL_SIZES = [(2, 13, 7 * 11, 0.3), (2, 37, 23 * 17, 0.1)]

#: The contract (docs/kernels.md): (op, input dtype) -> (forward delta, every gradient).
#: Half-precision inputs are run with out_dtype=float32 (which keeps delta); their
#: gradients come back in the input dtype.  Each forward bound is raised by 4x the error
#: of merely rounding the exact float64 output to float32.
CONTRACT_TOL = {
    ("spatial", torch.float64): (1e-10, 1e-10),
    ("spatial", torch.float32): (2e-3, 1e-4),
    ("spatial", torch.float16): (5e-3, 2e-2),
    ("spatial", torch.bfloat16): (1e-2, 1e-2),
    ("channel", torch.float64): (1e-10, 1e-10),
    ("channel", torch.float32): (1e-3, 1e-4),
    ("channel", torch.float16): (3e-3, 3e-3),
    ("channel", torch.bfloat16): (1e-2, 1e-2),
}
#: Tighter bounds some backends have held since they were written (regression guards).
MEASURED_TOL = {
    ("cpu", "spatial", torch.float32): (1e-3, 5e-5),
    ("cpu", "spatial", torch.bfloat16): (1e-3, 1e-2),
    ("cpu", "spatial", torch.float16): (2e-4, 2e-2),
    ("cpu", "channel", torch.float32): (1e-3, 5e-5),
    ("cpu", "channel", torch.bfloat16): (1e-3, 1e-2),
    ("triton", "channel", torch.float32): (1e-3, 1e-5),
}
#: The cuda backend's bounds per code path (tests/backends/cuda/test_cuda_backend.py):
#: (path, input dtype) -> (forward delta, every gradient); path "tc" is the default (tensor
#: cores for bfloat16 on sm_80+; float32/float16 stay scalar there), "scalar" is forced by
#: GGNET_CUDA_SCALAR=1.  Tighter than the contract except where bfloat16 runs on the tensor
#: cores; not in MEASURED_TOL, which would also bind the contract suite before a GPU run.
CUDA_PATH_TOL = {
    **{(path, torch.float32): (1e-3, 1e-4) for path in ("tc", "scalar")},
    **{(path, torch.float16): (1e-3, 3e-3) for path in ("tc", "scalar")},
    ("scalar", torch.bfloat16): (1e-3, 1e-2),
    ("tc", torch.bfloat16): CONTRACT_TOL[("spatial", torch.bfloat16)],
}


#: Registered backends the numerical contract does not bind, and why.
NOT_BOUND = {
    "reference": "the reference is the definition; tests/backends/test_reference_backend.py "
                 "checks it against an independent NumPy implementation",
}
#: Baselines bound only in float32/float64 without autocast, and why.
BASELINES = {
    "eager": "the released formula in the input dtype: a baseline that rounds the modulation "
             "away in half precision by design (docs/kernels.md, Numerics)",
}


#: The joint softmax (sdpa backend) computes in the input dtype with PyTorch's attention
#: kernels, like any bf16 attention: its bf16 gradients measured 0.6-1.15e-2 against
#: float64 (2026-11-30, 5 seeds at N = 63); the contract for it is stated here.
JOINT_TOL = {torch.bfloat16: (1e-2, 2.5e-2)}


#: Triton runs float32 inputs on TF32 tensor cores on a GPU (docs/triton.md, "float32
#: policy": IEEE tiles spill, 3xTF32 does not fit); its float64 model measured delta
#: 1.2e-3 and gradients 3.0-4.7e-3 at N = 64x64.  The interpreter computes exactly.
TF32_TOL = (1e-2, 1e-2)


def tolerance(backend: str, op: str, dtype: torch.dtype, combine: str | None = None,
              device: str = "cpu") -> tuple[float, float]:
    if combine == "joint" and dtype in JOINT_TOL:
        return JOINT_TOL[dtype]
    if backend == "triton" and device == "cuda" and dtype == torch.float32:
        return TF32_TOL
    return MEASURED_TOL.get((backend, op, dtype), CONTRACT_TOL[(op, dtype)])


def rel_err(x, y) -> float:
    """||x - y|| / ||y|| (Frobenius), in float64 on the CPU; tensors or NumPy arrays."""
    x, y = (torch.as_tensor(v).detach().double().cpu() for v in (x, y))
    return float((x - y).norm() / y.norm().clamp_min(1e-300))


def grads_of(fn, inputs, dout):
    """``fn(*inputs)`` and the gradients of ``<fn(*inputs), dout>`` w.r.t. every input."""
    leaves = [x.detach().requires_grad_() for x in inputs]
    out = fn(*leaves)
    grads = torch.autograd.grad(out, leaves, dout.to(out.dtype))
    return out.detach(), grads


def spatial_inputs(shape, dtype, device="cpu", scale=1.5, mu_offset=0.0, requires_grad=False):
    """theta, phi, eta, rho, mu with independent random entries, rounded to ``dtype``."""
    b, n, d, dg, c = shape
    xs = [scale * torch.randn(b, n, k, device=device) for k in (d, d, dg, dg)]
    xs.append(scale * torch.randn(b, n, c, device=device) + mu_offset)
    return [x.to(dtype).requires_grad_(requires_grad) for x in xs]


def agreeing_spatial_inputs(shape, dtype, device="cpu", scale=1.5, mu_offset=0.0):
    """Like :func:`spatial_inputs`, but the guidance keys agree with the feature keys (as in
    a trained GG-Net), so the modulation delta stands well above float32 rounding of o."""
    theta, phi, eta, rho, mu = spatial_inputs(shape, torch.float32, device, scale, mu_offset)
    dg = eta.shape[-1]
    eta = theta[..., :dg] + 0.5 * eta
    rho = phi[..., :dg] + 0.5 * rho
    return [x.to(dtype) for x in (theta, phi, eta, rho, mu)]


def channel_inputs(shape, dtype, device="cpu", magnitude=0.3, y_offset=0.2):
    """y, g [B, C, N]: moderate magnitudes, so the Gram softmaxes are neither one-hot nor
    uniform; y has a non-zero mean (post-activation-like)."""
    b, c, n = shape
    y = magnitude * torch.randn(b, c, n, device=device) + y_offset
    g = magnitude * torch.randn(b, c, n, device=device)
    return y.to(dtype), g.to(dtype)


def spatial_reference(inputs, dout, combine="product"):
    """Output and gradients of the float64 reference on the same (rounded) inputs."""
    return grads_of(lambda *x: reference.spatial(*x, combine=combine, out_dtype=torch.float64),
                    [x.double() for x in inputs], dout.double())


def channel_reference(inputs, dout, **modes):
    return grads_of(lambda y, g: reference.channel(y, g, out_dtype=torch.float64, **modes),
                    [x.double() for x in inputs], dout.double())


def assert_matches_float64(out, grads, ref_out, ref_grads, inputs, mean, tol, names, info):
    """The contract's check: the forward's deviation from ``mean`` (the mean over the
    attended axis, float64) and every input gradient, relative to float64."""
    fwd_tol, grad_tol = tol
    delta, delta_ref = out.double().cpu() - mean, ref_out.cpu() - mean
    floor = rel_err(ref_out.float().double().cpu() - mean, delta_ref)
    err = rel_err(delta, delta_ref)
    assert err < fwd_tol + 4 * floor, f"delta {info} {err=:.2e} {floor=:.2e}"
    for name, g, r, x in zip(names, grads, ref_grads, inputs):
        assert g.dtype == x.dtype and g.shape == x.shape and g.device == x.device, name
        assert torch.isfinite(g).all(), f"d{name} {info}"
        assert rel_err(g, r) < grad_tol, f"d{name} {info} err={rel_err(g, r):.2e}"


def assert_compile_matches_eager(backend: str, spatial_args, y, g, seed,
                                 combine: str = "product") -> None:
    """torch.compile(fullgraph=True) traces both public operators on ``backend`` and
    matches eager, forward and every input gradient (float32 inputs)."""
    torch._dynamo.reset()

    def both(theta, phi, eta, rho, mu, y, g):
        o = guided_spatial_attention(theta, phi, eta, rho, mu, combine=combine, backend=backend)
        z = guided_channel_attention(y, g, stabilize="max-minus", backend=backend)
        return o.sum() + z.square().sum()

    compiled = torch.compile(both, fullgraph=True, backend="aot_eager")
    leaves = [x.clone().requires_grad_() for x in (*spatial_args, y, g)]
    eager_leaves = [x.clone().requires_grad_() for x in (*spatial_args, y, g)]
    out = compiled(*leaves)
    out.backward()
    ref = both(*eager_leaves)
    ref.backward()
    assert torch.allclose(out, ref, rtol=1e-6, atol=1e-6), f"seed={seed}"
    for a, b in zip(leaves, eager_leaves):
        assert torch.allclose(a.grad, b.grad, rtol=1e-5, atol=1e-7), f"seed={seed}"
