"""ONNX export (ggnet_fast/export, docs/export.md): the fused operators' translations, the
drop-in modules and GG-Net, run in onnxruntime and compared with PyTorch.

Tolerances: the operators' translations are held to the operator contract's float32
bounds against the float64 reference (docs/kernels.md, "Tolerances"), the expm1
translation to 4 ulp; whole modules and GG-Net to the rounding bound of
export_checks.py (derived from the model's reductions and output magnitude).
Shapes: exported with batch and spatial sizes dynamic, and run at a second shape.
"""
from __future__ import annotations

import json
import os
import subprocess
import sys

import numpy as np
import onnx
import pytest
import torch
from torch import nn

from contract import CHANNEL_MODES, agreeing_spatial_inputs, channel_inputs, tolerance
from export_checks import EPS32, float32_tolerance, rel_err
from ggnet_fast import guided_channel_attention, guided_spatial_attention
from ggnet_fast.backends import extension, record_dispatch, reference, unavailable_reason
from ggnet_fast.export import (ExportError, compare_with_torch, export_onnx, run_onnx)
from ggnet_fast.nn import GlobalGuidanceBlock, GuidedChannelAttention, GuidedNonLocal

requires_ext = pytest.mark.skipif(extension.load() is None,
                                  reason="the compiled extension ggnet_fast._C is not built")


def onnx_dims(path) -> list[list]:
    """Each input's dims: an int when fixed, a name when symbolic."""
    model = onnx.load(os.fspath(path), load_external_data=False)
    return [[d.dim_param or d.dim_value for d in i.type.tensor_type.shape.dim]
            for i in model.graph.input]


def assert_standard_onnx(path) -> None:
    """Only the default ONNX domain: nothing a stock runtime would need a library for."""
    model = onnx.load(os.fspath(path))
    onnx.checker.check_model(model)
    domains = {n.domain for n in model.graph.node} | {f.domain for f in model.functions}
    assert domains <= {"", "ai.onnx"}, domains
    assert not any("ggnet" in n.op_type.lower() for n in model.graph.node)


def check_module(module, path, *shapes_of_args, positions):
    """Compare ``module`` and its ONNX file at each shape; return the relative errors."""
    errors = []
    for args in shapes_of_args:
        with torch.no_grad():
            ref = module.eval()(*args)
        res = compare_with_torch(module, path, *args)
        tol = float32_tolerance(module, positions, ref)
        assert res["max_abs_error"] <= tol, (res, tol, [tuple(a.shape) for a in args])
        errors.append(res["max_abs_error"] / res["max_abs_reference"])
    return errors


# -- the translations ------------------------------------------------------------------


class Expm1(nn.Module):
    def forward(self, x):
        return torch.expm1(x)


def test_expm1_translation_keeps_full_relative_precision(tmp_path, seed):
    """ONNX has no Expm1; torchlib's Exp(x) - 1 loses everything below 6e-8 (the
    reference backend's expm1 form needs it): ours is within 4 ulp everywhere."""
    x = torch.cat([torch.logspace(-12, 0, 4001), torch.rand(4000), -torch.rand(1000)])
    export_onnx(Expm1(), tmp_path / "expm1.onnx", (x,), dynamic=False)
    (got,) = run_onnx(tmp_path / "expm1.onnx", x)
    exact = torch.expm1(x.double())
    rel = ((got.double() - exact).abs() / exact.abs()).max()
    assert rel <= 4 * EPS32, float(rel)


class SpatialOps(nn.Module):
    """Both spatial combine modes of the public operator, one export."""

    def __init__(self, backend):
        super().__init__()
        self.backend = backend

    def forward(self, theta, phi, eta, rho, mu):
        return tuple(guided_spatial_attention(theta, phi, eta, rho, mu, combine=c,
                                              backend=self.backend)
                     for c in ("product", "joint"))


@requires_ext
def test_spatial_translations_meet_the_float32_contract(tmp_path, seed):
    """The ONNX graph of ggnet_fast::spatial and ::joint is held to the cpu backend's
    float32 forward bound against the float64 reference, on the modulation delta."""
    inputs = agreeing_spatial_inputs((2, 23 * 17, 12, 7, 10), torch.float32, mu_offset=1.5)
    with record_dispatch() as calls:
        export_onnx(SpatialOps("cpu"), tmp_path / "spatial.onnx", tuple(inputs))
    assert set(calls) == {("spatial", "cpu")}
    assert_standard_onnx(tmp_path / "spatial.onnx")
    # a second batch size through the dynamic batch
    for batch in (slice(0, 2), slice(0, 1)):
        args = [x[batch] for x in inputs]
        got = run_onnx(tmp_path / "spatial.onnx", *args)
        mean = args[4].double().mean(1, keepdim=True)
        for combine, o in zip(("product", "joint"), got):
            exact = reference.spatial(*(x.double() for x in args), combine=combine)
            bound = tolerance("cpu", "spatial", torch.float32, combine)[0]
            assert rel_err(o.double() - mean, exact - mean) <= bound, combine


