"""Fused Triton kernels for guided channel attention (all combine/stabilize modes, scale).

Per batch element, y, g: [C, N] (``docs/kernels.md``; notes in ``docs/triton.md``)::

    A = y y^T, B = g g^T                    (C x C, reduce over N; float32)
    Sz = softmax(s A), Sg = softmax(s B)    (s = scale or 1)
    M  = Sz * Sg  or  Sz @ Sg               ("product" / "matmul")
    M  = rowmax(M) - M                      (stabilize="max-minus" only)
    E  = expm1(M), L = C + rowsum(E)        Q = (1 + E) / L
    out = (colsum(y) + E @ y) / L           [C, N]

Kernels: ``_gram_kernel`` reads y and g once for both Gram matrices (and computes
dQ = dout y^T in the backward); ``_map_kernel`` does the three softmaxes (and the C x C
product for "matmul") and writes E, L; ``_apply_kernel`` is the product with y (and, in
the backward, dy = (dA + dA^T) y + Q^T dout and dg = (dB + dB^T) g, the transpose
read through strides).  ``_map_bwd_kernel`` is the backward of the three softmaxes per
row tile; for "matmul" the two C x C x C products of that backward are ``torch.bmm``
calls followed by ``_softmax_bwd_kernel``.
Saved for backward: y, g, A, B, E - c, L, c (C x C maps: small).  Configuration lists:
``tile_policy.py``.
"""
from __future__ import annotations

import torch
import triton
import triton.language as tl

from .kernel_math import expm1_unit, span
from .runtime import block, dot_precision
from .tile_policy import APPLY_CONFIGS, GRAM_CONFIGS, MAP_CONFIGS


@triton.autotune(configs=GRAM_CONFIGS, key=["C", "N", "TWO"])
@triton.jit
def _gram_kernel(X1, Y1, X2, Y2, OUT1, OUT2, C, N,
                 TWO: tl.constexpr, PREC: tl.constexpr,
                 BLOCK_R: tl.constexpr, BLOCK_S: tl.constexpr, BLOCK_K: tl.constexpr):
    """OUT1[b, r, s] = sum_n X1[b, r, n] Y1[b, s, n] (float32); with TWO also OUT2 from X2, Y2.

    All inputs [B, C, N] contiguous; X1 is cast to Y1's dtype before the MMA.
    """
    pid_r = tl.program_id(0)
    pid_s = tl.program_id(1)
    pid_b = tl.program_id(2).to(tl.int64)
    base = pid_b * C * N
    offs_r = pid_r * BLOCK_R + tl.arange(0, BLOCK_R)
    offs_s = pid_s * BLOCK_S + tl.arange(0, BLOCK_S)
    mr = offs_r < C
    ms = offs_s < C
    acc1 = tl.zeros([BLOCK_R, BLOCK_S], tl.float32)
    acc2 = tl.zeros([BLOCK_R, BLOCK_S], tl.float32)
    for start in range(0, N, BLOCK_K):
        offs_k = start + tl.arange(0, BLOCK_K)
        mk = offs_k < N
        pr = base + offs_r[:, None] * N + offs_k[None, :]
        ps = base + offs_s[:, None] * N + offs_k[None, :]
        y1 = tl.load(Y1 + ps, mask=ms[:, None] & mk[None, :], other=0.0)
        x1 = tl.load(X1 + pr, mask=mr[:, None] & mk[None, :], other=0.0).to(y1.dtype)
        acc1 = tl.dot(x1, tl.trans(y1), acc1, input_precision=PREC)
        if TWO:
            y2 = tl.load(Y2 + ps, mask=ms[:, None] & mk[None, :], other=0.0)
            x2 = tl.load(X2 + pr, mask=mr[:, None] & mk[None, :], other=0.0).to(y2.dtype)
            acc2 = tl.dot(x2, tl.trans(y2), acc2, input_precision=PREC)
    po = pid_b * C * C + offs_r[:, None] * C + offs_s[None, :]
    mo = mr[:, None] & ms[None, :]
    tl.store(OUT1 + po, acc1, mask=mo)
    if TWO:
        tl.store(OUT2 + po, acc2, mask=mo)


