"""Argument checks shared by the public operators: one clear error per mistake."""
from __future__ import annotations

import torch

FLOAT_DTYPES = (torch.float16, torch.bfloat16, torch.float32, torch.float64)


def check_tensor(name: str, x, rank: int, layout: str) -> None:
    """``x`` must be a floating tensor of ``rank`` dims with no empty dimension."""
    if not isinstance(x, torch.Tensor):
        raise TypeError(f"{name} must be a torch.Tensor of shape {layout}, got {type(x).__name__}")
    if x.dtype not in FLOAT_DTYPES:
        raise TypeError(
            f"{name} must have a floating dtype (float16, bfloat16, float32 or float64), "
            f"got {x.dtype}"
        )
    if x.dim() != rank:
        raise ValueError(f"{name} must have shape {layout} ({rank} dims), got {tuple(x.shape)}")
    if x.numel() == 0:
        raise ValueError(f"{name} must not be empty: shape {layout} with every size >= 1, "
                         f"got {tuple(x.shape)}")


def check_same(names_and_tensors: list[tuple[str, torch.Tensor]]) -> None:
    """All tensors on one device with one dtype (the first one's)."""
    first_name, first = names_and_tensors[0]
    for name, x in names_and_tensors[1:]:
        if x.device != first.device:
            raise ValueError(f"{name} is on {x.device} but {first_name} is on {first.device}; "
                             "all inputs must be on one device")
        if x.dtype != first.dtype:
            raise TypeError(f"{name} has dtype {x.dtype} but {first_name} has {first.dtype}; "
                            "all inputs must share one dtype")


def check_dim(name: str, x: torch.Tensor, dim: int, expected: int, what: str, layout: str) -> None:
    if x.shape[dim] != expected:
        raise ValueError(f"{name} must have shape {layout} with {what} = {expected}, "
                         f"got {tuple(x.shape)}")


def check_choice(name: str, value, choices) -> None:
    if value not in choices:
        raise ValueError(f"{name} must be one of {list(choices)}, got {value!r}")


def resolve_out_dtype(out_dtype, in_dtype: torch.dtype) -> torch.dtype:
    """``None`` means the input dtype; otherwise float32, float64 or the input dtype."""
    if out_dtype is None:
        return in_dtype
    if not isinstance(out_dtype, torch.dtype):
        raise TypeError(f"out_dtype must be a torch.dtype or None, got {type(out_dtype).__name__}")
    if out_dtype not in (in_dtype, torch.float32, torch.float64):
        raise ValueError(f"out_dtype must be None, the input dtype ({in_dtype}), torch.float32 "
                         f"or torch.float64, got {out_dtype}")
    return out_dtype