class ChannelOps(nn.Module):
    """Every channel mode (combine x stabilize x scale) of the public operator."""

    def forward(self, y, g):
        return tuple(guided_channel_attention(y, g, combine=c, stabilize=s, scale=k,
                                              backend="cpu")
                     for c, s, k in CHANNEL_MODES)


@requires_ext
def test_channel_translation_meets_the_float32_contract_in_every_mode(tmp_path, seed):
    y, g = channel_inputs((2, 13, 7 * 11), torch.float32)
    with record_dispatch() as calls:
        export_onnx(ChannelOps(), tmp_path / "channel.onnx", (y, g))
    assert set(calls) == {("channel", "cpu")}
    assert_standard_onnx(tmp_path / "channel.onnx")
    got = run_onnx(tmp_path / "channel.onnx", y, g)
    mean = y.double().mean(1, keepdim=True)
    bound = tolerance("cpu", "channel", torch.float32)[0]
    for (c, s, k), out in zip(CHANNEL_MODES, got):
        exact = reference.channel(y.double(), g.double(), combine=c, stabilize=s, scale=k)
        assert rel_err(out.double() - mean, exact - mean) <= bound, (c, s, k)


# -- the modules -----------------------------------------------------------------------


class GuidedNonLocals(nn.Module):
    """GuidedNonLocal in both combine modes on the cpu backend (the fused C++ operators)
    and on "auto", side by side: one export (~4 s) instead of four."""

    CASES = [(c, b) for b in ("cpu", "auto") for c in ("product", "joint")]

    def __init__(self):
        super().__init__()
        self.blocks = nn.ModuleList(
            GuidedNonLocal(16, 12, key_channels=8, combine=c, backend=b,
                           residual="fixed")  # gamma = 1: the attention counts
            for c, b in self.CASES)

    def forward(self, x, guide):
        return tuple(block(x, guide) for block in self.blocks)


@requires_ext
def test_guided_non_local_exports_with_dynamic_batch_and_size(tmp_path, seed):
    blocks = GuidedNonLocals()
    x, guide = torch.randn(2, 16, 8, 8), torch.randn(2, 12, 8, 8)
    with record_dispatch() as calls:
        export_onnx(blocks, tmp_path / "gnl.onnx", (x, guide))
    assert set(calls) == {("spatial", "cpu")}  # auto picks the fused C++ operators too
    assert_standard_onnx(tmp_path / "gnl.onnx")
    dims = onnx_dims(tmp_path / "gnl.onnx")
    assert all(isinstance(d, str) for i in dims for d in (i[0], i[2], i[3])), dims
    second = (torch.randn(3, 16, 6, 10), torch.randn(3, 12, 6, 10))
    for args in ((x, guide), second):
        with torch.no_grad():
            expected = blocks.eval()(*args)
        got = run_onnx(tmp_path / "gnl.onnx", *args)
        for case, block, e, o in zip(blocks.CASES, blocks.blocks, expected, got):
            tol = float32_tolerance(block, 64, e)
            assert (o - e).abs().max() <= tol, (case, float((o - e).abs().max()), tol)


@requires_ext
@pytest.mark.parametrize("combine,stabilize,gram", [("matmul", "max-minus", "positions")])
def test_guided_channel_attention_exports(tmp_path, seed, combine, stabilize, gram):
    """The released code's modes with the 1/N Gram scale (the paper's product/None/none
    is exported inside the GlobalGuidanceBlock below)."""
    block = GuidedChannelAttention(16, 12, combine=combine, stabilize=stabilize,
                                   gram_normalization=gram, residual="fixed", backend="cpu")
    x, guide = torch.randn(2, 16, 8, 8), torch.randn(2, 12, 8, 8)
    export_onnx(block, tmp_path / "gca.onnx", (x, guide))
    assert_standard_onnx(tmp_path / "gca.onnx")
    dims = onnx_dims(tmp_path / "gca.onnx")
    assert isinstance(dims[0][0], str), dims  # the batch is dynamic in both cases
    # scale = 1/(H W) is a float argument of the operator: the size is fixed then
    second = (3, 6, 10) if gram == "none" else (3, 8, 8)
    assert isinstance(dims[0][2], str) == (gram == "none"), dims
    b, h, w = second
    check_module(block, tmp_path / "gca.onnx", (x, guide),
                 (torch.randn(b, 16, h, w), torch.randn(b, 12, h, w)), positions=80)