@triton.jit
def _row_softmax(x, valid):
    """Softmax along axis 1 of a [R, W] tile; invalid entries -> 0 (rows of them: all 0)."""
    m = tl.max(tl.where(valid, x, float("-inf")), 1)
    m = tl.where(m == float("-inf"), 0.0, m)
    ex = tl.where(valid, tl.exp(tl.where(valid, x, 0.0) - m[:, None]), 0.0)
    den = tl.sum(ex, 1)
    return ex / tl.where(den > 0.0, den, 1.0)[:, None]


@triton.jit
def _map_rows(C, BLOCK_R: tl.constexpr, BLOCK_C: tl.constexpr):
    """A map program's rows of the [B, C, C] maps (grid: row tiles, batch): ``(pid_b,
    offs_r, cols, mr, mc, valid, prow)``, its rows, all columns, their masks, the tile's
    mask and its element offsets."""
    pid_b = tl.program_id(1).to(tl.int64)
    offs_r, mr = span(tl.program_id(0) * BLOCK_R, BLOCK_R, C)
    cols = tl.arange(0, BLOCK_C)
    mc = cols < C
    prow = pid_b * C * C + offs_r[:, None] * C + cols[None, :]
    return pid_b, offs_r, cols, mr, mc, mr[:, None] & mc[None, :], prow


@triton.jit
def _k_tile(A, B, base, offs_r, cols, mr, mc, k0, C, scale, BLOCK_K: tl.constexpr):
    """For ``matmul``: the k tile ``k0`` of the program's rows of ``s A`` ([R, BLOCK_K]),
    the softmax rows ``Sg`` of ``s B`` for those k ([BLOCK_K, W]), and the mask of the
    first (Sz's rows come from their log-sum-exp or max, Sg is recomputed per k tile:
    C x C work per program, small next to the Grams' C x C x N)."""
    kk, mk = span(k0, BLOCK_K, C)
    vk = mk[:, None] & mc[None, :]
    sg = _row_softmax(tl.load(B + base + kk[:, None] * C + cols[None, :], mask=vk, other=0.0)
                      * scale, vk)
    vak = mr[:, None] & mk[None, :]
    ak = tl.load(A + base + offs_r[:, None] * C + kk[None, :], mask=vak, other=0.0) * scale
    return ak, sg, vak


@triton.autotune(configs=MAP_CONFIGS, key=["C", "MATMUL", "MAXMINUS"])
@triton.jit
def _map_kernel(A, B, E, LR, CR, C, scale,
                BLOCK_C: tl.constexpr, MATMUL: tl.constexpr, MAXMINUS: tl.constexpr,
                PREC: tl.constexpr, BLOCK_R: tl.constexpr, BLOCK_K: tl.constexpr):
    """The three softmaxes for a tile of rows: LR = C + rowsum(expm1(M)), and
    E = expm1(M) - CR centred by its row mean CR (float32 [B, C]).

    A, B, E: float32 [B, C, C]; LR, CR: float32 [B, C]; scale multiplies A and B.
    The centring keeps the variation of E along a row, which is what the modulation
    o - mean(y) is made of, at full relative precision when E is rounded to the input
    dtype for the value MMA (rows of Sz @ Sg sum to 1, so M can be ~1/C everywhere).
    """
    pid_b, offs_r, cols, mr, mc, valid, prow = _map_rows(C, BLOCK_R, BLOCK_C)
    base = pid_b * C * C
    a = tl.load(A + prow, mask=valid, other=0.0) * scale
    if MATMUL:
        # Sz rows come back tile by tile from their log-sum-exp (``_k_tile``)
        am = tl.max(tl.where(valid, a, float("-inf")), 1)
        am = tl.where(mr, am, 0.0)
        asum = tl.sum(tl.where(valid, tl.exp(a - am[:, None]), 0.0), 1)
        lse_a = am + tl.log(asum + tl.where(mr, 0.0, 1.0))
        m = tl.zeros([BLOCK_R, BLOCK_C], tl.float32)
        for k0 in range(0, C, BLOCK_K):
            ak, sg, vak = _k_tile(A, B, base, offs_r, cols, mr, mc, k0, C, scale, BLOCK_K)
            sz = tl.where(vak, tl.exp(ak - lse_a[:, None]), 0.0)
            m = tl.dot(sz, sg, m, input_precision=PREC)
    else:
        b = tl.load(B + prow, mask=valid, other=0.0) * scale
        m = _row_softmax(a, valid) * _row_softmax(b, valid)
    if MAXMINUS:
        mmax = tl.max(tl.where(valid, m, float("-inf")), 1)
        m = mmax[:, None] - m
    m = tl.where(valid, m, 0.0)
    e = expm1_unit(m)
    esum = tl.sum(e, 1)
    cr = esum / C
    tl.store(E + prow, tl.where(valid, e - cr[:, None], 0.0), mask=valid)
    tl.store(LR + pid_b * C + offs_r, C + esum, mask=mr)
    tl.store(CR + pid_b * C + offs_r, cr, mask=mr)


