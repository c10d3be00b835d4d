"""Up-front check of a file-based dataset: every image and mask is opened and decoded
once, before training or evaluation writes anything, and every bad file is reported in
one :class:`~ggnet_fast.data.base.DataError`.

What is checked per sample (:meth:`SegmentationSource.files`):

* the image and each mask exist and decode completely (a truncated or corrupt file
  fails here, not mid-training);
* each mask is in a PIL mode whose non-zero pixels mean lesion (:data:`MASK_MODES`; in
  CMYK, YCbCr, LAB or HSV black is not all zeros);
* each mask has its image's width and height; no image is empty.

Datasets that are not read from files (the phantom) have nothing to scan.
"""
from __future__ import annotations

import os

from .base import DataError

# PIL modes in which "any non-zero pixel" is the lesion (read_mask's rule)
MASK_MODES = ("1", "L", "LA", "P", "PA", "RGB", "RGBA", "I", "I;16", "I;16B", "I;16L", "F")


def _decode(path: str) -> tuple[tuple[int, int], str]:
    """``((width, height), PIL mode)`` of ``path`` after decoding all of it."""
    from PIL import Image

    with Image.open(path) as im:
        size, mode = im.size, im.mode
        im.load()
    return size, mode


def _read_problem(path: str, exc: Exception) -> str:
    if isinstance(exc, FileNotFoundError):
        return f"{path}: file not found"
    return f"{path}: cannot be read ({type(exc).__name__}: {exc})"


def check_sample_files(image_path: str, mask_paths: list[str]) -> list[str]:
    """One line per problem of one sample's files (empty when they are usable)."""
    problems = []
    size = None
    try:
        size, _ = _decode(image_path)
        if 0 in size:
            problems.append(f"{image_path}: empty image ({size[0]}x{size[1]})")
    except Exception as exc:  # any failure to decode makes the file unusable
        problems.append(_read_problem(image_path, exc))
    for mask_path in mask_paths:
        try:
            mask_size, mode = _decode(mask_path)
        except Exception as exc:
            problems.append(_read_problem(mask_path, exc))
            continue
        if mode not in MASK_MODES:
            problems.append(f"{mask_path}: mask in PIL mode {mode!r}, expected one of "
                            f"{', '.join(MASK_MODES)} (any non-zero pixel is lesion)")
        if size is not None and mask_size != size:
            problems.append(f"{mask_path}: mask is {mask_size[0]}x{mask_size[1]} but its image "
                            f"{os.path.basename(image_path)} is {size[0]}x{size[1]}")
    return problems


def scan_source(source, indices=None, *, progress: bool | None = None) -> None:
    """Decode every image and mask of ``source`` (or of ``source[i]`` for ``i`` in
    ``indices``) and raise one :class:`DataError` listing every problem, one line each.

    ``progress``: show a progress bar (``None``: only on a terminal). Sources without
    files (``source.files(i)`` is ``None``) pass at once."""
    from tqdm.auto import tqdm

    files_of = getattr(source, "files", None)
    indices = range(len(source)) if indices is None else list(indices)
    if files_of is None or len(indices) == 0 or files_of(indices[0]) is None:
        return
    problems: list[str] = []
    bad = 0
    for i in tqdm(indices, desc="scan data", unit="img", disable=None if progress is None
                  else not progress, leave=False):
        found = check_sample_files(*files_of(i))
        bad += bool(found)
        problems.extend(found)
    if problems:
        where = getattr(source, "root", None)
        raise DataError(
            f"{bad} of {len(indices)} images{f' in {where}' if where else ''} cannot be used "
            f"(fix or remove these files, then rerun):\n  " + "\n  ".join(problems))
