"""BUSI loader (Al-Dhabyani et al., 2020) for the layout users download.

    Dataset_BUSI_with_GT/{benign,malignant,normal}/
        benign (1).png          the B-mode image
        benign (1)_mask.png     its lesion mask
        benign (4)_mask_1.png   extra masks (``_mask_1``, ``_mask_2``...): the lesion mask
                                of such an image is the union of all of them

Images come in PIL modes L or RGB, masks in 1, L, RGB or RGBA; every non-zero mask pixel
is lesion. Normal images (all-zero masks) are excluded by default (paper Table 5) and
included with ``include_normal=True`` (Table 6).
"""
from __future__ import annotations

import os
import re

import numpy as np

from .base import RawSample, SegmentationSource, check_pair, read_image, read_mask
from .layout import absolute_root
from .registry import DatasetOption, register_dataset

CLASSES = ("benign", "malignant")
NORMAL = "normal"
_MASK_RE = re.compile(r"^(?P<stem>.+)_mask(?:_(?P<k>\d+))?$")


def find_busi_root(root: str) -> str:
    """Return the folder holding ``benign/`` and ``malignant/`` given it or a parent."""
    root = absolute_root(root)
    if not os.path.isdir(root):
        raise FileNotFoundError(f"BUSI root {root} does not exist or is not a folder")
    for candidate in (root, os.path.join(root, "Dataset_BUSI_with_GT")):
        if all(os.path.isdir(os.path.join(candidate, c)) for c in CLASSES):
            return candidate
    raise FileNotFoundError(
        f"BUSI root {root}: expected folders 'benign/' and 'malignant/' in it or in "
        f"{os.path.join(root, 'Dataset_BUSI_with_GT')}")


class BUSIDataset(SegmentationSource):
    """The BUSI images with their united masks, sorted by class then natural file order.

    Args:
        root: ``Dataset_BUSI_with_GT`` or the folder that contains it.
        include_normal: also load ``normal/`` (empty masks); needs that folder.
    """

    def __init__(self, root: str, include_normal: bool = False):
        self.root = find_busi_root(root)
        classes = CLASSES + ((NORMAL,) if include_normal else ())
        if include_normal and not os.path.isdir(os.path.join(self.root, NORMAL)):
            raise FileNotFoundError(
                f"include_normal=True but {os.path.join(self.root, NORMAL)} does not exist")
        self.items: list[tuple[str, list[str], str]] = []
        for cls in classes:
            self.items.extend(self._scan(os.path.join(self.root, cls), cls))
        if not self.items:
            raise FileNotFoundError(f"BUSI root {self.root}: no images found")
        self.names = [f"{cls}/{os.path.splitext(os.path.basename(p))[0]}"
                      for p, _, cls in self.items]
        self.labels = [cls for _, _, cls in self.items]

    @staticmethod
    def _scan(folder: str, cls: str):
        files = sorted(f for f in os.listdir(folder) if f.lower().endswith(".png"))
        images: dict[str, str] = {}
        masks: dict[str, list[tuple[int, str]]] = {}
        for f in files:
            stem = os.path.splitext(f)[0]
            m = _MASK_RE.match(stem)
            if m:
                masks.setdefault(m.group("stem"), []).append(
                    (int(m.group("k") or 0), os.path.join(folder, f)))
            else:
                images[stem] = os.path.join(folder, f)
        for stem, entries in masks.items():
            if stem not in images:
                raise FileNotFoundError(
                    f"BUSI: mask {entries[0][1]} has no image "
                    f"{os.path.join(folder, stem + '.png')}")
        out = []
        for stem in sorted(images, key=_natural_key):
            entries = sorted(masks.get(stem, []))
            if not entries or entries[0][0] != 0:
                raise FileNotFoundError(
                    f"BUSI: image {images[stem]} has no mask "
                    f"{os.path.join(folder, stem + '_mask.png')}")
            out.append((images[stem], [p for _, p in entries], cls))
        return out

    def files(self, index: int) -> tuple[str, list[str]]:
        image_path, mask_paths, _ = self.items[index]
        return image_path, list(mask_paths)

    def load(self, index: int) -> RawSample:
        image_path, mask_paths, cls = self.items[index]
        image = read_image(image_path)
        mask = np.zeros(image.shape[:2], dtype=np.uint8)
        for mp in mask_paths:
            m = read_mask(mp)
            check_pair(image, m, image_path, mp)
            mask |= m
        return RawSample(image=image, mask=mask, name=self.names[index], label=cls)


def _natural_key(s: str):
    return [int(t) if t.isdigit() else t for t in re.split(r"(\d+)", s)]


def is_busi_root(root: str) -> bool:
    """Whether ``root`` (or its ``Dataset_BUSI_with_GT``) holds benign/ and malignant/."""
    try:
        find_busi_root(root)
    except FileNotFoundError:
        return False
    return True


register_dataset(
    "busi", BUSIDataset, help="BUSI (Dataset_BUSI_with_GT layout)", detect=is_busi_root,
    options={"include_normal": DatasetOption(
        False, "BUSI: also use the 133 normal images (paper Table 6)", flag="--include-normal")})
