"""Generic ``images/`` + ``masks/`` loader for other datasets.

    root/images/<name>.<ext>      any PIL-readable image
    root/masks/<name>.<ext>       its mask (same stem; any extension; ``<name>_mask`` also
                                  accepted); every non-zero pixel is lesion
"""
from __future__ import annotations

import os

from .base import RawSample, SegmentationSource, check_pair, is_image_file, read_image, read_mask
from .layout import absolute_root
from .registry import register_dataset


class FolderDataset(SegmentationSource):
    """Pairs every file in ``root/images`` with the mask of the same stem in ``root/masks``."""

    def __init__(self, root: str, images: str = "images", masks: str = "masks"):
        self.root = absolute_root(root)
        img_dir, mask_dir = os.path.join(self.root, images), os.path.join(self.root, masks)
        for d in (img_dir, mask_dir):
            if not os.path.isdir(d):
                raise FileNotFoundError(f"folder dataset: {d} does not exist")
        mask_files = {}
        for f in sorted(os.listdir(mask_dir)):
            if is_image_file(f):
                stem = os.path.splitext(f)[0]
                mask_files.setdefault(stem, os.path.join(mask_dir, f))
                if stem.endswith("_mask"):
                    mask_files.setdefault(stem[: -len("_mask")], os.path.join(mask_dir, f))
        self.items = []
        for f in sorted(os.listdir(img_dir)):
            if not is_image_file(f):
                continue
            stem = os.path.splitext(f)[0]
            if stem not in mask_files:
                raise FileNotFoundError(
                    f"folder dataset: image {os.path.join(img_dir, f)} has no mask "
                    f"{os.path.join(mask_dir, stem)}.* in {mask_dir}")
            self.items.append((os.path.join(img_dir, f), mask_files[stem]))
        if not self.items:
            raise FileNotFoundError(f"folder dataset: no images in {img_dir}")
        self.names = [os.path.splitext(os.path.basename(p))[0] for p, _ in self.items]
        self.labels = [""] * len(self.items)

    def files(self, index: int) -> tuple[str, list[str]]:
        ip, mp = self.items[index]
        return ip, [mp]

    def load(self, index: int) -> RawSample:
        ip, mp = self.items[index]
        image, mask = read_image(ip), read_mask(mp)
        check_pair(image, mask, ip, mp)
        return RawSample(image=image, mask=mask, name=self.names[index])


def is_folder_root(root: str, images: str = "images", masks: str = "masks") -> bool:
    """Whether ``root`` holds ``images/`` and ``masks/``."""
    return all(os.path.isdir(os.path.join(root, d)) for d in (images, masks))


register_dataset("folder", FolderDataset, help="a folder with images/ and masks/",
                 detect=is_folder_root)
