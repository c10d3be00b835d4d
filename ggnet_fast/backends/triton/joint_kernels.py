"""Fused Triton kernels for guided spatial attention, ``combine="joint"``.

Per batch element (``docs/kernels.md``, "Joint softmax")::

    s = theta phi^T + eta rho^T = q k^T     q = [theta, eta], k = [phi, rho]  (K = d + dg)
    W = softmax_j(s),   o = W @ mu          [N, C]

ordinary attention with scale 1, computed FlashAttention-2 style: nothing N x N exists,
and the query/key width is d + dg, never padded to C.

Kernels (grid axis 0 over row tiles, last axis over the batch):

* ``_fwd_kernel``  one pass over key tiles with an online softmax (running row max and
  sum, the accumulator rescaled when the max grows); writes o (float32) and the row
  ``lse``.  Axis 1 splits C into chunks (``C_SPLIT``), as the product forward does.
* ``_dq_kernel``   dtheta, deta per query tile: ``dz = W (do mu^T - D)``, ``dq = dz k``.
* ``_dkv_kernel``  dphi, drho, dmu per key tile on transposed [key, query] tiles:
  ``dk = dz^T q``, ``dmu = W^T do``.

``D_i = do_i . o_i`` comes from the saved o.  16-bit operands: the weights W are
rounded after a factor ``W_SCALE`` (so W ~ 1/N stays a normal float16 at N = 128 x 128),
``do`` after a power of two per batch element (``_scaled_rounding``), and in float16
``dz`` after a per-row power of two (``row_scaled``), each undone on the float32
accumulators.  Tile lists: the product kernels' classes (same accumulators: the forward
holds a C-wide one, dq a (d + dg)-wide one, dkv both; see ``spatial_kernels.py``), but
for one dkv class (``_JOINT_DKV_TILES``).
"""
from __future__ import annotations

import functools

import torch
import triton
import triton.language as tl

from ._config import W_SCALE, block, dot_precision, row_scaled, tuned
from . import spatial_kernels as _product
from .spatial_kernels import (_DKV_TILES, _DQ, _FWD_TILES, _KEY, _MN, _bwd_class, _bwd_tuned,
                              _c_block, _cfg, _class, _concat, _fwd_tile, _load_tile,
                              _scaled_rounding, first_of_class)

#: dkv at d + dg <= 128 with C > 256: the product's 32-row default spills 16 bytes here
#: (bf16, d = 32, C = 512; the joint kernel keeps a dz tile the product does not), 64 rows
#: on 8 warps do not (234 registers, 92 KB; sm_90 static report).
_JOINT_DKV_TILES = {**_DKV_TILES, "narrow-bigc": _cfg(_MN, [(64, 16, 8, 2), (32, 16, 8, 2)])}
#: Tile lists and class pickers by kernel ("fwd", "dq", "dkv"): the product's inference
#: forward classes (no o2 accumulator), its dq lists, and _JOINT_DKV_TILES.
TILE_LISTS = {"fwd": (_FWD_TILES, _class), "dq": _product.TILE_LISTS["dq"],
              "dkv": (_JOINT_DKV_TILES, functools.partial(_bwd_class, _JOINT_DKV_TILES))}
_FWD = tuned(_FWD_TILES, dict(BLOCK_M=128, BLOCK_N=128, C_SPLIT=1), _class)
_DKV = _bwd_tuned(_JOINT_DKV_TILES)


def default_tiles(kernel: str, d: int, dg: int, c: int, dtype: torch.dtype = torch.bfloat16,
                  arch: int = 90) -> dict:
    """The default tiles of the joint ``kernel`` ("fwd", "dq" or "dkv"), as
    ``spatial_kernels.default_tiles`` gives them for the product kernels."""
    return first_of_class(*TILE_LISTS[kernel], d, dg, c, dtype, arch=arch)


