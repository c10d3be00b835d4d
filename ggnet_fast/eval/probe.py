"""What the two guided blocks of GG-Net add to their inputs, measured on a trained model.

**Spatial GGB.** The block returns ``y = gamma * o + x`` with ``o_i = sum_j W_ij mu_j``.
Under the paper's outer softmax every weight ``W_ij`` stays within a factor e of ``1/N``,
so ``o_i`` is ``mean_j(mu_j)`` (the same vector at every position: global average pooling
of ``mu(x)``) plus a small modulation.  :func:`spatial_ggb_terms` splits the addition into

* ``gap``: ``gamma * mean_j(mu_j)``, the part global average pooling would give;
* ``modulation``: ``gamma * (o - mean_j(mu_j))``, everything attention adds beyond it;
* ``varying``: ``gamma * (o - mean_i(o_i))``, the part that differs between positions.

**Channel GGB.** ``z = gamma * Q y + y`` with ``Q = softmax(M)`` over C channels and ``M``
in [0, 1], so every weight is within a factor e of ``1/C`` and ``Q y`` is the channel
mean at each position plus a modulation.  :func:`channel_ggb_terms` splits the addition
into ``mean`` (``gamma * mean_c(y)``), ``modulation`` (``gamma * (Q y - mean_c(y))``) and
``varying`` (``gamma * (Q y - mean_c(Q y))``, the part that differs between channels), and
reports the extreme weights as multiples of ``1/C`` (``w_min = C min Q``, ``w_max``).

Both report Frobenius norms per image next to ``||x||`` and ``||y - x||`` (``added``).
The blocks are recomputed in float64 with the ``reference`` backend, so a modulation of
1e-5 of the addition is resolved rather than lost to float32 rounding.

Command line (one row per test image of every fold, and a summary)::

    ggnet probe --run runs/busi_cv/ggnet --checkpoint last.pt --out DIR
"""
from __future__ import annotations

import copy
import os

import numpy as np
import torch

from ..backends.reference import channel_map
from ..data.transforms import normalize_image
from ..fileio import atomic_write_csv, atomic_write_text
from ..nn.guided_channel import GuidedChannelAttention
from ..nn.guided_non_local import GuidedNonLocal
from .evaluate import fold_runs
from .predict import load_model

TERMS = ("x", "added", "gap", "modulation", "varying")
CHANNEL_TERMS = ("x", "added", "mean", "modulation", "varying")
CHANNEL_WEIGHTS = ("w_min", "w_max")
BLOCKS = {"spatial": GuidedNonLocal, "channel": GuidedChannelAttention}
# block -> (CSV file name, norm columns, extra columns)
OUTPUTS = {"spatial": ("probe.csv", TERMS, ()),
           "channel": ("probe_channel.csv", CHANNEL_TERMS, CHANNEL_WEIGHTS)}


def _float64_block(block):
    """A float64 copy of ``block`` that runs the ``reference`` backend."""
    twin = copy.deepcopy(block).double()
    twin.backend = "reference"
    return twin


def _norms(parts: dict) -> dict:
    return {k: v.flatten(1).norm(dim=1).cpu().numpy() for k, v in parts.items()}


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
        out = _norms({
            "x": x64,
            "added": gamma * o,
            "gap": (gamma * mean_mu).expand_as(o),
            "modulation": gamma * (o - mean_mu),
            "varying": gamma * (o - o.mean(dim=(2, 3), keepdim=True)),
        })
    out["gamma"] = float(gamma)
    return out


