"""Datasets, the dataset registry, the synthetic phantom generator, joint transforms and
the train/validation/test splits.

Every dataset here returns :class:`RawSample` objects at the image's original
resolution (``image`` uint8 ``[H, W, 3]``, ``mask`` uint8 ``[H, W]`` in {0, 1});
:class:`~ggnet_fast.data.transforms.TrainingView` turns them into network tensors. A
dataset is usable by name once registered (:func:`register_dataset`; the built-in ones
register themselves when their module is imported below).

The torch side (the transforms and the torch view, which import torch and torchvision) is
imported on first use (PEP 562): a data script or a notebook that reads, splits or scans
a dataset does not pay for torch or the attention kernels.
"""
from .._lazy import lazy_attributes
from .base import DataError, RawSample, SegmentationSource
from .registry import (DatasetOption, DatasetSpec, build_dataset, dataset_spec, register_dataset,
                       registered_datasets)
from .phantom import PhantomDataset, PhantomParams, make_phantom  # registers "phantom"
from .busi import BUSIDataset  # registers "busi"
from .folder import FolderDataset  # registers "folder"
from .config import DataConfig
from .folds import kfold_indices, split_train_val
from .scan import scan_source

__all__ = [
    "DataError", "RawSample", "SegmentationSource", "scan_source", "BUSIDataset", "FolderDataset",
    "PhantomDataset", "PhantomParams", "make_phantom", "kfold_indices", "split_train_val",
    "SegTransform", "TrainingView", "IMAGENET_MEAN", "IMAGENET_STD", "DataConfig", "DatasetOption",
    "DatasetSpec", "build_dataset", "dataset_spec", "register_dataset", "registered_datasets",
]
__getattr__, __dir__ = lazy_attributes(__name__, {
    name: ".transforms" for name in ("IMAGENET_MEAN", "IMAGENET_STD", "SegTransform",
                                     "TrainingView")})
