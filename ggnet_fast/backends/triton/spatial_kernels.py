"""Fused Triton kernels for guided spatial attention, ``combine="product"``.

Per batch element (``docs/kernels.md``; design notes in ``docs/triton.md``)::

    a = theta phi^T, b = eta rho^T          [N, N]  (never stored)
    p = exp(a + b - lse_a - lse_b)          in (0, 1]
    e = expm1(p),  L = N + sum_j e          outer softmax s = (1 + e) / L
    o = (sum_j mu_j + e @ mu) / L           [N, C]

Kernels (grid axis 0 over row tiles, last axis over the batch):

* ``_lse_kernel``   pass 1: both row log-sum-exps in one loop over key tiles.
* ``_fwd_kernel``   pass 2: one MMA over the concatenations [theta, eta] . [phi, rho]
  (K = d + dg) gives a + b, then p, e and the value product; optionally also
  ``o2 = sum_j p s mu_j`` and ``q = sum_j p s`` so the backward needs no R pass.
  Axis 1 splits C into chunks (``C_SPLIT``) to bound the accumulator registers.
* ``_bwd_dq_kernel``  dtheta, deta per query tile (and, in the R-pass variant, first
  ``R_i = sum_j p dp`` in a separate loop).
* ``_bwd_dkv_kernel`` dphi, drho, dmu per key tile.

Saved for backward: the inputs, o (float32), stats [B, 4, N] = (lse_a, lse_b, L, q) and,
in the default one-pass variant, o2 [B, N, C].  Nothing N x N exists in memory.
"""
from __future__ import annotations


import functools
import types

import torch
import triton
import triton.language as tl

from ..registry import env_choice
from ._config import (W_SCALE, block, chosen_class, dot_precision, expm1_unit_scaled,
                      row_scaled, tuned)

#: "o2" (default): the forward accumulates o2/q and the backward is one recompute pass
#: per kernel; "pass": no extra forward accumulator, R from a separate loop.  Both give
#: the same result; ``GGNET_TRITON_R_MODE`` selects one (for benchmarking), read on every
#: call like every runtime switch (docs/backends.md).  Tests may pin a mode here instead.
R_MODE: str | None = None


def r_mode() -> str:
    """``"o2"`` or ``"pass"``: :data:`R_MODE` when pinned, else ``GGNET_TRITON_R_MODE``."""
    return R_MODE or env_choice("GGNET_TRITON_R_MODE", ("o2", "pass"), "o2")

#: Autotuning key: sizes plus the flags that change a kernel's register use (the o2
#: accumulator doubles the forward's; the R pass adds a loop to dq).  Tensor dtypes are
#: part of every key.
_KEY = ["N", "D", "DG", "C"]



@triton.jit
def _load_tile(ptr, rows, row_mask, cols, n_cols, stride):
    """The tile ``ptr[rows, cols]`` of a row-major matrix with ``stride`` elements per row,
    zero outside ``row_mask`` and at columns ``>= n_cols``: [len(rows), len(cols)]."""
    return tl.load(ptr + rows[:, None] * stride + cols[None, :],
                   mask=row_mask[:, None] & (cols[None, :] < n_cols), other=0.0)


@triton.jit
def _fwd_tile(Q, N, C, DT, BLOCK_M: tl.constexpr, BLOCK_K: tl.constexpr,
              BLOCK_C: tl.constexpr):
    """A forward program's work (grid: row tiles, C chunks, batch): ``(pid_b, offs_m,
    offs_c, rm, cc, q)`` with its rows and row mask, its C chunk and column mask, and its
    query tile of the row-major [B, N, DT] ``Q`` ([BLOCK_M, BLOCK_K])."""
    pid_b = tl.program_id(2).to(tl.int64)
    offs_m = tl.program_id(0) * BLOCK_M + tl.arange(0, BLOCK_M)
    offs_c = tl.program_id(1) * BLOCK_C + tl.arange(0, BLOCK_C)
    rm = offs_m < N
    q = _load_tile(Q + pid_b * N * DT, offs_m, rm, tl.arange(0, BLOCK_K), DT, DT)
    return pid_b, offs_m, offs_c, rm, offs_c < C, q


@triton.jit
def _weights(p, like):
    """``(W_SCALE e, W_SCALE p exp(p))``, e = expm1(p), each rounded to ``like``'s dtype
    (the 16-bit MMA operands).  Forward and backward both call this, so the backward's
    p dp uses the same rounded weights as the forward's o2 and q (R = sum_j p dp then
    holds exactly; a float32 w in the backward left 1e-2 bf16 gradient errors)."""
    e = expm1_unit_scaled(p, W_SCALE, True).to(like.dtype)
    w = (p * (W_SCALE + e.to(tl.float32))).to(like.dtype)
    return e, w


