"""The ``triton`` backend: fused Triton kernels for both guided attention operators.

* spatial ``combine="product"``: two streaming passes, O(N) memory forward and
  backward (``spatial_kernels.py``);
* spatial ``combine="joint"``: one online-softmax pass over the unpadded
  [theta, eta] . [phi, rho] scores, FlashAttention-2-style backward (``joint_kernels.py``);
* channel (all ``combine``/``stabilize`` modes, ``scale``): Gram matrices, the three
  softmaxes and the value product in three kernels (``channel_kernels.py``).

Both are ``torch.library`` custom ops (``ggnet_fast::triton_*``) with registered autograd
and fake implementations, so ``torch.compile(fullgraph=True)`` traces through them.
Runs on CUDA tensors, or on CPU tensors under ``TRITON_INTERPRET=1`` (tests).
Design notes: ``docs/triton.md``; the contract: ``docs/kernels.md``.
"""
from __future__ import annotations

import torch

from . import channel_kernels as _channel_mod
from . import joint_kernels as _joint_mod
from . import spatial_kernels as _spatial_mod
from .runtime import INTERPRET

MAX_SPATIAL_DIM = 256    # d and dg: full-width tiles of [theta, eta] stay in registers
MAX_SPATIAL_C = 512
MAX_CHANNEL_C = 1024     # a full C-wide row of the C x C maps per program


def is_available() -> str | None:
    if not INTERPRET and not torch.cuda.is_available():
        return "no CUDA device (and TRITON_INTERPRET=1 is not set)"
    return None


def unsupported(op: str, device_type: str, dtype: torch.dtype, options: dict) -> str | None:
    if device_type == "cpu":
        if not INTERPRET:
            return "CPU tensors need TRITON_INTERPRET=1 (set before ggnet_fast is imported)"
    elif device_type != "cuda":
        return f"device type {device_type!r} is not supported (cuda, or cpu when interpreted)"
    if dtype == torch.float64:
        return "float64 is not supported (use the reference backend)"
    if dtype == torch.bfloat16 and INTERPRET:
        return "the Triton interpreter does not support bfloat16 (tl.dot on bf16 is wrong there)"
    if dtype not in (torch.float32, torch.float16, torch.bfloat16):
        return f"dtype {dtype} is not supported"
    shape = options.get("shape", {})
    if op == "spatial":
        if options.get("combine") not in ("product", "joint"):
            return (f"combine={options.get('combine')!r} is not fused (O(N^3) released variant); "
                    "only combine='product' and 'joint' are")
        for key, limit in (("d", MAX_SPATIAL_DIM), ("dg", MAX_SPATIAL_DIM), ("C", MAX_SPATIAL_C)):
            if shape.get(key, 0) > limit:
                return f"{key} = {shape[key]} > {limit} is not supported by the fused kernel"
        return None
    if op == "channel":
        if shape.get("C", 0) > MAX_CHANNEL_C:
            return f"C = {shape['C']} > {MAX_CHANNEL_C} is not supported by the fused kernel"
        return None
    return f"unknown operator {op!r}"


def spatial(theta, phi, eta, rho, mu, *, combine: str = "product",
            out_dtype: torch.dtype | None = None) -> torch.Tensor:
    """[B,N,d], [B,N,d], [B,N,dg], [B,N,dg], [B,N,C] -> [B,N,C] (``"product"`` or
    ``"joint"``; ``unsupported`` declines ``"matmul"``, so it never arrives here)."""
    if combine == "joint":
        return _joint_mod.joint(theta, phi, eta, rho, mu, out_dtype=out_dtype or theta.dtype)
    return _spatial_mod.spatial(theta, phi, eta, rho, mu, out_dtype=out_dtype or theta.dtype)


def channel(y, g, *, combine: str = "product", stabilize: str | None = None,
            scale: float | None = None, out_dtype: torch.dtype | None = None) -> torch.Tensor:
    """[B,C,N], [B,C,N] -> Q @ y, [B,C,N]."""
    return _channel_mod.channel(y, g, combine=combine, stabilize=stabilize, scale=scale,
                                out_dtype=out_dtype or y.dtype)


__all__ = ["channel", "is_available", "spatial", "unsupported"]