def channel_ggb_terms(block: GuidedChannelAttention, y: torch.Tensor,
                      guide: torch.Tensor) -> dict:
    """Per-image norms of the channel GGB's input and of the parts of what it adds.

    Args:
        block: the trained :class:`GuidedChannelAttention`.
        y: its input ``[B, C, H, W]``; guide: its guidance map ``[B, Cg, H', W']``.

    Returns ``{term: float64 ndarray [B]}`` for ``CHANNEL_TERMS`` (Frobenius norms over
    C, H, W) and ``CHANNEL_WEIGHTS`` (the smallest and largest weight of ``Q`` times C),
    plus ``"gamma"`` (a float).
    """
    if not isinstance(block, GuidedChannelAttention):
        raise TypeError(f"block must be a GuidedChannelAttention, got {type(block).__name__}")
    twin = _float64_block(block)
    y64, g64 = y.detach().double(), guide.detach().double()
    c = y64.shape[1]
    with torch.no_grad():
        o = twin.attention(y64, g64)                               # [B, C, H, W]
        g_hat = twin.guide_map(y64, g64)
        m = channel_map(y64.flatten(2), g_hat.flatten(2), combine=twin.combine,
                        stabilize=twin.stabilize, scale=twin.gram_scale(y64))
        q = m.softmax(-1)                                          # [B, C, C]
        mean = y64.mean(dim=1, keepdim=True)                       # [B, 1, H, W]
        gamma = twin.gamma.detach().reshape(())
        out = _norms({
            "x": y64,
            "added": gamma * o,
            "mean": (gamma * mean).expand_as(o),
            "modulation": gamma * (o - mean),
            "varying": gamma * (o - o.mean(dim=1, keepdim=True)),
        })
        out["w_min"] = (c * q.flatten(1).amin(1)).cpu().numpy()
        out["w_max"] = (c * q.flatten(1).amax(1)).cpu().numpy()
    out["gamma"] = float(gamma)
    return out


TERM_FUNCTIONS = {"spatial": spatial_ggb_terms, "channel": channel_ggb_terms}


class _Capture:
    """Forward pre-hook keeping the last ``(x, guide)`` a block was called with."""

    def __init__(self):
        self.args = None

    def __call__(self, _module, args):
        self.args = args


def guided_blocks(model) -> dict:
    """``{"spatial": GuidedNonLocal, "channel": GuidedChannelAttention}`` of a GG-Net's
    global guidance block, for the guided blocks it has (ablation blocks are left out)."""
    ggb = getattr(model, "ggb", None)
    found = {name: getattr(ggb, name, None) for name in BLOCKS}
    return {name: b for name, b in found.items() if isinstance(b, BLOCKS[name])}


def probe_blocks(model, images: torch.Tensor) -> dict:
    """Run ``model`` on normalised ``images`` ``[B, 3, S, S]`` once and return
    ``{block: terms}`` (:func:`spatial_ggb_terms`, :func:`channel_ggb_terms`) for each
    guided block it has (``ValueError`` if it has none)."""
    blocks = guided_blocks(model)
    if not blocks:
        raise ValueError("the model has no guided block (GuidedNonLocal or "
                         "GuidedChannelAttention) to probe: probe a 'full', 'joint', 'gap' or "
                         "other guided variant")
    captures = {name: _Capture() for name in blocks}
    handles = [b.register_forward_pre_hook(captures[n]) for n, b in blocks.items()]
    try:
        with torch.no_grad():
            model(images, final_only=True)
    finally:
        for h in handles:
            h.remove()
    return {name: TERM_FUNCTIONS[name](b, *captures[name].args) for name, b in blocks.items()}


def probe_model(model, images: torch.Tensor, block: str = "spatial") -> dict:
    """:func:`probe_blocks`' terms of one block (``"spatial"`` or ``"channel"``);
    ``ValueError`` if the model has no such guided block."""
    if block not in BLOCKS:
        raise ValueError(f"block must be one of {list(BLOCKS)}, got {block!r}")
    if block not in guided_blocks(model):
        kind = BLOCKS[block].__name__
        raise ValueError(f"the model has no guided {block} block ({kind}) to probe")
    return probe_blocks(model, images)[block]