@triton.autotune(configs=APPLY_CONFIGS,
                 key=["C", "N", "SYM1", "TWO", "COLSUM", "DIV", "RW_C", "CW_C", "XS_L"])
@triton.jit
def _apply_kernel(W1, X1, W2, X2, LR, CR, OUT, C, N, sw1r, sw1k, sw2r, sw2k,
                  SYM1: tl.constexpr, TWO: tl.constexpr, COLSUM: tl.constexpr,
                  DIV: tl.constexpr, RW_C: tl.constexpr, CW_C: tl.constexpr,
                  XS_L: tl.constexpr, PREC: tl.constexpr, BLOCK_R: tl.constexpr,
                  BLOCK_N: tl.constexpr, BLOCK_K: tl.constexpr):
    """OUT[b] = W1' X1 + [W2 X2'] + [rw] [colsum_cw(last X)], [/ LR[b, r]], float32 [B, C, N].

    W1' = W1 + W1^T with SYM1, else W1; X2' = X2 / LR[b, k] with XS_L, else X2.
    colsum_cw(X)[n] = sum_k cw_k X[k, n] with cw = 1 + CR[b, k] (CW_C) or 1;
    rw = 1 + CR[b, r] (RW_C) or 1.  The column sum is over X2' with TWO, else over X1.
    W*: float32 [B, C, C] with strides (C*C, sw_r, sw_k) (a transpose is free);
    X*: [B, C, N] contiguous; each W is rounded to its X's dtype for the MMA.
    """
    pid_r = tl.program_id(0)
    pid_n = tl.program_id(1)
    pid_b = tl.program_id(2).to(tl.int64)
    xbase = pid_b * C * N
    wbase = pid_b * C * C
    vbase = pid_b * C
    offs_r = pid_r * BLOCK_R + tl.arange(0, BLOCK_R)
    offs_n = pid_n * BLOCK_N + tl.arange(0, BLOCK_N)
    mr = offs_r < C
    mn = offs_n < N
    acc = tl.zeros([BLOCK_R, BLOCK_N], tl.float32)
    csum = tl.zeros([BLOCK_N], tl.float32)
    for k0 in range(0, C, BLOCK_K):
        kk = k0 + tl.arange(0, BLOCK_K)
        mk = kk < C
        px = xbase + kk[:, None] * N + offs_n[None, :]
        mx = mk[:, None] & mn[None, :]
        mw = mr[:, None] & mk[None, :]
        x1 = tl.load(X1 + px, mask=mx, other=0.0)
        w1 = tl.load(W1 + wbase + offs_r[:, None] * sw1r + kk[None, :] * sw1k, mask=mw, other=0.0)
        if SYM1:
            w1 += tl.load(W1 + wbase + kk[None, :] * sw1r + offs_r[:, None] * sw1k, mask=mw,
                          other=0.0)
        acc = tl.dot(w1.to(x1.dtype), x1, acc, input_precision=PREC)
        if TWO:
            x2 = tl.load(X2 + px, mask=mx, other=0.0)
            if XS_L:
                lk = tl.load(LR + vbase + kk, mask=mk, other=1.0)
                x2 = (x2.to(tl.float32) / lk[:, None]).to(x2.dtype)
            w2 = tl.load(W2 + wbase + offs_r[:, None] * sw2r + kk[None, :] * sw2k, mask=mw,
                         other=0.0)
            acc = tl.dot(w2.to(x2.dtype), x2, acc, input_precision=PREC)
            xc = x2.to(tl.float32)
        else:
            xc = x1.to(tl.float32)
        if COLSUM:
            if CW_C:
                xc = xc * (1.0 + tl.load(CR + vbase + kk, mask=mk, other=0.0))[:, None]
            csum += tl.sum(xc, 0)
    if RW_C:
        rw = 1.0 + tl.load(CR + vbase + offs_r, mask=mr, other=0.0)
        out = acc + rw[:, None] * csum[None, :]
    else:
        out = acc + csum[None, :]
    if DIV:
        out = out / tl.load(LR + vbase + offs_r, mask=mr, other=1.0)[:, None]
    tl.store(OUT + xbase + offs_r[:, None] * N + offs_n[None, :], out,
             mask=mr[:, None] & mn[None, :])


