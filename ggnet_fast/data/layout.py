"""Dataset folders: the one place that makes a data root absolute and tells which
registered dataset a folder holds from its layout."""
from __future__ import annotations

import os

from .registry import dataset_spec, registered_datasets


def absolute_root(root: str) -> str:
    """``root`` with ``~`` expanded and made absolute, so that a run evaluated from another
    working directory finds the same images and equal roots compare equal."""
    return os.path.abspath(os.path.expanduser(root))


def dataset_of_root(root: str) -> str:
    """The registered dataset whose layout folder ``root`` holds (the first, in
    registration order, whose ``detect`` accepts it: ``busi`` for benign/ and malignant/,
    ``folder`` for images/ and masks/). ``FileNotFoundError`` when ``root`` is no folder,
    ``ValueError`` naming the layouts when none matches."""
    if not os.path.isdir(root):
        raise FileNotFoundError(f"--data-root {root} does not exist or is not a folder")
    specs = [dataset_spec(n) for n in registered_datasets()]
    for spec in specs:
        if spec.detect is not None and spec.detect(root):
            return spec.name
    known = "; ".join(f"{s.name}: {s.help}" for s in specs if s.detect is not None)
    raise ValueError(f"--data-root {root} holds none of the known layouts ({known}); name "
                     f"its dataset with --data")
