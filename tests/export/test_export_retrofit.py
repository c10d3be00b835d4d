"""ONNX export of another library's model retrofitted with our block: an smp Unet
(ResNet-18 encoder, random weights) with ``ggnet_fast.integrations.retrofit`` putting a
GuidedNonLocal (joint) on the deepest encoder feature, guided by the next one.  Dynamic
batch and size (multiples of 32, smp's encoder stride), compared with PyTorch within the
float32 rounding bound of export_checks.py."""
from __future__ import annotations

import importlib.util

import pytest
import torch

from export_checks import float32_tolerance
from ggnet_fast.backends import record_dispatch
from ggnet_fast.export import compare_with_torch, export_onnx

smp = pytest.importorskip("segmentation_models_pytorch")


def _retrofit():
    if importlib.util.find_spec("ggnet_fast.integrations") is None:
        pytest.skip("ggnet_fast.integrations does not exist yet")
    from ggnet_fast.integrations import retrofit
    return retrofit


def test_retrofitted_smp_unet_exports_to_onnx(tmp_path, seed):
    retrofit = _retrofit()
    model = smp.Unet("resnet18", encoder_weights=None, classes=1)
    model = retrofit(model, attention="guided", level=-1, guide_level=-2, combine="joint")
    with torch.no_grad():  # gamma starts at 0; 1 makes the exported attention count
        for name, p in model.named_parameters():
            if name.endswith("gamma"):
                p.fill_(1.0)
    model.eval()
    x = torch.randn(1, 3, 64, 64)
    with record_dispatch() as calls:
        export_onnx(model, tmp_path / "unet.onnx", x)
    assert [op for op, _ in calls] and {op for op, _ in calls} == {"spatial"}
    # the block sees the stride-32 feature: N = 2x2 and 3x4 positions
    for args, n in (((x,), 4), ((torch.randn(2, 3, 96, 128),), 12)):
        with torch.no_grad():
            ref = model(*args)
        res = compare_with_torch(model, tmp_path / "unet.onnx", *args)
        assert res["max_abs_error"] <= float32_tolerance(model, n, ref), res
