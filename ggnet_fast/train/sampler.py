"""A DistributedSampler that can start mid-epoch and attaches a per-sample augmentation seed."""
from __future__ import annotations

import numpy as np
from torch.utils.data import DistributedSampler


def augmentation_seed(seed: int, epoch: int, index: int) -> int:
    """A 63-bit seed that depends only on (seed, epoch, dataset index)."""
    return int(np.random.SeedSequence([seed, epoch, index]).generate_state(2, np.uint64)[0] >> 1)


class ResumableSampler(DistributedSampler):
    """Shuffled (per ``set_epoch``) shard of the dataset for this rank that yields
    ``(index, augmentation_seed)`` keys and can skip the first ``start`` samples of the
    epoch (``set_start``) without drawing any random numbers, so a resumed run sees the
    same remaining samples with the same augmentations. Works without a process group
    when ``num_replicas``/``rank`` are given (single process: 1 and 0)."""

    def __init__(self, dataset, num_replicas: int = 1, rank: int = 0, shuffle: bool = True,
                 seed: int = 0, drop_last: bool = False):
        super().__init__(dataset, num_replicas=num_replicas, rank=rank, shuffle=shuffle,
                         seed=seed, drop_last=drop_last)
        self.start = 0

    def set_start(self, start: int) -> None:
        if start < 0:
            raise ValueError(f"start must be >= 0, got {start}")
        self.start = int(start)

    def __iter__(self):
        indices = list(super().__iter__())[self.start:]
        return iter([(i, augmentation_seed(self.seed, self.epoch, i)) for i in indices])

    def __len__(self) -> int:
        return max(0, self.num_samples - self.start)
