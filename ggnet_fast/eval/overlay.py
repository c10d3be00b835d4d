"""Contour overlays: ground truth (green) and prediction (red) drawn on the image (OpenCV)."""
from __future__ import annotations

import cv2
import numpy as np

from ..fileio import atomic_write_bytes

GT_COLOR = (0, 255, 0)      # RGB
PRED_COLOR = (255, 0, 0)


def draw_overlay(image: np.ndarray, gt: np.ndarray | None = None, pred: np.ndarray | None = None,
                 thickness: int | None = None) -> np.ndarray:
    """Return an RGB uint8 copy of ``image`` ([H,W] or [H,W,3]) with mask contours drawn."""
    img = np.asarray(image)
    if img.ndim == 2:
        img = np.repeat(img[..., None], 3, axis=2)
    canvas = np.ascontiguousarray(img.astype(np.uint8).copy())
    if thickness is None:
        thickness = max(1, round(min(canvas.shape[:2]) / 200))
    for mask, color in ((gt, GT_COLOR), (pred, PRED_COLOR)):
        if mask is None:
            continue
        m = (np.asarray(mask) > 0).astype(np.uint8)
        if m.shape != canvas.shape[:2]:
            raise ValueError(f"mask shape {m.shape} does not match image shape {canvas.shape[:2]}")
        contours, _ = cv2.findContours(m, cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_NONE)
        cv2.drawContours(canvas, contours, -1, color, thickness)
    return canvas


def _write_png(path: str, array: np.ndarray, what: str) -> str:
    """Encode ``array`` as PNG and write it atomically (temporary file + ``os.replace``)."""
    ok, buf = cv2.imencode(".png", array)
    if not ok:
        raise OSError(f"could not encode {what} {path}")
    atomic_write_bytes(path, buf.tobytes())
    return path


def save_overlay(path: str, image, gt=None, pred=None) -> str:
    """Draw and write the overlay as PNG; returns ``path``."""
    rgb = draw_overlay(image, gt, pred)
    return _write_png(path, cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR), "overlay")


def save_mask(path: str, mask: np.ndarray) -> str:
    """Write a {0,1} mask as an 8-bit PNG with values {0,255}."""
    return _write_png(path, (np.asarray(mask) > 0).astype(np.uint8) * 255, "mask")
