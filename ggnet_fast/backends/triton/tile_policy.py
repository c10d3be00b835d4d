"""Tile policy of the Triton kernels: the configuration lists, the class pickers that
choose a list per launch, the rationale behind the defaults, and the default tiles the
static report and the roofline model read.

Spatial kernels (``spatial_kernels.py``, ``joint_kernels.py``) keep one list per
configuration class; the first configuration of each list is the default, what a
kernel runs with ``GGNET_TRITON_AUTOTUNE=0`` (``runtime.tuned``).  Channel kernels
(``channel_kernels.py``) have one list each (``runtime.single``).
"""
from __future__ import annotations

import functools
import types

import torch
import triton

from .runtime import block, chosen_class, single, tuned

#: Autotuning key of the spatial kernels: sizes (kernels add the flags that change their
#: register use: the o2 accumulator doubles the forward's; the R pass adds a loop to
#: dq).  Tensor dtypes are part of every key.
SPATIAL_KEY = ["N", "D", "DG", "C"]


def cfg(keys, rows):
    """Configuration dicts from tuples of ``keys`` values."""
    return [dict(zip(keys, row)) for row in rows]


MN = ("BLOCK_M", "BLOCK_N", "num_warps", "num_stages")
MNC = ("BLOCK_M", "BLOCK_N", "C_SPLIT", "num_warps", "num_stages")


# ------------------------------------------------------------------------ class pickers
def spatial_class(args) -> str:
    """Configuration class of a launch: float32 (TF32 operands take twice the registers
    and shared memory) or 16-bit, and wide (d + dg > 128, e.g. the released d = dg =
    256) or narrow.  C = 512 needs no class of its own: ``c_block`` caps a forward C
    chunk at what C = 256 uses, so C = 512 runs twice the chunks."""
    fp32 = args["Q"].dtype == torch.float32
    wide = args["D"] + args["DG"] > 128
    return ("fp32-" if fp32 else "") + ("wide" if wide else "narrow")


def fwd_class(args) -> str:
    """``spatial_class`` plus ``-o2`` for the training forward (``SAVE_O2``: a second
    256-wide float32 accumulator), which needs its own tiles."""
    return spatial_class(args) + ("-o2" if args["SAVE_O2"] else "")


def bwd_class(lists: dict, args) -> str:
    """Class of a backward launch: float32 or 16-bit; narrow (d + dg <= 128), wide
    (<= 256) or xwide (the released d = dg = 256); ``-bigc`` for C > 256 where ``lists``
    has such a class (dkv's dmu accumulator is C wide)."""
    k = args["D"] + args["DG"]
    key = (("fp32-" if args["Q"].dtype == torch.float32 else "")
           + ("narrow" if k <= 128 else "wide" if k <= 256 else "xwide"))
    return key + "-bigc" if args["C"] > 256 and key + "-bigc" in lists else key