@triton.jit
def _softmax_bwd_rows(s, ds, valid):
    """s * (ds - rowsum(s * ds)) on a [R, W] tile, 0 where not valid."""
    ds = tl.where(valid, ds, 0.0)
    return tl.where(valid, s * (ds - tl.sum(s * ds, 1)[:, None]), 0.0)


@triton.autotune(configs=MAP_CONFIGS, key=["C", "MATMUL", "MAXMINUS"])
@triton.jit
def _map_bwd_kernel(A, B, EC, LR, CR, DQ, DA, DB, DM0, SZ, SG, C, scale,
                    BLOCK_C: tl.constexpr, MATMUL: tl.constexpr, MAXMINUS: tl.constexpr,
                    PREC: tl.constexpr, BLOCK_R: tl.constexpr, BLOCK_K: tl.constexpr):
    """Backward of the three softmaxes for a tile of rows, from DQ = dL/dQ.

    "product": writes DA, DB (float32 [B, C, C], already times scale).
    "matmul":  writes DM0 = dL/d(Sz @ Sg) and the rows of SZ, SG; the two C x C x C
    products and the last softmax backward follow (``_softmax_bwd_kernel``).
    """
    pid_b, offs_r, cols, mr, mc, valid, prow = _map_rows(C, BLOCK_R, BLOCK_C)
    base = pid_b * C * C
    sz = _row_softmax(tl.load(A + prow, mask=valid, other=0.0) * scale, valid)
    sg = _row_softmax(tl.load(B + prow, mask=valid, other=0.0) * scale, valid)
    # Q = (1 + E) / L, E = (E - c) + c;  dM = Q (dQ - rowsum(Q dQ))
    cr = tl.load(CR + pid_b * C + offs_r, mask=mr, other=0.0)
    lr = tl.load(LR + pid_b * C + offs_r, mask=mr, other=1.0)
    ec = tl.load(EC + prow, mask=valid, other=0.0)
    q = tl.where(valid, (1.0 + ec + cr[:, None]) / lr[:, None], 0.0)
    dm = _softmax_bwd_rows(q, tl.load(DQ + prow, mask=valid, other=0.0), valid)
    if MAXMINUS:
        if MATMUL:
            # Sz[r, k] tile by tile from the full-row max and denominator
            a_row = tl.where(valid, tl.load(A + prow, mask=valid, other=0.0) * scale, float("-inf"))
            am = tl.where(mr, tl.max(a_row, 1), 0.0)
            den = tl.sum(tl.where(valid, tl.exp(a_row - am[:, None]), 0.0), 1)
            den = tl.where(den > 0.0, den, 1.0)
            m0 = tl.zeros([BLOCK_R, BLOCK_C], tl.float32)
            for k0 in range(0, C, BLOCK_K):
                ak, sgk, vak = _k_tile(A, B, base, offs_r, cols, mr, mc, k0, C, scale, BLOCK_K)
                szk = tl.where(vak, tl.exp(ak - am[:, None]) / den[:, None], 0.0)
                m0 = tl.dot(szk, sgk, m0, input_precision=PREC)
        else:
            m0 = sz * sg
        mx = tl.max(tl.where(valid, m0, float("-inf")), 1)
        ties = tl.where(valid & (m0 == mx[:, None]), 1.0, 0.0)
        dm = -dm + ties * (tl.sum(dm, 1) / tl.maximum(tl.sum(ties, 1), 1.0))[:, None]
    if MATMUL:
        tl.store(DM0 + prow, dm, mask=valid)
        tl.store(SZ + prow, sz, mask=valid)
        tl.store(SG + prow, sg, mask=valid)
    else:
        tl.store(DA + prow, _softmax_bwd_rows(sz, dm * sg, valid) * scale, mask=valid)
        tl.store(DB + prow, _softmax_bwd_rows(sg, dm * sz, valid) * scale, mask=valid)