def _class(args) -> str:
    """Configuration class of a launch: float32 (TF32 operands take twice the registers
    and shared memory) or 16-bit, and wide (d + dg > 128, e.g. the released d = dg =
    256) or narrow.  C = 512 needs no class of its own: ``_c_block`` caps a forward C
    chunk at what C = 256 uses, so C = 512 runs twice the chunks."""
    fp32 = args["Q"].dtype == torch.float32
    wide = args["D"] + args["DG"] > 128
    return ("fp32-" if fp32 else "") + ("wide" if wide else "narrow")


def _cfg(keys, rows):
    return [dict(zip(keys, row)) for row in rows]


_MN = ("BLOCK_M", "BLOCK_N", "num_warps", "num_stages")
_MNC = ("BLOCK_M", "BLOCK_N", "C_SPLIT", "num_warps", "num_stages")
# Chosen from the sm_90 static report (python -m ggnet_fast.backends.triton._aot --json):
# the first configuration of each list (the default, GGNET_TRITON_AUTOTUNE=0) compiles
# without spills and within 227 KB of shared memory at d = dg in {32, 64, 128, 256},
# C in {256, 512}; the rest are autotuning candidates.  Forward tiles have BLOCK_M >= 64
# so the products run as wgmma on sm_90.
#: Tile lists per configuration class (first = default), kept by name for the tests.
_LSE_TILES = {
    "narrow": _cfg(_MN, [(128, 64, 8, 3), (64, 64, 4, 3), (128, 128, 8, 2)]),
    "wide": _cfg(_MN, [(128, 32, 8, 2), (64, 64, 4, 2), (64, 32, 4, 2)]),
    "fp32-narrow": _cfg(_MN, [(64, 32, 4, 1), (128, 32, 8, 1)]),
    "fp32-wide": _cfg(_MN, [(64, 32, 4, 1)]),
}
_LSE = tuned(_LSE_TILES, dict(BLOCK_M=128, BLOCK_N=128), _class)


def _fwd_class(args) -> str:
    """``_class`` plus ``-o2`` for the training forward (``SAVE_O2``: a second 256-wide
    float32 accumulator), which needs its own tiles."""
    return _class(args) + ("-o2" if args["SAVE_O2"] else "")


# Forward.  Inference (one accumulator): 128 query rows over two warpgroups (8 warps)
# hold a 256-wide float32 accumulator, so C = 256 is one chunk and the scores, p and
# the weights are computed once per key pair.  Training (o and o2): two 256-wide
# accumulators fit 8 warps only at 64 query rows, where Triton gives both warpgroups the
# whole score tile (its layout for chained dots puts all warps along the rows), so the
# 16-bit defaults run two chunks of 128 on 128 rows instead: the scores are computed
# twice either way, and 128 rows halve the L2 traffic (docs/roofline.md).  float32
# takes one chunk over 64 rows (replicated; it needed four chunks before).
_FWD_TILES = {
    "narrow": _cfg(_MNC, [(128, 64, 1, 8, 2), (128, 32, 1, 8, 2), (128, 64, 2, 8, 2),
                          (64, 64, 2, 4, 2)]),
    "wide": _cfg(_MNC, [(128, 16, 1, 8, 2), (128, 32, 1, 8, 2), (64, 32, 1, 8, 2),
                        (64, 32, 2, 4, 2)]),
    "fp32-narrow": _cfg(_MNC, [(128, 16, 1, 8, 1), (64, 16, 1, 8, 1), (64, 16, 4, 4, 1)]),
    "fp32-wide": _cfg(_MNC, [(64, 16, 2, 4, 1), (128, 16, 1, 8, 1), (64, 16, 4, 4, 1)]),
    "narrow-o2": _cfg(_MNC, [(128, 64, 2, 8, 2), (64, 64, 1, 8, 2), (64, 64, 2, 4, 2)]),
    # A100 (no wgmma): two chunks of 128 on 128 rows spill 7.6-8.7 KB in 16 bits
    "narrow-o2@sm80": _cfg(_MNC, [(128, 64, 4, 8, 2), (64, 32, 2, 4, 2)]),
    "wide-o2": _cfg(_MNC, [(128, 32, 2, 8, 2), (64, 32, 1, 8, 2), (64, 32, 2, 4, 2),
                           (64, 16, 1, 8, 2)]),
    # A100: 128 rows at d = dg = 256 need 168 KB of its 163 KB
    "wide-o2@sm80": _cfg(_MNC, [(64, 32, 2, 4, 2), (64, 16, 1, 8, 2)]),
    "fp32-narrow-o2": _cfg(_MNC, [(64, 16, 1, 8, 1), (64, 16, 2, 8, 1), (64, 16, 4, 4, 1)]),
    "fp32-wide-o2": _cfg(_MNC, [(64, 16, 2, 4, 1), (64, 16, 4, 4, 1)]),
}
_FWD = tuned(_FWD_TILES, dict(BLOCK_M=128, BLOCK_N=128, C_SPLIT=1), _fwd_class)
def _bwd_class(lists: dict, args) -> str:
    """Class of a backward launch: float32 or 16-bit; narrow (d + dg <= 128), wide
    (<= 256) or xwide (the released d = dg = 256); ``-bigc`` for C > 256 where ``lists``
    has such a class (dkv's dmu accumulator is C wide)."""
    k = args["D"] + args["DG"]
    key = (("fp32-" if args["Q"].dtype == torch.float32 else "")
           + ("narrow" if k <= 128 else "wide" if k <= 256 else "xwide"))
    return key + "-bigc" if args["C"] > 256 and key + "-bigc" in lists else key