@triton.autotune(key=_KEY, **_FWD)
@triton.heuristics({"BLOCK_C": lambda a: _c_block(a["C"], a["C_SPLIT"])})
@triton.jit
def _fwd_kernel(Q, K, MU, LSE, O, N, D, DG, C, DT,
                BLOCK_K: tl.constexpr, PREC: tl.constexpr,
                BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, C_SPLIT: tl.constexpr,
                BLOCK_C: tl.constexpr):
    """O[b, i, chunk] = sum_j W_ij mu_j for one C chunk; LSE[b, i] = log sum_j exp(s_ij)."""
    pid_b, offs_m, offs_c, rm, cc, q = _fwd_tile(Q, N, C, DT, BLOCK_M, BLOCK_K, BLOCK_C)
    qbase = pid_b * N * DT
    vbase = pid_b * N * C
    offs_k = tl.arange(0, BLOCK_K)
    m = tl.full([BLOCK_M], float("-inf"), tl.float32)
    l = tl.zeros([BLOCK_M], tl.float32)
    acc = tl.zeros([BLOCK_M, BLOCK_C], tl.float32)
    for start in range(0, N, BLOCK_N):
        offs_n = start + tl.arange(0, BLOCK_N)
        cn = offs_n < N
        kt = _load_tile(K + qbase, offs_n, cn, offs_k, DT, DT)
        mu = _load_tile(MU + vbase, offs_n, cn, offs_c, C, C)
        s = tl.dot(q, tl.trans(kt), input_precision=PREC)
        s = tl.where(cn[None, :], s, float("-inf"))
        m_new = tl.maximum(m, tl.max(s, 1))
        alpha = tl.exp(m - m_new)
        p = tl.exp(s - m_new[:, None])
        w = (p * W_SCALE).to(mu.dtype)
        l = l * alpha + tl.sum(p, 1)
        acc = tl.dot(w, mu, acc * alpha[:, None], input_precision=PREC)
        m = m_new
    o = acc / (W_SCALE * l[:, None])
    tl.store(O + vbase + offs_m[:, None] * C + offs_c[None, :], o, mask=rm[:, None] & cc[None, :])
    if tl.program_id(1) == 0:
        tl.store(LSE + pid_b * N + offs_m, m + tl.log(l), mask=rm)


@triton.jit
def _store_split(DX, DY, pid_b, rows, row_mask, offs_k, x, N, D, DG):
    """Columns [0, D) of the [R, BLOCK_K] tile ``x`` to DX [B, N, D], [D, D + DG) to DY."""
    tl.store(DX + pid_b * N * D + rows[:, None] * D + offs_k[None, :], x.to(DX.dtype.element_ty),
             mask=row_mask[:, None] & (offs_k[None, :] < D))
    tl.store(DY + pid_b * N * DG + rows[:, None] * DG + (offs_k[None, :] - D),
             x.to(DY.dtype.element_ty),
             mask=row_mask[:, None] & (offs_k[None, :] >= D) & (offs_k[None, :] < D + DG))


@triton.autotune(key=_KEY, **_DQ)
@triton.jit
def _dq_kernel(Q, K, MU, DOS, DSC, LSE, DV, DTH, DET, N, D, DG, C, DT,
               BLOCK_K: tl.constexpr, BLOCK_C: tl.constexpr, ROW_SCALE: tl.constexpr,
               PREC: tl.constexpr, BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr):
    """DTH[b, i] = sum_j dz_ij phi_j, DET[b, i] = sum_j dz_ij rho_j, dz = W (do mu^T - D).

    DOS: do times a power of two per batch element, in the input dtype; DSC[b] its
    inverse; DV[b, i] = D_i from the rounded DOS (same scale)."""
    pid_m = tl.program_id(0)
    pid_b = tl.program_id(1).to(tl.int64)
    base = pid_b * N * DT
    vbase = pid_b * N * C
    offs_m = pid_m * BLOCK_M + tl.arange(0, BLOCK_M)
    offs_k = tl.arange(0, BLOCK_K)
    offs_c = tl.arange(0, BLOCK_C)
    rm = offs_m < N
    q = _load_tile(Q + base, offs_m, rm, offs_k, DT, DT)
    dos = _load_tile(DOS + vbase, offs_m, rm, offs_c, C, C)
    lse = tl.load(LSE + pid_b * N + offs_m, mask=rm, other=0.0)
    dv = tl.load(DV + pid_b * N + offs_m, mask=rm, other=0.0)
    dq = tl.zeros([BLOCK_M, BLOCK_K], tl.float32)
    sc = tl.full([BLOCK_M], 18446744073709551616.0, tl.float32)  # 2^64: row_scaled's start
    for start in range(0, N, BLOCK_N):
        offs_n = start + tl.arange(0, BLOCK_N)
        cn = offs_n < N
        kt = _load_tile(K + base, offs_n, cn, offs_k, DT, DT)
        mu = _load_tile(MU + vbase, offs_n, cn, offs_c, C, C)
        s = tl.dot(q, tl.trans(kt), input_precision=PREC)
        # min(., 0): a score never exceeds its row's lse (guards the rows past N)
        w = tl.where(cn[None, :], tl.exp(tl.minimum(s - lse[:, None], 0.0)), 0.0)
        dp = tl.dot(dos, tl.trans(mu), input_precision=PREC)
        dz = w * (dp - dv[:, None])
        if ROW_SCALE:
            dz, dq, sc = row_scaled(dz, dq, sc)
        dq = tl.dot(dz.to(kt.dtype), kt, dq, input_precision=PREC)
    if ROW_SCALE:
        dq = dq / sc[:, None]
    _store_split(DTH, DET, pid_b, offs_m, rm, offs_k, dq * tl.load(DSC + pid_b), N, D, DG)


