"""Retrofitting GuidedNonLocal into timm feature backbones (features_only=True)."""
import pytest
import torch

timm = pytest.importorskip("timm")

from retrofit_checks import (
    block_of,
    check_attends,
    check_gamma_gradient_at_init,
    retrofit_copy,
    same,
)

from ggnet_fast.integrations import retrofit, retrofit_timm


def backbone(**kwargs):
    return timm.create_model("resnet18", features_only=True, pretrained=False, **kwargs)


@pytest.mark.parametrize("feature_cls", ["list", "dict", "hook", "fx"])
def test_identity_at_init_then_attends(feature_cls, seed):
    original = backbone(feature_cls=feature_cls)
    x = torch.randn(1, 3, 64, 64)
    model, expected, got = retrofit_copy(original, x, retrofit)
    assert same(expected, got), f"output changed at gamma = 0 (seed {seed})"
    block = block_of(model)
    assert (block.in_channels, block.guide_channels) == tuple(
        original.feature_info.channels()[-1:-3:-1])
    if feature_cls == "list":                   # the same hook and block for all three
        check_gamma_gradient_at_init(model, x)
        check_attends(model, x, expected)


def test_chosen_levels_out_indices_and_state_dict(seed):
    x = torch.randn(1, 3, 64, 64)
    original = backbone(out_indices=(1, 2, 3))          # channels 64, 128, 256
    model, expected, got = retrofit_copy(original, x, retrofit_timm, level=1, guide_level=0,
                                         key_channels=32)
    assert same(expected, got)
    assert (block_of(model).in_channels, block_of(model).guide_channels) == (128, 64)
    with torch.no_grad():
        block_of(model).gamma.fill_(0.4)
        changed = model(x)
    assert torch.equal(changed[0], expected[0]) and torch.equal(changed[2], expected[2])
    assert not torch.allclose(changed[1], expected[1])

    fresh = retrofit_timm(backbone(out_indices=(1, 2, 3)), level=1, guide_level=0,
                          key_channels=32).eval()
    fresh.load_state_dict(model.state_dict(), strict=True)
    with torch.no_grad():
        assert same(fresh(x), changed)


@pytest.mark.parametrize("name, kwargs", [
    ("vit_tiny_patch16_224", {"dynamic_img_size": True}),     # FeatureGetterNet
    ("mobilenetv3_small_050", {}),                             # its own MobileNetV3Features
])
def test_other_feature_models(name, kwargs, seed):
    original = timm.create_model(name, features_only=True, pretrained=False, **kwargs)
    x = torch.randn(1, 3, 64, 64)
    model, expected, got = retrofit_copy(original, x, retrofit)
    assert same(expected, got)
    assert block_of(model).in_channels == original.feature_info.channels()[-1]
    with torch.no_grad():
        block_of(model).gamma.fill_(1.0)
        changed = model(x)
    assert not torch.allclose(changed[-1], expected[-1])
    assert all(torch.equal(a, b) for a, b in zip(changed[:-1], expected[:-1]))


def test_errors():
    with pytest.raises(ValueError, match="available levels") as err:
        retrofit(backbone(), level=5)
    assert "layer4" in str(err.value) and "512 ch" in str(err.value)
    with pytest.raises(ValueError, match="unknown attention"):
        retrofit(backbone(), attention="se")
    with pytest.raises(TypeError, match="features_only=True"):
        retrofit_timm(timm.create_model("resnet18", pretrained=False))
