"""Retrofitting GuidedNonLocal into torchvision's segmentation models."""
import pytest
import torch

segmentation = pytest.importorskip("torchvision.models.segmentation")

from retrofit_checks import block_of, check_attends, retrofit_copy, same

from ggnet_fast.integrations import retrofit, retrofit_torchvision

NO_WEIGHTS = {"weights": None, "weights_backbone": None, "num_classes": 2}

#: These are big models: small inputs (32x32: ResNet-50's dilated layer4 is 4x4,
#: MobileNetV3's "high" 2x2) and one forward of each model.


def test_deeplabv3_resnet50_adds_a_guide_and_hides_it(seed):
    original = segmentation.deeplabv3_resnet50(**NO_WEIGHTS)
    x = torch.randn(1, 3, 32, 32)
    model, expected, got = retrofit_copy(original, x, retrofit)
    assert same(expected, got) and list(got) == ["out"], f"seed {seed}"
    block = block_of(model)
    assert (block.in_channels, block.guide_channels) == (2048, 1024)   # layer4 by layer3
    assert model.backbone.return_layers == {"layer3": "ggnet_guide", "layer4": "out"}
    with torch.no_grad():
        assert list(model.backbone(x)) == ["out"]     # the heads see what they saw before


def test_deeplabv3_aux_is_the_guide(seed):
    original = segmentation.deeplabv3_resnet50(aux_loss=True, **NO_WEIGHTS)
    x = torch.randn(1, 3, 32, 32)
    model, expected, got = retrofit_copy(original, x, retrofit, key_channels=64)
    assert same(expected, got) and list(got) == ["out", "aux"]
    assert model.guided_attention.guide_level == "aux" and not model.guided_attention.drop


def test_fcn_resnet50_and_a_named_guide_stage(seed):
    original = segmentation.fcn_resnet50(**NO_WEIGHTS)
    x = torch.randn(1, 3, 32, 32)
    model, expected, got = retrofit_copy(original, x, retrofit_torchvision,
                                         guide_level="layer2", key_channels=64)
    assert same(expected, got)
    assert block_of(model).guide_channels == 512


def test_lraspp_high_guided_by_low_and_block_attends(seed):
    original = segmentation.lraspp_mobilenet_v3_large(**NO_WEIGHTS)
    x = torch.randn(1, 3, 32, 32)
    model, expected, got = retrofit_copy(original, x, retrofit)
    assert same(expected, got)
    slot = model.guided_attention
    assert (slot.level, slot.guide_level) == ("high", "low")
    assert (slot.block.in_channels, slot.block.guide_channels) == (960, 40)
    check_attends(model, x, expected)


def test_probe_keeps_training_state_and_errors():
    model = segmentation.lraspp_mobilenet_v3_large(**NO_WEIGHTS).train()
    stats = {k: v.clone() for k, v in model.state_dict().items() if "running" in k}
    with pytest.raises(ValueError, match="available levels") as err:
        retrofit(model, level="aux")
    assert "'high' (960 ch" in str(err.value) and "'low' (40 ch" in str(err.value)
    assert not hasattr(model, "guided_attention")
    retrofit(model, level=-1, guide_level=0)
    assert all(m.training for m in model.modules())
    assert all(torch.equal(v, model.state_dict()[k]) for k, v in stats.items())
    with pytest.raises(TypeError, match="supported"):
        retrofit(torch.nn.Sequential(torch.nn.Conv2d(3, 3, 1)))
