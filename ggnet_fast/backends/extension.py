"""The ``cpu`` and ``cuda`` backends: the compiled extension ``ggnet_fast._C``.

Importing ``ggnet_fast._C`` (once, by :func:`load`) registers the ``torch.ops.ggnet_fast``
operators: schemas, autograd and Meta kernels (csrc/ops.cpp) and the kernels of the
devices it was compiled for.  Both backends call the same two operators; they differ
only in the device they accept and in what they decline:

* ``CPU`` (csrc/cpu/): fused C++/OpenMP kernels.  Spatial: blocks of 64 queries, two
  passes over key tiles, BLAS/oneDNN tile products, memory O(N (d + C)) plus per-thread
  tiles; backward by recomputation from the saved row statistics.  Channel: C x C maps
  materialised, every mode.  Spatial ``combine="joint"`` (csrc/cpu/joint_cpu.cpp): one
  online-softmax pass over key tiles of the unpadded [theta, eta] . [phi, rho] scores,
  backward in one pass from the saved row lse.  float32/bfloat16/float16 accumulate in
  float32, float64 in float64.  Measured faster than the reference at every size tried
  (docs/cpu_backend.md), so it declines only the spatial ``combine="matmul"``.
* ``CUDA`` (csrc/cuda/): streaming kernels over key tiles of 64, scalar float32 tiles or
  (bfloat16, sm_80+) the tensor cores; backward by recomputation, deterministic.
  Channel: cuBLAS Grams and fused softmaxes.  Spatial ``combine="product"`` only (the
  triton and sdpa backends run ``"joint"`` on CUDA), float32/float16/bfloat16 only,
  B <= 65535; ``GGNET_CUDA_SCALAR=1`` forces the scalar path (docs/cuda_backend.md).

Spatial ``combine="matmul"`` multiplies two N x N softmaxes, which cannot be streamed
over key tiles: both decline it (``auto`` then uses the reference).  The operators
return the accumulation dtype; the result is cast to ``out_dtype``.  Contract:
docs/kernels.md.
"""
from __future__ import annotations

import importlib
from types import ModuleType

import torch


#: Every operator the extension defines (see csrc/ggnet_ops.h).
OPS = ("spatial", "spatial_fwd", "spatial_bwd", "joint", "joint_fwd", "joint_bwd",
       "channel", "channel_fwd", "channel_bwd")
#: The operators with CPU kernels only (combine="joint": triton and sdpa run it on CUDA).
CPU_ONLY_OPS = ("joint", "joint_fwd", "joint_bwd")

_MODULE: ModuleType | None = None
_ERROR: str | None = None
_TRIED = False

_HOW_TO_BUILD = ("build it with `pip install --no-build-isolation -e .` "
                 "(without GGNET_CPU_EXT=0) against the installed torch")


def load() -> ModuleType | None:
    """Import ``ggnet_fast._C`` (once); ``None`` when it cannot be loaded."""
    global _MODULE, _ERROR, _TRIED
    if not _TRIED:
        _TRIED = True
        try:
            _MODULE = importlib.import_module("ggnet_fast._C")
        except ModuleNotFoundError as exc:
            _ERROR = f"the compiled extension ggnet_fast._C is not built ({exc}); {_HOW_TO_BUILD}"
        except (ImportError, OSError) as exc:  # e.g. built against another torch version
            _ERROR = (f"the compiled extension ggnet_fast._C failed to load "
                      f"({type(exc).__name__}: {exc}); rebuild: {_HOW_TO_BUILD}")
        else:
            missing = [op for op in OPS if not hasattr(torch.ops.ggnet_fast, op)]
            if missing:
                _ERROR = f"ggnet_fast._C loaded but does not define {missing}; {_HOW_TO_BUILD}"
                _MODULE = None
    return _MODULE


def unavailable_reason() -> str | None:
    """``None`` when the extension is loaded, otherwise why it is not."""
    load()
    return _ERROR


def has_kernel(op: str, dispatch_key: str) -> bool:
    """Whether ``torch.ops.ggnet_fast.<op>`` has a kernel for ``dispatch_key`` (e.g. "CPU")."""
    if load() is None:
        return False
    return torch._C._dispatch_has_kernel_for_dispatch_key(f"ggnet_fast::{op}", dispatch_key)


