"""Synthetic B-mode breast-ultrasound phantoms with exact lesion masks (no download needed).

The generator composes, in this order (rows = depth):

1. a tissue echogenicity map: bright skin line, hypoechoic subcutaneous fat, brighter
   textured glandular tissue and striated pectoral muscle, separated by smooth wavy
   interfaces, modulated by low-frequency texture;
2. one hypoechoic lesion whose contour is a randomly perturbed ellipse in polar form
   ``rho(t) = 1 + sum_k a_k cos(k t + p_k)`` (irregular, optionally spiculated), blended
   into the tissue through a boundary blur whose width varies around the contour; the
   mask is the exact region ``rho <= rho(t)`` before any blur;
3. posterior acoustic shadowing (or enhancement) in the columns under the lesion;
4. fully developed speckle: the envelope of a low-pass filtered complex Gaussian field,
   i.e. Rayleigh-distributed multiplicative noise with an anisotropic grain;
5. depth attenuation ``exp(-alpha z)`` partly compensated by time-gain control, additive
   electronic noise and log compression to 8 bits.

Everything is drawn from ``numpy.random.default_rng([seed, index])``: the same seed and
index always give the same image, whatever order images are requested in.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from .base import RawSample, SegmentationSource
from .registry import DatasetOption, register_dataset


@dataclass(frozen=True)
class PhantomParams:
    """Ranges the generator samples from (fractions are of the image height/width)."""

    lesion_radius: tuple = (0.10, 0.26)     # semi-axis, fraction of min(H, W)
    lesion_aspect: tuple = (0.55, 1.0)      # depth / width ratio of the ellipse
    irregularity: tuple = (0.02, 0.22)      # amplitude of contour harmonics
    lesion_contrast: tuple = (0.08, 0.35)   # lesion echo / surrounding echo
    boundary_blur: tuple = (0.6, 3.0)       # sigmoid width of the boundary, pixels at 128
    shadow_strength: tuple = (0.25, 0.7)
    attenuation: tuple = (0.6, 1.8)         # nepers over the full depth
    speckle_grain: tuple = (0.6, 1.2)       # axial grain sigma, pixels at 128 px
    p_shadow: float = 0.55
    p_enhancement: float = 0.25
    p_spiculated: float = 0.3


def _smooth_curve(rng, width: int, base: float, amplitude: float, n_harm: int = 3) -> np.ndarray:
    x = np.linspace(0.0, 2 * np.pi, width)
    y = np.full(width, base, dtype=np.float64)
    for k in range(1, n_harm + 1):
        y += amplitude / k * np.sin(k * x * rng.uniform(0.3, 1.0) + rng.uniform(0, 2 * np.pi))
    return y


def _texture(rng, shape, sigma, anisotropy=1.0) -> np.ndarray:
    from scipy import ndimage  # here: importing the data package need not load SciPy

    t = ndimage.gaussian_filter(rng.standard_normal(shape), (sigma, sigma * anisotropy))
    return t / (t.std() + 1e-8)


def _tissue(rng, h: int, w: int) -> np.ndarray:
    rows = np.arange(h, dtype=np.float64)[:, None]
    s = min(h, w) / 128.0
    skin = _smooth_curve(rng, w, rng.uniform(0.02, 0.05) * h, 0.01 * h)
    fat = _smooth_curve(rng, w, rng.uniform(0.15, 0.3) * h, 0.05 * h)
    gland = _smooth_curve(rng, w, rng.uniform(0.7, 0.88) * h, 0.05 * h)
    e = np.where(rows < skin, 0.95, 0.0)
    fat_tex = _texture(rng, (h, w), 5 * s)
    e = e + np.where((rows >= skin) & (rows < fat), 0.14 + 0.05 * fat_tex, 0.0)
    gland_tex = _texture(rng, (h, w), 3 * s, 2.0)
    e = e + np.where((rows >= fat) & (rows < gland), 0.60 + 0.2 * gland_tex, 0.0)
    stripes = np.sin(rows / (2.5 * s) + 0.3 * _texture(rng, (h, w), 6 * s, 3.0))
    e = e + np.where(rows >= gland, 0.30 + 0.1 * stripes, 0.0)
    # bright interfaces between layers
    for curve, amp in ((fat, 0.35), (gland, 0.3)):
        e += amp * np.exp(-0.5 * ((rows - curve[None, :]) / (1.0 * s)) ** 2)
    return np.clip(e, 0.05, None), fat, gland


def make_phantom(seed: int, size=(128, 128), index: int = 0,
                 params: PhantomParams = PhantomParams()) -> tuple[np.ndarray, np.ndarray]:
    """Generate one phantom.

    Returns ``image`` uint8 ``[H, W, 3]`` (grey replicated) and ``mask`` uint8 ``[H, W]``
    in {0, 1} with exactly one non-empty lesion.
    """
    h, w = (size, size) if isinstance(size, int) else (int(size[0]), int(size[1]))
    if h < 32 or w < 32:
        raise ValueError(f"size must be at least 32x32, got {h}x{w}")
    rng = np.random.default_rng([int(seed), int(index)])
    s = min(h, w) / 128.0  # lengths below are in pixels at 128 px
    echo, fat, gland = _tissue(rng, h, w)
    lesion = _lesion(rng, h, w, fat, gland, params)
    echo = _blend_lesion(rng, echo, lesion, s, params)
    echo = _posterior_shadow(rng, echo, lesion, s, params)
    grey = _speckle_and_compress(rng, echo, s, params)
    return np.repeat(grey[..., None], 3, axis=2), lesion.mask.astype(np.uint8)


@dataclass
class _Lesion:
    """The lesion's exact mask [H, W] bool, its polar coordinates rho/theta [H, W] around
    the centre (cx, cy) in units of the semi-axes (rx, ry), and its contour radius(theta)."""

    mask: np.ndarray
    rho: np.ndarray
    theta: np.ndarray
    radius: np.ndarray
    rx: float
    ry: float
    cy: float


def _lesion(rng, h: int, w: int, fat, gland, params: PhantomParams) -> _Lesion:
    """A perturbed (optionally spiculated) ellipse between the fat and gland interfaces."""
    ry_max = 0.5 * (gland.mean() - fat.mean())
    rx = rng.uniform(*params.lesion_radius) * min(h, w)
    ry = min(rx * rng.uniform(*params.lesion_aspect), max(ry_max, 0.08 * h))
    cx = rng.uniform(rx + 2, w - rx - 2) if w > 2 * rx + 4 else w / 2
    cy = rng.uniform(fat.mean() + 0.3 * ry, gland.mean() - 0.3 * ry)
    cy = float(np.clip(cy, ry + 2, h - ry - 2))
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float64)
    dx, dy = (xx - cx) / rx, (yy - cy) / ry
    rho, theta = np.hypot(dx, dy), np.arctan2(dy, dx)
    radius = np.ones_like(theta)
    irr = rng.uniform(*params.irregularity)
    for k in range(2, 7):
        radius += rng.uniform(0, irr) / (k - 1) * np.cos(k * theta + rng.uniform(0, 2 * np.pi))
    if rng.random() < params.p_spiculated:
        n_sp = int(rng.integers(8, 16))
        amplitude = rng.uniform(0.05, 0.15)  # drawn before the phase: keeps the random stream
        radius += amplitude * np.maximum(np.cos(n_sp * theta + rng.uniform(0, 6.3)), 0) ** 6
    radius = np.maximum(radius, 0.35)
    mask = rho <= radius
    if not mask.any():  # degenerate: force the centre pixel
        mask[int(round(cy)), int(round(cx))] = True
    return _Lesion(mask, rho, theta, radius, rx, ry, cy)


def _blend_lesion(rng, echo, lesion: _Lesion, s: float, params: PhantomParams):
    """A hypoechoic interior blended in with a contour-dependent boundary blur."""
    mean_r = 0.5 * (lesion.rx + lesion.ry)
    signed = (lesion.radius - lesion.rho) * mean_r  # ~ pixels inside (+) / outside (-)
    blur = rng.uniform(*params.boundary_blur) * s * (
        1 + 0.8 * np.cos(lesion.theta - rng.uniform(0, 2 * np.pi)))
    soft = 1.0 / (1.0 + np.exp(-signed / np.maximum(blur, 0.3 * s)))
    inside = rng.uniform(*params.lesion_contrast) * echo.mean() * (
        1 + 0.25 * _texture(rng, echo.shape, 2 * s))
    return echo * (1 - soft) + np.clip(inside, 0.01, None) * soft


def _posterior_shadow(rng, echo, lesion: _Lesion, s: float, params: PhantomParams):
    """Posterior acoustic shadowing (or enhancement, or neither) below the lesion."""
    r = rng.random()
    if r >= params.p_shadow + params.p_enhancement:
        return echo
    from scipy import ndimage

    h, mask = echo.shape[0], lesion.mask
    cols = ndimage.gaussian_filter1d(mask.any(axis=0).astype(np.float64), 2 * s)
    bottom = np.where(mask.any(axis=0), h - 1 - np.argmax(mask[::-1], axis=0), lesion.cy)
    bottom = ndimage.gaussian_filter1d(bottom.astype(np.float64), 3 * s)
    yy = np.arange(h, dtype=np.float64)[:, None]
    ramp = np.clip((yy - bottom[None, :]) / (6 * s), 0, 1)
    strength = rng.uniform(*params.shadow_strength)
    factor = (1 - strength * cols[None, :] * ramp) if r < params.p_shadow else (
        1 + 0.8 * strength * cols[None, :] * ramp)
    return echo * factor


def _speckle_and_compress(rng, echo, s: float, params: PhantomParams) -> np.ndarray:
    """Rayleigh speckle (envelope of a filtered complex Gaussian field), depth attenuation
    with partial TGC, electronic noise and log compression; uint8 [H, W]."""
    from scipy import ndimage

    h, w = echo.shape
    grain = rng.uniform(*params.speckle_grain) * s
    field = rng.standard_normal((h, w)) + 1j * rng.standard_normal((h, w))
    field = ndimage.gaussian_filter(field.real, (grain, 2 * grain)) + 1j * ndimage.gaussian_filter(
        field.imag, (grain, 2 * grain))
    speckle = np.abs(field)
    speckle /= np.sqrt(np.mean(speckle ** 2)) + 1e-12
    envelope = np.sqrt(echo) * speckle
    z = np.arange(h, dtype=np.float64)[:, None] / h
    envelope = envelope * np.exp(-rng.uniform(*params.attenuation) * z * rng.uniform(0.3, 0.7))
    envelope += 0.02 * np.abs(rng.standard_normal((h, w)))
    c = 3.0
    img = np.log1p(c * envelope) / np.log1p(c * np.percentile(envelope, 99.5))
    img = np.clip(img * rng.uniform(0.85, 1.0), 0, 1)
    return (img * 255.0 + 0.5).astype(np.uint8)


class PhantomDataset(SegmentationSource):
    """``n`` synthetic B-mode images, deterministic by ``seed``.

    Args:
        n: number of images.
        seed: generator seed; image ``i`` depends only on (seed, i).
        size: ``H`` or ``(H, W)`` of every image.
        size_jitter: if > 0, each image's H and W are scaled by an independent factor in
            ``[1 - size_jitter, 1 + size_jitter]`` (exercises resizing back to the
            original resolution at evaluation).
    """

    def __init__(self, n: int = 300, seed: int = 0, size=128, size_jitter: float = 0.0,
                 params: PhantomParams = PhantomParams()):
        if n < 1:
            raise ValueError(f"n must be >= 1, got {n}")
        if not 0 <= size_jitter < 1:
            raise ValueError(f"size_jitter must be in [0, 1), got {size_jitter}")
        self.n, self.seed, self.params = int(n), int(seed), params
        self.base = (size, size) if isinstance(size, int) else tuple(int(v) for v in size)
        self.size_jitter = float(size_jitter)
        self.names = [f"phantom_{i:05d}" for i in range(self.n)]
        self.labels = ["phantom"] * self.n

    def size_of(self, index: int) -> tuple[int, int]:
        if self.size_jitter == 0:
            return self.base
        f = np.random.default_rng([self.seed, index, 1]).uniform(
            1 - self.size_jitter, 1 + self.size_jitter, size=2)
        return int(round(self.base[0] * f[0])), int(round(self.base[1] * f[1]))

    def load(self, index: int) -> RawSample:
        image, mask = make_phantom(self.seed, self.size_of(index), index, self.params)
        return RawSample(image=image, mask=mask, name=self.names[index], label="phantom")


register_dataset(
    "phantom", PhantomDataset, needs_root=False, help="built-in synthetic ultrasound",
    options={"n": DatasetOption(300, "synthetic: number of images"),
             "seed": DatasetOption(0, "synthetic: generator seed"),
             "size": DatasetOption(128, "synthetic: image side in pixels"),
             "size_jitter": DatasetOption(0.0, "synthetic: relative jitter of each image's "
                                               "height and width")})
