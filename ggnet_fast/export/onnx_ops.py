"""ONNX translations of the fused ``ggnet_fast`` operators (and an accurate ``expm1``).

Each function below is an onnxscript *translation*: ``torch.onnx.export(...,
dynamo=True, custom_translation_table=translation_table())`` calls it once per node of
the exported program with the node's inputs (ONNX values) and its non-tensor arguments
(Python values: ``combine``, ``stabilize``, ``scale``), and it emits standard ONNX ops
(opset 18: MatMul, Transpose, Reduce*, Exp, Log, Sinh, ...).  The result runs in stock
onnxruntime (or any ONNX runtime) without ``ggnet_fast``: nothing is left in a custom
domain.  The price is memory: the decomposition materialises the N x N score maps the
fused kernels stream over (``docs/export.md`` has measurements).

Numerics follow ``docs/kernels.md``:

* every softmax and row log-sum-exp subtracts the row maximum first (no overflow for any
  finite input);
* the product form is ``p_ij = exp((a_ij - lse_a_i) + (b_ij - lse_b_i))`` and the outer
  softmax is taken in the expm1 form ``o_i = (sum_j mu_j + sum_j e_ij mu_j) / L_i`` with
  ``e = expm1(p)``, ``L_i = N + sum_j e_ij``; the channel operator likewise with C;
* ONNX has no ``Expm1``: ``expm1(x) = 2 sinh(x/2) exp(x/2)``, which keeps full relative
  precision for small ``x`` (measured in onnxruntime on [1e-12, 1]: at most 2e-7 relative
  in float32, where ``Exp(x) - 1`` loses all of it at x < 6e-8);
* float16/bfloat16/float32 inputs are computed in float32, float64 in float64; the
  result is in that accumulation dtype like the extension's operators (the module casts
  it to its ``out_dtype`` afterwards, which the exporter translates as a Cast).

Translated: ``ggnet_fast::spatial`` / ``spatial_fwd`` (combine="product"),
``ggnet_fast::joint`` / ``joint_fwd`` (combine="joint"), ``ggnet_fast::channel`` /
``channel_fwd`` (combine "product"/"matmul", stabilize None/"max-minus", any scale) and
``aten::expm1`` (torchlib writes it as ``Exp(x) - 1``, which would cost the
``reference`` backend's expm1 form its accuracy).  The ``*_fwd`` forms are what the
exporter sees after its decompositions; they also return the statistics the backward
would use (``lse_a, lse_b, L`` / ``lse`` / ``Sz, Sg, M``), which the ONNX optimiser
drops when nothing reads them.  The Triton operators (``ggnet_fast::triton_*``, CUDA
only) and the backward operators are not translated: :mod:`ggnet_fast.export.api`
refuses a graph holding them, naming the operator.
"""
from __future__ import annotations

import torch
from onnxscript import ir
from onnxscript import opset18 as op

#: The opset the translations are written in (torchlib's, the exporter's default).
OPSET = 18

_CHANNEL_COMBINE = ("product", "matmul")
_CHANNEL_STABILIZE = (None, "max-minus")


# -- helpers ---------------------------------------------------------------------------


def _acc(x):
    """``x`` in the accumulation dtype: float64 stays float64, the rest become float32."""
    if getattr(x, "dtype", None) in (ir.DataType.DOUBLE, ir.DataType.FLOAT):
        return x
    return op.Cast(x, to=ir.DataType.FLOAT)


def _scalar(value: float, like):
    """A scalar constant of ``like``'s dtype."""
    return op.CastLike(op.Constant(value_float=float(value)), like)


def _last_axis():
    return op.Constant(value_ints=[-1])


def _transpose_last(x):
    """``[B, R, K] -> [B, K, R]``."""
    return op.Transpose(x, perm=[0, 2, 1])


def _row_max(s):
    return op.ReduceMax(s, _last_axis(), keepdims=1)


def _row_sum(s):
    return op.ReduceSum(s, _last_axis(), keepdims=1)


def _row_lse(s):
    """Row log-sum-exp ``[B, R, K] -> [B, R, 1]``, max-stabilised."""
    m = _row_max(s)
    return op.Add(m, op.Log(_row_sum(op.Exp(op.Sub(s, m)))))


def _softmax(s):
    """Row softmax, max-stabilised (the explicit form, independent of the runtime's Softmax)."""
    e = op.Exp(op.Sub(s, _row_max(s)))
    return op.Div(e, _row_sum(e))


def _expm1(x):
    """``exp(x) - 1`` at full relative precision near 0: ``2 sinh(x/2) exp(x/2)``."""
    half = op.Mul(x, _scalar(0.5, x))
    return op.Mul(op.Mul(op.Sinh(half), op.Exp(half)), _scalar(2.0, x))


def _size(x, axis: int, like):
    """``x.shape[axis]`` as a 1-element tensor of ``like``'s dtype (dynamic shapes)."""
    return op.CastLike(op.Shape(x, start=axis, end=axis + 1), like)


def _uniform_plus_expm1(logits, values):
    """``softmax(logits, -1) @ values`` for logits in [0, 1], in the expm1 form.

    logits ``[B, R, K]``, values ``[B, K, V]`` -> ``([B, R, V], L [B, R, 1])`` with
    ``L = K + sum_k expm1(logits)``."""
    e = _expm1(logits)
    denom = op.Add(_size(logits, 2, logits), _row_sum(e))
    total = op.ReduceSum(values, op.Constant(value_ints=[1]), keepdims=1)  # [B, 1, V]
    return op.Div(op.Add(total, op.MatMul(e, values)), denom), denom


# -- spatial, combine="product" ---------------------------------------------------------