def _bwd_tuned(lists: dict) -> dict:
    """``tuned`` for a backward kernel with its tile lists."""
    return tuned(lists, dict(BLOCK_M=128, BLOCK_N=128), functools.partial(_bwd_class, lists))


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
_DQ_TILES = {
    "narrow": _cfg(_MN, [(128, 32, 8, 2), (64, 32, 4, 2), (64, 16, 4, 2), (64, 32, 8, 2)]),
    "narrow-bigc": _cfg(_MN, [(64, 32, 4, 2), (64, 16, 4, 2)]),
    "wide": _cfg(_MN, [(128, 16, 8, 2), (64, 16, 8, 2), (32, 64, 8, 2), (16, 32, 4, 2)]),
    "wide-bigc": _cfg(_MN, [(64, 16, 8, 2), (32, 64, 8, 2), (16, 32, 4, 2)]),
    "xwide": _cfg(_MN, [(64, 16, 8, 2), (32, 64, 8, 2), (16, 32, 4, 2)]),
    "fp32-narrow": _cfg(_MN, [(16, 32, 4, 1), (64, 16, 4, 1), (16, 16, 8, 1)]),
    "fp32-wide": _cfg(_MN, [(16, 32, 4, 1), (16, 16, 8, 1)]),
    "fp32-wide-bigc": _cfg(_MN, [(16, 16, 8, 1)]),
    "fp32-xwide": _cfg(_MN, [(16, 16, 8, 1)]),
}
_DQ = _bwd_tuned(_DQ_TILES)
_DKV_TILES = {
    # (32, 64, 8, 2): 64 query columns, so every product of the kernel is a wgmma on
    # sm_90 (46-102 per kernel), but the score tile is replicated twice and it spills
    # 12-556 bytes outside d = 32, C = 256: an autotuning candidate, not the default
    "narrow": _cfg(_MN, [(128, 16, 8, 2), (32, 16, 4, 2), (32, 64, 8, 2)]),
    "narrow-bigc": _cfg(_MN, [(32, 16, 4, 2), (32, 16, 8, 2)]),
    "wide": _cfg(_MN, [(64, 16, 8, 2), (32, 16, 4, 2), (16, 16, 8, 2)]),
    "xwide": _cfg(_MN, [(64, 16, 8, 2), (32, 16, 4, 2), (16, 16, 8, 2)]),
    "fp32-narrow": _cfg(_MN, [(32, 16, 4, 1), (16, 16, 8, 1)]),
    "fp32-narrow-bigc": _cfg(_MN, [(16, 16, 8, 1)]),
    "fp32-wide": _cfg(_MN, [(32, 16, 4, 1), (16, 16, 8, 1)]),
    "fp32-wide-bigc": _cfg(_MN, [(16, 16, 8, 1)]),
    "fp32-xwide": _cfg(_MN, [(16, 16, 8, 1)]),
}
_DKV = _bwd_tuned(_DKV_TILES)
#: Tile lists and class pickers by kernel ("lse", "fwd", "dq", "dkv").
TILE_LISTS = {"lse": (_LSE_TILES, _class), "fwd": (_FWD_TILES, _fwd_class),
              "dq": (_DQ_TILES, functools.partial(_bwd_class, _DQ_TILES)),
              "dkv": (_DKV_TILES, functools.partial(_bwd_class, _DKV_TILES))}


def default_tiles(kernel: str, d: int, dg: int, c: int, dtype: torch.dtype = torch.bfloat16,
                  save_o2: bool = False, arch: int = 90) -> dict:
    """The default tiles of ``kernel`` ("lse", "fwd", "dq" or "dkv") for these sizes on
    ``arch``: the first configuration of its class list, what runs with
    ``GGNET_TRITON_AUTOTUNE=0`` (dict of BLOCK_M, BLOCK_N, [C_SPLIT,] num_warps,
    num_stages)."""
    return first_of_class(*TILE_LISTS[kernel], d, dg, c, dtype, save_o2, arch)


def first_of_class(lists: dict, pick, d: int, dg: int, c: int, dtype: torch.dtype,
                   save_o2: bool = False, arch: int = 90) -> dict:
    """The first configuration of the class ``pick`` chooses in ``lists`` for a launch
    with these sizes (the default of ``default_tiles``)."""
    args = dict(Q=types.SimpleNamespace(dtype=dtype), D=d, DG=dg, C=c, SAVE_O2=save_o2,
                ARCH=arch)
    return dict(lists[chosen_class(lists, pick, args)][0])


