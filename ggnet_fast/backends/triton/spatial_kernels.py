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
Tile lists and their rationale: ``tile_policy.py``; shared jit helpers:
``kernel_math.py``.
"""
from __future__ import annotations

import torch
import triton
import triton.language as tl

from ..registry import env_choice
from .kernel_math import (W_SCALE, expm1_unit_scaled, fwd_tile, load_tile, row_program,
                          row_scale_start, scaled_dot, span, store_tile, stream_tile, unscaled)
from .runtime import block, dot_precision
from .tile_policy import SPATIAL_KEY, SPATIAL_TUNING, c_block

#: "o2" (default): the forward accumulates o2/q and the backward is one recompute pass
#: per kernel; "pass": no extra forward accumulator, R from a separate loop.  Both give
#: the same result; ``GGNET_TRITON_R_MODE`` selects one (for benchmarking), read on every
#: call like every runtime switch (docs/backends.md).  Tests may pin a mode here instead.
R_MODE: str | None = None


def r_mode() -> str:
    """``"o2"`` or ``"pass"``: :data:`R_MODE` when pinned, else ``GGNET_TRITON_R_MODE``."""
    return R_MODE or env_choice("GGNET_TRITON_R_MODE", ("o2", "pass"), "o2")


@triton.jit
def _weights(p, like):
    """``(W_SCALE e, W_SCALE p exp(p))``, e = expm1(p), each rounded to ``like``'s dtype
    (the 16-bit MMA operands).  Forward and backward both call this, so the backward's
    p dp uses the same rounded weights as the forward's o2 and q (R = sum_j p dp then
    holds exactly; a float32 w in the backward left 1e-2 bf16 gradient errors)."""
    e = expm1_unit_scaled(p, W_SCALE, True).to(like.dtype)
    w = (p * (W_SCALE + e.to(tl.float32))).to(like.dtype)
    return e, w


@triton.jit
def _load_split(ptr, rows, row_mask, offs_d, offs_g, D, DG, DT):
    """Rows ``rows`` of a row-major [N, DT] concatenation [x, y] (DT = D + DG) as the two
    tiles x [len(rows), BLOCK_D] and y [len(rows), BLOCK_DG]."""
    return (load_tile(ptr, rows, row_mask, offs_d, D, DT),
            load_tile(ptr + D, rows, row_mask, offs_g, DG, DT))


@triton.jit
def _load_rows(X, V, rows, row_mask, offs_d, offs_g, offs_c, D, DG, DT, C):
    """Rows ``rows`` of the concatenation X = [x, y] ([N, DT], ``_load_split``) and of V
    ([N, C]): the tiles x, y and v."""
    x, y = _load_split(X, rows, row_mask, offs_d, offs_g, D, DG, DT)
    return x, y, load_tile(V, rows, row_mask, offs_c, C, C)


@triton.jit
def _load_lse(STATS, pid_b, rows, row_mask, N):
    """``(lse_a, lse_b)`` of ``rows`` from STATS [B, 4, N]."""
    sbase = STATS + pid_b * 4 * N
    return (tl.load(sbase + rows, mask=row_mask, other=0.0),
            tl.load(sbase + N + rows, mask=row_mask, other=0.0))


# ----------------------------------------------------------------------------- forward
@triton.autotune(key=SPATIAL_KEY, **SPATIAL_TUNING["lse"])
@triton.jit
def _lse_kernel(Q, K, STATS, N, D, DG, C, DT,
                BLOCK_D: tl.constexpr, BLOCK_DG: tl.constexpr, PREC: tl.constexpr,
                BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr):
    """Pass 1: STATS[b, 0] = lse_j(theta_i . phi_j), STATS[b, 1] = lse_j(eta_i . rho_j)."""
    pid_b, base, _, offs_m, rm = row_program(N, C, DT, BLOCK_M)
    offs_d = tl.arange(0, BLOCK_D)
    offs_g = tl.arange(0, BLOCK_DG)
    th, et = _load_split(Q + base, offs_m, rm, offs_d, offs_g, D, DG, DT)
    m_a = tl.full([BLOCK_M], float("-inf"), tl.float32)
    m_b = tl.full([BLOCK_M], float("-inf"), tl.float32)
    l_a = tl.zeros([BLOCK_M], tl.float32)
    l_b = tl.zeros([BLOCK_M], tl.float32)
    for start in range(0, N, BLOCK_N):
        offs_n, cn = span(start, BLOCK_N, N)
        ph, rh = _load_split(K + base, offs_n, cn, offs_d, offs_g, D, DG, DT)
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


@triton.autotune(key=SPATIAL_KEY + ["SAVE_O2"], **SPATIAL_TUNING["fwd"])
@triton.heuristics({"BLOCK_C": lambda a: c_block(a["C"], a["C_SPLIT"])})
@triton.jit
def _fwd_kernel(Q, K, MU, MUSUM, STATS, O, O2, N, D, DG, C, DT,
                BLOCK_K: tl.constexpr, SAVE_O2: tl.constexpr, PREC: tl.constexpr,
                BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, C_SPLIT: tl.constexpr,
                BLOCK_C: tl.constexpr):
    """Pass 2: O = (sum_j mu_j + sum_j e_ij mu_j) / L_i for one C chunk; STATS[2:4] = L, q."""
    pid_b, offs_m, offs_c, rm, cc, q = fwd_tile(Q, N, C, DT, BLOCK_M, BLOCK_K, BLOCK_C)
    offs_k = tl.arange(0, BLOCK_K)
    lse_a, lse_b = _load_lse(STATS, pid_b, offs_m, rm, N)
    lse = lse_a + lse_b
    acc = tl.zeros([BLOCK_M, BLOCK_C], tl.float32)
    acc2 = tl.zeros([BLOCK_M, BLOCK_C], tl.float32)
    esum = tl.zeros([BLOCK_M], tl.float32)
    qsum = tl.zeros([BLOCK_M], tl.float32)
    for start in range(0, N, BLOCK_N):
        _, cn, _, mu, s = stream_tile(K + pid_b * N * DT, MU + pid_b * N * C, q, start, offs_k,
                                      offs_c, N, C, DT, BLOCK_N, PREC)  # s = a + b: one MMA
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
    store_tile(O + pid_b * N * C, offs_m, rm, offs_c, C, C, o)
    if SAVE_O2:
        store_tile(O2 + pid_b * N * C, offs_m, rm, offs_c, C, C, acc2 / (W_SCALE * L[:, None]))
    if tl.program_id(1) == 0:
        sbase = STATS + pid_b * 4 * N
        tl.store(sbase + 2 * N + offs_m, L, mask=rm)
        tl.store(sbase + 3 * N + offs_m, qsum / (W_SCALE * L), mask=rm)


# ---------------------------------------------------------------------------- backward
@triton.autotune(key=SPATIAL_KEY + ["R_PASS"], **SPATIAL_TUNING["dq"])
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
    pid_b, base, vbase, offs_m, rm = row_program(N, C, DT, BLOCK_M)
    offs_d = tl.arange(0, BLOCK_D)
    offs_g = tl.arange(0, BLOCK_DG)
    offs_c = tl.arange(0, BLOCK_C)
    th, et, dol = _load_rows(Q + base, DOL + vbase, offs_m, rm, offs_d, offs_g,
                             offs_c, D, DG, DT, C)
    inv = tl.load(DSC + pid_b)
    bbase = BST + pid_b * 2 * N
    lse_a, lse_b = _load_lse(STATS, pid_b, offs_m, rm, N)
    dl = tl.load(bbase + offs_m, mask=rm, other=0.0) * (1.0 / W_SCALE)
    inv = inv * (1.0 / W_SCALE)  # (dsl * inv - dl) * w is p dp (w carries W_SCALE)
    if R_PASS:
        r = tl.zeros([BLOCK_M], tl.float32)
        for start in range(0, N, BLOCK_N):
            offs_n, cn = span(start, BLOCK_N, N)
            ph, rh, mu = _load_rows(K + base, MU + vbase, offs_n, cn, offs_d, offs_g,
                                    offs_c, D, DG, DT, C)
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
    sa = row_scale_start(BLOCK_M)
    sb = row_scale_start(BLOCK_M)
    for start in range(0, N, BLOCK_N):
        offs_n, cn = span(start, BLOCK_N, N)
        ph, rh, mu = _load_rows(K + base, MU + vbase, offs_n, cn, offs_d, offs_g,
                                offs_c, D, DG, DT, C)
        a = tl.dot(th, tl.trans(ph), input_precision=PREC)
        b = tl.dot(et, tl.trans(rh), input_precision=PREC)
        sx = tl.where(cn[None, :], tl.exp(a - lse_a[:, None]), 0.0)
        sg = tl.where(cn[None, :], tl.exp(b - lse_b[:, None]), 0.0)
        p = sx * sg
        dsl = tl.dot(dol, tl.trans(mu), input_precision=PREC)  # ds_ij / L_i, scaled
        _, w = _weights(p, mu)
        t = w.to(tl.float32) * (dsl * inv - dl[:, None])         # p_ij dp_ij
        dth, sa = scaled_dot(t - sx * r[:, None], ph, dth, sa, ROW_SCALE, PREC)  # da_ij
        det, sb = scaled_dot(t - sg * r[:, None], rh, det, sb, ROW_SCALE, PREC)  # db_ij
    store_tile(DTH + pid_b * N * D, offs_m, rm, offs_d, D, D, unscaled(dth, sa, ROW_SCALE))
    store_tile(DET + pid_b * N * DG, offs_m, rm, offs_g, DG, DG, unscaled(det, sb, ROW_SCALE))


@triton.autotune(key=SPATIAL_KEY, **SPATIAL_TUNING["dkv"])
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
    pid_b, base, vbase, offs_n, cn = row_program(N, C, DT, BLOCK_N)
    offs_d = tl.arange(0, BLOCK_D)
    offs_g = tl.arange(0, BLOCK_DG)
    offs_c = tl.arange(0, BLOCK_C)
    ph, rh, mu = _load_rows(K + base, MU + vbase, offs_n, cn, offs_d, offs_g, offs_c, D, DG, DT, C)
    bbase = BST + pid_b * 2 * N
    dph = tl.zeros([BLOCK_N, BLOCK_D], tl.float32)
    drh = tl.zeros([BLOCK_N, BLOCK_DG], tl.float32)
    dmu = tl.zeros([BLOCK_N, BLOCK_C], tl.float32)
    inv = tl.load(DSC + pid_b)
    sa = row_scale_start(BLOCK_N)
    sb = row_scale_start(BLOCK_N)
    for start in range(0, N, BLOCK_M):
        offs_m, rm = span(start, BLOCK_M, N)
        th, et, dol = _load_rows(Q + base, DOL + vbase, offs_m, rm, offs_d, offs_g,
                                 offs_c, D, DG, DT, C)
        lse_a, lse_b = _load_lse(STATS, pid_b, offs_m, rm, N)
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
        dph, sa = scaled_dot(t - sx * r[None, :], th, dph, sa, ROW_SCALE, PREC)
        drh, sb = scaled_dot(t - sg * r[None, :], et, drh, sb, ROW_SCALE, PREC)
    store_tile(DPH + pid_b * N * D, offs_n, cn, offs_d, D, D, unscaled(dph, sa, ROW_SCALE))
    store_tile(DRH + pid_b * N * DG, offs_n, cn, offs_g, DG, DG, unscaled(drh, sb, ROW_SCALE))
    dmub = tl.load(DMUB + pid_b * C + offs_c, mask=offs_c < C, other=0.0)
    store_tile(DMU + vbase, offs_n, cn, offs_c, C, C, dmu * (inv / W_SCALE) + dmub[None, :])


# ------------------------------------------------------------------- launch + torch ops
def _operands(theta, phi, eta, rho, mu):
    """``(B, N, d, dg, C, q, k, mu)``: the sizes, and q = [theta, eta], k = [phi, rho]
    ([B, N, d + dg]) and mu, contiguous (the layout every spatial kernel reads; the
    launchers of both ``combine`` modes start here)."""
    batch, n, d = theta.shape
    return (batch, n, d, eta.shape[2], mu.shape[2], torch.cat([theta, eta], dim=-1).contiguous(),
            torch.cat([phi, rho], dim=-1).contiguous(), mu.contiguous())


def _empty_grads(*inputs):
    """Gradient buffers like ``inputs``: written by the kernels in the input dtype,
    contiguous (also what the backward ops' fake implementations return)."""
    return tuple(torch.empty_like(x, memory_format=torch.contiguous_format) for x in inputs)


def _fwd_impl(theta, phi, eta, rho, mu, save_o2):
    batch, n, d, dg, c, qcat, kcat, mu = _operands(theta, phi, eta, rho, mu)
    dt = d + dg
    prec = dot_precision()
    stats = torch.empty(batch, 4, n, device=theta.device, dtype=torch.float32)
    o = torch.empty(batch, n, c, device=theta.device, dtype=torch.float32)
    o2 = torch.empty((batch, n, c) if save_o2 else (0,), device=theta.device, dtype=torch.float32)
    musum = mu.sum(dim=1, dtype=torch.float32).contiguous()
    _lse_kernel[lambda m: (triton.cdiv(n, m["BLOCK_M"]), batch)](
        qcat, kcat, stats, n, d, dg, c, dt,
        BLOCK_D=block(d), BLOCK_DG=block(dg), PREC=prec)
    _fwd_kernel[lambda m: (triton.cdiv(n, m["BLOCK_M"]),
                           triton.cdiv(c, c_block(c, m["C_SPLIT"])), batch)](
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
    dth, dph, det, drh, dmu = _empty_grads(theta, phi, eta, rho, mu)
    batch, n, d, dg, c, qcat, kcat, mu = _operands(theta, phi, eta, rho, mu)
    dt = d + dg
    r_pass = o2.numel() == 0
    prec = dot_precision()
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
    return _empty_grads(theta, phi, eta, rho, mu)


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