@triton.autotune(key=_KEY, **_DKV)
@triton.jit
def _dkv_kernel(Q, K, MU, DOS, DSC, LSE, DV, DPH, DRH, DMU, N, D, DG, C, DT,
                BLOCK_K: tl.constexpr, BLOCK_C: tl.constexpr, ROW_SCALE: tl.constexpr,
                PREC: tl.constexpr, BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr):
    """Per key tile j: DPH[b, j], DRH[b, j] = sum_i dz_ij [theta_i, eta_i] and
    DMU[b, j] = sum_i W_ij do_i, on transposed [key, query] tiles (every accumulation a
    plain MMA).  DOS, DSC, DV as in ``_dq_kernel``."""
    pid_n = tl.program_id(0)
    pid_b = tl.program_id(1).to(tl.int64)
    base = pid_b * N * DT
    vbase = pid_b * N * C
    offs_n = pid_n * BLOCK_N + tl.arange(0, BLOCK_N)
    offs_k = tl.arange(0, BLOCK_K)
    offs_c = tl.arange(0, BLOCK_C)
    cn = offs_n < N
    cc = offs_c < C
    kt = _load_tile(K + base, offs_n, cn, offs_k, DT, DT)
    mu = _load_tile(MU + vbase, offs_n, cn, offs_c, C, C)
    dk = tl.zeros([BLOCK_N, BLOCK_K], tl.float32)
    dmu = tl.zeros([BLOCK_N, BLOCK_C], tl.float32)
    sc = tl.full([BLOCK_N], 18446744073709551616.0, tl.float32)  # 2^64: row_scaled's start
    for start in range(0, N, BLOCK_M):
        offs_m = start + tl.arange(0, BLOCK_M)
        rm = offs_m < N
        q = _load_tile(Q + base, offs_m, rm, offs_k, DT, DT)
        dos = _load_tile(DOS + vbase, offs_m, rm, offs_c, C, C)
        lse = tl.load(LSE + pid_b * N + offs_m, mask=rm, other=0.0)
        dv = tl.load(DV + pid_b * N + offs_m, mask=rm, other=0.0)
        st = tl.dot(kt, tl.trans(q), input_precision=PREC)
        # min(., 0): the zero-padded key rows past N (scores 0) would give exp(-lse)
        wt = tl.where(rm[None, :], tl.exp(tl.minimum(st - lse[None, :], 0.0)), 0.0)
        dmu = tl.dot((wt * W_SCALE).to(dos.dtype), dos, dmu, input_precision=PREC)
        dpt = tl.dot(mu, tl.trans(dos), input_precision=PREC)
        dzt = wt * (dpt - dv[None, :])
        if ROW_SCALE:
            dzt, dk, sc = row_scaled(dzt, dk, sc)
        dk = tl.dot(dzt.to(q.dtype), q, dk, input_precision=PREC)
    if ROW_SCALE:
        dk = dk / sc[:, None]
    inv = tl.load(DSC + pid_b)
    _store_split(DPH, DRH, pid_b, offs_n, cn, offs_k, dk * inv, N, D, DG)
    tl.store(DMU + vbase + offs_n[:, None] * C + offs_c[None, :],
             (dmu * (inv / W_SCALE)).to(DMU.dtype.element_ty), mask=cn[:, None] & cc[None, :])