@triton.autotune(configs=MAP_CONFIGS, key=["C"])
@triton.jit
def _softmax_bwd_kernel(S1, D1, S2, D2, O1, O2, C, scale, BLOCK_C: tl.constexpr,
                        BLOCK_R: tl.constexpr, BLOCK_K: tl.constexpr):
    """O1 = scale * S1 (D1 - rowsum(S1 D1)), O2 likewise; all float32 [B, C, C]."""
    _, _, _, _, _, valid, prow = _map_rows(C, BLOCK_R, BLOCK_C)
    s1 = tl.load(S1 + prow, mask=valid, other=0.0)
    s2 = tl.load(S2 + prow, mask=valid, other=0.0)
    d1 = tl.load(D1 + prow, mask=valid, other=0.0)
    d2 = tl.load(D2 + prow, mask=valid, other=0.0)
    tl.store(O1 + prow, _softmax_bwd_rows(s1, d1, valid) * scale, mask=valid)
    tl.store(O2 + prow, _softmax_bwd_rows(s2, d2, valid) * scale, mask=valid)


# ------------------------------------------------------------------- launch + torch ops
def _gram(x1, y1, x2=None, y2=None):
    batch, c, n = y1.shape
    out1 = torch.empty(batch, c, c, device=y1.device, dtype=torch.float32)
    two = x2 is not None
    out2 = torch.empty_like(out1) if two else out1
    _gram_kernel[lambda m: (triton.cdiv(c, m["BLOCK_R"]), triton.cdiv(c, m["BLOCK_S"]), batch)](
        x1, y1, x2 if two else x1, y2 if two else y1, out1, out2, c, n,
        TWO=two, PREC=dot_precision())
    return (out1, out2) if two else out1


def _apply(w1, x1, *, sym1=False, w2=None, x2=None, lrow=None, crow=None, div=False,
           colsum=False, rw_c=False, cw_c=False, xs_l=False):
    """Launch ``_apply_kernel`` (see its docstring for the flags)."""
    batch, c, n = x1.shape
    out = torch.empty(batch, c, n, device=x1.device, dtype=torch.float32)
    two = w2 is not None
    w2_, x2_ = (w2, x2) if two else (w1, x1)
    _apply_kernel[lambda m: (triton.cdiv(c, m["BLOCK_R"]), triton.cdiv(n, m["BLOCK_N"]), batch)](
        w1, x1, w2_, x2_, lrow if lrow is not None else out, crow if crow is not None else out,
        out, c, n, w1.stride(1), w1.stride(2), w2_.stride(1), w2_.stride(2),
        SYM1=sym1, TWO=two, COLSUM=colsum, DIV=div, RW_C=rw_c, CW_C=cw_c, XS_L=xs_l,
        PREC=dot_precision())
    return out


def _fwd_impl(y, g, combine, stabilize, scale):
    y, g = y.contiguous(), g.contiguous()
    batch, c, _ = y.shape
    a, b = _gram(y, y, g, g)
    e = torch.empty_like(a)
    lrow = torch.empty(batch, c, device=y.device, dtype=torch.float32)
    crow = torch.empty_like(lrow)
    _map_kernel[lambda m: (triton.cdiv(c, m["BLOCK_R"]), batch)](
        a, b, e, lrow, crow, c, 1.0 if scale is None else float(scale),
        BLOCK_C=block(c), MATMUL=combine == "matmul", MAXMINUS=stabilize == "max-minus",
        PREC=dot_precision())
    # out = ((1 + c_r) colsum(y) + (E - c_r) y) / L
    out = _apply(e, y, lrow=lrow, crow=crow, div=True, colsum=True, rw_c=True)
    return out, a, b, e, lrow, crow


@torch.library.custom_op("ggnet_fast::triton_channel_fwd", mutates_args=())
def channel_fwd(y: torch.Tensor, g: torch.Tensor, combine: str, stabilize: str | None,
                scale: float | None) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor,
                                              torch.Tensor, torch.Tensor, torch.Tensor]:
    """Forward: ``(out float32 [B,C,N], A, B, E - c float32 [B,C,C], L, c float32 [B,C])``."""
    with torch.autocast(y.device.type, enabled=False):
        return _fwd_impl(y, g, combine, stabilize, scale)


