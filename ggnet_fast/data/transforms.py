"""Joint image/mask transforms (torchvision.transforms.v2 + tv_tensors) and the torch view.

Training: resize to ``size x size`` (bilinear image, nearest mask), random horizontal
flip, random rotation of +-``rotation`` degrees (released code: 10), conversion to float
and ImageNet normalisation. Evaluation: resize + normalisation only.
"""
from __future__ import annotations

import torch
from torch.utils.data import Dataset
from torchvision import tv_tensors
from torchvision.transforms import v2

from .base import DataError

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


class SegTransform:
    """Callable ``(image uint8 [H,W,3] ndarray, mask uint8 [H,W])``
    ``-> (float [3,S,S], float [1,S,S])``.

    Args:
        size: output side ``S`` (int) or ``(H, W)``.
        train: apply the random flip/rotation.
        rotation: maximum rotation in degrees (0 disables).
        hflip: probability of a horizontal flip.
    """

    def __init__(self, size=256, train: bool = False, rotation: float = 10.0, hflip: float = 0.5):
        size = (size, size) if isinstance(size, int) else tuple(size)
        ops = [v2.Resize(size, antialias=True)]
        if train:
            if hflip > 0:
                ops.append(v2.RandomHorizontalFlip(hflip))
            if rotation > 0:
                ops.append(v2.RandomRotation(rotation))
        ops += [v2.ToDtype({tv_tensors.Image: torch.float32, tv_tensors.Mask: torch.float32,
                            "others": None}, scale=True),
                v2.Normalize(IMAGENET_MEAN, IMAGENET_STD)]
        self.size, self.train = size, train
        self.pipeline = v2.Compose(ops)

    def __call__(self, image, mask=None):
        img = tv_tensors.Image(torch.from_numpy(image).permute(2, 0, 1).contiguous())
        if mask is None:
            return self.pipeline(img)
        m = tv_tensors.Mask(torch.from_numpy(mask)[None].contiguous())
        img, m = self.pipeline(img, m)
        return img.as_subclass(torch.Tensor), (m.as_subclass(torch.Tensor) > 0.5).float()


def normalize_image(image, size) -> torch.Tensor:
    """uint8 ``[H, W, 3]`` ndarray -> normalised float ``[3, S, S]`` for inference."""
    return SegTransform(size, train=False)(image).as_subclass(torch.Tensor)


class TrainingView(Dataset):
    """Torch dataset over a :class:`~ggnet_fast.data.base.SegmentationSource`.

    Keys are either an index or ``(index, aug_seed)``; with a seed the random
    augmentation is drawn from ``torch.manual_seed(aug_seed)`` inside a forked RNG, so
    augmentation depends only on the key (identical across worker counts and resumes).
    Items are dicts: ``image`` float [3,S,S], ``mask`` float [1,S,S], ``index`` int.
    """

    def __init__(self, source, transform: SegTransform, indices=None):
        self.source, self.transform = source, transform
        self.indices = list(range(len(source))) if indices is None else [int(i) for i in indices]

    def __len__(self) -> int:
        return len(self.indices)

    def __getitem__(self, key):
        if isinstance(key, (tuple, list)):
            index, aug_seed = int(key[0]), int(key[1])
        else:
            index, aug_seed = int(key), None
        src = self.indices[index]
        try:
            sample = self.source[src]
        except DataError:
            raise
        except (OSError, ValueError) as exc:  # one line, also from a DataLoader worker
            raise DataError(f"sample {self.source.names[src]}: {exc}") from exc
        if aug_seed is None:
            image, mask = self.transform(sample.image, sample.mask)
        else:
            with torch.random.fork_rng(devices=[]):
                torch.manual_seed(aug_seed)
                image, mask = self.transform(sample.image, sample.mask)
        return {"image": image, "mask": mask, "index": src}