def with_cuda() -> bool:
    """Whether the loaded extension was compiled with the CUDA kernels."""
    module = load()
    return bool(module is not None and getattr(module, "WITH_CUDA", 0))


_MATMUL = ("combine='matmul' multiplies two N x N softmaxes, which cannot be streamed over "
           "key tiles; use the reference backend")
_JOINT_CPU_ONLY = ("the extension has combine='joint' kernels for the CPU only; on CUDA the "
                   "triton and sdpa backends run it")
_CUDA_SPATIAL_DTYPES = (torch.float32, torch.float16, torch.bfloat16)


class ExtensionBackend:
    """One device of the compiled extension, as a :class:`~.registry.Backend`."""

    def __init__(self, device_type: str) -> None:
        self.device_type = device_type

    def __repr__(self) -> str:
        return f"ExtensionBackend({self.device_type!r})"

    def is_available(self) -> str | None:
        reason = unavailable_reason()
        if reason is not None:
            return reason
        if self.device_type == "cuda":
            return _cuda_unavailable_reason()
        if not has_kernel("spatial_fwd", "CPU"):
            return "ggnet_fast._C was compiled without CPU kernels"
        return None

    def unsupported(self, op: str, device_type: str, dtype: torch.dtype,
                    options: dict) -> str | None:
        if device_type != self.device_type:
            return (f"the {self.device_type} backend runs on {self.device_type.upper()} "
                    f"tensors only, got {device_type} tensors")
        if op != "spatial":
            return None
        combine = options.get("combine", "product")
        if combine == "joint":
            if self.device_type != "cpu":
                return _JOINT_CPU_ONLY
        elif combine != "product":
            return _MATMUL
        if self.device_type == "cuda":
            if dtype not in _CUDA_SPATIAL_DTYPES:
                return (f"the CUDA spatial kernels take float32, float16 or bfloat16, got "
                        f"{dtype}; use the reference backend for float64")
            batch = options.get("shape", {}).get("B")
            if batch is not None and batch > 65535:
                return f"B = {batch} > 65535 (one grid dimension per batch element)"
        return None

    def spatial(self, theta, phi, eta, rho, mu, *, combine: str = "product",
                out_dtype: torch.dtype | None = None) -> torch.Tensor:
        """[B,N,d], [B,N,d], [B,N,dg], [B,N,dg], [B,N,C] -> [B,N,C] (``"product"`` or
        ``"joint"``; the CPU only for ``"joint"``)."""
        op = torch.ops.ggnet_fast.joint if combine == "joint" else torch.ops.ggnet_fast.spatial
        out = op(theta, phi, eta, rho, mu)
        return out.to(out_dtype or theta.dtype)

    def channel(self, y, g, *, combine: str = "product", stabilize: str | None = None,
                scale: float | None = None, out_dtype: torch.dtype | None = None) -> torch.Tensor:
        """[B,C,N], [B,C,N] -> Q @ y, [B,C,N]."""
        out = torch.ops.ggnet_fast.channel(y, g, combine, stabilize, scale)
        return out.to(out_dtype or y.dtype)


def _cuda_unavailable_reason() -> str | None:
    if not with_cuda():
        return ("ggnet_fast._C was built without its CUDA kernels (no nvcc/CUDA_HOME or a "
                "CPU-only torch at build time, or GGNET_CUDA=0); rebuild with "
                "CUDA_HOME=/usr/local/cuda GGNET_CUDA=1 pip install --no-build-isolation -e .")
    if not has_kernel("spatial_fwd", "CUDA"):
        return "ggnet_fast._C was built with CUDA but registers no CUDA kernel for spatial_fwd"
    if torch.version.cuda is None:
        return f"torch {torch.__version__} is a CPU-only build"
    if not torch.cuda.is_available():
        return "no CUDA device is visible (torch.cuda.is_available() is False)"
    return None


CPU = ExtensionBackend("cpu")
CUDA = ExtensionBackend("cuda")
