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
accumulators.  Tile lists (``tile_policy.py``): the product kernels' classes, but for
one dkv class (``JOINT_DKV_TILES``).  The launchers share the product's host-side
helpers (``spatial_kernels._operands``, ``_scaled_rounding``, ``_empty_grads``).
"""
from __future__ import annotations

import torch
import triton
import triton.language as tl

from .kernel_math import (W_SCALE, fwd_tile, load_rows, row_program, row_scale_start,
                          scaled_dot, store_tile, stream_tile, unscaled)
from .runtime import block, dot_precision
from .spatial_kernels import _empty_grads, _operands, _scaled_rounding
from .tile_policy import JOINT_TUNING, SPATIAL_KEY, c_block


@triton.autotune(key=SPATIAL_KEY, **JOINT_TUNING["fwd"])
@triton.heuristics({"BLOCK_C": lambda a: c_block(a["C"], a["C_SPLIT"])})
@triton.jit
def _fwd_kernel(Q, K, MU, LSE, O, N, D, DG, C, DT,
                BLOCK_K: tl.constexpr, PREC: tl.constexpr,
                BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, C_SPLIT: tl.constexpr,
                BLOCK_C: tl.constexpr):
    """O[b, i, chunk] = sum_j W_ij mu_j for one C chunk; LSE[b, i] = log sum_j exp(s_ij)."""
    pid_b, offs_m, offs_c, rm, cc, q = fwd_tile(Q, N, C, DT, BLOCK_M, BLOCK_K, BLOCK_C)
    offs_k = tl.arange(0, BLOCK_K)
    m = tl.full([BLOCK_M], float("-inf"), tl.float32)
    l = tl.zeros([BLOCK_M], tl.float32)
    acc = tl.zeros([BLOCK_M, BLOCK_C], tl.float32)
    for start in range(0, N, BLOCK_N):
        _, cn, _, mu, s = stream_tile(K + pid_b * N * DT, MU + pid_b * N * C, q, start, offs_k,
                                      offs_c, N, C, DT, BLOCK_N, PREC)
        s = tl.where(cn[None, :], s, float("-inf"))
        m_new = tl.maximum(m, tl.max(s, 1))
        alpha = tl.exp(m - m_new)
        p = tl.exp(s - m_new[:, None])
        w = (p * W_SCALE).to(mu.dtype)
        l = l * alpha + tl.sum(p, 1)
        acc = tl.dot(w, mu, acc * alpha[:, None], input_precision=PREC)
        m = m_new
    store_tile(O + pid_b * N * C, offs_m, rm, offs_c, C, C, acc / (W_SCALE * l[:, None]))
    if tl.program_id(1) == 0:
        tl.store(LSE + pid_b * N + offs_m, m + tl.log(l), mask=rm)


@triton.jit
def _store_split(DX, DY, pid_b, rows, row_mask, offs_k, x, N, D, DG):
    """Columns [0, D) of the [R, BLOCK_K] tile ``x`` to DX [B, N, D], [D, D + DG) to DY."""
    store_tile(DX + pid_b * N * D, rows, row_mask, offs_k, D, D, x)
    tl.store(DY + pid_b * N * DG + rows[:, None] * DG + (offs_k[None, :] - D),
             x.to(DY.dtype.element_ty),
             mask=row_mask[:, None] & (offs_k[None, :] >= D) & (offs_k[None, :] < D + DG))


@triton.jit
def _load_row_stats(LSE, DV, pid_b, rows, row_mask, N):
    """``(lse, D)`` of ``rows`` from LSE and DV ([B, N] each)."""
    return (tl.load(LSE + pid_b * N + rows, mask=row_mask, other=0.0),
            tl.load(DV + pid_b * N + rows, mask=row_mask, other=0.0))


@triton.autotune(key=SPATIAL_KEY, **JOINT_TUNING["dq"])
@triton.jit
def _dq_kernel(Q, K, MU, DOS, DSC, LSE, DV, DTH, DET, N, D, DG, C, DT,
               BLOCK_K: tl.constexpr, BLOCK_C: tl.constexpr, ROW_SCALE: tl.constexpr,
               PREC: tl.constexpr, BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr):
    """DTH[b, i] = sum_j dz_ij phi_j, DET[b, i] = sum_j dz_ij rho_j, dz = W (do mu^T - D).

    DOS: do times a power of two per batch element, in the input dtype; DSC[b] its
    inverse; DV[b, i] = D_i from the rounded DOS (same scale)."""
    pid_b, base, vbase, offs_m, rm = row_program(N, C, DT, BLOCK_M)
    offs_k = tl.arange(0, BLOCK_K)
    offs_c = tl.arange(0, BLOCK_C)
    q, dos = load_rows(Q + base, DOS + vbase, offs_m, rm, offs_k, offs_c, DT, C)
    lse, dv = _load_row_stats(LSE, DV, pid_b, offs_m, rm, N)
    dq = tl.zeros([BLOCK_M, BLOCK_K], tl.float32)
    sc = row_scale_start(BLOCK_M)
    for start in range(0, N, BLOCK_N):
        _, cn, kt, mu, s = stream_tile(K + base, MU + vbase, q, start, offs_k, offs_c, N, C, DT,
                                       BLOCK_N, PREC)
        # min(., 0): a score never exceeds its row's lse (guards the rows past N)
        w = tl.where(cn[None, :], tl.exp(tl.minimum(s - lse[:, None], 0.0)), 0.0)
        dp = tl.dot(dos, tl.trans(mu), input_precision=PREC)
        dq, sc = scaled_dot(w * (dp - dv[:, None]), kt, dq, sc, ROW_SCALE, PREC)  # dz kt
    dq = unscaled(dq, sc, ROW_SCALE) * tl.load(DSC + pid_b)
    _store_split(DTH, DET, pid_b, offs_m, rm, offs_k, dq, N, D, DG)


@triton.autotune(key=SPATIAL_KEY, **JOINT_TUNING["dkv"])
@triton.jit
def _dkv_kernel(Q, K, MU, DOS, DSC, LSE, DV, DPH, DRH, DMU, N, D, DG, C, DT,
                BLOCK_K: tl.constexpr, BLOCK_C: tl.constexpr, ROW_SCALE: tl.constexpr,
                PREC: tl.constexpr, BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr):
    """Per key tile j: DPH[b, j], DRH[b, j] = sum_i dz_ij [theta_i, eta_i] and
    DMU[b, j] = sum_i W_ij do_i, on transposed [key, query] tiles (every accumulation a
    plain MMA).  DOS, DSC, DV as in ``_dq_kernel``."""
    pid_b, base, vbase, offs_n, cn = row_program(N, C, DT, BLOCK_N)
    offs_k = tl.arange(0, BLOCK_K)
    offs_c = tl.arange(0, BLOCK_C)
    kt, mu = load_rows(K + base, MU + vbase, offs_n, cn, offs_k, offs_c, DT, C)
    dk = tl.zeros([BLOCK_N, BLOCK_K], tl.float32)
    dmu = tl.zeros([BLOCK_N, BLOCK_C], tl.float32)
    sc = row_scale_start(BLOCK_N)
    for start in range(0, N, BLOCK_M):
        offs_m, rm, q, dos, st = stream_tile(Q + base, DOS + vbase, kt, start, offs_k, offs_c, N,
                                             C, DT, BLOCK_M, PREC)
        lse, dv = _load_row_stats(LSE, DV, pid_b, offs_m, rm, N)
        # min(., 0): the zero-padded key rows past N (scores 0) would give exp(-lse)
        wt = tl.where(rm[None, :], tl.exp(tl.minimum(st - lse[None, :], 0.0)), 0.0)
        dmu = tl.dot((wt * W_SCALE).to(dos.dtype), dos, dmu, input_precision=PREC)
        dpt = tl.dot(mu, tl.trans(dos), input_precision=PREC)
        dk, sc = scaled_dot(wt * (dpt - dv[None, :]), q, dk, sc, ROW_SCALE, PREC)  # dz^T q
    inv = tl.load(DSC + pid_b)
    _store_split(DPH, DRH, pid_b, offs_n, cn, offs_k, unscaled(dk, sc, ROW_SCALE) * inv, N, D, DG)
    store_tile(DMU + vbase, offs_n, cn, offs_c, C, C, dmu * (inv / W_SCALE))


# ------------------------------------------------------------------- launch + torch ops
def _fwd_impl(theta, phi, eta, rho, mu):
    batch, n, d, dg, c, q, k, mu = _operands(theta, phi, eta, rho, mu)
    o = torch.empty(batch, n, c, device=theta.device, dtype=torch.float32)
    lse = torch.empty(batch, n, device=theta.device, dtype=torch.float32)
    _fwd_kernel[lambda m: (triton.cdiv(n, m["BLOCK_M"]),
                           triton.cdiv(c, c_block(c, m["C_SPLIT"])), batch)](
        q, k, mu, lse, o, n, d, dg, c, d + dg, BLOCK_K=block(d + dg), PREC=dot_precision())
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
    dth, dph, det, drh, dmu = _empty_grads(theta, phi, eta, rho, mu)
    batch, n, d, dg, c, q, k, mu = _operands(theta, phi, eta, rho, mu)
    dos, dsc = _scaled_rounding(do.to(torch.float32), theta.dtype)
    dv = (dos.to(torch.float32) * o).sum(-1).contiguous()  # D_i (scaled) from the rounded do
    consts = dict(BLOCK_K=block(d + dg), BLOCK_C=block(c), ROW_SCALE=theta.dtype == torch.float16,
                  PREC=dot_precision())
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
    return _empty_grads(theta, phi, eta, rho, mu)


def _setup_context(ctx, inputs, output):
    ctx.save_for_backward(*inputs, *output)


def _backward(ctx, do, _dlse):
    return joint_bwd(do, *ctx.saved_tensors)


joint_fwd.register_autograd(_backward, setup_context=_setup_context)


def joint(theta, phi, eta, rho, mu, *, out_dtype: torch.dtype) -> torch.Tensor:
    """[B,N,d], [B,N,d], [B,N,dg], [B,N,dg], [B,N,C] -> o [B,N,C] in ``out_dtype``."""
    o, _ = joint_fwd(theta, phi, eta, rho, mu)
    return o.to(out_dtype)
