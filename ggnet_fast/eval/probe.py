"""What the spatial-wise GGB adds to its input, measured on a trained model.

The block returns ``y = gamma * o + x`` with ``o_i = sum_j W_ij mu_j``.  Under the paper's
outer softmax every weight ``W_ij`` stays within a factor e of ``1/N``, so ``o_i`` is
``mean_j(mu_j)`` (the same vector at every position: global average pooling of ``mu(x)``)
plus a small modulation.  :func:`spatial_ggb_terms` splits the block's addition into

* ``gap``: ``gamma * mean_j(mu_j)``, the part global average pooling would give;
* ``modulation``: ``gamma * (o - mean_j(mu_j))``, everything attention adds beyond it;
* ``varying``: ``gamma * (o - mean_i(o_i))``, the part that differs between positions;

and reports their Frobenius norms per image next to ``||x||`` (and ``||y - x||``).  The
attention is recomputed in float64 with the ``reference`` backend, so a modulation of
1e-5 of ``|o|`` is resolved rather than lost to float32 rounding.

Command line (one row per test image of every fold, and a summary)::

    ggnet probe --run runs/busi_cv/ggnet --checkpoint last.pt --out DIR
"""
from __future__ import annotations

import copy
import os

import numpy as np
import torch

from ..data.transforms import normalize_image
from ..fileio import atomic_write_csv, atomic_write_text
from ..nn.guided_non_local import GuidedNonLocal
from .evaluate import fold_runs
from .predict import load_model

TERMS = ("x", "added", "gap", "modulation", "varying")


def _float64_block(block: GuidedNonLocal) -> GuidedNonLocal:
    """A float64 copy of ``block`` that runs the ``reference`` backend."""
    twin = copy.deepcopy(block).double()
    twin.backend = "reference"
    return twin


def spatial_ggb_terms(block: GuidedNonLocal, x: torch.Tensor, guide: torch.Tensor) -> dict:
    """Per-image norms of the spatial GGB's input and of the parts of what it adds.

    Args:
        block: the trained :class:`GuidedNonLocal`.
        x: its input ``[B, C, H, W]``; guide: its guidance map ``[B, Cg, H', W']``.

    Returns ``{term: float64 ndarray [B]}`` for ``TERMS`` (Frobenius norms over C, H, W)
    plus ``"gamma"`` (the block's residual weight, a float).
    """
    if not isinstance(block, GuidedNonLocal):
        raise TypeError(f"block must be a GuidedNonLocal, got {type(block).__name__}")
    twin = _float64_block(block)
    x64, g64 = x.detach().double(), guide.detach().double()
    with torch.no_grad():
        o = twin.attention(x64, g64)                               # [B, C, H, W]
        mean_mu = twin.mu(x64).mean(dim=(2, 3), keepdim=True)      # [B, C, 1, 1]
        gamma = twin.gamma.detach().reshape(())
        parts = {
            "x": x64,
            "added": gamma * o,
            "gap": (gamma * mean_mu).expand_as(o),
            "modulation": gamma * (o - mean_mu),
            "varying": gamma * (o - o.mean(dim=(2, 3), keepdim=True)),
        }
    out = {k: v.flatten(1).norm(dim=1).cpu().numpy() for k, v in parts.items()}
    out["gamma"] = float(gamma)
    return out


class _Capture:
    """Forward pre-hook keeping the last ``(x, guide)`` a block was called with."""

    def __init__(self):
        self.args = None

    def __call__(self, _module, args):
        self.args = args


def probe_model(model, images: torch.Tensor) -> dict:
    """Run ``model`` on normalised ``images`` ``[B, 3, S, S]`` and return
    :func:`spatial_ggb_terms` at its spatial GGB (``ValueError`` if it has none)."""
    block = getattr(getattr(model, "ggb", None), "spatial", None)
    if not isinstance(block, GuidedNonLocal):
        raise ValueError("the model has no guided spatial block (GuidedNonLocal) to probe: "
                         "probe a 'full', 'joint' or other guided variant")
    capture = _Capture()
    handle = block.register_forward_pre_hook(capture)
    try:
        with torch.no_grad():
            model(images, final_only=True)
    finally:
        handle.remove()
    x, guide = capture.args
    return spatial_ggb_terms(block, x, guide)


def probe_run(run_dir: str, *, checkpoint: str = "last.pt", batch_size: int = 4,
              data_root: str | None = None) -> list[dict]:
    """Per-test-image rows (``name``, ``fold``, ``gamma``, the norms of ``TERMS``) for one
    run or every fold run under ``run_dir``, at the network input size of training."""
    rows = []
    for rd, cfg, data, source in fold_runs(run_dir, data_root=data_root, progress=False):
        model, _ = load_model(os.path.join(rd, checkpoint), "cpu", backend="auto")
        test = list(data.split_indices(source)["test"])
        for start in range(0, len(test), batch_size):
            samples = [source[i] for i in test[start:start + batch_size]]
            batch = torch.stack([normalize_image(s.image, cfg["image_size"]) for s in samples])
            terms = probe_model(model, batch)
            for k, s in enumerate(samples):
                rows.append({"name": s.name, "fold": data.fold, "gamma": terms["gamma"],
                             **{t: float(terms[t][k]) for t in TERMS}})
    return rows


def summary(rows: list[dict]) -> str:
    """Markdown: median and mean of each norm and of the ratios to ``||x||``."""
    arr = {t: np.array([r[t] for r in rows]) for t in TERMS}
    gammas = sorted({round(r["gamma"], 6) for r in rows})
    lines = [f"{len(rows)} images; gamma = {', '.join(f'{g:g}' for g in gammas)}", "",
             "| term | median norm | mean norm | median ratio to x | max ratio to x |",
             "|---|---:|---:|---:|---:|"]
    for t in TERMS:
        ratio = arr[t] / arr["x"]
        lines.append(f"| {t} | {np.median(arr[t]):.4g} | {arr[t].mean():.4g} | "
                     f"{np.median(ratio):.3g} | {ratio.max():.3g} |")
    return "\n".join(lines) + "\n"


def write_probe(run_dir: str, out_dir: str, *, checkpoint: str = "last.pt",
                data_root: str | None = None, overwrite: bool = False) -> str:
    """:func:`probe_run`, written to ``out_dir/probe.csv`` and ``probe.md`` (refused,
    ``FileExistsError``, when they exist and not ``overwrite``). Returns the summary."""
    csv_path, md_path = (os.path.join(out_dir, f"probe.{e}") for e in ("csv", "md"))
    if not overwrite and any(os.path.exists(p) for p in (csv_path, md_path)):
        raise FileExistsError(f"{out_dir} already holds probe.csv/probe.md; pass --overwrite")
    rows = probe_run(run_dir, checkpoint=checkpoint, data_root=data_root)
    os.makedirs(out_dir, exist_ok=True)
    atomic_write_csv(csv_path, ["name", "fold", "gamma", *TERMS], rows)
    text = summary(rows)
    atomic_write_text(md_path, text)
    return text
