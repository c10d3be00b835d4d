"""Evaluate trained runs on their held-out split(s) and write the reports.

Layout written to ``out_dir``::

    per_image.csv   one row per test image (fold, name, label, the eight metrics)
    metrics.md      Table-5-style Markdown (per fold and mean +- std over folds)
    metrics.json    the same numbers, machine-readable
    overlays/       <name>.png with ground-truth (green) and prediction (red) contours
"""
from __future__ import annotations

import json
import os

from ..crf import describe_crf_params
from ..data.config import DataConfig
from ..fileio import atomic_write_text, read_run_config, run_folders, unstarted_folds
from ..metrics import binary_metrics
from .overlay import save_overlay
from .predict import Predictor, load_model
from .report import TABLE_NOTE, fold_table, write_per_image_csv


def overlay_name(name: str) -> str:
    return name.replace("/", "_") + ".png"


def evaluate_source(predictor: Predictor, source, indices, *, overlay_dir: str | None = None,
                    overlays: int = 8, batch_size: int = 4, progress: bool = True,
                    desc: str = "eval", written: list | None = None) -> list[dict]:
    """Predict every ``source[i]`` for ``i in indices`` and return per-image metric rows.

    Overlays are written for the first ``overlays`` images (all if ``overlays < 0``);
    existing overlay files are replaced (callers check for them first); each path
    written is appended to ``written`` when given.
    """
    from tqdm.auto import tqdm

    indices = list(indices)
    rows = []
    bar = tqdm(total=len(indices), disable=not progress, desc=desc, unit="img")
    for start in range(0, len(indices), batch_size):
        samples = [source[i] for i in indices[start:start + batch_size]]
        results = predictor.predict([s.image for s in samples])
        for s, (_prob, mask) in zip(samples, results):
            row = {"name": s.name, "label": s.label, **binary_metrics(mask, s.mask)}
            rows.append(row)
            if overlay_dir and (overlays < 0 or len(rows) <= overlays):
                path = save_overlay(os.path.join(overlay_dir, overlay_name(s.name)),
                                    s.image, s.mask, mask)
                if written is not None:
                    written.append(path)
        bar.update(len(samples))
    bar.close()
    return rows


def check_test_split(run_dir: str, names: list[str]) -> None:
    """Raise ``ValueError`` if the recomputed test images ``names`` are not the ones the
    run's ``splits.json`` (written by training) lists; skipped for runs without it."""
    path = os.path.join(run_dir, "splits.json")
    if not os.path.isfile(path):
        return
    with open(path, encoding="utf-8") as fh:
        saved = json.load(fh).get("test")
    if saved is None or sorted(saved) == sorted(names):
        return
    missing = sorted(set(saved) - set(names))
    extra = sorted(set(names) - set(saved))

    def few(items):
        return ", ".join(items[:5]) + (f" ... ({len(items)} in all)" if len(items) > 5 else "")

    detail = []
    if missing:
        detail.append(f"in the saved split but not recomputed: {few(missing)}")
    if extra:
        detail.append(f"recomputed but not in the saved split: {few(extra)}")
    if not detail:
        detail.append(f"same names, different counts ({len(saved)} saved, {len(names)} now)")
    raise ValueError(
        f"{run_dir}: the test split recomputed from the dataset differs from the one used in "
        f"training ({path}; {len(saved)} images saved, {len(names)} now): "
        + "; ".join(detail) + ". The dataset changed or --data-root points to another one.")


def _existing_outputs(out_dir: str) -> list[str]:
    found = [n for n in ("metrics.md", "metrics.json", "per_image.csv")
             if os.path.exists(os.path.join(out_dir, n))]
    ov = os.path.join(out_dir, "overlays")
    if os.path.isdir(ov) and os.listdir(ov):
        found.append("overlays/")
    return found


def fold_runs(run_dir: str, *, data_root: str | None = None, progress: bool = True) -> list:
    """``(run folder, its config dict, its DataConfig, its dataset)`` for the run in
    ``run_dir`` or each fold run under it. ``data_root`` replaces the saved dataset folder;
    without it, a saved folder that is gone is a ``FileNotFoundError`` naming ``--data-root``.
    Runs of one dataset (the folds) share its source, opened and scanned once
    (:meth:`DataConfig.build_source`: one ``DataError`` listing every bad file)."""
    missing = unstarted_folds(run_dir)
    if missing:
        names = ", ".join(os.path.basename(f) for f in missing.values())
        raise ValueError(f"{run_dir}: the folds {names} "
                         f"of this k-fold run were never trained (training stopped "
                         f"before them); finish with: ggnet train --resume --out {run_dir}")
    runs, sources = [], {}
    for rd in run_folders(run_dir):
        run_cfg = read_run_config(rd)
        data = DataConfig.from_run_config(run_cfg)
        if data_root is not None:
            data.data_root = data_root
        elif data.data_root and not os.path.isdir(data.data_root):
            raise FileNotFoundError(f"the dataset folder {data.data_root} of run {rd} does not "
                                    f"exist (here); pass --data-root DIR if the dataset moved")
        data.validate()  # the checks and the absolute root training applied
        key = json.dumps([data.data, data.data_root, data.data_options], sort_keys=True)
        if key not in sources:
            sources[key] = data.build_source(progress=progress)
        runs.append((rd, run_cfg, data, sources[key]))
    return runs


