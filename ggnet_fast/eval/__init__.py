"""Evaluation: prediction at original resolution (+ optional dense CRF), metrics, per-image
CSV, Table-5-style Markdown reports and contour overlays.

The names below are imported on first use (PEP 562), so that ``ggnet compare`` (which
needs only :mod:`.compare`) does not import torch and OpenCV through the predictor."""
import importlib

_WHERE = {"evaluate_run": "evaluate", "evaluate_source": "evaluate", "draw_overlay": "overlay",
          "save_overlay": "overlay", "Predictor": "predict", "load_model": "predict",
          "markdown_table": "report", "fold_table": "report", "write_per_image_csv": "report"}

__all__ = ["Predictor", "load_model", "evaluate_run", "evaluate_source", "draw_overlay",
           "save_overlay", "markdown_table", "fold_table", "write_per_image_csv"]


def __getattr__(name: str):
    """The public name ``name``, imported from its module on first use."""
    if name not in _WHERE:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(importlib.import_module(f".{_WHERE[name]}", __name__), name)
    globals()[name] = value
    return value


def __dir__():
    return sorted([*globals(), *__all__])
