"""``ggnet``: train, evaluate and run GG-Net for breast-ultrasound lesion segmentation.

    ggnet demo                               # CPU demo on synthetic ultrasound (~1 min of training)
    ggnet train --data busi --data-root DIR --out runs/busi --fold all
    ggnet eval --run runs/busi               # per-fold + mean +- std table, overlays
    ggnet predict --checkpoint runs/busi/fold0/best.pt --input scan.png --out preds/
    ggnet compare runs/busi runs/baseline --out cmp   # paired tests (paper Table 8)
    ggnet bench                              # quick timing of the attention operators
    ggnet export --checkpoint best.pt --out model.onnx   # ONNX for onnxruntime
    ggnet probe --run runs/busi --out probe  # what the spatial GGB adds

Run ``ggnet <command> --help`` for the options of each command. This package only parses
and dispatches: :mod:`.arguments` holds the parsers, :mod:`.commands` the one library
call of each command.
"""
from __future__ import annotations

import argparse
import errno
import os
import sys

from . import arguments
from .commands import config_from_args

# ``config_from_args`` is re-exported: the tests build a TrainConfig from parsed arguments.
__all__ = ["COMMANDS", "build_parser", "config_from_args", "main"]

EPILOG = """examples:
  ggnet demo --out demo_run
      train a small GG-Net on synthetic B-mode images (CPU: about a minute of training on
      2 idle cores), evaluate with dense CRF, write metrics.md and overlays/ into demo_run/
  ggnet train --data busi --data-root /path/to/BUSI --out runs/busi --fold all \\
              --preset released --backbone resnext101_32x8d --weights resnext101.pth
      the paper's BUSI protocol: 3-fold CV on the 647 lesion images, one run per fold
  ggnet eval --run runs/busi
      evaluate every fold on its test split: runs/busi/eval_crf/metrics.md
  ggnet predict --checkpoint runs/busi/fold0/best.pt --input images/ --out preds
      write preds/masks/*.png and preds/overlays/*.png for every image in images/
"""


# The sub-commands in the order --help lists them, each with the function adding it.
COMMANDS = {"train": arguments.add_train_parser, "eval": arguments.add_eval_parser,
            "predict": arguments.add_predict_parser, "compare": arguments.add_compare_parser,
            "demo": arguments.add_demo_parser, "bench": arguments.add_bench_parser,
            "export": arguments.add_export_parser, "probe": arguments.add_probe_parser}


def build_parser(commands=None) -> argparse.ArgumentParser:
    """The ``ggnet`` parser. ``commands``: the sub-commands whose options are added
    (default: all); the others are listed with their one-line help only, so that
    ``ggnet --help`` or ``ggnet demo ...`` imports nothing a sub-command's options need
    (the dataset, loss, model and backend registries, and with them torch)."""
    lines = __doc__.split("\n")
    description = __doc__.split("\n\n")[0] + "\n\n" + "\n".join(lines[2:11])
    parser = argparse.ArgumentParser(
        prog="ggnet", description=description,
        formatter_class=argparse.RawDescriptionHelpFormatter, epilog=EPILOG)
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for name, add in COMMANDS.items():
        add(sub, full=commands is None or name in commands)
    return parser


def _command_of(argv: list[str]) -> str | None:
    """The sub-command ``argv`` names (its first word, ``ggnet`` having no other
    positional argument), or None."""
    first = next((a for a in argv if not a.startswith("-")), None)
    return first if first in COMMANDS else None


# Errors that mean the command was given something it cannot use (exit 2, one line; bad
# values raise ValueError/TypeError naming the setting); any other exception is an internal
# error (traceback, exit 1). GGNET_DEBUG=1: always a traceback.
USER_ERRORS = (FileExistsError, FileNotFoundError, NotADirectoryError, IsADirectoryError,
               PermissionError, ValueError, TypeError, ImportError)


# OSError numbers that say the output cannot be written where it was asked for.
UNWRITABLE = {errno.EROFS, errno.ENOSPC, errno.EDQUOT, errno.EACCES, errno.EPERM,
              errno.ENAMETOOLONG, errno.EFBIG}


def _user_error_text(exc: BaseException) -> str | None:
    """The one-line message of a user error, or None for an internal error."""
    if isinstance(exc, USER_ERRORS):
        return str(exc)
    if isinstance(exc, OSError) and exc.errno in UNWRITABLE:
        where = f"{exc.filename}: " if exc.filename else ""
        return f"cannot write {where}{exc.strerror}; choose a writable --out"
    return None


def main(argv=None) -> int:
    """Run ``ggnet``; returns the exit code: 0, 2 for a user error, 130 after Ctrl-C."""
    argv = sys.argv[1:] if argv is None else list(argv)
    command = _command_of(argv)
    args = build_parser([command] if command else ()).parse_args(argv)
    try:
        return args.func(args)
    except KeyboardInterrupt:
        if os.environ.get("GGNET_DEBUG"):
            raise
        print(f"ggnet {args.command}: interrupted", file=sys.stderr)
        return 130
    except Exception as exc:
        runs = sys.modules.get("ggnet_fast.train.runs")  # imported by whatever raised it
        if runs is not None and isinstance(exc, runs.TrainingInterrupted):
            print(f"ggnet {args.command}: {exc}", file=sys.stderr)
            return 130
        text = _user_error_text(exc)
        if text is None or os.environ.get("GGNET_DEBUG"):
            raise
        print(f"ggnet {args.command}: error: {text}", file=sys.stderr)
        return 2
