"""``@triton.jit`` helpers shared by the Triton kernels: the accurate ``expm1``, the 16-bit
scales (``W_SCALE``, ``row_scaled``), and the tile loads, stores and streamed key/query
tiles every spatial kernel is made of.

All are inlined into their callers at compile time (no launch, no call overhead).
"""
from __future__ import annotations

import triton
import triton.language as tl

#: Power-of-two factor applied to the spatial weights e = expm1(p) <= e - 1 and
#: w = p exp(p) <= e before their 16-bit rounding (undone on the float32 accumulators).
#: p ~ 1/N^2 at N = 4096 is 6e-8, below float16's smallest normal (6.1e-5); times 2^14
#: every p >= 2^-28 stays normal and the largest weight (2.72 * 2^14) stays below the
#: float16 maximum 65504.  Exact and free for bfloat16/float32 (folded into constants).
W_SCALE = tl.constexpr(16384.0)


# ---------------------------------------------------------------------------- expm1
@triton.jit
def expm1_unit(x):
    """``exp(x) - 1`` for ``x`` in [0, 1] with full relative precision, no exponential.

    Taylor polynomial of degree 10 in Horner form: the truncation error is below
    ``x**11 / 11! * e < 7e-8`` (relative to ``expm1(x) >= x`` it is < 7e-8 at x = 1 and
    smaller for smaller x), and Horner keeps the relative rounding error at a few ulps
    for tiny x, where ``exp(x) - 1`` would lose every digit.  Costs 10 FMAs and no
    MUFU instruction (the exponential units are the scarce resource at small d).
    """
    return expm1_unit_scaled(x, 1.0, False)


@triton.jit
def expm1_unit_scaled(x, scale: tl.constexpr, SHORT: tl.constexpr):
    """``scale * expm1(x)`` for x in [0, 1]: ``expm1_unit`` with every coefficient
    multiplied by the compile-time ``scale`` (no extra instruction).  ``SHORT``: degree 7
    (7 FMAs), for weights rounded to 16 bits or TF32 right after: truncation below
    ``x^8 / 8! * e / (e - 1) < 4e-5`` relative at x = 1 (far smaller for the typical
    p ~ 1/N^2), under their 2^-11 rounding."""
    if SHORT:
        r = scale * (1.0 / 5040.0)
    else:
        r = scale * (1.0 / 3628800.0)
        r = scale * (1.0 / 362880.0) + x * r
        r = scale * (1.0 / 40320.0) + x * r
        r = scale * (1.0 / 5040.0) + x * r
    r = scale * (1.0 / 720.0) + x * r
    r = scale * (1.0 / 120.0) + x * r
    r = scale * (1.0 / 24.0) + x * r
    r = scale * (1.0 / 6.0) + x * r
    r = scale * 0.5 + x * r
    r = scale + x * r
    return x * r


# ------------------------------------------------------------------- row scaling (fp16)
@triton.jit
def row_scaled(w, acc, sc):
    """Per-row power-of-two scaling of a float16 MMA operand ``w`` [R, K] whose rows are
    the accumulator ``acc``'s rows: returns ``(w * new, acc * new / sc, new)`` with
    ``new = min(sc, 2^floor(log2(2^14 / rowmax|w|)))``, non-increasing along the loop,
    so the ratio is <= 1 and exact.  Rows of ``w * new`` stay below 2^15 < 65504 and
    their large entries normal; the caller divides its accumulator by the last scale.
    Start from ``sc = 2^64`` (all-zero rows keep it: ``row_scale_start``)."""
    m = tl.maximum(tl.max(tl.abs(w), 1), 5.421010862427522e-20)  # 2^-64
    new = tl.minimum(sc, tl.exp2(tl.floor(tl.log2(16384.0 / m))))
    return w * new[:, None], acc * (new / sc)[:, None], new


@triton.jit
def row_scale_start(ROWS: tl.constexpr):
    """The scale ``row_scaled`` starts from: 2^64 for each of ``ROWS`` rows."""
    return tl.full([ROWS], 18446744073709551616.0, tl.float32)


@triton.jit
def scaled_dot(dz, x, acc, sc, ROW_SCALE: tl.constexpr, PREC: tl.constexpr):
    """``(acc + dz @ x, sc)`` with ``dz`` rounded to ``x``'s dtype for the MMA; with
    ``ROW_SCALE`` (float16) the rows of ``dz`` are first scaled by ``row_scaled`` (and
    ``acc``, ``sc`` follow: divide the final ``acc`` by ``sc``, ``unscaled``)."""
    if ROW_SCALE:
        dz, acc, sc = row_scaled(dz, acc, sc)
    return tl.dot(dz.to(x.dtype), x, acc, input_precision=PREC), sc


