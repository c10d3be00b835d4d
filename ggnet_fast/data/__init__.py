"""Datasets, the synthetic phantom generator, joint transforms and k-fold splits.

Every dataset here returns :class:`RawSample` objects at the image's original
resolution (``image`` uint8 ``[H, W, 3]``, ``mask`` uint8 ``[H, W]`` in {0, 1});
:class:`~ggnet_fast.data.transforms.TrainingView` turns them into network tensors.
"""
from .base import RawSample, SegmentationSource, Subset
from .busi import BUSIDataset
from .folder import FolderDataset
from .folds import kfold_indices, split_train_val
from .phantom import PhantomDataset, PhantomParams, make_phantom
from .transforms import IMAGENET_MEAN, IMAGENET_STD, SegTransform, TrainingView

__all__ = [
    "RawSample", "SegmentationSource", "Subset", "BUSIDataset", "FolderDataset",
    "PhantomDataset", "PhantomParams", "make_phantom", "kfold_indices", "split_train_val",
    "SegTransform", "TrainingView", "IMAGENET_MEAN", "IMAGENET_STD", "build_source",
]


def build_source(kind: str, root: str | None = None, *, include_normal: bool = False,
                 n: int = 300, seed: int = 0, size: int | tuple = 128, size_jitter: float = 0.0):
    """Build a dataset by name: ``"busi"`` (``root`` = folder holding the class folders or
    ``Dataset_BUSI_with_GT``), ``"folder"`` (``root`` holding ``images/`` and ``masks/``) or
    ``"phantom"`` (``n`` synthetic images, deterministic by ``seed``; ``size_jitter`` as
    :class:`PhantomDataset`'s)."""
    if kind == "phantom":
        return PhantomDataset(n=n, seed=seed, size=size, size_jitter=size_jitter)
    if kind not in ("busi", "folder"):
        raise ValueError(f"data: unknown dataset kind {kind!r} (expected busi, folder or phantom)")
    if root is None:
        raise ValueError(f"--data-root is required for data={kind!r}")
    if kind == "busi":
        return BUSIDataset(root, include_normal=include_normal)
    return FolderDataset(root)
