"""An independent float64 NumPy implementation of both operators, with the
analytical backward of ``docs/kernels.md`` written out by hand.

It shares no code with ``ggnet_fast`` (no torch, no autograd), so agreeing with it
checks both the library's forward and the gradient formulas the fused kernels use.
All functions work on one batch element; arrays are float64.
"""
from __future__ import annotations

import numpy as np


def softmax(x: np.ndarray) -> np.ndarray:
    z = np.exp(x - x.max(axis=-1, keepdims=True))
    return z / z.sum(axis=-1, keepdims=True)


def softmax_backward(s: np.ndarray, ds: np.ndarray) -> np.ndarray:
    """d(logits) for s = softmax(logits) along the last axis."""
    return s * (ds - (s * ds).sum(axis=-1, keepdims=True))


def spatial_forward_backward(theta, phi, eta, rho, mu, dout, combine="product"):
    """Returns (o [N,C], grads dict) for one batch element."""
    a, b = theta @ phi.T, eta @ rho.T
    if combine == "joint":  # W = softmax(a + b), o = W mu
        w = softmax(a + b)
        dz = softmax_backward(w, dout @ mu.T)
        return w @ mu, {"theta": dz @ phi, "phi": dz.T @ theta, "eta": dz @ rho,
                        "rho": dz.T @ eta, "mu": w.T @ dout}
    sx, sg = softmax(a), softmax(b)
    p = sx * sg if combine == "product" else sx @ sg
    s = softmax(p)
    o = s @ mu
    dmu = s.T @ dout
    ds = dout @ mu.T
    dp = softmax_backward(s, ds)
    if combine == "product":
        r = (p * dp).sum(axis=-1, keepdims=True)
        da = p * dp - sx * r
        db = p * dp - sg * r
    else:
        da = softmax_backward(sx, dp @ sg.T)
        db = softmax_backward(sg, sx.T @ dp)
    grads = {"theta": da @ phi, "phi": da.T @ theta, "eta": db @ rho, "rho": db.T @ eta, "mu": dmu}
    return o, grads


def channel_forward_backward(y, g, dout, combine="product", stabilize=None, scale=None):
    """y, g: [C, N]. Returns (out [C,N], {"y": dy, "g": dg})."""
    k = 1.0 if scale is None else scale
    a, b = k * (y @ y.T), k * (g @ g.T)
    sz, sg = softmax(a), softmax(b)
    m = sz * sg if combine == "product" else sz @ sg
    if stabilize == "max-minus":
        logits = m.max(axis=-1, keepdims=True) - m
    else:
        logits = m
    q = softmax(logits)
    out = q @ y
    dq = dout @ y.T
    dy = q.T @ dout
    dlogits = softmax_backward(q, dq)
    if stabilize == "max-minus":
        onehot = (m == m.max(axis=-1, keepdims=True)).astype(np.float64)
        dm = -dlogits + onehot * dlogits.sum(axis=-1, keepdims=True)
    else:
        dm = dlogits
    if combine == "product":
        dsz, dsg = dm * sg, dm * sz
    else:
        dsz, dsg = dm @ sg.T, sz.T @ dm
    da, db = softmax_backward(sz, dsz), softmax_backward(sg, dsg)
    dy = dy + k * (da + da.T) @ y
    dg = k * (db + db.T) @ g
    return out, {"y": dy, "g": dg}
