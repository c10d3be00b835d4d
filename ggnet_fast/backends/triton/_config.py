"""Shared pieces of the Triton backend: interpreter detection, tile configurations,
matmul precision and the accurate ``expm1`` used by both operators.

Under ``TRITON_INTERPRET=1`` (CPU tests) there is exactly one configuration per kernel
with large tiles: the interpreter cannot autotune (its benchmark needs a driver) and its
cost grows with the number of programs and loop iterations, not with FLOPs.  On a GPU
the configurations below are autotuned per problem shape; configurations that do not fit
(shared memory / registers) are skipped by the autotuner.
"""
from __future__ import annotations

import os

import torch
import triton
import triton.language as tl

INTERPRET = os.environ.get("TRITON_INTERPRET", "0") not in ("", "0")

#: Smallest tile edge: ``tl.dot`` needs every dimension >= 16 on tensor cores.
MIN_BLOCK = 16


def block(n: int, lo: int = MIN_BLOCK) -> int:
    """Next power of two >= ``n`` and >= ``lo`` (the padded width of a full-width tile)."""
    return max(lo, triton.next_power_of_2(int(n)))


def dot_precision(dtype: torch.dtype) -> str:
    """``tl.dot`` input precision that mirrors PyTorch's float32 matmul setting.

    float32 inputs use IEEE products unless ``torch.set_float32_matmul_precision`` allows
    TF32 (the same rule as ``torch.matmul``); half inputs ignore this.
    """
    if dtype == torch.float32 and torch.get_float32_matmul_precision() == "highest":
        return "ieee"
    return "tf32"


def configs(gpu: list[dict], interpret: dict) -> list[triton.Config]:
    """``triton.Config`` list: the single ``interpret`` one under the interpreter.

    Each dict holds the meta-parameters plus ``num_warps`` and ``num_stages``.
    """
    chosen = [interpret] if INTERPRET else gpu
    out = []
    for c in chosen:
        c = dict(c)
        warps, stages = c.pop("num_warps", 4), c.pop("num_stages", 2)
        out.append(triton.Config(c, num_warps=warps, num_stages=stages))
    return out


def tuned(narrow: list[dict], wide: list[dict], interpret: dict, is_wide) -> dict:
    """``triton.autotune`` arguments choosing between two configuration lists by size.

    ``is_wide(args)`` (all launch arguments by name) picks ``wide`` for the problem; the
    autotuner then only compiles and times that list's configurations (each compile of a
    d = 256 kernel takes seconds, so the lists stay short).  Under the interpreter there
    is only ``interpret``, and pruning never runs.
    """
    if INTERPRET:
        return {"configs": configs([], interpret)}
    cn, cw = configs(narrow, interpret), configs(wide, interpret)
    keys_n, keys_w = {str(c) for c in cn}, {str(c) for c in cw}
    everything = cn + [c for c in cw if str(c) not in keys_n]

    def prune(configs_, named_args, **kwargs):
        keys = keys_w if is_wide({**named_args, **kwargs}) else keys_n
        return [c for c in configs_ if str(c) in keys] or list(configs_)

    return {"configs": everything, "prune_configs_by": {"early_config_prune": prune}}


@triton.jit
def expm1_unit(x):
    """``exp(x) - 1`` for ``x`` in [0, 1] with full relative precision, no exponential.

    Taylor polynomial of degree 10 in Horner form: the truncation error is below
    ``x**11 / 11! * e < 7e-8`` (relative to ``expm1(x) >= x`` it is < 7e-8 at x = 1 and
    smaller for smaller x), and Horner keeps the relative rounding error at a few ulps
    for tiny x, where ``exp(x) - 1`` would lose every digit.  Costs 10 FMAs and no
    MUFU instruction (the exponential units are the scarce resource at small d).
    """
    r = 1.0 / 3628800.0
    r = 1.0 / 362880.0 + x * r
    r = 1.0 / 40320.0 + x * r
    r = 1.0 / 5040.0 + x * r
    r = 1.0 / 720.0 + x * r
    r = 1.0 / 120.0 + x * r
    r = 1.0 / 24.0 + x * r
    r = 1.0 / 6.0 + x * r
    r = 0.5 + x * r
    r = 1.0 + x * r
    return x * r
