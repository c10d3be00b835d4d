"""Export to ONNX and ``torch.export`` (``docs/export.md``).

    from ggnet_fast.export import export_onnx, export_program
    export_onnx(model, "model.onnx")                 # GG-Net: images -> logits, dynamic sizes
    export_onnx(block, "block.onnx", (x, guide))     # any model holding our modules
    program = export_program(model, images)          # torch.export.ExportedProgram

The fused operators are translated to standard ONNX ops (``onnx_ops.py``), so the file
runs in stock onnxruntime without ggnet_fast.  ``ggnet export`` is :mod:`.command`.
"""
from .api import (
    MIN_OPSET,
    OUTPUTS,
    ExportError,
    GGNetLogits,
    compare_with_torch,
    dynamic_shapes,
    example_args,
    export_onnx,
    export_program,
    fixed_size_reason,
    inference_module,
    onnxruntime_session,
    run_onnx,
    untranslated_ops,
)
from .onnx_ops import TRANSLATED, translation_table

__all__ = [
    "MIN_OPSET", "OUTPUTS", "TRANSLATED", "ExportError", "GGNetLogits", "compare_with_torch",
    "dynamic_shapes", "example_args", "export_onnx", "export_program", "fixed_size_reason",
    "inference_module", "onnxruntime_session", "run_onnx", "translation_table", "untranslated_ops",
]
