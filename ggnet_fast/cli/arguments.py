"""The ``ggnet`` sub-command parsers: each ``add_<command>_parser(sub, full)`` adds one
command, with its options only when ``full`` (so ``ggnet --help`` imports no registry).
The choices of --data, --preset, --loss and --backend come from the registries."""
from __future__ import annotations

import argparse
import json

from . import commands
from .commands import DATA_OPT


def _kv(text: str):
    if "=" not in text:
        raise argparse.ArgumentTypeError(f"expected KEY=VALUE, got {text!r}")
    k, v = text.split("=", 1)
    try:
        value = json.loads(v)
    except json.JSONDecodeError:
        value = v
    return k.strip(), value


def _add_data_args(p: argparse.ArgumentParser) -> None:
    """--data (the registered datasets), one flag per dataset option, the split."""
    from ..data import dataset_spec, registered_datasets

    g = p.add_argument_group("data")
    names = registered_datasets()
    g.add_argument("--data", choices=names, default=None,
                   help="dataset: " + "; ".join(f"{n}: {dataset_spec(n).help}" for n in names)
                        + " (default: the layout of --data-root, busi or folder; "
                        f"{names[0]} without --data-root)")
    g.add_argument("--data-root", help="dataset folder (busi: Dataset_BUSI_with_GT or its parent; "
                                       "folder: the one holding images/ and masks/)")
    for name in names:
        spec = dataset_spec(name)
        for key, opt in spec.options.items():
            dest = f"{DATA_OPT}{name}{DATA_OPT}{key}"
            if isinstance(opt.default, bool):
                g.add_argument(spec.flag(key), dest=dest, action="store_true", default=None,
                               help=opt.help)
            else:
                g.add_argument(spec.flag(key), dest=dest, type=type(opt.default),
                               metavar=key.upper(), help=f"{opt.help} (default {opt.default})")
    g.add_argument("--split", choices=["kfold", "holdout"],
                   help="k-fold CV (default) or one hold-out split")
    g.add_argument("--folds", type=int, help="number of CV folds (default 3, as in the paper)")
    g.add_argument("--fold", default=None,
                   help="test fold index, or 'all' to train every fold into OUT/fold<k> "
                        "(default 0)")
    g.add_argument("--fold-seed", type=int, help="seed of the fold shuffle (default 42)")
    g.add_argument("--val-fraction", type=float,
                   help="fraction of the training images kept for validation/model selection "
                        "(default 0.1)")
    g.add_argument("--test-fraction", type=float,
                   help="hold-out split: test fraction (default 0.2)")


def _add_model_args(p: argparse.ArgumentParser) -> None:
    """--preset (the preset table), model, backend (the backends registry) and loss."""
    from ..losses import registered_losses
    from ..models import BACKBONES, PRESET_TABLE, VARIANTS

    g = p.add_argument_group("model")
    g.add_argument("--preset", choices=list(PRESET_TABLE),
                   help="; ".join(f"{n}: {r.description}" for n, r in PRESET_TABLE.items())
                        + ". Sets model, loss and schedule (default paper).")
    g.add_argument("--variant", choices=VARIANTS, metavar="VARIANT",
                   help="full (default: GG-Net), baseline (DeepLabV3+) or an ablation: "
                        + ", ".join(VARIANTS))
    other_backbones = ", ".join(b for b in BACKBONES if b != "resnext101_32x8d")
    g.add_argument("--network", metavar="NETWORK",
                   help="ggnet (default) or smp:<architecture>, a segmentation_models_pytorch "
                        "model trained from scratch by the same pipeline (smp:Unet, smp:FPN, "
                        "smp:DeepLabV3Plus, ...; --backbone names its encoder)")
    g.add_argument("--retrofit", metavar="ATTENTION",
                   help="with --network smp:...: insert this attention (guided: joint "
                        "softmax; guided-product) on the encoder's deepest level, guided by "
                        "the next shallower one (ggnet_fast.integrations.retrofit)")
    g.add_argument("--backbone", metavar="BACKBONE",
                   help=f"GG-Net: resnext101_32x8d (default, paper) or {other_backbones}; "
                        f"smp networks: any smp encoder (resnet18, ...)")
    g.add_argument("--weights",
                   help="ImageNet weights: path to a torchvision state dict "
                        "(nothing is downloaded)")
    g.add_argument("--ggb-stride", type=int, choices=[4, 8],
                   help="feature stride of the guidance block (default: the preset's, paper 8, "
                        "released 4)")
    _add_backend_arg(g, "attention kernel backend (default auto: the best available)", None)
    g.add_argument("--model-opt", type=_kv, action="append", default=[], metavar="KEY=VALUE",
                   help="extra build_ggnet keyword (JSON value), repeatable")
    g.add_argument("--loss", choices=registered_losses(), help="training loss (default ggnet)")
    g.add_argument("--loss-opt", type=_kv, action="append", default=[], metavar="KEY=VALUE",
                   help="extra keyword of the loss (JSON value), repeatable")


