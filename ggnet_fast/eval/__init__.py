"""Evaluation: prediction at original resolution (+ optional dense CRF), metrics, per-image
CSV, Table-5-style Markdown reports and contour overlays."""
from .evaluate import evaluate_run, evaluate_source
from .overlay import draw_overlay, save_overlay
from .predict import Predictor, load_model
from .report import fold_table, markdown_table, write_per_image_csv

__all__ = ["Predictor", "load_model", "evaluate_run", "evaluate_source", "draw_overlay",
           "save_overlay", "markdown_table", "fold_table", "write_per_image_csv"]