@channel_fwd.register_fake
def _(y, g, combine, stabilize, scale):
    batch, c, n = y.shape
    cc = y.new_empty(batch, c, c, dtype=torch.float32)
    return (y.new_empty(batch, c, n, dtype=torch.float32), cc, torch.empty_like(cc),
            torch.empty_like(cc), y.new_empty(batch, c, dtype=torch.float32),
            y.new_empty(batch, c, dtype=torch.float32))


def _bwd_impl(dout, y, g, a, b, ec, lrow, crow, combine, stabilize, scale):
    y, g = y.contiguous(), g.contiguous()
    dout = dout.to(torch.float32).contiguous()
    batch, c, _ = y.shape
    s = 1.0 if scale is None else float(scale)
    matmul = combine == "matmul"
    dq = _gram(dout, y)                                   # dQ = dout y^T
    da, db = torch.empty_like(a), torch.empty_like(a)
    scratch = [torch.empty_like(a) for _ in range(3)] if matmul else [a, a, a]
    grid = lambda m: (triton.cdiv(c, m["BLOCK_R"]), batch)  # noqa: E731
    _map_bwd_kernel[grid](a, b, ec, lrow, crow, dq, da, db, *scratch, c, s,
                          BLOCK_C=block(c), MATMUL=matmul, MAXMINUS=stabilize == "max-minus",
                          PREC=dot_precision())
    if matmul:  # M0 = Sz @ Sg: the two C x C x C products as batched matmuls
        dm0, sz, sg = scratch
        dsz = torch.bmm(dm0, sg.transpose(1, 2))
        dsg = torch.bmm(sz.transpose(1, 2), dm0)
        _softmax_bwd_kernel[grid](sz, dsz, sg, dsg, da, db, c, s, BLOCK_C=block(c))
    # dy = (dA + dA^T) y + Q^T dout,  Q^T dout = colsum((1 + c) dout / L) + (E - c)^T (dout / L)
    dy = _apply(da, y, sym1=True, w2=ec.transpose(1, 2), x2=dout, lrow=lrow, crow=crow,
                xs_l=True, colsum=True, cw_c=True)
    dg = _apply(db, g, sym1=True)
    return dy.to(y.dtype), dg.to(g.dtype)


@torch.library.custom_op("ggnet_fast::triton_channel_bwd", mutates_args=())
def channel_bwd(dout: torch.Tensor, y: torch.Tensor, g: torch.Tensor, a: torch.Tensor,
                b: torch.Tensor, ec: torch.Tensor, lrow: torch.Tensor, crow: torch.Tensor,
                combine: str, stabilize: str | None,
                scale: float | None) -> tuple[torch.Tensor, torch.Tensor]:
    """Backward: gradients of y and g in their dtype."""
    with torch.autocast(y.device.type, enabled=False):
        return _bwd_impl(dout, y, g, a, b, ec, lrow, crow, combine, stabilize, scale)


@channel_bwd.register_fake
def _(dout, y, g, a, b, ec, lrow, crow, combine, stabilize, scale):
    return (torch.empty_like(y, memory_format=torch.contiguous_format),
            torch.empty_like(g, memory_format=torch.contiguous_format))


def _setup_context(ctx, inputs, output):
    y, g, combine, stabilize, scale = inputs
    _, a, b, ec, lrow, crow = output
    ctx.save_for_backward(y, g, a, b, ec, lrow, crow)
    ctx.options = (combine, stabilize, scale)


def _backward(ctx, dout, *_unused):
    dy, dg = channel_bwd(dout, *ctx.saved_tensors, *ctx.options)
    return dy, dg, None, None, None


channel_fwd.register_autograd(_backward, setup_context=_setup_context)


def channel(y, g, *, combine: str, stabilize, scale, out_dtype: torch.dtype) -> torch.Tensor:
    """[B,C,N], [B,C,N] -> Q @ y [B,C,N] in ``out_dtype``."""
    out = channel_fwd(y, g, combine, stabilize, scale)[0]
    return out.to(out_dtype)
