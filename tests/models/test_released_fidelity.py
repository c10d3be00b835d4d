"""The three differences between our ``released`` preset and the authors' code that a
side-by-side run found (docs/model.md, "Fidelity of the released preset"): the decoder's
re-initialisation of the guidance block, the two-step resizing of the side outputs, and
the released Dice form.  The paper preset keeps its behaviour."""
from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from ggnet_fast.losses import GGNetLoss
from ggnet_fast.losses.ggnet import dice_loss
from ggnet_fast.models import build_ggnet


def _ggb_convs(model):
    convs = [m for m in model.ggb.modules() if isinstance(m, nn.Conv2d)]
    return convs + [m for m in model.guidance.fuse[-1].modules() if isinstance(m, nn.Conv2d)]


@pytest.mark.parametrize("preset, want", [("released", 1.0), ("paper", 1 / math.sqrt(6))])
def test_guidance_block_initialisation(preset, want):
    """kaiming_normal_ (std sqrt(2 / fan_in)) on every GGB conv and the guidance map's last
    1x1 under the released preset; PyTorch's default (std 1 / sqrt(3 fan_in)) otherwise."""
    torch.manual_seed(0)
    model = build_ggnet(preset=preset, variant="full", backbone="resnet18", weights=None)
    convs = [c for c in _ggb_convs(model) if c.weight.numel() >= 4096]
    assert len(convs) >= 5
    for conv in convs:
        fan_in = conv.weight[0].numel()
        ratio = float(conv.weight.detach().std()) / math.sqrt(2.0 / fan_in)
        assert ratio == pytest.approx(want, rel=0.1), (preset, conv)


def test_released_side_outputs_go_through_layer1_size():
    torch.manual_seed(0)
    model = build_ggnet(preset="released", variant="full", backbone="resnet18", weights=None)
    model.eval()
    images = torch.randn(1, 3, 96, 96)
    with torch.no_grad():
        out = model(images)
        stages = model.backbone(images)
        reduced = model.reduce(stages)
        via, size = stages[1].shape[-2:], images.shape[-2:]

        def up(x, s):
            return F.interpolate(x, size=s, mode="bilinear", align_corners=False)

        for k, (head, r) in enumerate(zip(model.side_heads, reduced)):
            twice, _ = model.bd(up(up(head(r), via), size))
            once, _ = model.bd(up(head(r), size))
            assert torch.allclose(out.side_logits[k], twice, atol=1e-5), k
            if r.shape[-2:] != via:  # the stride-2, 8 and 16 maps: two resizes differ from one
                assert (out.side_logits[k] - once).abs().max() > 1e-3, k
        model._config.side_resize = "direct"  # the paper preset's single resize
        direct = model(images)
    assert not torch.allclose(direct.side_logits[2], out.side_logits[2], atol=1e-3)
    assert torch.equal(direct.logits, out.logits)  # the final output is unaffected


def test_released_dice_form():
    empty = torch.zeros(2, 1, 8, 8)
    near_empty = torch.full((2, 1, 8, 8), -30.0)  # sigmoid ~ 1e-13
    assert float(dice_loss(near_empty, empty, smooth=1e-5)) == pytest.approx(0.0, abs=1e-6)
    assert float(dice_loss(near_empty, empty, smooth=1e-5, form="released")) == pytest.approx(
        -1.0, abs=1e-5)
    logits, mask = torch.randn(3, 1, 9, 7), (torch.rand(3, 1, 9, 7) > 0.5).float()
    p = torch.sigmoid(logits).flatten(1)
    g = mask.flatten(1)
    inter, denom, s = (p * g).sum(1), p.sum(1) + g.sum(1), 1e-5
    want = (1 - 2 * (inter + s) / (denom + s)).mean()  # the authors' train.py, written out
    assert float(dice_loss(logits, mask, smooth=s, form="released")) == pytest.approx(
        float(want), rel=1e-6)
    assert GGNetLoss("released").options["dice_form"] == "released"
    assert GGNetLoss("paper").options["dice_form"] == "standard"
    with pytest.raises(ValueError, match="dice_form"):
        GGNetLoss("paper", dice_form="squared")