def _add_optimisation_args(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group("optimisation")
    g.add_argument("--image-size", type=int, help="network input side (default 256)")
    g.add_argument("--batch-size", type=int, help="images per step and process (default 4)")
    g.add_argument("--lr", type=float, help="base learning rate (default 1e-3)")
    g.add_argument("--schedule", choices=["epochs", "iterations"],
                   help="override the preset's schedule (paper: epochs, released: iterations)")
    g.add_argument("--epochs", type=int,
                   help="number of epochs (>= 1); selects the epochs schedule (an error with "
                        "--schedule iterations)")
    g.add_argument("--lr-step-epochs", type=int,
                   help="lr x0.1 every this many epochs (0 = never); only with the epochs "
                        "schedule, else an error")
    g.add_argument("--iterations", type=int,
                   help="number of iterations (>= 1); selects the iterations schedule (an "
                        "error with --schedule epochs)")
    g.add_argument("--lr-step-iters", type=int,
                   help="lr x0.1 at this iteration (0 = never); only with the iterations "
                        "schedule, else an error")
    g.add_argument("--val-every", type=int,
                   help="iterations between validations (default: one epoch)")
    g.add_argument("--early-stop", dest="early_stop_patience", type=int,
                   help="stop after this many validations without a better Dice (0 = never)")


def _add_execution_args(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group("execution")
    g.add_argument("--out", help="run folder (refused if it exists and is not empty)")
    g.add_argument("--config", help="start from this config.json; flags given here override it")
    g.add_argument("--resume", action="store_true",
                   help="continue the run in --out (or every fold run under it) from its last.pt "
                        "with its saved settings: a flag that changes results is refused unless "
                        "it equals the saved value; the operational ones --device, --workers, "
                        "--no-progress, --no-tensorboard, --ckpt-every and --max-steps may change")
    g.add_argument("--overwrite", action="store_true",
                   help="replace this package's checkpoints, logs and eval reports in a non-empty "
                        "--out (other files are kept)")
    g.add_argument("--device", help="auto (default), cpu, cuda, cuda:1 ... (operational)")
    g.add_argument("--amp", choices=["auto", "on", "off"], help="mixed precision (auto = on CUDA)")
    g.add_argument("--workers", type=int,
                   help="data-loader worker processes (default 2; operational)")
    g.add_argument("--seed", type=int, help="training seed (default 0)")
    g.add_argument("--deterministic", action="store_true", default=None,
                   help="deterministic algorithms (bitwise-reproducible on the CPU)")
    g.add_argument("--ckpt-every", type=int,
                   help="extra checkpoint every N iterations (default: at validations; "
                        "operational)")
    g.add_argument("--max-steps", type=int,
                   help="stop this invocation with a checkpoint at this global step (not saved "
                        "with the run: a later --resume trains to the end)")
    g.add_argument("--no-progress", dest="progress", action="store_false", default=None,
                   help="no progress bar (operational)")
    g.add_argument("--no-tensorboard", dest="tensorboard", action="store_false", default=None,
                   help="no TensorBoard logs (default: written to tb/ when tensorboard is "
                        "installed; operational)")


def _add_crf_args(p: argparse.ArgumentParser) -> None:
    """--no-crf and --crf-param, shared by eval and predict."""
    from ..crf import DEFAULTS

    p.add_argument("--no-crf", dest="crf", action="store_false", help="skip the dense CRF")
    p.add_argument("--crf-param", action="append", default=[], metavar="NAME=VALUE",
                   help=f"dense-CRF setting, repeatable: {', '.join(DEFAULTS)} (defaults in "
                        "ggnet_fast.crf.DEFAULTS; tune them on the validation split)")


def _add_backend_arg(p, help_text: str, default) -> None:
    """--backend, choices from the backends registry."""
    from ..backends.registry import registered_backends

    p.add_argument("--backend", choices=["auto", *registered_backends()], default=default,
                   help=help_text)


def _add_inference_args(p: argparse.ArgumentParser, overwrite_help: str) -> None:
    """What eval and predict share: CRF, threshold, device, backend, --overwrite."""
    _add_crf_args(p)
    p.add_argument("--threshold", type=float, default=0.5,
                   help="foreground threshold (default 0.5)")
    p.add_argument("--device", default="auto", help="auto (default: cuda if available), cpu, "
                                                     "cuda, cuda:1 ...")
    _add_backend_arg(p, "attention kernel backend (default auto: the best one on --device, "
                        "whatever the training run used)", "auto")
    p.add_argument("--overwrite", action="store_true", help=overwrite_help)


def add_train_parser(sub, full: bool = True) -> None:
    """``ggnet train``; its options only when ``full``."""
    p = sub.add_parser("train", help="train a model (one fold, all folds, or resume a run)",
                       description="Train GG-Net (or an ablation/baseline variant). Writes "
                                   "config.json, last.pt/best.pt checkpoints, train_log.csv, "
                                   "val_log.csv and TensorBoard logs (tb/, when tensorboard is "
                                   "installed) into --out. Ctrl-C writes a checkpoint and exits "
                                   "130 (resume with --resume). Multi-GPU: "
                                   "torchrun --nproc-per-node N -m ggnet_fast.cli train ...",
                       formatter_class=argparse.RawDescriptionHelpFormatter)
    p.set_defaults(func=commands.cmd_train)
    if not full:
        return
    for add in (_add_data_args, _add_model_args, _add_optimisation_args, _add_execution_args):
        add(p)


def add_eval_parser(sub, full: bool = True) -> None:
    """``ggnet eval``; its options only when ``full``."""
    p = sub.add_parser("eval", help="evaluate a run (or a folder of fold runs) on its test split",
                       description="Predict each test image, resize back to its original size, "
                                   "apply dense CRF, threshold, compute "
                                   "Dice/Jaccard/Recall/Precision/Specificity/Accuracy/HD/ABD; "
                                   "write per_image.csv, metrics.md "
                                   "(paper Table 5 layout) and overlays/.")
    p.set_defaults(func=commands.cmd_eval)
    if not full:
        return
    p.add_argument("--run", required=True,
                   help="run folder (with config.json) or a folder of fold runs")
    p.add_argument("--checkpoint", default="best.pt",
                   help="checkpoint file name in each run (default best.pt)")
    p.add_argument("--overlays", type=int, default=8, help="overlay pictures per fold (-1 = all)")
    p.add_argument("--out", help="report folder (default RUN/eval_crf or RUN/eval)")
    p.add_argument("--data-root", help="dataset folder, if it moved since training")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    _add_inference_args(p, "replace the reports and overlays already in the report folder")


def add_predict_parser(sub, full: bool = True) -> None:
    """``ggnet predict``; its options only when ``full``."""
    p = sub.add_parser("predict", help="segment one image or a folder of images",
                       description="Write OUT/masks/<name>.png (0/255) and OUT/overlays/<name>.png "
                                   "(red contour of the prediction) for each input image. Existing "
                                   "files of those names are refused unless --overwrite; inputs "
                                   "sharing a name stem (a.png, a.jpg) are refused.")
    p.set_defaults(func=commands.cmd_predict)
    if not full:
        return
    p.add_argument("--checkpoint", required=True, help="best.pt or last.pt from a training run")
    p.add_argument("--input", required=True, help="an image file or a folder of images")
    p.add_argument("--out", required=True, help="output folder")
    p.add_argument("--image-size", type=int, help="network input side (default: as trained)")
    _add_inference_args(p, "replace masks/overlays of the same names already in --out")
    p.add_argument("--skip-existing", action="store_true",
                   help="predict only the inputs whose mask and overlay are not in --out yet "
                        "(completes a run that stopped or met unreadable files)")


def add_demo_parser(sub, full: bool = True) -> None:
    """``ggnet demo``; its options only when ``full``."""
    p = sub.add_parser("demo", help="train + evaluate a small GG-Net on synthetic ultrasound (CPU)",
                       description="Generates synthetic B-mode images with exact lesion masks, "
                                   "trains a ResNet-18 GG-Net at 80x80 on the CPU, evaluates "
                                   "held-out images with dense CRF against trivial predictors, and "
                                   "writes metrics.md, per_image.csv and overlays/ into --out.")
    p.set_defaults(func=commands.cmd_demo)
    if not full:
        return
    p.add_argument("--out", default="ggnet_demo", help="output folder (default ggnet_demo)")
    p.add_argument("--steps", type=int, help="training iterations (default 200)")
    p.add_argument("--n-images", type=int, help="synthetic images in total (default 360)")
    p.add_argument("--quick", action="store_true",
                   help="a tiny smoke run (seconds, meaningless numbers)")
    p.add_argument("--no-crf", dest="crf", action="store_false", help="skip the dense CRF")
    p.add_argument("--overwrite", action="store_true", help="replace a previous demo in --out")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")


def add_bench_parser(sub, full: bool = True) -> None:
    """``ggnet bench``; its options only when ``full``."""
    p = sub.add_parser("bench", help="time the guided-attention operators and a model step",
                       description="Times the spatial and channel guided attention on every "
                                   "available backend and one GG-Net forward; --pytest runs "
                                   "benchmarks/ instead.")
    p.set_defaults(func=commands.cmd_bench)
    if not full:
        return
    p.add_argument("--device", default="auto",
                   help="auto (default: cuda if available), cpu, cuda ...")
    p.add_argument("--repeats", type=int, default=5, help="timed repetitions per case (default 5)")
    p.add_argument("--pytest", action="store_true", help="run pytest benchmarks/ --benchmark-only")


def add_compare_parser(sub, full: bool = True) -> None:
    """``ggnet compare``; its options only when ``full``."""
    p = sub.add_parser("compare", help="paired significance tests between evaluated methods",
                       description="Match the images of two or more per-image CSVs (ggnet eval "
                                   "reports or run folders), run paired Wilcoxon and t-tests per "
                                   "metric with Holm correction, and write compare.csv, "
                                   "compare.md (paper Table 8 layout) and compare.png into --out.")
    p.set_defaults(func=commands.cmd_compare)
    if not full:
        return
    p.add_argument("inputs", nargs="+", metavar="RUN_OR_CSV",
                   help="a per_image.csv, an eval report folder or a run folder; NAME=PATH "
                        "names the method. A CSV with a method column (ggnet demo's) holds one "
                        "method per value: `ggnet compare ggnet_demo --out cmp` compares them")
    p.add_argument("--out", required=True, help="output folder")
    p.add_argument("--reference", metavar="NAME",
                   help="compare every method with this one (default: every pair)")
    p.add_argument("--overwrite", action="store_true", help="replace compare.* already in --out")


def add_probe_parser(sub, full: bool = True) -> None:
    """``ggnet probe``; its options only when ``full``."""
    p = sub.add_parser("probe", help="measure what the guided blocks of a trained run add",
                       description="Norms of what the spatial GGB adds (gamma * mean(mu), "
                                   "gamma * (o - mean(mu)), its position-varying part) and of "
                                   "what the channel GGB adds (gamma * mean_c(y), the rest, its "
                                   "channel-varying part; the extreme weights times C) next to "
                                   "their inputs, per test image of a trained run, recomputed in "
                                   "float64; writes probe.csv (spatial), probe_channel.csv and "
                                   "probe.md into --out.")
    p.set_defaults(func=commands.cmd_probe)
    if not full:
        return
    p.add_argument("--run", required=True, help="run folder or folder of fold runs")
    p.add_argument("--checkpoint", default="last.pt", help="checkpoint name (default last.pt)")
    p.add_argument("--out", required=True, help="output folder")
    p.add_argument("--data-root", default=None, help="dataset folder, if it moved")
    p.add_argument("--overwrite", action="store_true", help="replace probe.* in --out")


def add_export_parser(sub, full: bool = True) -> None:
    """``ggnet export``; its options only when ``full``."""
    p = sub.add_parser("export", help="export a trained GG-Net to ONNX",
                       description="Export a training checkpoint to an ONNX model that runs in "
                                   "stock onnxruntime (the fused attention operators are "
                                   "decomposed into standard ONNX ops), then check it against "
                                   "PyTorch on a random input. Needs ggnet_fast[export].")
    p.set_defaults(func=commands.cmd_export)
    if not full:
        return
    from ..export.command import add_arguments

    add_arguments(p)
