"""torch.export of GG-Net and of the drop-in modules (ggnet_fast/export/api.py): the whole
network exports with its full GGNetOutput (a registered pytree), with dynamic batch and
image size, and the program runs at a second shape and survives save/load.

Tolerance: the program runs the same ATen and ggnet_fast kernels as eager PyTorch, but
after decompositions that may reorder reductions, so it is held to the float32 rounding
bound of export_checks.py.
"""
from __future__ import annotations

import pytest
import torch
import torch.utils._pytree as pytree

from export_checks import float32_tolerance
from ggnet_fast.backends import extension
from ggnet_fast.export import export_program
from ggnet_fast.models import GGNetOutput, build_ggnet
from ggnet_fast.nn import GuidedNonLocal


def test_ggnet_output_is_a_pytree():
    out = GGNetOutput(torch.zeros(1), (torch.ones(1), torch.ones(2)), (torch.ones(3),))
    leaves, spec = pytree.tree_flatten(out)
    assert len(leaves) == 4
    back = pytree.tree_unflatten(leaves, spec)
    assert isinstance(back, GGNetOutput) and back.side_logits[1].shape == (2,)


@pytest.mark.skipif(extension.load() is None, reason="the compiled extension is not built")
def test_whole_ggnet_torch_exports_with_its_full_output(tmp_path, seed):
    model = build_ggnet(preset="paper", variant="full", backbone="resnet18").eval()
    program = export_program(model, torch.randn(1, 3, 64, 64), dynamic=True, outputs="all")
    targets = {str(n.target) for n in program.graph.nodes if n.op == "call_function"}
    assert "ggnet_fast.spatial.default" in targets and "ggnet_fast.channel.default" in targets
    torch.export.save(program, tmp_path / "ggnet.pt2")
    loaded = torch.export.load(tmp_path / "ggnet.pt2")
    # GGB at stride 8: N = (64/8)^2 and (96/8)(80/8) positions
    for x, n in ((torch.randn(1, 3, 64, 64), 64), (torch.randn(2, 3, 96, 80), 120)):
        with torch.no_grad():
            expected = model(x)
            for prog in (program, loaded) if n == 64 else (program,):
                got = prog.module()(x)
                assert isinstance(got, GGNetOutput)
                assert len(got.side_logits) == 4 and len(got.boundaries) == len(expected.boundaries)
                for g, e in zip(pytree.tree_leaves(got), pytree.tree_leaves(expected)):
                    assert g.shape == e.shape
                    assert (g - e).abs().max() <= float32_tolerance(model, n, e)


@pytest.mark.skipif(extension.load() is None, reason="the compiled extension is not built")
def test_guided_non_local_program_keeps_the_operator_as_one_node(seed):
    block = GuidedNonLocal(8, combine="joint", residual="fixed")
    x, guide = torch.randn(1, 8, 4, 6), torch.randn(1, 8, 4, 6)
    program = export_program(block, (x, guide), dynamic=True)
    spatial = [n for n in program.graph.nodes
               if n.op == "call_function" and "ggnet_fast" in str(n.target)]
    assert [str(n.target) for n in spatial] == ["ggnet_fast.joint.default"]
    y, g = torch.randn(3, 8, 5, 5), torch.randn(3, 8, 5, 5)
    with torch.no_grad():
        expected = block(y, g)
        got = program.module()(y, g)
    assert (got - expected).abs().max() <= float32_tolerance(block, 25, expected)
