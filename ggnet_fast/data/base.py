"""Common sample type and image/mask file reading shared by the dataset loaders."""
from __future__ import annotations

import os
from dataclasses import dataclass

import numpy as np


class DataError(ValueError):
    """A dataset file that cannot be used (unreadable, truncated, unsupported mode, a mask
    whose size differs from its image), or the one message of :func:`scan_source` listing
    every such file.

    Raised inside a DataLoader worker, it reaches the caller as the same message as with
    0 workers: torch re-raises a worker's exception as ``type(exc)(text)`` where ``text``
    is a traceback ending in ``...DataError: <message>``; only the message is kept.
    """

    def __init__(self, message: str):
        message = str(message)
        if message.startswith("Caught DataError ") and "DataError: " in message:
            message = message.rsplit("DataError: ", 1)[1].rstrip()
        super().__init__(message)


@dataclass
class RawSample:
    """One image at its original resolution.

    image: uint8 ``[H, W, 3]`` (grey images are replicated to three channels)
    mask:  uint8 ``[H, W]`` with values in {0, 1} (1 = lesion)
    name:  a stable identifier (file stem or ``phantom_00012``)
    label: class name (``benign``/``malignant``/``normal``/``phantom``/``""``)
    """

    image: np.ndarray
    mask: np.ndarray
    name: str
    label: str = ""


class SegmentationSource:
    """Base class: a sequence of :class:`RawSample` with ``names`` and ``labels`` lists."""

    names: list
    labels: list

    def __len__(self) -> int:
        return len(self.names)

    def load(self, index: int) -> RawSample:  # pragma: no cover - abstract
        raise NotImplementedError

    def files(self, index: int) -> tuple[str, list[str]] | None:
        """``(image file, [mask files])`` of sample ``index``, or ``None`` for a dataset
        that is not read from files (nothing for :func:`scan_source` to check)."""
        return None

    def __getitem__(self, index: int) -> RawSample:
        if not 0 <= index < len(self):
            raise IndexError(f"index {index} out of range for {len(self)} samples")
        return self.load(index)


def read_image(path: str) -> np.ndarray:
    """Read any PIL-readable image as uint8 ``[H, W, 3]``; errors name the file."""
    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(path) as im:
            im.load()
            if im.mode in ("RGBA", "LA", "P", "PA"):
                im = im.convert("RGBA").convert("RGB")
            elif im.mode != "RGB":
                if im.mode in ("I", "I;16", "I;16B", "F"):
                    arr = np.asarray(im, dtype=np.float64)
                    hi = arr.max() if arr.size else 1.0
                    arr = (arr / (hi if hi > 0 else 1.0) * 255.0).round().astype(np.uint8)
                    return np.repeat(arr[..., None], 3, axis=2)
                im = im.convert("L").convert("RGB")
            arr = np.array(im, dtype=np.uint8)  # a writable copy
    except FileNotFoundError:
        raise FileNotFoundError(f"image file not found: {path}") from None
    except (UnidentifiedImageError, OSError, ValueError) as exc:
        raise DataError(f"cannot read image file {path}: {exc}") from exc
    return np.ascontiguousarray(arr)


def read_mask(path: str) -> np.ndarray:
    """Read a mask in any PIL mode (1, L, P, RGB, RGBA, I, ...) as uint8 ``[H, W]`` in {0, 1}.

    Any non-zero colour value is lesion; in RGBA files the alpha channel is ignored
    (a fully transparent pixel with zero colour is background).
    """
    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(path) as im:
            im.load()
            if im.mode == "P":
                im = im.convert("RGB")
            arr = np.asarray(im)
    except FileNotFoundError:
        raise FileNotFoundError(f"mask file not found: {path}") from None
    except (UnidentifiedImageError, OSError, ValueError) as exc:
        raise DataError(f"cannot read mask file {path}: {exc}") from exc
    if arr.ndim == 3:
        channels = arr.shape[2]
        if channels in (2, 4):  # LA / RGBA: drop alpha
            arr = arr[..., : channels - 1]
        arr = arr.any(axis=2)
    elif arr.ndim != 2:
        raise DataError(f"mask file {path} has unsupported shape {arr.shape}")
    return (arr != 0).astype(np.uint8)


def check_pair(image: np.ndarray, mask: np.ndarray, image_path: str, mask_path: str) -> None:
    if image.shape[:2] != mask.shape:
        raise DataError(
            f"mask {mask_path} has size {mask.shape[1]}x{mask.shape[0]} but image "
            f"{image_path} has size {image.shape[1]}x{image.shape[0]}")


def is_image_file(name: str) -> bool:
    return os.path.splitext(name)[1].lower() in (".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff")
