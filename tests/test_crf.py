"""Dense CRF wrapper: refines a noisy probability map towards the image edges."""
import numpy as np
import pytest

from ggnet_fast.crf import crf_available, dense_crf
from ggnet_fast.metrics import binary_metrics

pytestmark = pytest.mark.skipif(crf_available() is not None, reason=str(crf_available()))


def test_crf_improves_noisy_prediction(seed):
    rng = np.random.default_rng(seed)
    h, w = 64, 80
    gt = np.zeros((h, w), np.uint8)
    gt[16:44, 20:56] = 1
    image = np.where(gt[..., None] > 0, 60, 190).astype(np.uint8).repeat(3, 2)
    image = np.clip(image + rng.normal(0, 8, image.shape), 0, 255).astype(np.uint8)
    # a blurry, offset, noisy probability map
    prob = np.zeros((h, w))
    prob[13:47, 17:59] = 0.75
    prob = np.clip(prob + rng.normal(0, 0.25, prob.shape) + 0.15, 0.01, 0.99)
    before = binary_metrics(prob > 0.5, gt)["dice"]
    refined = dense_crf(image, prob)
    assert refined.shape == (h, w) and refined.dtype == np.float32
    assert 0.0 <= refined.min() and refined.max() <= 1.0
    after = binary_metrics(refined > 0.5, gt)["dice"]
    assert after > before + 0.05, (seed, before, after)
    assert after > 0.9, (seed, after)


def test_crf_input_checks():
    img = np.zeros((8, 8, 3), np.uint8)
    with pytest.raises(ValueError, match="prob"):
        dense_crf(img, np.zeros((8, 8, 2)))
    with pytest.raises(ValueError, match="image shape"):
        dense_crf(img, np.zeros((8, 9)))
    with pytest.raises(TypeError, match="uint8"):
        dense_crf(img.astype(np.float32), np.zeros((8, 8)))
    out = dense_crf(img[..., 0], np.full((8, 8), 0.5, np.float32))  # grey image accepted
    assert out.shape == (8, 8)


def test_parse_crf_params():
    from ggnet_fast.crf import describe_crf_params, parse_crf_params
    assert parse_crf_params(None) == {}
    assert parse_crf_params(["iterations=10", "bilateral-srgb=4.5"]) == {
        "iterations": 10, "bilateral_srgb": 4.5}
    for bad, match in [("sigma=1", "NAME=VALUE"), ("iterations", "NAME=VALUE"),
                       ("iterations=2.5", "integer"), ("gauss_sxy=x", "number"),
                       ("gauss_sxy=0", "> 0"), ("bilateral_srgb=-1", "> 0")]:
        with pytest.raises(ValueError, match=match):
            parse_crf_params([bad])
    assert describe_crf_params({"iterations": 2}).startswith("iterations=2, gauss_sxy=3,")


def test_missing_package_message(monkeypatch):
    import builtins
    import ggnet_fast.crf as crf

    real = builtins.__import__

    def fake(name, *a, **k):
        if name.startswith("pydensecrf"):
            raise ImportError("No module named 'pydensecrf'")
        return real(name, *a, **k)

    monkeypatch.setattr(builtins, "__import__", fake)
    assert "pydensecrf2" in crf.crf_available()
    with pytest.raises(ImportError, match="pydensecrf2"):
        crf.dense_crf(np.zeros((4, 4, 3), np.uint8), np.zeros((4, 4)))
