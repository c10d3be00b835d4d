"""Dense-CRF post-processing (Krahenbuhl & Koltun, 2011) via ``pydensecrf`` (package
``pydensecrf2``: ``pip install pydensecrf2``). Optional: everything else works without it.
"""
from __future__ import annotations

import numpy as np

DEFAULTS = dict(iterations=5, gauss_sxy=3.0, gauss_compat=3.0,
                bilateral_sxy=60.0, bilateral_srgb=10.0, bilateral_compat=5.0)


def parse_crf_params(items: list[str] | None) -> dict:
    """``["bilateral_srgb=5", "iterations=10"]`` (the CLI's ``--crf-param``) -> keyword
    overrides for :func:`dense_crf`; unknown names and bad values raise ``ValueError``."""
    params: dict = {}
    for item in items or []:
        key, sep, value = item.partition("=")
        key = key.strip().replace("-", "_")
        if not sep or key not in DEFAULTS:
            raise ValueError(f"--crf-param expects NAME=VALUE with NAME one of "
                             f"{', '.join(DEFAULTS)}; got {item!r}")
        try:
            number = int(value) if key == "iterations" else float(value)
        except ValueError:
            kind = "an integer" if key == "iterations" else "a number"
            raise ValueError(f"--crf-param {key} must be {kind}, got {value!r}") from None
        if not number > 0:
            raise ValueError(f"--crf-param {key} must be > 0, got {value!r}")
        params[key] = number
    return params


def describe_crf_params(params: dict | None) -> str:
    """The parameters a dense CRF runs with (defaults + overrides), one line."""
    merged = {**DEFAULTS, **(params or {})}
    return ", ".join(f"{k}={v:g}" for k, v in merged.items())


def crf_available() -> str | None:
    """None when ``pydensecrf.densecrf`` imports, else the reason it cannot be used."""
    try:
        import pydensecrf.densecrf  # noqa: F401
    except ImportError as exc:
        return f"{exc} (install it with `pip install pydensecrf2`)"
    return None


def dense_crf(image: np.ndarray, prob: np.ndarray, *, iterations: int = 5,
              gauss_sxy: float = 3.0, gauss_compat: float = 3.0, bilateral_sxy: float = 60.0,
              bilateral_srgb: float = 10.0, bilateral_compat: float = 5.0) -> np.ndarray:
    """Refine a foreground probability map with a 2-label dense CRF.

    Args:
        image: uint8 ``[H, W, 3]`` (or ``[H, W]``) at the resolution of ``prob``.
        prob: float ``[H, W]`` foreground probability in [0, 1].
    Returns:
        float32 ``[H, W]`` refined foreground probability (threshold it at 0.5).
    """
    reason = crf_available()
    if reason is not None:
        raise ImportError(f"dense CRF needs pydensecrf: {reason}")
    import pydensecrf.densecrf as dcrf
    from pydensecrf.utils import unary_from_softmax

    prob = np.asarray(prob, dtype=np.float32)
    if prob.ndim != 2:
        raise ValueError(f"prob must be [H, W], got shape {prob.shape}")
    img = np.asarray(image)
    if img.ndim == 2:
        img = np.repeat(img[..., None], 3, axis=2)
    if img.shape[:2] != prob.shape or img.shape[2] != 3:
        raise ValueError(f"image shape {img.shape} does not match prob shape {prob.shape}")
    if img.dtype != np.uint8:
        raise TypeError(f"image must be uint8, got {img.dtype}")
    if iterations < 1:
        raise ValueError(f"iterations must be >= 1, got {iterations}")
    h, w = prob.shape
    p = np.clip(prob, 1e-5, 1 - 1e-5)
    crf = dcrf.DenseCRF2D(w, h, 2)
    crf.setUnaryEnergy(np.ascontiguousarray(unary_from_softmax(np.stack([1 - p, p]))))
    crf.addPairwiseGaussian(sxy=gauss_sxy, compat=gauss_compat)
    crf.addPairwiseBilateral(sxy=bilateral_sxy, srgb=bilateral_srgb,
                             rgbim=np.array(img, dtype=np.uint8, order="C"),
                             compat=bilateral_compat)
    q = np.array(crf.inference(iterations), dtype=np.float32).reshape(2, h, w)
    return q[1]
