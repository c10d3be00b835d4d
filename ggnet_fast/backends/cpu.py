"""The ``cpu`` backend: fused C++/OpenMP kernels from the compiled extension (csrc/cpu/).

Spatial operator (``combine="product"``): blocks of 64 queries, two passes over key
tiles (a tile is the whole 64-row strip while it fits 16 MiB per thread, N <= 21845),
BLAS for the tile products, vectorised exponentials, the ``expm1`` form of the outer
softmax; memory O(N (d + C)) plus the per-thread tiles, never N x N.  The backward
recomputes the tiles from the saved row statistics (lse_a, lse_b, L).
Channel operator: C x C maps materialised (they are small), every ``combine`` /
``stabilize`` / ``scale`` mode, hand-derived backward that saves only the C x C maps.

float32 / bfloat16 / float16 inputs accumulate in float32, float64 in float64.
Threads: ``torch.get_num_threads()``.  Measured on 2 cores, its forward was faster
than the reference / eager formula at every size tried (N = 16 .. 9216), so it declines
only what it does not implement: non-CPU tensors and the spatial ``combine="matmul"``.
See docs/cpu_backend.md.
"""
from __future__ import annotations

import torch

from . import _extension


def is_available() -> str | None:
    reason = _extension.unavailable_reason()
    if reason is not None:
        return reason
    if not _extension.has_kernel("spatial_fwd", "CPU"):
        return "ggnet_fast._C was compiled without CPU kernels"
    return None


def unsupported(op: str, device_type: str, dtype: torch.dtype, options: dict) -> str | None:
    if device_type != "cpu":
        return f"the cpu backend runs on CPU tensors only, got {device_type} tensors"
    if op == "spatial":
        if options.get("combine", "product") != "product":
            return ("combine='matmul' multiplies two N x N softmaxes, which cannot be streamed "
                    "over key blocks; use the reference backend")
    return None


def spatial(theta, phi, eta, rho, mu, *, combine: str, out_dtype: torch.dtype) -> torch.Tensor:
    """[B,N,d], [B,N,d], [B,N,dg], [B,N,dg], [B,N,C] -> [B,N,C] (``combine="product"``)."""
    return _extension.spatial(theta, phi, eta, rho, mu, combine=combine, out_dtype=out_dtype,
                              backend="cpu")


channel = _extension.channel