@triton.jit
def unscaled(acc, sc, ROW_SCALE: tl.constexpr):
    """The accumulator of ``scaled_dot`` calls without their row scales."""
    if ROW_SCALE:
        acc = acc / sc[:, None]
    return acc


# --------------------------------------------------------------------- tiles in memory
@triton.jit
def span(start, BLOCK: tl.constexpr, N):
    """``(offs, offs < N)`` for the ``BLOCK`` indices from ``start``."""
    offs = start + tl.arange(0, BLOCK)
    return offs, offs < N


@triton.jit
def load_tile(ptr, rows, row_mask, cols, n_cols, stride):
    """The tile ``ptr[rows, cols]`` of a row-major matrix with ``stride`` elements per row,
    zero outside ``row_mask`` and at columns ``>= n_cols``: [len(rows), len(cols)]."""
    return tl.load(ptr + rows[:, None] * stride + cols[None, :],
                   mask=row_mask[:, None] & (cols[None, :] < n_cols), other=0.0)


@triton.jit
def store_tile(ptr, rows, row_mask, cols, n_cols, stride, x):
    """``ptr[rows, cols] = x`` (cast to ``ptr``'s element type) inside ``row_mask`` and
    columns ``< n_cols``: the counterpart of ``load_tile``."""
    tl.store(ptr + rows[:, None] * stride + cols[None, :], x.to(ptr.dtype.element_ty),
             mask=row_mask[:, None] & (cols[None, :] < n_cols))


@triton.jit
def row_program(N, C, DT, BLOCK: tl.constexpr):
    """A program of a (row tiles, batch) grid over the row-major [B, N, DT] and [B, N, C]
    inputs: ``(pid_b, base, vbase, offs, mask)``, its batch element, that element's
    offset in each input, its ``BLOCK`` rows and their mask."""
    pid_b = tl.program_id(1).to(tl.int64)
    offs, mask = span(tl.program_id(0) * BLOCK, BLOCK, N)
    return pid_b, pid_b * N * DT, pid_b * N * C, offs, mask


@triton.jit
def fwd_tile(Q, N, C, DT, BLOCK_M: tl.constexpr, BLOCK_K: tl.constexpr,
             BLOCK_C: tl.constexpr):
    """A forward program's work (grid: row tiles, C chunks, batch): ``(pid_b, offs_m,
    offs_c, rm, cc, q)`` with its rows and row mask, its C chunk and column mask, and its
    query tile of the row-major [B, N, DT] ``Q`` ([BLOCK_M, BLOCK_K])."""
    pid_b = tl.program_id(2).to(tl.int64)
    offs_m, rm = span(tl.program_id(0) * BLOCK_M, BLOCK_M, N)
    offs_c, cc = span(tl.program_id(1) * BLOCK_C, BLOCK_C, C)
    q = load_tile(Q + pid_b * N * DT, offs_m, rm, tl.arange(0, BLOCK_K), DT, DT)
    return pid_b, offs_m, offs_c, rm, cc, q


@triton.jit
def load_rows(X, V, rows, row_mask, offs_k, offs_c, DT, C):
    """Rows ``rows`` of ``X`` ([N, DT]) and ``V`` ([N, C]), both row-major: the tiles
    [len(rows), len(offs_k)] and [len(rows), len(offs_c)]."""
    return load_tile(X, rows, row_mask, offs_k, DT, DT), load_tile(V, rows, row_mask, offs_c, C, C)


@triton.jit
def stream_tile(X, V, a, start, offs_k, offs_c, N, C, DT, BLOCK: tl.constexpr,
                PREC: tl.constexpr):
    """One step of a loop over the other side's rows (keys for a query tile, queries for
    a key tile): ``(offs, mask, x, v, s)``, the ``BLOCK`` rows from ``start``, their mask,
    their rows ``x``, ``v`` of ``X``, ``V`` (``load_rows``), and the scores ``s = a x^T``
    of the program's own rows ``a``."""
    offs, mask = span(start, BLOCK, N)
    x, v = load_rows(X, V, offs, mask, offs_k, offs_c, DT, C)
    return offs, mask, x, v, tl.dot(a, tl.trans(x), input_precision=PREC)
