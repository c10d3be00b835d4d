"""Synthetic B-mode generator: determinism, exact masks, ultrasound-like statistics."""
import numpy as np
import pytest

from ggnet_fast.data import PhantomDataset, make_phantom


def test_deterministic_and_seed_dependent():
    a = make_phantom(3, (96, 80), index=5)
    b = make_phantom(3, (96, 80), index=5)
    c = make_phantom(4, (96, 80), index=5)
    np.testing.assert_array_equal(a[0], b[0])
    np.testing.assert_array_equal(a[1], b[1])
    assert not np.array_equal(a[0], c[0])
    ds = PhantomDataset(6, seed=3, size=(96, 80))
    np.testing.assert_array_equal(ds[5].image, a[0])  # independent of request order


def test_shapes_types_and_mask(seed):
    ds = PhantomDataset(8, seed=seed % 1000, size=(72, 100), size_jitter=0.2)
    for i in range(len(ds)):
        s = ds[i]
        h, w = ds.size_of(i)
        assert s.image.shape == (h, w, 3) and s.image.dtype == np.uint8
        assert s.mask.shape == (h, w) and s.mask.dtype == np.uint8
        assert set(np.unique(s.mask)) <= {0, 1}
        frac = s.mask.mean()
        assert 0.005 < frac < 0.5, (seed, i, frac)
        # grey image replicated
        assert np.array_equal(s.image[..., 0], s.image[..., 2])


def test_lesion_is_hypoechoic_with_speckle_and_attenuation():
    inside, outside, cv = [], [], []
    for i in range(12):
        img, mask = make_phantom(11, (128, 128), i)
        g = img[..., 0].astype(np.float64)
        ring = np.zeros_like(mask, bool)
        ys, xs = np.nonzero(mask)
        ring[max(ys.min() - 15, 0):ys.max() + 15, max(xs.min() - 15, 0):xs.max() + 15] = True
        ring &= mask == 0
        inside.append(g[mask > 0].mean())
        outside.append(g[ring].mean())
        # speckle: strong local intensity variation in tissue
        patch = g[50:60, :][mask[50:60, :] == 0]
        cv.append(patch.std() / (patch.mean() + 1e-9))
    assert np.mean(np.array(inside) < np.array(outside)) >= 0.9
    assert np.mean(cv) > 0.2


def test_bad_arguments():
    with pytest.raises(ValueError, match="size"):
        make_phantom(0, (10, 10))
    with pytest.raises(ValueError, match="n"):
        PhantomDataset(0)
    with pytest.raises(ValueError, match="size_jitter"):
        PhantomDataset(3, size_jitter=1.5)