def evaluate_run(run_dir: str, *, checkpoint: str = "best.pt", crf: bool = True,
                 threshold: float = 0.5, overlays: int = 8, out_dir: str | None = None,
                 device: str = "cpu", data_root: str | None = None, method: str | None = None,
                 progress: bool = True, crf_params: dict | None = None,
                 backend: str = "auto", overwrite: bool = False) -> dict:
    """Evaluate one run folder, or a folder of fold runs (``fold0/``, ``fold1/``...),
    each on its own test split; returns ``{"table": markdown, "numbers": ..., "rows": ...}``.

    ``backend`` is the attention backend to run with (``"auto"`` picks one for ``device``,
    whatever the training run used). An ``out_dir`` that already holds reports or overlays
    is refused (``FileExistsError``) unless ``overwrite``."""
    out_dir = out_dir or os.path.join(run_dir, "eval" + ("_crf" if crf else ""))
    existing = _existing_outputs(out_dir) if os.path.isdir(out_dir) else []
    if existing and not overwrite:
        raise FileExistsError(f"{out_dir} already holds {', '.join(existing)}; pass --overwrite "
                              f"to replace them or choose another --out")
    runs = fold_runs(run_dir, data_root=data_root, progress=progress)
    overlay_dir = os.path.join(out_dir, "overlays")
    new_dirs = [d for d in (out_dir, overlay_dir) if not os.path.isdir(d)]
    written: list[str] = []
    from ..models.networks import model_name

    os.makedirs(out_dir, exist_ok=True)  # the data is sound: only now is anything written
    try:
        rows_per_fold = []
        for rd, run_cfg, data, source in runs:
            rows_per_fold.append(_evaluate_fold(
                rd, run_cfg, data, source, checkpoint=checkpoint, device=device,
                backend=backend, progress=progress, overlay_dir=overlay_dir, overlays=overlays,
                written=written, predictor_options=dict(crf=crf, threshold=threshold,
                                                        crf_params=crf_params)))
            crf_tag = ", CRF" if crf else ""
            name = model_name(run_cfg.get("network", "ggnet"), run_cfg["variant"],
                              run_cfg.get("retrofit"))
            method = method or f"{name} ({run_cfg['backbone']}{crf_tag})"
        crf_note = f"Dense CRF: {describe_crf_params(crf_params)}." if crf else None
        return _write_reports(out_dir, rows_per_fold, method, crf_note, written)
    except BaseException:  # Ctrl-C, an error: the same command can simply run again
        _remove_partial(written, new_dirs)
        raise


def _remove_partial(written: list[str], new_dirs: list[str]) -> None:
    """Remove the files an evaluation that stopped early wrote (``written``) and the
    folders it created (``new_dirs``, parents first) that are empty now."""
    for path in written:
        if os.path.isfile(path):
            os.unlink(path)
    for folder in reversed(new_dirs):
        if os.path.isdir(folder) and not os.listdir(folder):
            os.rmdir(folder)


def _evaluate_fold(run_dir: str, run_cfg: dict, data: DataConfig, source, *, checkpoint: str,
                   device: str, backend: str, progress: bool, overlay_dir: str, overlays: int,
                   predictor_options: dict, written: list) -> list[dict]:
    """Per-image rows of one run on its test split (checked against ``splits.json``)."""
    test = data.split_indices(source)["test"]
    check_test_split(run_dir, [source.names[i] for i in test])
    model, _ = load_model(os.path.join(run_dir, checkpoint), device, backend=backend)
    predictor = Predictor(model, run_cfg["image_size"], device, amp=device != "cpu",
                          **predictor_options)
    rows = evaluate_source(predictor, source, test, overlay_dir=overlay_dir, overlays=overlays,
                           progress=progress, desc=f"eval {os.path.basename(run_dir)}",
                           written=written)
    for r in rows:
        r["fold"] = data.fold if data.split == "kfold" else "holdout"
    return rows


def _write_reports(out_dir: str, rows_per_fold: list[list[dict]], method: str,
                   note: str | None, written: list) -> dict:
    """``metrics.md`` (``note`` below the table), ``metrics.json`` and ``per_image.csv``;
    each path is appended to ``written`` before it is written."""
    table, numbers = fold_table(rows_per_fold, method)
    text = f"{table}\n\n{TABLE_NOTE}\n" + (f"\n{note}\n" if note else "")
    all_rows = [r for rows in rows_per_fold for r in rows]
    paths = [os.path.join(out_dir, n) for n in ("per_image.csv", "metrics.md", "metrics.json")]
    written.extend(paths)
    write_per_image_csv(paths[0], all_rows, ("fold", "label"))
    atomic_write_text(paths[1], text)
    atomic_write_text(paths[2], json.dumps(numbers, indent=2, default=float) + "\n")
    return {"table": text, "numbers": numbers, "rows": all_rows, "out_dir": out_dir}
