"""First-use check of backends whose kernels have never run on a device kind.

The ``triton`` and ``cuda`` kernels are tested in CI under the Triton interpreter, as
compiled sm_80/sm_90 code and in a host emulation, but until a GPU run of
``benchmarks/gpu_check.sh`` is committed under ``benchmarks/results/`` they have never
run on a GPU.  So that ``auto`` can still use them there at no risk, a backend
registered with ``verify_on=("cuda",)`` is checked once per process, device, operator,
mode and dtype class before its first call on that device: the backend and the float64
``reference`` run the same small random case (odd sizes, forward and every input
gradient), and a result outside the contract's tolerance, a non-finite value or an
exception disables that backend for such calls with one warning naming the mismatch
(``auto`` then takes the next backend; an explicit request raises ``RuntimeError``).

Cost: one call of a ~67-position case per (device, op, mode, dtype class), a few
milliseconds, once.  ``GGNET_VERIFY_KERNELS=0`` turns the check off (read per call, like
every runtime switch).  Calls made while ``torch.compile`` traces are not checked (the
check runs real kernels); the first eager call checks them.
"""
from __future__ import annotations

import warnings

import torch

#: (backend, op, device, mode, dtype class) -> None (passed) or why it was disabled.
_RESULTS: dict[tuple, str | None] = {}

#: 4x the loosest contract bound of each dtype class (docs/kernels.md, "Tolerances";
#: float32: Triton's TF32 bound 1e-2; float16/bfloat16: the joint bfloat16 bound 2.5e-2):
#: the check looks for broken kernels (errors of order 1), not for the last digit.
_TOL = {"f64": 4e-10, "f32": 4e-2, "f16": 1e-1, "bf16": 1e-1}
_CLASS = {torch.float64: "f64", torch.float32: "f32", torch.float16: "f16",
          torch.bfloat16: "bf16"}


def enabled() -> bool:
    from .registry import env_choice
    return env_choice("GGNET_VERIFY_KERNELS", ("1", "0"), "1") == "1"


def _mode(op: str, options: dict) -> tuple:
    if op == "spatial":
        return (options.get("combine", "product"),)
    return (options.get("combine", "product"), options.get("stabilize"),
            options.get("scale") is not None)


def _rel(x: torch.Tensor, ref: torch.Tensor) -> float:
    x, ref = x.detach().double().cpu(), ref.detach().double().cpu()
    return float((x - ref).norm() / ref.norm().clamp_min(1e-300))


def _case(op: str, device: torch.device, dtype: torch.dtype, options: dict):
    """Small random inputs (odd sizes, agreeing keys) on ``device`` and the keyword
    options of the call, from a generator of its own (the caller's RNG is untouched)."""
    gen = torch.Generator().manual_seed(20261207)

    def randn(*shape):
        return torch.randn(*shape, generator=gen)
    if op == "spatial":
        b, n, d, dg, c = 2, 67, 5, 3, 11
        theta, phi = randn(b, n, d), randn(b, n, d)
        eta, rho = theta[..., :dg] + 0.5 * randn(b, n, dg), phi[..., :dg] + 0.5 * randn(b, n, dg)
        xs = [theta, phi, eta, rho, 1.0 + randn(b, n, c)]
        kwargs = {"combine": options.get("combine", "product")}
    else:
        xs = [0.3 * randn(2, 13, 67) + 0.2, 0.3 * randn(2, 13, 67)]
        kwargs = {k: options.get(k) for k in ("combine", "stabilize", "scale")}
    return [x.to(device=device, dtype=dtype) for x in xs], kwargs, randn(*xs[-1].shape)


def _compare(op, impl, device, dtype, options) -> str | None:
    """None when ``impl`` matches the float64 reference on a small case, else why not."""
    with torch.inference_mode(False), torch.enable_grad():  # whatever the caller's mode
        return _compare_with_grad(op, impl, device, dtype, options)


def _compare_with_grad(op, impl, device, dtype, options) -> str | None:
    from . import reference
    inputs, kwargs, dout = _case(op, device, dtype, options)
    out_dtype = torch.float64 if dtype == torch.float64 else torch.float32
    leaves = [x.detach().requires_grad_() for x in inputs]
    refs = [x.detach().double().cpu().requires_grad_() for x in inputs]
    out = getattr(impl, op)(*leaves, out_dtype=out_dtype, **kwargs)
    grads = torch.autograd.grad(out, leaves, dout.to(out.device, out.dtype))
    ref = getattr(reference, op)(*refs, out_dtype=torch.float64, **kwargs)
    ref_grads = torch.autograd.grad(ref, refs, dout.double())
    mean = refs[-1 if op == "spatial" else 0].detach().mean(dim=1, keepdim=True)
    tol = _TOL[_CLASS.get(dtype, "f32")]
    checks = [("output", out.detach().double().cpu() - mean, ref.detach() - mean)]
    names = ("theta", "phi", "eta", "rho", "mu") if op == "spatial" else ("y", "g")
    checks += [(f"d{n}", g, r) for n, g, r in zip(names, grads, ref_grads)]
    for name, got, want in checks:
        if not torch.isfinite(got).all():
            return f"{name} is not finite"
        err = _rel(got, want)
        if err > tol:
            return f"{name} differs from the float64 reference by {err:.2e} (tolerance {tol:.0e})"
    return None


def check(name: str, impl, op: str, device: torch.device, dtype: torch.dtype,
          options: dict) -> str | None:
    """None when backend ``name`` may run this call, else why it is disabled (warned
    once, the first time)."""
    if not enabled() or torch.compiler.is_compiling():
        return None
    key = (name, op, str(device), _mode(op, options), _CLASS.get(dtype, str(dtype)))
    if key not in _RESULTS:
        try:
            why = _compare(op, impl, device, dtype, options)
        except Exception as exc:  # noqa: BLE001 - any failure disables the backend
            why = f"raised {type(exc).__name__}: {str(exc)[:200]}"
        _RESULTS[key] = why
        if why is not None:
            warnings.warn(
                f"ggnet_fast: the {name!r} backend failed its first-use check on {device} "
                f"({op}, {'/'.join(map(str, key[3]))}, {dtype}): {why}. It is disabled for "
                f"such calls in this process ('auto' takes the next backend). Please report "
                f"it; GGNET_VERIFY_KERNELS=0 turns the check off.", RuntimeWarning, stacklevel=4)
    return _RESULTS[key]


def reset() -> None:
    """Forget every result (tests)."""
    _RESULTS.clear()