# ------------------------------------------------------------------- launch + torch ops
def _fwd_impl(theta, phi, eta, rho, mu):
    batch, n, d = theta.shape
    dg, c = eta.shape[2], mu.shape[2]
    q, k, mu = _concat(theta, phi, eta, rho, mu)
    o = torch.empty(batch, n, c, device=theta.device, dtype=torch.float32)
    lse = torch.empty(batch, n, device=theta.device, dtype=torch.float32)
    _fwd_kernel[lambda m: (triton.cdiv(n, m["BLOCK_M"]),
                           triton.cdiv(c, _c_block(c, m["C_SPLIT"])), batch)](
        q, k, mu, lse, o, n, d, dg, c, d + dg,
        BLOCK_K=block(d + dg), PREC=dot_precision(theta.dtype))
    return o, lse


@torch.library.custom_op("ggnet_fast::triton_joint_fwd", mutates_args=())
def joint_fwd(theta: torch.Tensor, phi: torch.Tensor, eta: torch.Tensor, rho: torch.Tensor,
              mu: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Forward: ``(o float32 [B,N,C], lse float32 [B,N])``."""
    with torch.autocast(theta.device.type, enabled=False):
        return _fwd_impl(theta, phi, eta, rho, mu)


@joint_fwd.register_fake
def _(theta, phi, eta, rho, mu):
    batch, n, _ = theta.shape
    return (theta.new_empty(batch, n, mu.shape[2], dtype=torch.float32),
            theta.new_empty(batch, n, dtype=torch.float32))


def _bwd_impl(do, theta, phi, eta, rho, mu, o, lse):
    batch, n, d = theta.shape
    dg, c = eta.shape[2], mu.shape[2]
    q, k, mu = _concat(theta, phi, eta, rho, mu)
    dos, dsc = _scaled_rounding(do.to(torch.float32), theta.dtype)
    dv = (dos.to(torch.float32) * o).sum(-1).contiguous()  # D_i (scaled) from the rounded do

    def new(x):  # gradients: written by the kernels in the input dtype, contiguous
        return torch.empty_like(x, memory_format=torch.contiguous_format)

    dth, dph, det, drh, dmu = new(theta), new(phi), new(eta), new(rho), new(mu)
    consts = dict(BLOCK_K=block(d + dg), BLOCK_C=block(c), ROW_SCALE=theta.dtype == torch.float16,
                  PREC=dot_precision(theta.dtype))
    _dq_kernel[lambda m: (triton.cdiv(n, m["BLOCK_M"]), batch)](
        q, k, mu, dos, dsc, lse, dv, dth, det, n, d, dg, c, d + dg, **consts)
    _dkv_kernel[lambda m: (triton.cdiv(n, m["BLOCK_N"]), batch)](
        q, k, mu, dos, dsc, lse, dv, dph, drh, dmu, n, d, dg, c, d + dg, **consts)
    return dth, dph, det, drh, dmu


@torch.library.custom_op("ggnet_fast::triton_joint_bwd", mutates_args=())
def joint_bwd(do: torch.Tensor, theta: torch.Tensor, phi: torch.Tensor, eta: torch.Tensor,
              rho: torch.Tensor, mu: torch.Tensor, o: torch.Tensor,
              lse: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor,
                                          torch.Tensor, torch.Tensor]:
    """Backward: gradients of theta, phi, eta, rho, mu (in the input dtype)."""
    with torch.autocast(theta.device.type, enabled=False):
        return _bwd_impl(do, theta, phi, eta, rho, mu, o, lse)


@joint_bwd.register_fake
def _(do, theta, phi, eta, rho, mu, o, lse):
    return tuple(torch.empty_like(x, memory_format=torch.contiguous_format)
                 for x in (theta, phi, eta, rho, mu))


def _setup_context(ctx, inputs, output):
    ctx.save_for_backward(*inputs, *output)


def _backward(ctx, do, _dlse):
    return joint_bwd(do, *ctx.saved_tensors)


joint_fwd.register_autograd(_backward, setup_context=_setup_context)


def joint(theta, phi, eta, rho, mu, *, out_dtype: torch.dtype) -> torch.Tensor:
    """[B,N,d], [B,N,d], [B,N,dg], [B,N,dg], [B,N,C] -> o [B,N,C] in ``out_dtype``."""
    o, _ = joint_fwd(theta, phi, eta, rho, mu)
    return o.to(out_dtype)
