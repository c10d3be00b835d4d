"""``ggnet export``: a training checkpoint to an ONNX model, checked in onnxruntime.

    ggnet export --checkpoint runs/busi/fold0/best.pt --out model.onnx [--image-size 256]
                 [--opset 18] [--static] [--overwrite]

The checkpoint is read like ``ggnet predict`` reads it (weights only,
:func:`ggnet_fast.eval.predict.load_model`); the model is exported on the CPU with the
``auto`` backend as ``images [B, 3, H, W] -> logits [B, 1, H, W]`` (batch and image size
dynamic unless ``--static``), then run in onnxruntime and in PyTorch on one random
image and the largest difference of the logits is printed.  ``add_arguments`` /
``run`` are what ``ggnet export`` calls; ``python -m ggnet_fast.export.command`` runs
the same thing standalone.
"""
from __future__ import annotations

import argparse
import os
import sys

#: The check fails above this error relative to the largest logit.  float32 throughout:
#: measured 1e-6 to 1e-5 relative on GG-Net (docs/export.md), i.e. a few hundred ulps
#: accumulated over ~100 layers; 1e-3 leaves room for other runtimes' kernels.
CHECK_RTOL = 1e-3


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """The options of ``ggnet export``."""
    from .api import MIN_OPSET

    parser.add_argument("--checkpoint", required=True,
                        help="a best.pt or last.pt written by ggnet train")
    parser.add_argument("--out", required=True, help="the ONNX file to write (e.g. model.onnx)")
    parser.add_argument("--image-size", type=int, default=None,
                        help="side of the example and check input (default: the training "
                             "run's image_size, else 256)")
    parser.add_argument("--opset", type=int, default=MIN_OPSET,
                        help=f"ONNX opset, >= {MIN_OPSET} (default {MIN_OPSET})")
    parser.add_argument("--static", action="store_true",
                        help="fix batch 1 and the image size in the graph (default: dynamic)")
    parser.add_argument("--overwrite", action="store_true", help="replace an existing --out")


def run(args: argparse.Namespace) -> int:
    """Export, check, print one summary line.  Returns 0, or 1 when the onnxruntime check
    fails; raises ``FileExistsError``/``ValueError``/``FileNotFoundError`` for a user
    error (the CLI prints those as one line, :func:`main` too)."""
    out = os.fspath(args.out)
    if os.path.isdir(out):
        raise IsADirectoryError(f"--out {out} is a folder; give a file name such as model.onnx")
    if os.path.exists(out) and not args.overwrite:
        raise FileExistsError(f"{out} already exists; pass --overwrite to replace it")
    if args.image_size is not None and args.image_size < 32:
        raise ValueError("--image-size must be >= 32 (the backbone's stride), "
                         f"got {args.image_size}")

    import torch

    from ..eval.predict import load_model
    from .api import MIN_OPSET, compare_with_torch, export_onnx

    if args.opset < MIN_OPSET:
        raise ValueError(f"--opset must be >= {MIN_OPSET}, got {args.opset}")
    model, train_cfg = load_model(args.checkpoint, "cpu", backend="auto")
    size = int(args.image_size or train_cfg.get("image_size", 256))
    example = torch.randn(1, 3, size, size)
    export_onnx(model, out, example, dynamic=not args.static, opset=args.opset)
    check = compare_with_torch(model, out, torch.randn(1, 3, size, size))
    err, ref = check["max_abs_error"], check["max_abs_reference"]
    shape = "[1, 3, %d, %d]" % (size, size) if args.static else "[B, 3, H, W] (dynamic)"
    print(f"wrote {out} (opset {args.opset}, images {shape} -> logits); onnxruntime vs "
          f"PyTorch on a random {size}x{size} image: max abs error {err:.3g} "
          f"(largest |logit| {ref:.3g})")
    if not err <= CHECK_RTOL * max(ref, 1.0):
        print(f"ggnet export: error: the ONNX model differs from PyTorch by {err:.3g} > "
              f"{CHECK_RTOL:g} x {max(ref, 1.0):.3g}", file=sys.stderr)
        return 1
    return 0


def main(argv=None) -> int:
    """Standalone entry point; user errors are one line on stderr and exit code 2."""
    parser = argparse.ArgumentParser(prog="ggnet export", description=__doc__.split("\n\n")[0])
    add_arguments(parser)
    args = parser.parse_args(argv)
    try:
        return run(args)
    except (FileExistsError, FileNotFoundError, IsADirectoryError, ValueError, TypeError) as exc:
        if os.environ.get("GGNET_DEBUG"):
            raise
        print(f"ggnet export: error: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