def probe_run(run_dir: str, *, checkpoint: str = "last.pt", batch_size: int = 4,
              data_root: str | None = None) -> dict[str, list[dict]]:
    """``{block: rows}``: per-test-image rows (``name``, ``fold``, ``gamma``, the norms of
    the block's terms) for each guided block, for one run or every fold run under
    ``run_dir``, at the network input size of training."""
    rows: dict[str, list[dict]] = {}
    for rd, cfg, data, source in fold_runs(run_dir, data_root=data_root, progress=False):
        model, _ = load_model(os.path.join(rd, checkpoint), "cpu", backend="auto")
        test = list(data.split_indices(source)["test"])
        for start in range(0, len(test), batch_size):
            samples = [source[i] for i in test[start:start + batch_size]]
            batch = torch.stack([normalize_image(s.image, cfg["image_size"]) for s in samples])
            for block, terms in probe_blocks(model, batch).items():
                _, names, extra = OUTPUTS[block]
                for k, s in enumerate(samples):
                    rows.setdefault(block, []).append(
                        {"name": s.name, "fold": data.fold, "gamma": terms["gamma"],
                         **{t: float(terms[t][k]) for t in (*names, *extra)}})
    return rows


def summary(rows: list[dict], terms=TERMS) -> str:
    """Markdown: median and mean of each norm and of the ratios to ``||x||`` (and the
    range of ``w_min``/``w_max`` when the rows have them)."""
    arr = {t: np.array([r[t] for r in rows]) for t in terms}
    gammas = sorted({round(r["gamma"], 6) for r in rows})
    lines = [f"{len(rows)} images; gamma = {', '.join(f'{g:g}' for g in gammas)}", "",
             "| term | median norm | mean norm | median ratio to x | max ratio to x |",
             "|---|---:|---:|---:|---:|"]
    for t in terms:
        ratio = arr[t] / arr["x"]
        lines.append(f"| {t} | {np.median(arr[t]):.4g} | {arr[t].mean():.4g} | "
                     f"{np.median(ratio):.3g} | {ratio.max():.3g} |")
    if rows and all(w in rows[0] for w in CHANNEL_WEIGHTS):
        lo = np.array([r["w_min"] for r in rows])
        hi = np.array([r["w_max"] for r in rows])
        lines += ["", f"Weights times C: smallest {lo.min():.6g} (median per image "
                      f"{np.median(lo):.6g}), largest {hi.max():.6g} (median {np.median(hi):.6g})."]
    return "\n".join(lines) + "\n"


def write_probe(run_dir: str, out_dir: str, *, checkpoint: str = "last.pt",
                data_root: str | None = None, overwrite: bool = False) -> str:
    """:func:`probe_run`, written to ``out_dir``: ``probe.csv`` (spatial GGB),
    ``probe_channel.csv`` (channel GGB), each when the model has that block, and
    ``probe.md`` (the summaries).  Refused (``FileExistsError``) when any of them exists
    and not ``overwrite``.  Returns the summary."""
    names = [f for f, _, _ in OUTPUTS.values()] + ["probe.md"]
    paths = {f: os.path.join(out_dir, f) for f in names}
    existing = [f for f, p in paths.items() if os.path.exists(p)]
    if existing and not overwrite:
        raise FileExistsError(f"{out_dir} already holds {', '.join(existing)}; "
                              f"pass --overwrite")
    rows = probe_run(run_dir, checkpoint=checkpoint, data_root=data_root)
    os.makedirs(out_dir, exist_ok=True)
    sections = []
    for block, (csv_name, terms, extra) in OUTPUTS.items():
        if block not in rows:
            if overwrite and os.path.exists(paths[csv_name]):
                os.remove(paths[csv_name])  # a stale file of another model
            continue
        atomic_write_csv(paths[csv_name], ["name", "fold", "gamma", *terms, *extra],
                         rows[block])
        sections.append(f"## {block} GGB ({csv_name})\n\n" + summary(rows[block], terms))
    text = "\n".join(sections)
    atomic_write_text(paths["probe.md"], text)
    return text
