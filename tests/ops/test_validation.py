"""Bad input to the public operators raises ValueError/TypeError naming the argument."""
import pytest
import torch

from ggnet_fast import guided_channel_attention, guided_spatial_attention

B, N, D, DG, C = 2, 12, 4, 3, 5


def good_spatial():
    return {"theta": torch.randn(B, N, D), "phi": torch.randn(B, N, D),
            "eta": torch.randn(B, N, DG), "rho": torch.randn(B, N, DG), "mu": torch.randn(B, N, C)}


def call_spatial(args, **kw):
    return guided_spatial_attention(args["theta"], args["phi"], args["eta"], args["rho"],
                                    args["mu"], **kw)


def test_good_input_works():
    assert call_spatial(good_spatial()).shape == (B, N, C)


@pytest.mark.parametrize("name", ["theta", "phi", "eta", "rho", "mu"])
def test_spatial_wrong_rank(name):
    args = good_spatial()
    args[name] = args[name][0]
    with pytest.raises(ValueError, match=rf"{name} must have shape \[B, N, "):
        call_spatial(args)


@pytest.mark.parametrize("name", ["theta", "phi", "eta", "rho", "mu"])
def test_spatial_not_a_tensor(name):
    args = good_spatial()
    args[name] = args[name].tolist()
    with pytest.raises(TypeError, match=f"{name} must be a torch.Tensor"):
        call_spatial(args)


@pytest.mark.parametrize("name", ["theta", "eta", "mu"])
def test_spatial_integer_dtype(name):
    args = good_spatial()
    args[name] = args[name].to(torch.int64)
    with pytest.raises(TypeError, match=f"{name} must have a floating dtype"):
        call_spatial(args)


def test_spatial_mixed_dtypes():
    args = good_spatial()
    args["rho"] = args["rho"].double()
    with pytest.raises(TypeError, match="rho has dtype torch.float64 but theta has torch.float32"):
        call_spatial(args)


def test_spatial_different_devices():
    args = good_spatial()
    args["mu"] = args["mu"].to("meta")
    with pytest.raises(ValueError, match="mu is on meta but theta is on cpu"):
        call_spatial(args)


@pytest.mark.parametrize("name,shape,what", [
    ("phi", (B, N, D + 1), "phi must have the shape of theta"),
    ("phi", (B, N + 1, D), "phi must have the shape of theta"),
    ("eta", (B + 1, N, DG), r"eta must have shape \[B, N, dg\] with B"),
    ("eta", (B, N - 1, DG), r"eta must have shape \[B, N, dg\] with N"),
    ("rho", (B, N, DG + 2), "rho must have the shape of eta"),
    ("mu", (B, N + 3, C), r"mu must have shape \[B, N, C\] with N"),
    ("mu", (1, N, C), r"mu must have shape \[B, N, C\] with B"),
])
def test_spatial_mismatched_shapes(name, shape, what):
    args = good_spatial()
    args[name] = torch.randn(shape)
    with pytest.raises(ValueError, match=what):
        call_spatial(args)


@pytest.mark.parametrize("name,shape",
                         [("theta", (B, 0, D)), ("mu", (B, N, 0)), ("eta", (0, N, DG))])
def test_spatial_empty(name, shape):
    args = good_spatial()
    args[name] = torch.randn(shape)
    with pytest.raises(ValueError, match=f"{name} must not be empty"):
        call_spatial(args)


def test_spatial_bad_options():
    args = good_spatial()
    with pytest.raises(ValueError, match="combine must be one of"):
        call_spatial(args, combine="sum")
    with pytest.raises(ValueError, match="out_dtype must be None"):
        call_spatial(args, out_dtype=torch.float16)
    with pytest.raises(TypeError, match="out_dtype must be a torch.dtype"):
        call_spatial(args, out_dtype="float32")
    with pytest.raises(ValueError, match="unknown backend 'nope'"):
        call_spatial(args, backend="nope")
    with pytest.raises(TypeError, match="backend must be a string"):
        call_spatial(args, backend=None)


def test_channel_bad_inputs():
    y, g = torch.randn(B, C, N), torch.randn(B, C, N)
    assert guided_channel_attention(y, g).shape == (B, C, N)
    with pytest.raises(ValueError, match=r"y must have shape \[B, C, N\]"):
        guided_channel_attention(y[0], g)
    with pytest.raises(ValueError, match=r"g must have the shape of y"):
        guided_channel_attention(y, g[:, :-1])
    with pytest.raises(TypeError, match="g must have a floating dtype"):
        guided_channel_attention(y, g.to(torch.int32))
    with pytest.raises(TypeError, match="g has dtype torch.float16 but y has torch.float32"):
        guided_channel_attention(y, g.half())
    with pytest.raises(ValueError, match="g is on meta but y is on cpu"):
        guided_channel_attention(y, g.to("meta"))
    with pytest.raises(ValueError, match="y must not be empty"):
        guided_channel_attention(torch.randn(B, C, 0), torch.randn(B, C, 0))
    with pytest.raises(ValueError, match="stabilize must be one of"):
        guided_channel_attention(y, g, stabilize="max")
    with pytest.raises(ValueError, match="combine must be one of"):
        guided_channel_attention(y, g, combine="add")
    with pytest.raises(ValueError, match="scale must be > 0"):
        guided_channel_attention(y, g, scale=0.0)
    with pytest.raises(TypeError, match="scale must be a float"):
        guided_channel_attention(y, g, scale="1/N")