def _c_block(c: int, split: int) -> int:
    """Width of a forward C chunk: C (up to 256) split in ``split``; C = 512 runs twice
    as many chunks of the same width (the accumulators' registers stay those of 256)."""
    return block(max(1, triton.next_power_of_2(min(c, 256)) // split))


# ----------------------------------------------------------------------------- forward
@triton.autotune(key=_KEY, **_LSE)
@triton.jit
def _lse_kernel(Q, K, STATS, N, D, DG, C, DT,
                BLOCK_D: tl.constexpr, BLOCK_DG: tl.constexpr, PREC: tl.constexpr,
                BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr):
    """Pass 1: STATS[b, 0] = lse_j(theta_i . phi_j), STATS[b, 1] = lse_j(eta_i . rho_j)."""
    pid_m = tl.program_id(0)
    pid_b = tl.program_id(1).to(tl.int64)
    base = pid_b * N * DT
    offs_m = pid_m * BLOCK_M + tl.arange(0, BLOCK_M)
    offs_d = tl.arange(0, BLOCK_D)
    offs_g = tl.arange(0, BLOCK_DG)
    rm = offs_m < N
    th = _load_tile(Q + base, offs_m, rm, offs_d, D, DT)
    et = _load_tile(Q + base + D, offs_m, rm, offs_g, DG, DT)
    m_a = tl.full([BLOCK_M], float("-inf"), tl.float32)
    m_b = tl.full([BLOCK_M], float("-inf"), tl.float32)
    l_a = tl.zeros([BLOCK_M], tl.float32)
    l_b = tl.zeros([BLOCK_M], tl.float32)
    for start in range(0, N, BLOCK_N):
        offs_n = start + tl.arange(0, BLOCK_N)
        cn = offs_n < N
        ph = _load_tile(K + base, offs_n, cn, offs_d, D, DT)
        rh = _load_tile(K + base + D, offs_n, cn, offs_g, DG, DT)
        a = tl.dot(th, tl.trans(ph), input_precision=PREC)
        b = tl.dot(et, tl.trans(rh), input_precision=PREC)
        a = tl.where(cn[None, :], a, float("-inf"))
        b = tl.where(cn[None, :], b, float("-inf"))
        na = tl.maximum(m_a, tl.max(a, 1))
        nb = tl.maximum(m_b, tl.max(b, 1))
        l_a = l_a * tl.exp(m_a - na) + tl.sum(tl.exp(a - na[:, None]), 1)
        l_b = l_b * tl.exp(m_b - nb) + tl.sum(tl.exp(b - nb[:, None]), 1)
        m_a = na
        m_b = nb
    sbase = STATS + pid_b * 4 * N
    tl.store(sbase + offs_m, m_a + tl.log(l_a), mask=rm)
    tl.store(sbase + N + offs_m, m_b + tl.log(l_b), mask=rm)


@triton.autotune(key=_KEY + ["SAVE_O2"], **_FWD)
@triton.heuristics({"BLOCK_C": lambda a: _c_block(a["C"], a["C_SPLIT"])})
@triton.jit
def _fwd_kernel(Q, K, MU, MUSUM, STATS, O, O2, N, D, DG, C, DT,
                BLOCK_K: tl.constexpr, SAVE_O2: tl.constexpr, PREC: tl.constexpr,
                BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, C_SPLIT: tl.constexpr,
                BLOCK_C: tl.constexpr):
    """Pass 2: O = (sum_j mu_j + sum_j e_ij mu_j) / L_i for one C chunk; STATS[2:4] = L, q."""
    pid_b, offs_m, offs_c, rm, cc, q = _fwd_tile(Q, N, C, DT, BLOCK_M, BLOCK_K, BLOCK_C)
    qbase = pid_b * N * DT
    vbase = pid_b * N * C
    offs_k = tl.arange(0, BLOCK_K)
    sbase = STATS + pid_b * 4 * N
    lse = (tl.load(sbase + offs_m, mask=rm, other=0.0)
           + tl.load(sbase + N + offs_m, mask=rm, other=0.0))
    acc = tl.zeros([BLOCK_M, BLOCK_C], tl.float32)
    acc2 = tl.zeros([BLOCK_M, BLOCK_C], tl.float32)
    esum = tl.zeros([BLOCK_M], tl.float32)
    qsum = tl.zeros([BLOCK_M], tl.float32)
    for start in range(0, N, BLOCK_N):
        offs_n = start + tl.arange(0, BLOCK_N)
        cn = offs_n < N
        kt = _load_tile(K + qbase, offs_n, cn, offs_k, DT, DT)
        mu = _load_tile(MU + vbase, offs_n, cn, offs_c, C, C)
        s = tl.dot(q, tl.trans(kt), input_precision=PREC)  # a + b in one MMA
        p = tl.where(cn[None, :], tl.exp(s - lse[:, None]), 0.0)
        # the row sums add exactly the rounded values the MMAs multiply (no rounding
        # bias in o - mean(mu), which is ~1e-5 of o)
        e, w = _weights(p, mu)
        esum += tl.sum(e.to(tl.float32), 1)
        acc = tl.dot(e, mu, acc, input_precision=PREC)
        if SAVE_O2:
            qsum += tl.sum(w.to(tl.float32), 1)
            acc2 = tl.dot(w, mu, acc2, input_precision=PREC)
    L = N + esum / W_SCALE
    musum = tl.load(MUSUM + pid_b * C + offs_c, mask=cc, other=0.0)
    o = (musum[None, :] + acc / W_SCALE) / L[:, None]
    omask = rm[:, None] & cc[None, :]
    tl.store(O + vbase + offs_m[:, None] * C + offs_c[None, :], o, mask=omask)
    if SAVE_O2:
        tl.store(O2 + vbase + offs_m[:, None] * C + offs_c[None, :],
                 acc2 / (W_SCALE * L[:, None]), mask=omask)
    if tl.program_id(1) == 0:
        tl.store(sbase + 2 * N + offs_m, L, mask=rm)
        tl.store(sbase + 3 * N + offs_m, qsum / (W_SCALE * L), mask=rm)


# ---------------------------------------------------------------------------- backward
@triton.autotune(key=_KEY + ["R_PASS"], **_DQ)
@triton.jit
def _bwd_dq_kernel(Q, K, MU, DOL, DSC, STATS, BST, DTH, DET, N, D, DG, C, DT,
                   BLOCK_D: tl.constexpr, BLOCK_DG: tl.constexpr, BLOCK_C: tl.constexpr,
                   R_PASS: tl.constexpr, ROW_SCALE: tl.constexpr, PREC: tl.constexpr,
                   BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr):
    """DTH[b, i] = sum_j da_ij phi_j ([B, N, d]), DET[b, i] = sum_j db_ij rho_j ([B, N, dg]).

    DOL = do / L times a power of two per batch element, rounded to the input dtype
    ([B, N, C]); DSC[b] = the inverse of that factor; BST[b] = (D_i / L_i, R_i), both
    from the rounded DOL.  With R_PASS, R_i is first computed here (one extra loop) and
    written to BST[b, 1].  ROW_SCALE (float16): da, db get a per-row power-of-two
    scale before their 16-bit rounding (``row_scaled``).
    """
    pid_m = tl.program_id(0)
    pid_b = tl.program_id(1).to(tl.int64)
    base = pid_b * N * DT
    vbase = pid_b * N * C
    offs_m = pid_m * BLOCK_M + tl.arange(0, BLOCK_M)
    offs_d = tl.arange(0, BLOCK_D)
    offs_g = tl.arange(0, BLOCK_DG)
    offs_c = tl.arange(0, BLOCK_C)
    rm = offs_m < N
    cc = offs_c < C
    th = _load_tile(Q + base, offs_m, rm, offs_d, D, DT)
    et = _load_tile(Q + base + D, offs_m, rm, offs_g, DG, DT)
    dol = _load_tile(DOL + vbase, offs_m, rm, offs_c, C, C)
    inv = tl.load(DSC + pid_b)
    sbase = STATS + pid_b * 4 * N
    bbase = BST + pid_b * 2 * N
    lse_a = tl.load(sbase + offs_m, mask=rm, other=0.0)
    lse_b = tl.load(sbase + N + offs_m, mask=rm, other=0.0)
    dl = tl.load(bbase + offs_m, mask=rm, other=0.0) * (1.0 / W_SCALE)
    inv = inv * (1.0 / W_SCALE)  # (dsl * inv - dl) * w is p dp (w carries W_SCALE)
    if R_PASS:
        r = tl.zeros([BLOCK_M], tl.float32)
        for start in range(0, N, BLOCK_N):
            offs_n = start + tl.arange(0, BLOCK_N)
            cn = offs_n < N
            ph = _load_tile(K + base, offs_n, cn, offs_d, D, DT)
            rh = _load_tile(K + base + D, offs_n, cn, offs_g, DG, DT)
            mu = _load_tile(MU + vbase, offs_n, cn, offs_c, C, C)
            ab = (tl.dot(th, tl.trans(ph), input_precision=PREC)
                  + tl.dot(et, tl.trans(rh), input_precision=PREC))
            p = tl.where(cn[None, :], tl.exp(ab - lse_a[:, None] - lse_b[:, None]), 0.0)
            dsl = tl.dot(dol, tl.trans(mu), input_precision=PREC)
            _, w = _weights(p, mu)
            r += tl.sum(w.to(tl.float32) * (dsl * inv - dl[:, None]), 1)
        tl.store(bbase + N + offs_m, r, mask=rm)
    else:
        r = tl.load(bbase + N + offs_m, mask=rm, other=0.0)
    dth = tl.zeros([BLOCK_M, BLOCK_D], tl.float32)
    det = tl.zeros([BLOCK_M, BLOCK_DG], tl.float32)
    sa = tl.full([BLOCK_M], 18446744073709551616.0, tl.float32)  # 2^64: row_scaled's start
    sb = tl.full([BLOCK_M], 18446744073709551616.0, tl.float32)
    for start in range(0, N, BLOCK_N):
        offs_n = start + tl.arange(0, BLOCK_N)
        cn = offs_n < N
        ph = _load_tile(K + base, offs_n, cn, offs_d, D, DT)
        rh = _load_tile(K + base + D, offs_n, cn, offs_g, DG, DT)
        mu = _load_tile(MU + vbase, offs_n, cn, offs_c, C, C)
        a = tl.dot(th, tl.trans(ph), input_precision=PREC)
        b = tl.dot(et, tl.trans(rh), input_precision=PREC)
        sx = tl.where(cn[None, :], tl.exp(a - lse_a[:, None]), 0.0)
        sg = tl.where(cn[None, :], tl.exp(b - lse_b[:, None]), 0.0)
        p = sx * sg
        dsl = tl.dot(dol, tl.trans(mu), input_precision=PREC)  # ds_ij / L_i, scaled
        _, w = _weights(p, mu)
        t = w.to(tl.float32) * (dsl * inv - dl[:, None])         # p_ij dp_ij
        da = t - sx * r[:, None]
        db = t - sg * r[:, None]
        if ROW_SCALE:
            da, dth, sa = row_scaled(da, dth, sa)
            db, det, sb = row_scaled(db, det, sb)
        dth = tl.dot(da.to(ph.dtype), ph, dth, input_precision=PREC)
        det = tl.dot(db.to(rh.dtype), rh, det, input_precision=PREC)
    if ROW_SCALE:
        dth = dth / sa[:, None]
        det = det / sb[:, None]
    tl.store(DTH + pid_b * N * D + offs_m[:, None] * D + offs_d[None, :],
             dth.to(DTH.dtype.element_ty), mask=rm[:, None] & (offs_d[None, :] < D))
    tl.store(DET + pid_b * N * DG + offs_m[:, None] * DG + offs_g[None, :],
             det.to(DET.dtype.element_ty), mask=rm[:, None] & (offs_g[None, :] < DG))


@triton.autotune(key=_KEY, **_DKV)
@triton.jit
def _bwd_dkv_kernel(Q, K, MU, DOL, DSC, DMUB, STATS, BST, DPH, DRH, DMU, N, D, DG, C, DT,
                    BLOCK_D: tl.constexpr, BLOCK_DG: tl.constexpr, BLOCK_C: tl.constexpr,
                    ROW_SCALE: tl.constexpr, PREC: tl.constexpr,
                    BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr):
    """Per key tile j: DPH[b, j] = dphi_j, DRH[b, j] = drho_j, DMU[b, j] = dmu_j.

    dmu_j = sum_i s_ij do_i = DMUB[b] + sum_i e_ij (do_i / L_i), DMUB[b] = sum_i do_i / L_i.
    Works on transposed [key, query] tiles so every accumulation is a plain MMA.
    DOL, DSC, BST, ROW_SCALE as in ``_bwd_dq_kernel`` (here the rows are keys).
    """
    pid_n = tl.program_id(0)
    pid_b = tl.program_id(1).to(tl.int64)
    base = pid_b * N * DT
    vbase = pid_b * N * C
    offs_n = pid_n * BLOCK_N + tl.arange(0, BLOCK_N)
    offs_d = tl.arange(0, BLOCK_D)
    offs_g = tl.arange(0, BLOCK_DG)
    offs_c = tl.arange(0, BLOCK_C)
    cn = offs_n < N
    cc = offs_c < C
    ph = _load_tile(K + base, offs_n, cn, offs_d, D, DT)
    rh = _load_tile(K + base + D, offs_n, cn, offs_g, DG, DT)
    mu = _load_tile(MU + vbase, offs_n, cn, offs_c, C, C)
    sbase = STATS + pid_b * 4 * N
    bbase = BST + pid_b * 2 * N
    dph = tl.zeros([BLOCK_N, BLOCK_D], tl.float32)
    drh = tl.zeros([BLOCK_N, BLOCK_DG], tl.float32)
    dmu = tl.zeros([BLOCK_N, BLOCK_C], tl.float32)
    inv = tl.load(DSC + pid_b)
    sa = tl.full([BLOCK_N], 18446744073709551616.0, tl.float32)  # 2^64: row_scaled's start
    sb = tl.full([BLOCK_N], 18446744073709551616.0, tl.float32)
    for start in range(0, N, BLOCK_M):
        offs_m = start + tl.arange(0, BLOCK_M)
        rm = offs_m < N
        th = _load_tile(Q + base, offs_m, rm, offs_d, D, DT)
        et = _load_tile(Q + base + D, offs_m, rm, offs_g, DG, DT)
        dol = _load_tile(DOL + vbase, offs_m, rm, offs_c, C, C)
        lse_a = tl.load(sbase + offs_m, mask=rm, other=0.0)
        lse_b = tl.load(sbase + N + offs_m, mask=rm, other=0.0)
        dl = tl.load(bbase + offs_m, mask=rm, other=0.0) * (1.0 / W_SCALE)
        r = tl.load(bbase + N + offs_m, mask=rm, other=0.0)
        at = tl.dot(ph, tl.trans(th), input_precision=PREC)
        bt = tl.dot(rh, tl.trans(et), input_precision=PREC)
        # min(., 0): a score never exceeds its row's lse, but the zero-padded key rows past
        # N (scores 0) would give exp(-lse), which overflows where every score of a query
        # is very negative (those rows are never stored)
        sx = tl.where(rm[None, :], tl.exp(tl.minimum(at - lse_a[None, :], 0.0)), 0.0)
        sg = tl.where(rm[None, :], tl.exp(tl.minimum(bt - lse_b[None, :], 0.0)), 0.0)
        p = sx * sg
        e, w = _weights(p, mu)
        dmu = tl.dot(e, dol, dmu, input_precision=PREC)
        dsl = tl.dot(mu, tl.trans(dol), input_precision=PREC)
        t = w.to(tl.float32) * (dsl * (inv / W_SCALE) - dl[None, :])
        da = t - sx * r[None, :]
        db = t - sg * r[None, :]
        if ROW_SCALE:
            da, dph, sa = row_scaled(da, dph, sa)
            db, drh, sb = row_scaled(db, drh, sb)
        dph = tl.dot(da.to(th.dtype), th, dph, input_precision=PREC)
        drh = tl.dot(db.to(et.dtype), et, drh, input_precision=PREC)
    if ROW_SCALE:
        dph = dph / sa[:, None]
        drh = drh / sb[:, None]
    tl.store(DPH + pid_b * N * D + offs_n[:, None] * D + offs_d[None, :],
             dph.to(DPH.dtype.element_ty), mask=cn[:, None] & (offs_d[None, :] < D))
    tl.store(DRH + pid_b * N * DG + offs_n[:, None] * DG + offs_g[None, :],
             drh.to(DRH.dtype.element_ty), mask=cn[:, None] & (offs_g[None, :] < DG))
    dmub = tl.load(DMUB + pid_b * C + offs_c, mask=cc, other=0.0)
    tl.store(DMU + vbase + offs_n[:, None] * C + offs_c[None, :],
             (dmu * (inv / W_SCALE) + dmub[None, :]).to(DMU.dtype.element_ty), mask=cn[:, None] & cc[None, :])


# ------------------------------------------------------------------- launch + torch ops
def _concat(theta, phi, eta, rho, mu):
    """q = [theta, eta], k = [phi, rho] ([B, N, d + dg]) and mu, contiguous (the layout
    every spatial kernel reads)."""
    return (torch.cat([theta, eta], dim=-1).contiguous(),
            torch.cat([phi, rho], dim=-1).contiguous(), mu.contiguous())


def _fwd_impl(theta, phi, eta, rho, mu, save_o2):
    batch, n, d = theta.shape
    dg, c = eta.shape[2], mu.shape[2]
    dt = d + dg
    qcat, kcat, mu = _concat(theta, phi, eta, rho, mu)
    prec = dot_precision(theta.dtype)
    stats = torch.empty(batch, 4, n, device=theta.device, dtype=torch.float32)
    o = torch.empty(batch, n, c, device=theta.device, dtype=torch.float32)
    o2 = torch.empty((batch, n, c) if save_o2 else (0,), device=theta.device, dtype=torch.float32)
    musum = mu.sum(dim=1, dtype=torch.float32).contiguous()
    _lse_kernel[lambda m: (triton.cdiv(n, m["BLOCK_M"]), batch)](
        qcat, kcat, stats, n, d, dg, c, dt,
        BLOCK_D=block(d), BLOCK_DG=block(dg), PREC=prec)
    _fwd_kernel[lambda m: (triton.cdiv(n, m["BLOCK_M"]),
                           triton.cdiv(c, _c_block(c, m["C_SPLIT"])), batch)](
        qcat, kcat, mu, musum, stats, o, o2 if save_o2 else o, n, d, dg, c, dt,
        BLOCK_K=block(dt), SAVE_O2=bool(save_o2), PREC=prec)
    return o, stats, o2


@torch.library.custom_op("ggnet_fast::triton_spatial_fwd", mutates_args=())
def spatial_fwd(theta: torch.Tensor, phi: torch.Tensor, eta: torch.Tensor, rho: torch.Tensor,
                mu: torch.Tensor, save_o2: bool) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Forward: ``(o float32 [B,N,C], stats float32 [B,4,N], o2 float32 [B,N,C] or [0])``."""
    with torch.autocast(theta.device.type, enabled=False):
        return _fwd_impl(theta, phi, eta, rho, mu, save_o2)


@spatial_fwd.register_fake
def _(theta, phi, eta, rho, mu, save_o2):
    batch, n, _ = theta.shape
    c = mu.shape[2]
    o = theta.new_empty(batch, n, c, dtype=torch.float32)
    o2 = theta.new_empty((batch, n, c) if save_o2 else (0,), dtype=torch.float32)
    return o, theta.new_empty(batch, 4, n, dtype=torch.float32), o2


def _scaled_rounding(x, dtype):
    """``x`` (float32 [B, ...]) times a power of two per batch element that puts its
    largest magnitude in [2^13, 2^14), rounded to ``dtype``; and the inverse factors
    (float32 [B]).  Keeps do / L (~1e-6 under a loss scale) out of float16 subnormals."""
    amax = x.abs().amax(dim=tuple(range(1, x.dim()))).clamp_min(2.0 ** -100)
    scale = torch.exp2(13.0 - torch.floor(torch.log2(amax)))
    shape = (-1,) + (1,) * (x.dim() - 1)
    return (x * scale.view(shape)).to(dtype).contiguous(), (1.0 / scale).contiguous()


def _bwd_impl(do, theta, phi, eta, rho, mu, o, stats, o2):
    batch, n, d = theta.shape
    dg, c = eta.shape[2], mu.shape[2]
    dt = d + dg
    r_pass = o2.numel() == 0
    qcat, kcat, mu = _concat(theta, phi, eta, rho, mu)
    prec = dot_precision(theta.dtype)
    row_scale = theta.dtype == torch.float16
    big_l = stats[:, 2]
    dol = do.to(torch.float32) / big_l[:, :, None]
    dmub = dol.sum(dim=1).contiguous()            # sum_i do_i / L_i
    dol16, dsc = _scaled_rounding(dol, theta.dtype)
    dolr = dol16.to(torch.float32) * dsc[:, None, None]  # the do / L the kernels multiply
    bst = torch.empty(batch, 2, n, device=do.device, dtype=torch.float32)
    bst[:, 0] = (dolr * o).sum(-1)                # D_i / L_i = dol_i . o_i
    if not r_pass:                                # R_i = L_i (dol_i . o2_i - D_i / L_i q_i)
        bst[:, 1] = big_l * ((dolr * o2).sum(-1) - bst[:, 0] * stats[:, 3])
    def new(x):  # gradients: written by the kernels in the input dtype, contiguous
        return torch.empty_like(x, memory_format=torch.contiguous_format)

    dth, dph, det, drh, dmu = new(theta), new(theta), new(eta), new(eta), new(mu)
    bd, bg, bc = block(d), block(dg), block(c)
    _bwd_dq_kernel[lambda m: (triton.cdiv(n, m["BLOCK_M"]), batch)](
        qcat, kcat, mu, dol16, dsc, stats, bst, dth, det, n, d, dg, c, dt,
        BLOCK_D=bd, BLOCK_DG=bg, BLOCK_C=bc, R_PASS=r_pass, ROW_SCALE=row_scale, PREC=prec)
    _bwd_dkv_kernel[lambda m: (triton.cdiv(n, m["BLOCK_N"]), batch)](
        qcat, kcat, mu, dol16, dsc, dmub, stats, bst, dph, drh, dmu, n, d, dg, c, dt,
        BLOCK_D=bd, BLOCK_DG=bg, BLOCK_C=bc, ROW_SCALE=row_scale, PREC=prec)
    return dth, dph, det, drh, dmu


@torch.library.custom_op("ggnet_fast::triton_spatial_bwd", mutates_args=())
def spatial_bwd(do: torch.Tensor, theta: torch.Tensor, phi: torch.Tensor, eta: torch.Tensor,
                rho: torch.Tensor, mu: torch.Tensor, o: torch.Tensor, stats: torch.Tensor,
                o2: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor,
                                           torch.Tensor, torch.Tensor]:
    """Backward: gradients of theta, phi, eta, rho, mu (in the input dtype)."""
    with torch.autocast(theta.device.type, enabled=False):
        return _bwd_impl(do, theta, phi, eta, rho, mu, o, stats, o2)


@spatial_bwd.register_fake
def _(do, theta, phi, eta, rho, mu, o, stats, o2):
    return tuple(torch.empty_like(x, memory_format=torch.contiguous_format)
                 for x in (theta, phi, eta, rho, mu))


def _setup_context(ctx, inputs, output):
    theta, phi, eta, rho, mu, _ = inputs
    o, stats, o2 = output
    ctx.save_for_backward(theta, phi, eta, rho, mu, o, stats, o2)


def _backward(ctx, do, _dstats, _do2):
    grads = spatial_bwd(do, *ctx.saved_tensors)
    return (*grads, None)


spatial_fwd.register_autograd(_backward, setup_context=_setup_context)


def spatial(theta, phi, eta, rho, mu, *, out_dtype: torch.dtype) -> torch.Tensor:
    """[B,N,d], [B,N,d], [B,N,dg], [B,N,dg], [B,N,C] -> o [B,N,C] in ``out_dtype``."""
    needs_grad = torch.is_grad_enabled() and any(
        t.requires_grad for t in (theta, phi, eta, rho, mu))
    save_o2 = r_mode() == "o2" and needs_grad  # read (and checked) on every call
    o, _, _ = spatial_fwd(theta, phi, eta, rho, mu, save_o2)
    return o.to(out_dtype)