def _spatial(theta, phi, eta, rho, mu):
    t, p, e, r, m = (_acc(x) for x in (theta, phi, eta, rho, mu))
    a = op.MatMul(t, _transpose_last(p))                      # [B, N, N]
    b = op.MatMul(e, _transpose_last(r))
    lse_a, lse_b = _row_lse(a), _row_lse(b)                   # [B, N, 1]
    pmat = op.Exp(op.Add(op.Sub(a, lse_a), op.Sub(b, lse_b)))  # Sx * Sg in [0, 1]
    o, denom = _uniform_plus_expm1(pmat, m)
    return o, lse_a, lse_b, denom


def spatial(theta, phi, eta, rho, mu):
    """``ggnet_fast::spatial``: ``o [B, N, C]`` (accumulation dtype)."""
    return _spatial(theta, phi, eta, rho, mu)[0]


def spatial_fwd(theta, phi, eta, rho, mu):
    """``ggnet_fast::spatial_fwd``: ``(o, stats [B, 3, N] = (lse_a, lse_b, L))``."""
    o, lse_a, lse_b, denom = _spatial(theta, phi, eta, rho, mu)
    stats = _transpose_last(op.Concat(lse_a, lse_b, denom, axis=2))
    return o, stats


# -- spatial, combine="joint" -----------------------------------------------------------


def _joint(theta, phi, eta, rho, mu):
    # ordinary attention with queries [theta, eta], keys [phi, rho], scale 1:
    # one score product of width d + dg instead of two N x N products and their sum
    q = op.Concat(_acc(theta), _acc(eta), axis=2)
    k = op.Concat(_acc(phi), _acc(rho), axis=2)
    s = op.MatMul(q, _transpose_last(k))                      # a + b, [B, N, N]
    smax = _row_max(s)
    w = op.Exp(op.Sub(s, smax))                               # unnormalised, max 1 per row
    total = _row_sum(w)
    o = op.Div(op.MatMul(w, _acc(mu)), total)                 # normalise after the product
    return o, op.Add(smax, op.Log(total))


def joint(theta, phi, eta, rho, mu):
    """``ggnet_fast::joint``: ``o = softmax_j(a + b) @ mu``, ``[B, N, C]``."""
    return _joint(theta, phi, eta, rho, mu)[0]


def joint_fwd(theta, phi, eta, rho, mu):
    """``ggnet_fast::joint_fwd``: ``(o, lse [B, N])``."""
    o, lse = _joint(theta, phi, eta, rho, mu)
    return o, op.Squeeze(lse, _last_axis())


# -- channel ----------------------------------------------------------------------------


def _check_channel(combine, stabilize, scale) -> None:
    if combine not in _CHANNEL_COMBINE:
        raise ValueError(f"ggnet_fast::channel: combine must be one of {list(_CHANNEL_COMBINE)}, "
                         f"got {combine!r}")
    if stabilize not in _CHANNEL_STABILIZE:
        raise ValueError(f"ggnet_fast::channel: stabilize must be one of "
                         f"{list(_CHANNEL_STABILIZE)}, got {stabilize!r}")
    if scale is not None and not float(scale) > 0:
        raise ValueError(f"ggnet_fast::channel: scale must be > 0 or None, got {scale!r}")


def _channel(y, g, combine, stabilize, scale):
    _check_channel(combine, stabilize, scale)
    yc, gc = _acc(y), _acc(g)
    a = op.MatMul(yc, _transpose_last(yc))                    # [B, C, C]
    b = op.MatMul(gc, _transpose_last(gc))
    if scale is not None:
        a = op.Mul(a, _scalar(scale, a))
        b = op.Mul(b, _scalar(scale, b))
    sz, sg = _softmax(a), _softmax(b)
    m = op.Mul(sz, sg) if combine == "product" else op.MatMul(sz, sg)
    logits = op.Sub(_row_max(m), m) if stabilize == "max-minus" else m
    out, _ = _uniform_plus_expm1(logits, yc)
    return out, sz, sg, m


def channel(y, g, combine: str, stabilize: str = None, scale: float = None):  # noqa: RUF013
    """``ggnet_fast::channel``: ``Q @ y``, ``[B, C, N]``.

    (``str = None`` rather than ``str | None``: the exporter reads the annotation to
    tell attributes from tensor inputs, and takes ``Optional[...]`` for a tensor.)"""
    return _channel(y, g, combine, stabilize, scale)[0]


def channel_fwd(y, g, combine: str, stabilize: str = None, scale: float = None):  # noqa: RUF013
    """``ggnet_fast::channel_fwd``: ``(out, Sz, Sg, M)``."""
    return _channel(y, g, combine, stabilize, scale)


# -- aten -------------------------------------------------------------------------------


def expm1(x):
    """``aten::expm1`` at full relative precision (torchlib's is ``Exp(x) - 1``)."""
    return _expm1(x)


def translation_table() -> dict:
    """``{torch op overload: onnxscript translation}`` for ``torch.onnx.export(...,
    dynamo=True, custom_translation_table=...)``.  Loads the compiled extension to name
    its operators; without it only ``aten::expm1`` is listed."""
    from ..backends import extension

    table = {torch.ops.aten.expm1.default: expm1}
    if extension.load() is not None:
        ops = torch.ops.ggnet_fast
        table.update({
            ops.spatial.default: spatial, ops.spatial_fwd.default: spatial_fwd,
            ops.joint.default: joint, ops.joint_fwd.default: joint_fwd,
            ops.channel.default: channel, ops.channel_fwd.default: channel_fwd,
        })
    return table


#: ``ggnet_fast::<name>`` operators that have a translation (the table's keys).
TRANSLATED = ("spatial", "spatial_fwd", "joint", "joint_fwd", "channel", "channel_fwd")
