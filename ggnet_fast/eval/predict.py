"""Inference: network-size prediction resized back to each image's original resolution,
optional dense CRF there, then a threshold; prediction of image files into a folder."""
from __future__ import annotations

import os

import numpy as np
import torch
import torch.nn.functional as F

from ..crf import dense_crf
from ..data.base import DataError, is_image_file, read_image
from ..data.transforms import normalize_image
from ..fileio import load_checkpoint


def load_model(checkpoint: str, device="cpu", backend: str = "auto"):
    """Rebuild the model (GG-Net or an smp network) from a checkpoint written by training
    (``best.pt``/``last.pt``).

    ``backend`` is the attention backend to run with (``"auto"``: the best one available
    here, whatever the training run used).
    Returns ``(model in eval mode, train config dict)``.
    """
    from ..models.networks import build_from_config

    ck = load_checkpoint(checkpoint, map_location="cpu")
    if "model" not in ck or "model_config" not in ck:
        raise ValueError(f"checkpoint {checkpoint} is not a ggnet_fast training checkpoint "
                         f"(no model or model_config); pass a best.pt or last.pt written by "
                         f"ggnet train")
    model = build_from_config(ck["model_config"], backend=backend)
    model.load_state_dict(ck["model"])
    return model.to(device).eval(), dict(ck.get("config", {}))


class Predictor:
    """Predict lesion probability/masks for uint8 ``[H, W, 3]`` images of any size.

    Args:
        model: a GG-Net (any variant) or an ``SmpNetwork``; run with ``final_only=True``.
        image_size: network input side used in training.
        crf: apply the dense CRF (needs ``pydensecrf2``) at the original resolution.
        threshold: foreground threshold on the (CRF-refined) probability.
        crf_params: keyword overrides for :func:`ggnet_fast.crf.dense_crf`.
    """

    def __init__(self, model, image_size: int, device="cpu", crf: bool = False,
                 threshold: float = 0.5, crf_params: dict | None = None, amp: bool = False):
        if not 0.0 < threshold < 1.0:
            raise ValueError(f"threshold must be in (0, 1), got {threshold}")
        self.model, self.image_size = model.eval(), int(image_size)
        self.device = torch.device(device)
        self.crf, self.threshold = crf, threshold
        self.crf_params = dict(crf_params or {})
        self.amp = amp and self.device.type == "cuda"

    @torch.no_grad()
    def probabilities(self, images) -> list[np.ndarray]:
        """Foreground probability at each image's original size (before CRF), float32."""
        batch = torch.stack([normalize_image(im, self.image_size) for im in images]).to(self.device)
        with torch.autocast(self.device.type, dtype=torch.float16, enabled=self.amp):
            logits = self.model(batch, final_only=True)
        logits = logits.float()
        out = []
        for lg, im in zip(logits, images):
            up = F.interpolate(lg[None], size=im.shape[:2], mode="bilinear", align_corners=False)
            out.append(torch.sigmoid(up)[0, 0].cpu().numpy().astype(np.float32))
        return out

    def predict(self, images) -> list[tuple[np.ndarray, np.ndarray]]:
        """``(probability, mask uint8 {0,1})`` per image; probability is CRF-refined if enabled."""
        results = []
        for im, prob in zip(images, self.probabilities(images)):
            if self.crf:
                prob = dense_crf(im, prob, **self.crf_params)
            results.append((prob, (prob > self.threshold).astype(np.uint8)))
        return results


def input_images(path: str) -> dict[str, str]:
    """``{stem: file}`` for an image file or every image in a folder. Outputs are named by
    stem, so inputs sharing one (``a.png``, ``a.jpg``) are refused (``ValueError``)."""
    if os.path.isdir(path):
        paths = [os.path.join(path, f) for f in sorted(os.listdir(path)) if is_image_file(f)]
        if not paths:
            raise FileNotFoundError(f"--input: no images in {path}")
    elif os.path.isfile(path):
        paths = [path]
    else:
        raise FileNotFoundError(f"--input {path} does not exist")
    by_stem: dict[str, str] = {}
    for p in paths:
        stem = os.path.splitext(os.path.basename(p))[0]
        if stem in by_stem:
            raise ValueError(f"inputs {by_stem[stem]} and {p} would both be written as "
                             f"{stem}.png; rename one of them or predict them separately")
        by_stem[stem] = p
    return by_stem


def _outputs(out_dir: str, stem: str) -> tuple[str, str]:
    return (os.path.join(out_dir, "masks", stem + ".png"),
            os.path.join(out_dir, "overlays", stem + ".png"))


def pending_inputs(out_dir: str, inputs: dict[str, str], *, overwrite: bool = False,
                   skip_existing: bool = False) -> dict[str, str]:
    """The ``inputs`` (``{stem: file}``) still to predict into ``out_dir``.

    ``skip_existing``: inputs whose mask and overlay are both there already are left out
    (a rerun completes an interrupted or partly failed one); an input with only one of
    them is predicted again, and only its missing file is written
    (:func:`predict_to_folder` with ``keep_existing``). Without it, any input whose mask
    or overlay exists is refused (``FileExistsError`` naming the files) unless
    ``overwrite``."""
    if skip_existing and overwrite:
        raise ValueError("--skip-existing and --overwrite exclude each other")
    if skip_existing:
        return {stem: path for stem, path in inputs.items()
                if not all(os.path.exists(t) for t in _outputs(out_dir, stem))}
    existing = [t for stem in inputs for t in _outputs(out_dir, stem) if os.path.exists(t)]
    if existing and not overwrite:
        more = f" (and {len(existing) - 3} more)" if len(existing) > 3 else ""
        raise FileExistsError(f"{', '.join(existing[:3])}{more} already exist; pass "
                              f"--skip-existing to predict only the inputs without outputs, "
                              f"--overwrite to replace them, or choose another --out")
    return inputs


def predict_to_folder(predictor: Predictor, inputs: dict[str, str], out_dir: str, *,
                      keep_existing: bool = False):
    """Write ``out_dir/masks/<stem>.png`` (0/255) and ``out_dir/overlays/<stem>.png`` for
    each of ``inputs`` (``{stem: file}``); yields ``(file, mask file, lesion fraction)``.
    ``keep_existing``: a mask or overlay already there is left as it is.

    An input that cannot be read is skipped and the others are predicted; at the end one
    :class:`~ggnet_fast.data.base.DataError` lists every unreadable input."""
    from .overlay import save_mask, save_overlay

    unreadable = []
    for stem, path in inputs.items():
        try:
            image = read_image(path)
        except (OSError, ValueError) as exc:  # DataError, FileNotFoundError
            unreadable.append(str(exc))
            continue
        _prob, mask = predictor.predict([image])[0]
        mask_path, overlay_path = _outputs(out_dir, stem)
        if not (keep_existing and os.path.exists(mask_path)):
            save_mask(mask_path, mask)
        if not (keep_existing and os.path.exists(overlay_path)):
            save_overlay(overlay_path, image, None, mask)
        yield path, mask_path, float(mask.mean())
    if unreadable:
        raise DataError(
            f"{len(unreadable)} of {len(inputs)} inputs could not be read (the other "
            f"{len(inputs) - len(unreadable)} were written to {out_dir}; rerun with "
            f"--skip-existing once they are fixed):\n  " + "\n  ".join(unreadable))
