"""Evaluation: prediction at original resolution (+ optional dense CRF), metrics, per-image
CSV, Table-5-style Markdown reports and contour overlays.

The names below are imported on first use (PEP 562), so that ``ggnet compare`` (which
needs only :mod:`.compare`) does not import torch and OpenCV through the predictor."""
from .._lazy import lazy_attributes

_WHERE = {"evaluate_run": ".evaluate", "evaluate_source": ".evaluate",
          "draw_overlay": ".overlay", "save_overlay": ".overlay", "Predictor": ".predict",
          "load_model": ".predict", "markdown_table": ".report", "fold_table": ".report",
          "write_per_image_csv": ".report"}

__all__ = ["Predictor", "load_model", "evaluate_run", "evaluate_source", "draw_overlay",
           "save_overlay", "markdown_table", "fold_table", "write_per_image_csv"]
__getattr__, __dir__ = lazy_attributes(__name__, _WHERE)