def c_block(c: int, split: int) -> int:
    """Width of a forward C chunk: C (up to 256) split in ``split``; C = 512 runs twice
    as many chunks of the same width (the accumulators' registers stay those of 256)."""
    return block(max(1, triton.next_power_of_2(min(c, 256)) // split))


# -------------------------------------------------------------- spatial, combine="product"
# Chosen from the sm_90 static report (python benchmarks/triton_static.py --json): the
# first configuration of each list (the default, GGNET_TRITON_AUTOTUNE=0) compiles
# without spills and within 227 KB of shared memory at d = dg in {32, 64, 128, 256},
# C in {256, 512}; the rest are autotuning candidates.  Forward tiles have BLOCK_M >= 64
# so the products run as wgmma on sm_90.
LSE_TILES = {
    "narrow": cfg(MN, [(128, 64, 8, 3), (64, 64, 4, 3), (128, 128, 8, 2)]),
    "wide": cfg(MN, [(128, 32, 8, 2), (64, 64, 4, 2), (64, 32, 4, 2)]),
    "fp32-narrow": cfg(MN, [(64, 32, 4, 1), (128, 32, 8, 1)]),
    "fp32-wide": cfg(MN, [(64, 32, 4, 1)]),
}

# Forward.  Inference (one accumulator): 128 query rows over two warpgroups (8 warps)
# hold a 256-wide float32 accumulator, so C = 256 is one chunk and the scores, p and
# the weights are computed once per key pair.  Training (o and o2): two 256-wide
# accumulators fit 8 warps only at 64 query rows, where Triton gives both warpgroups the
# whole score tile (its layout for chained dots puts all warps along the rows), so the
# 16-bit defaults run two chunks of 128 on 128 rows instead: the scores are computed
# twice either way, and 128 rows halve the L2 traffic (docs/roofline.md).  float32
# takes one chunk over 64 rows (replicated; it needed four chunks before).
FWD_TILES = {
    "narrow": cfg(MNC, [(128, 64, 1, 8, 2), (128, 32, 1, 8, 2), (128, 64, 2, 8, 2),
                        (64, 64, 2, 4, 2)]),
    "wide": cfg(MNC, [(128, 16, 1, 8, 2), (128, 32, 1, 8, 2), (64, 32, 1, 8, 2),
                      (64, 32, 2, 4, 2)]),
    "fp32-narrow": cfg(MNC, [(128, 16, 1, 8, 1), (64, 16, 1, 8, 1), (64, 16, 4, 4, 1)]),
    "fp32-wide": cfg(MNC, [(64, 16, 2, 4, 1), (128, 16, 1, 8, 1), (64, 16, 4, 4, 1)]),
    "narrow-o2": cfg(MNC, [(128, 64, 2, 8, 2), (64, 64, 1, 8, 2), (64, 64, 2, 4, 2)]),
    # A100 (no wgmma): two chunks of 128 on 128 rows spill 7.6-8.7 KB in 16 bits
    "narrow-o2@sm80": cfg(MNC, [(128, 64, 4, 8, 2), (64, 32, 2, 4, 2)]),
    "wide-o2": cfg(MNC, [(128, 32, 2, 8, 2), (64, 32, 1, 8, 2), (64, 32, 2, 4, 2),
                         (64, 16, 1, 8, 2)]),
    # A100: 128 rows at d = dg = 256 need 168 KB of its 163 KB
    "wide-o2@sm80": cfg(MNC, [(64, 32, 2, 4, 2), (64, 16, 1, 8, 2)]),
    "fp32-narrow-o2": cfg(MNC, [(64, 16, 1, 8, 1), (64, 16, 2, 8, 1), (64, 16, 4, 4, 1)]),
    "fp32-wide-o2": cfg(MNC, [(64, 16, 2, 4, 1), (64, 16, 4, 4, 1)]),
}

# Backward tiles.  Two costs decide them (docs/roofline.md):
#  * L2 traffic: every program streams the other side's rows (phi, rho, mu for dq;
#    theta, eta, dol for dkv) for all N keys, so the bytes read from L2 are
#    proportional to N^2 / BLOCK_M; at 16 or 32 rows they, not the tensor cores, bound
#    the kernel.  Tiles of 64-128 rows.
#  * Replication: Triton lays a dot whose result feeds another dot ("chained", as the
#    score tile feeds dtheta = da phi) with all warps along one axis (wgmma: the rows;
#    mma.sync: the rows when the chained product is at least as tall as wide, else the
#    columns).  A score tile smaller than its warps' span is *replicated*: each copy
#    computes the same scores, exponentials and weights (the static report's
#    ``replication``, measured from the compiled code).
# The defaults are the largest row tiles that compile without spills; they are
# replication-free except dq at d + dg > 256 and d + dg in (128, 256] with C > 256
# (64 rows on two warpgroups: 2 copies, for a quarter of the L2 traffic of a
# replication-free 16-row tile), and float32 (16 x 16 on 8 warps at d + dg > 256 or
# C > 256: 4 copies; the d- and C-wide accumulators need the registers of 8 warps).
DQ_TILES = {
    "narrow": cfg(MN, [(128, 32, 8, 2), (64, 32, 4, 2), (64, 16, 4, 2), (64, 32, 8, 2)]),
    "narrow-bigc": cfg(MN, [(64, 32, 4, 2), (64, 16, 4, 2)]),
    "wide": cfg(MN, [(128, 16, 8, 2), (64, 16, 8, 2), (32, 64, 8, 2), (16, 32, 4, 2)]),
    "wide-bigc": cfg(MN, [(64, 16, 8, 2), (32, 64, 8, 2), (16, 32, 4, 2)]),
    "xwide": cfg(MN, [(64, 16, 8, 2), (32, 64, 8, 2), (16, 32, 4, 2)]),
    "fp32-narrow": cfg(MN, [(16, 32, 4, 1), (64, 16, 4, 1), (16, 16, 8, 1)]),
    "fp32-wide": cfg(MN, [(16, 32, 4, 1), (16, 16, 8, 1)]),
    "fp32-wide-bigc": cfg(MN, [(16, 16, 8, 1)]),
    "fp32-xwide": cfg(MN, [(16, 16, 8, 1)]),
}
DKV_TILES = {
    # (32, 64, 8, 2): 64 query columns, so every product of the kernel is a wgmma on
    # sm_90 (46-102 per kernel), but the score tile is replicated twice and it spills
    # 12-556 bytes outside d = 32, C = 256: an autotuning candidate, not the default
    "narrow": cfg(MN, [(128, 16, 8, 2), (32, 16, 4, 2), (32, 64, 8, 2)]),
    "narrow-bigc": cfg(MN, [(32, 16, 4, 2), (32, 16, 8, 2)]),
    "wide": cfg(MN, [(64, 16, 8, 2), (32, 16, 4, 2), (16, 16, 8, 2)]),
    "xwide": cfg(MN, [(64, 16, 8, 2), (32, 16, 4, 2), (16, 16, 8, 2)]),
    "fp32-narrow": cfg(MN, [(32, 16, 4, 1), (16, 16, 8, 1)]),
    "fp32-narrow-bigc": cfg(MN, [(16, 16, 8, 1)]),
    "fp32-wide": cfg(MN, [(32, 16, 4, 1), (16, 16, 8, 1)]),
    "fp32-wide-bigc": cfg(MN, [(16, 16, 8, 1)]),
    "fp32-xwide": cfg(MN, [(16, 16, 8, 1)]),
}

# ---------------------------------------------------------------- spatial, combine="joint"
# The product kernels' classes (same accumulators: the forward holds a C-wide one, dq a
# (d + dg)-wide one, dkv both), but for one dkv class.
#: dkv at d + dg <= 128 with C > 256: the product's 32-row default spills 16 bytes here
#: (bf16, d = 32, C = 512; the joint kernel keeps a dz tile the product does not), 64 rows
#: on 8 warps do not (234 registers, 92 KB; sm_90 static report).
JOINT_DKV_TILES = {**DKV_TILES, "narrow-bigc": cfg(MN, [(64, 16, 8, 2), (32, 16, 8, 2)])}

#: Tile lists and class pickers by kernel: the product's ("lse", "fwd", "dq", "dkv") and
#: the joint ones ("fwd": the product's inference forward classes, no o2 accumulator;
#: "dq": the product's; "dkv": JOINT_DKV_TILES).
SPATIAL_TILE_LISTS = {"lse": (LSE_TILES, spatial_class), "fwd": (FWD_TILES, fwd_class),
                      "dq": (DQ_TILES, functools.partial(bwd_class, DQ_TILES)),
                      "dkv": (DKV_TILES, functools.partial(bwd_class, DKV_TILES))}
JOINT_TILE_LISTS = {"fwd": (FWD_TILES, spatial_class), "dq": SPATIAL_TILE_LISTS["dq"],
                    "dkv": (JOINT_DKV_TILES, functools.partial(bwd_class, JOINT_DKV_TILES))}



def _tuning(lists_and_pick, c_split: bool = False) -> dict:
    """``runtime.tuned`` for a ``(lists, pick)`` pair; under the interpreter one
    128 x 128 tile (and one C chunk)."""
    lists, pick = lists_and_pick
    return tuned(lists, dict(BLOCK_M=128, BLOCK_N=128, **({"C_SPLIT": 1} if c_split else {})),
                 pick)


#: ``triton.autotune`` arguments by kernel (one list per class).
SPATIAL_TUNING = {"lse": _tuning(SPATIAL_TILE_LISTS["lse"]),
                  "fwd": _tuning(SPATIAL_TILE_LISTS["fwd"], c_split=True),
                  "dq": _tuning(SPATIAL_TILE_LISTS["dq"]),
                  "dkv": _tuning(SPATIAL_TILE_LISTS["dkv"])}
JOINT_TUNING = {"fwd": _tuning(JOINT_TILE_LISTS["fwd"], c_split=True),
                "dq": SPATIAL_TUNING["dq"],
                "dkv": _tuning(JOINT_TILE_LISTS["dkv"])}


def first_of_class(lists: dict, pick, d: int, dg: int, c: int, dtype: torch.dtype,
                   save_o2: bool = False, arch: int = 90) -> dict:
    """The first configuration of the class ``pick`` chooses in ``lists`` for a launch
    with these sizes (the default of ``default_tiles``)."""
    args = dict(Q=types.SimpleNamespace(dtype=dtype), D=d, DG=dg, C=c, SAVE_O2=save_o2,
                ARCH=arch)
    return dict(lists[chosen_class(lists, pick, args)][0])


def default_tiles(kernel: str, d: int, dg: int, c: int, dtype: torch.dtype = torch.bfloat16,
                  save_o2: bool = False, arch: int = 90) -> dict:
    """The default tiles of the product ``kernel`` ("lse", "fwd", "dq" or "dkv") for these
    sizes on ``arch``: the first configuration of its class list, what runs with
    ``GGNET_TRITON_AUTOTUNE=0`` (dict of BLOCK_M, BLOCK_N, [C_SPLIT,] num_warps,
    num_stages)."""
    return first_of_class(*SPATIAL_TILE_LISTS[kernel], d, dg, c, dtype, save_o2, arch)


def joint_default_tiles(kernel: str, d: int, dg: int, c: int,
                        dtype: torch.dtype = torch.bfloat16, arch: int = 90) -> dict:
    """The default tiles of the joint ``kernel`` ("fwd", "dq" or "dkv"), as
    ``default_tiles`` gives them for the product kernels."""
    return first_of_class(*JOINT_TILE_LISTS[kernel], d, dg, c, dtype, arch=arch)


# ------------------------------------------------------------------------------ channel
# Chosen from an AOT compile for sm_90 at C = 256, bf16 (python
# benchmarks/triton_static.py --op channel --all-configs): all spill-free.
GRAM_CONFIGS = single(
    [dict(BLOCK_R=br, BLOCK_S=bs, BLOCK_K=bk, num_warps=w, num_stages=s)
     for br, bs, bk, w, s in ((128, 64, 32, 8, 3), (64, 64, 32, 8, 4), (128, 128, 32, 8, 3),
                              (64, 64, 64, 4, 3))],
    dict(BLOCK_R=128, BLOCK_S=128, BLOCK_K=256),
)
MAP_CONFIGS = single(
    [dict(BLOCK_R=br, BLOCK_K=bk, num_warps=w, num_stages=1)
     for br, bk, w in ((16, 16, 8), (16, 32, 8), (16, 16, 4))],
    dict(BLOCK_R=64, BLOCK_K=64),
)
APPLY_CONFIGS = single(
    [dict(BLOCK_R=br, BLOCK_N=bn, BLOCK_K=bk, num_warps=w, num_stages=s)
     for br, bn, bk, w, s in ((64, 64, 32, 8, 3), (32, 64, 64, 8, 2), (128, 64, 32, 4, 3),
                              (128, 128, 32, 8, 3))],
    dict(BLOCK_R=128, BLOCK_N=256, BLOCK_K=128),
)