@requires_ext
def test_global_guidance_block_exports(tmp_path, seed):
    block = GlobalGuidanceBlock(16, 12, spatial={"combine": "product", "residual": "fixed"},
                                channel={"residual": "fixed"}, backend="cpu")
    x, guide = torch.randn(2, 16, 8, 8), torch.randn(2, 12, 8, 8)
    with record_dispatch() as calls:
        export_onnx(block, tmp_path / "ggb.onnx", (x, guide))
    dims = onnx_dims(tmp_path / "ggb.onnx")
    assert all(isinstance(d, str) for i in dims for d in (i[0], i[2], i[3])), dims
    assert {op for op, _ in calls} == {"spatial", "channel"} and {b for _, b in calls} == {"cpu"}
    check_module(block, tmp_path / "ggb.onnx", (x, guide),
                 (torch.randn(1, 16, 10, 6), torch.randn(1, 12, 10, 6)), positions=64)


# -- GG-Net ----------------------------------------------------------------------------

_STANDALONE = r"""
import json, sys
sys.modules["ggnet_fast"] = None   # any import of ggnet_fast would fail
sys.modules["torch"] = None
import numpy as np, onnxruntime as ort
case = json.loads(sys.argv[1])
sess = ort.InferenceSession(case["model"], providers=["CPUExecutionProvider"])
x = np.load(case["input"])
(out,) = sess.run(None, {sess.get_inputs()[0].name: x})
np.save(case["output"], out)
"""


@requires_ext
def test_ggnet_exports_and_runs_without_ggnet_fast(tmp_path, seed):
    from ggnet_fast.models import build_ggnet

    model = build_ggnet(preset="paper", variant="full", backbone="resnet18").eval()
    path = tmp_path / "ggnet.onnx"
    x = torch.randn(1, 3, 64, 64)
    with record_dispatch() as calls:
        export_onnx(model, path, x)
    assert {b for _, b in calls} == {"cpu"}
    assert_standard_onnx(path)
    assert onnx_dims(path)[0][1] == 3 and all(isinstance(d, str) for d in onnx_dims(path)[0][::2])
    # GGB at stride 8: N = (64/8)^2 at the export size, (96/8)(80/8) at the second
    for args, n in (((x,), 64), ((torch.randn(2, 3, 96, 80),), 120)):
        with torch.no_grad():
            ref = model(*args, final_only=True)
        res = compare_with_torch(model, path, *args)
        assert res["max_abs_error"] <= float32_tolerance(model, n, ref), res
    # the file alone, in a Python that cannot import ggnet_fast (nor torch)
    np.save(tmp_path / "x.npy", x.numpy())
    case = {"model": str(path), "input": str(tmp_path / "x.npy"),
            "output": str(tmp_path / "y.npy")}
    subprocess.run([sys.executable, "-c", _STANDALONE, json.dumps(case)], check=True,
                   timeout=120)
    with torch.no_grad():
        ref = model(x, final_only=True)
    got = torch.from_numpy(np.load(tmp_path / "y.npy"))
    assert (got - ref).abs().max() <= float32_tolerance(model, 64, ref)


# -- refusals --------------------------------------------------------------------------


def test_triton_operators_are_refused_with_a_clear_error(tmp_path):
    if unavailable_reason("triton") is not None:
        pytest.skip(f"triton backend unavailable: {unavailable_reason('triton')}")
    block = GuidedNonLocal(8, combine="joint", backend="triton")
    with pytest.raises(ExportError, match=r"ggnet_fast::triton_joint_fwd.*backend 'auto' or 'cpu'"):
        export_onnx(block, tmp_path / "t.onnx", (torch.randn(1, 8, 4, 4), torch.randn(1, 8, 4, 4)))
    assert not (tmp_path / "t.onnx").exists()


def test_bad_arguments_are_refused(tmp_path):
    block = GuidedNonLocal(8)
    with pytest.raises(ValueError, match="opset must be an int >= 18"):
        export_onnx(block, tmp_path / "b.onnx", (torch.randn(1, 8, 4, 4),) * 2, opset=17)
    with pytest.raises(ValueError, match="example_input is required"):
        export_onnx(block, tmp_path / "b.onnx")
    with pytest.raises(ValueError, match="outputs must be one of"):
        export_onnx(block, tmp_path / "b.onnx", (torch.randn(1, 8, 4, 4),) * 2, outputs="x")
