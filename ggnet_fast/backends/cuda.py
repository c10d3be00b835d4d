"""The ``cuda`` backend: fused CUDA C++ kernels from the compiled extension (csrc/cuda/).

Spatial operator (``combine="product"``), streaming over key tiles of 64 with nothing
N x N in memory (kernels.md):

* forward, pass 1: ``lse_a``, ``lse_b`` per row (online max/sum); pass 2: recompute the
  scores, ``e = expm1(p)``, ``L = N + sum e``, ``o = (sum_j mu_j + e @ mu) / L``;
  bfloat16 on sm_80+ runs both passes on the tensor cores (WMMA, float32 accumulators;
  only ``e`` is rounded to bfloat16); float32, float16 (whose range cannot hold
  ``e ~ 1/N^2``) and other cards run scalar float32 tiles;
* backward by recomputation from (lse_a, lse_b, L): a query pass for ``R_i``, a query
  pass for ``dtheta``/``deta``, key passes for ``dphi``/``drho``/``dmu``; float32
  accumulation, every output row owned by one block (no atomics, deterministic);
  bfloat16 on sm_80+ on the tensor cores with hi + lo splits of grad_o and of the
  element-wise weights (C <= 256, d + dg <= 256), scalar tiles otherwise.

Channel operator: Gram matrices, ``Sz @ Sg`` and ``Q @ Y`` on cuBLAS, the softmaxes and
the ``expm1`` outer softmax fused in CUDA kernels; the backward is the ATen composite.

Outputs are float32 (the kernels' accumulation dtype) and cast to ``out_dtype``.
``GGNET_CUDA_SCALAR=1`` forces the scalar path (tests use it).  See docs/cuda_backend.md.
"""
from __future__ import annotations

import torch

from . import _extension

_DTYPES = (torch.float32, torch.float16, torch.bfloat16)


def is_available() -> str | None:
    reason = _extension.unavailable_reason()
    if reason is not None:
        return reason
    if not _extension.with_cuda():
        return ("ggnet_fast._C was built without its CUDA kernels (no nvcc/CUDA_HOME or a "
                "CPU-only torch at build time, or GGNET_CUDA=0); rebuild with "
                "CUDA_HOME=/usr/local/cuda GGNET_CUDA=1 pip install --no-build-isolation -e .")
    if not _extension.has_kernel("spatial_fwd", "CUDA"):
        return "ggnet_fast._C was built with CUDA but registers no CUDA kernel for spatial_fwd"
    if torch.version.cuda is None:
        return f"torch {torch.__version__} is a CPU-only build"
    if not torch.cuda.is_available():
        return "no CUDA device is visible (torch.cuda.is_available() is False)"
    return None


def unsupported(op: str, device_type: str, dtype: torch.dtype, options: dict) -> str | None:
    if device_type != "cuda":
        return f"the cuda backend runs on CUDA tensors only, got {device_type} tensors"
    if op == "spatial":
        if options.get("combine", "product") != "product":
            return ("combine='matmul' multiplies two N x N softmaxes, which cannot be streamed "
                    "over key tiles; use the reference backend")
        if dtype not in _DTYPES:
            return (f"the CUDA spatial kernels take float32, float16 or bfloat16, got {dtype}; "
                    "use the reference backend for float64")
        shape = options.get("shape", {})
        if shape.get("B") is not None and shape["B"] > 65535:
            return f"B = {shape['B']} > 65535 (one grid dimension per batch element)"
    return None


def spatial(theta, phi, eta, rho, mu, *, combine: str, out_dtype: torch.dtype) -> torch.Tensor:
    """[B,N,d], [B,N,d], [B,N,dg], [B,N,dg], [B,N,C] -> [B,N,C] (``combine="product"``)."""
    return _extension.spatial(theta, phi, eta, rho, mu, combine=combine, out_dtype=out_dtype,
                              backend="cuda")


channel = _extension.channel
