"""``ggnet``: train, evaluate and run GG-Net for breast-ultrasound lesion segmentation.

    ggnet demo                               # CPU demo on synthetic ultrasound (~1 min of training)
    ggnet train --data busi --data-root DIR --out runs/busi --fold all
    ggnet eval --run runs/busi               # per-fold + mean +- std table, overlays
    ggnet predict --checkpoint runs/busi/fold0/best.pt --input scan.png --out preds/
    ggnet compare runs/busi runs/baseline --out cmp   # paired tests (paper Table 8)
    ggnet bench                              # quick timing of the attention operators

Run ``ggnet <command> --help`` for the options of each command.
"""
from __future__ import annotations

import argparse
import errno
import json
import os
import sys

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


DATA_OPT = "__data_opt__"  # argparse dest of a dataset option: DATA_OPT<dataset>DATA_OPT<option>


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
    from .data import dataset_spec, registered_datasets

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
    g.add_argument("--split", choices=["kfold", "holdout"], help="k-fold CV (default) or one hold-out split")
    g.add_argument("--folds", type=int, help="number of CV folds (default 3, as in the paper)")
    g.add_argument("--fold", default=None,
                   help="test fold index, or 'all' to train every fold into OUT/fold<k> (default 0)")
    g.add_argument("--fold-seed", type=int, help="seed of the fold shuffle (default 42)")
    g.add_argument("--val-fraction", type=float,
                   help="fraction of the training images kept for validation/model selection (default 0.1)")
    g.add_argument("--test-fraction", type=float, help="hold-out split: test fraction (default 0.2)")


def _add_model_args(p: argparse.ArgumentParser) -> None:
    """--preset (the preset table), model, backend (the backends registry) and loss."""
    from .losses import registered_losses
    from .models import BACKBONES, PRESET_TABLE, VARIANTS

    g = p.add_argument_group("model")
    g.add_argument("--preset", choices=list(PRESET_TABLE),
                   help="; ".join(f"{n}: {r.description}" for n, r in PRESET_TABLE.items())
                        + ". Sets model, loss and schedule (default paper).")
    g.add_argument("--variant", choices=VARIANTS, metavar="VARIANT",
                   help=f"full (default: GG-Net), baseline (DeepLabV3+) or an ablation: {', '.join(VARIANTS)}")
    g.add_argument("--backbone", choices=list(BACKBONES), metavar="BACKBONE",
                   help=f"resnext101_32x8d (default, paper) or {', '.join(b for b in BACKBONES if b != 'resnext101_32x8d')}")
    g.add_argument("--weights", help="ImageNet weights: path to a torchvision state dict (nothing is downloaded)")
    g.add_argument("--ggb-stride", type=int, choices=[4, 8], help="feature stride of the guidance block (default: the preset's, paper 8, released 4)")
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
    g.add_argument("--val-every", type=int, help="iterations between validations (default: one epoch)")
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
    g.add_argument("--workers", type=int, help="data-loader worker processes (default 2; operational)")
    g.add_argument("--seed", type=int, help="training seed (default 0)")
    g.add_argument("--deterministic", action="store_true", default=None,
                   help="deterministic algorithms (bitwise-reproducible on the CPU)")
    g.add_argument("--ckpt-every", type=int,
                   help="extra checkpoint every N iterations (default: at validations; operational)")
    g.add_argument("--max-steps", type=int,
                   help="stop this invocation with a checkpoint at this global step (not saved "
                        "with the run: a later --resume trains to the end)")
    g.add_argument("--no-progress", dest="progress", action="store_false", default=None,
                   help="no progress bar (operational)")
    g.add_argument("--no-tensorboard", dest="tensorboard", action="store_false", default=None,
                   help="no TensorBoard logs (default: written to tb/ when tensorboard is "
                        "installed; operational)")


def _data_options(args, dataset: str) -> dict:
    """The dataset options given on the command line; one of another dataset is refused."""
    given = {}
    for dest, value in vars(args).items():
        if dest.startswith(DATA_OPT) and value is not None:
            owner, key = dest[len(DATA_OPT):].split(DATA_OPT)
            if owner != dataset:
                from .data import dataset_spec
                raise ValueError(f"{dataset_spec(owner).flag(key)} is an option of --data "
                                 f"{owner}, not of {dataset}")
            given[key] = value
    return given


def _dataset_of_root(root: str) -> str:
    """The dataset a ``--data-root`` given without ``--data`` holds, from its layout:
    ``busi`` (benign/ and malignant/) or ``folder`` (images/ and masks/)."""
    from .data.busi import find_busi_root

    if not os.path.isdir(root):
        raise FileNotFoundError(f"--data-root {root} does not exist or is not a folder")
    try:
        find_busi_root(root)
        name = "busi"
    except FileNotFoundError:
        if not all(os.path.isdir(os.path.join(root, d)) for d in ("images", "masks")):
            raise ValueError(f"--data-root {root} holds neither the BUSI layout (benign/, "
                             f"malignant/) nor images/ and masks/; name its dataset with "
                             f"--data") from None
        name = "folder"
    print(f"--data-root {root}: {name} layout, training on --data {name}", flush=True)
    return name


# The flags of each schedule: its length (which selects it) and its lr step.
SCHEDULE_FLAGS = {"epochs": ("epochs", "lr_step_epochs"),
                  "iterations": ("iterations", "lr_step_iters")}


def _flag(dest: str) -> str:
    return "--" + dest.replace("_", "-")


def _schedule_of(args, schedule: str) -> str:
    """The schedule a run uses: ``--schedule``, else the one whose length flag
    (``--epochs``, ``--iterations``) is given, else ``schedule`` (the preset's or the
    ``--config``'s). A flag of the other schedule cannot take effect: ``ValueError``."""
    given = {s: [f for f in flags if getattr(args, f, None) is not None]
             for s, flags in SCHEDULE_FLAGS.items()}
    chosen = args.schedule or next((s for s, flags in SCHEDULE_FLAGS.items()
                                    if flags[0] in given[s]), schedule)
    for other, flags in given.items():
        if other != chosen and flags:
            raise ValueError(f"{' and '.join(map(_flag, flags))} cannot take effect: "
                             f"{'they belong' if len(flags) > 1 else 'it belongs'} to the "
                             f"{other} schedule, and this run uses the {chosen} schedule"
                             + (" (--schedule)" if args.schedule else "")
                             + f"; drop it, or pass --schedule {other}")
    return chosen


def config_from_args(args):
    """Merge --config, the preset's schedule and explicit flags into a TrainConfig
    (validated by the Trainer that runs it)."""
    from .train import TrainConfig, preset_schedule

    base = TrainConfig.load(args.config).to_dict() if args.config else TrainConfig().to_dict()
    preset = args.preset or base["preset"]
    if args.preset or not args.config:
        base.update(preset_schedule(preset))
    base["preset"] = preset
    args.schedule = _schedule_of(args, base["schedule"])
    if args.data is None and args.data_root and not args.config:
        args.data = _dataset_of_root(args.data_root)
    if args.data and args.data != base["data"]:
        base["data_options"] = {}  # the options of another dataset do not carry over
    names = set(base)
    for key, value in vars(args).items():
        if key in names and value is not None and key not in ("fold",):
            base[key] = value
    base["data_options"] = {**base["data_options"], **_data_options(args, base["data"])}
    if args.model_opt:
        base["model_overrides"] = {**base.get("model_overrides", {}), **dict(args.model_opt)}
    if args.loss_opt:
        base["loss_overrides"] = {**base.get("loss_overrides", {}), **dict(args.loss_opt)}
    if args.out:
        base["out_dir"] = args.out
    return TrainConfig.from_dict(base)


def _resume_settings(args) -> dict:
    """The settings given on a ``train --resume`` command line other than the operational
    ones: each must equal the run's saved value."""
    from .train import TrainConfig
    from .train.runs import NOT_COMPARED

    names = {f for f in TrainConfig().to_dict() if f not in NOT_COMPARED and f != "fold"}
    settings = {k: v for k, v in vars(args).items() if k in names and v is not None}
    if args.fold is not None and str(args.fold) != "all":
        settings["fold"] = int(args.fold)
    options = {dest.split(DATA_OPT)[-1]: v for dest, v in vars(args).items()
               if dest.startswith(DATA_OPT) and v is not None}
    if options:
        settings["data_options"] = options
    if args.model_opt:
        settings["model_overrides"] = dict(args.model_opt)
    if args.loss_opt:
        settings["loss_overrides"] = dict(args.loss_opt)
    return settings


def cmd_train(args) -> int:
    from .train.runs import OPERATIONAL_FIELDS, resume_runs, train_folds

    if not args.out:
        raise ValueError("--out DIR is required (the run folder)")
    if args.resume:
        if args.config or args.overwrite:
            raise ValueError("--resume continues a run with its saved settings: it cannot be "
                             "combined with " + ("--config" if args.config else "--overwrite"))
        resume_runs(args.out, {k: getattr(args, k) for k in OPERATIONAL_FIELDS
                               if getattr(args, k, None) is not None},
                    _resume_settings(args), max_steps=args.max_steps or 0)
        return 0
    cfg = config_from_args(args)
    if str(args.fold) == "all":
        train_folds(cfg, range(cfg.folds), args.out, overwrite=args.overwrite)
    else:
        train_folds(cfg, [int(args.fold or cfg.fold)], overwrite=args.overwrite)
    return 0


def _check_saved_data_roots(run: str) -> None:
    """``FileNotFoundError`` pointing at ``--data-root`` when the dataset folder a run
    was trained on is gone (moved, or saved relative to another directory)."""
    from .fileio import read_json, run_folders

    for run_dir in run_folders(run):
        root = (read_json(os.path.join(run_dir, "config.json")) or {}).get("data_root")
        if root and not os.path.isdir(root):
            raise FileNotFoundError(f"the dataset folder {root} of run {run_dir} does not exist "
                                    f"(here); pass --data-root DIR if the dataset moved")


def cmd_eval(args) -> int:
    from .eval import evaluate_run

    from .crf import parse_crf_params

    device = _device(args.device)
    _check_threshold(args.threshold)
    if args.data_root is None:
        _check_saved_data_roots(args.run)

    res = evaluate_run(args.run, checkpoint=args.checkpoint, crf=args.crf,
                       threshold=args.threshold, overlays=args.overlays, out_dir=args.out,
                       device=device, data_root=args.data_root,
                       progress=not args.no_progress, backend=args.backend,
                       overwrite=args.overwrite, crf_params=parse_crf_params(args.crf_param))
    print(res["table"])
    print(f"written to {res['out_dir']}")
    return 0


def _device(name) -> str:
    """The device ``--device`` names (``auto``: cuda when available, else cpu); a device
    this machine does not have, or a name that is none, is a ``ValueError`` naming it."""
    from .train.build import resolve_device

    return str(resolve_device(name or "auto"))


def _check_threshold(value: float) -> None:
    """``--threshold`` is a probability strictly between 0 and 1 (checked before any work)."""
    if not 0.0 < value < 1.0:
        raise ValueError(f"--threshold must be in (0, 1), got {value}")


def cmd_predict(args) -> int:
    from .crf import parse_crf_params
    from .eval import Predictor, load_model
    from .eval.predict import input_images, pending_inputs, predict_to_folder

    crf_params = parse_crf_params(args.crf_param)
    device = _device(args.device)
    _check_threshold(args.threshold)
    inputs = input_images(args.input)
    inputs = pending_inputs(args.out, inputs, overwrite=args.overwrite,
                            skip_existing=args.skip_existing)
    model, cfg = load_model(args.checkpoint, device, backend=args.backend)
    if args.crf:
        from .crf import crf_available
        reason = crf_available()
        if reason:
            raise ValueError(f"dense CRF unavailable ({reason}); pass --no-crf")
    predictor = Predictor(model, args.image_size or cfg.get("image_size", 256), device,
                          crf=args.crf, threshold=args.threshold, crf_params=crf_params)
    for path, written, fraction in predict_to_folder(predictor, inputs, args.out,
                                                     keep_existing=args.skip_existing):
        print(f"{path}: lesion {fraction * 100:.1f}% of the image -> {written}")
    return 0


def cmd_demo(args) -> int:
    from .demo import run_demo

    run_demo(args.out, quick=args.quick, steps=args.steps, overwrite=args.overwrite,
             crf=args.crf, progress=not args.no_progress, n_images=args.n_images)
    return 0


def cmd_compare(args) -> int:
    from .eval.compare import run_compare

    res = run_compare(args.inputs, args.out, reference=args.reference, overwrite=args.overwrite)
    print(res["markdown"])
    print(f"written to {args.out}")
    return 0


def cmd_bench(args) -> int:
    if args.pytest:
        import subprocess
        return subprocess.call([sys.executable, "-m", "pytest", "benchmarks/", "--benchmark-only", "-q"])
    device = _device(args.device)
    from .bench import run_bench
    run_bench(device=device, repeats=args.repeats)
    return 0


def _add_crf_args(p: argparse.ArgumentParser) -> None:
    """--no-crf and --crf-param, shared by eval and predict."""
    from .crf import DEFAULTS

    p.add_argument("--no-crf", dest="crf", action="store_false", help="skip the dense CRF")
    p.add_argument("--crf-param", action="append", default=[], metavar="NAME=VALUE",
                   help=f"dense-CRF setting, repeatable: {', '.join(DEFAULTS)} (defaults in "
                        "ggnet_fast.crf.DEFAULTS; tune them on the validation split)")


def _add_backend_arg(p, help_text: str, default) -> None:
    """--backend, choices from the backends registry."""
    from .backends.registry import registered_backends

    p.add_argument("--backend", choices=["auto", *registered_backends()], default=default,
                   help=help_text)


def _add_inference_args(p: argparse.ArgumentParser, overwrite_help: str) -> None:
    """What eval and predict share: CRF, threshold, device, backend, --overwrite."""
    _add_crf_args(p)
    p.add_argument("--threshold", type=float, default=0.5, help="foreground threshold (default 0.5)")
    p.add_argument("--device", default="auto", help="auto (default: cuda if available), cpu, "
                                                     "cuda, cuda:1 ...")
    _add_backend_arg(p, "attention kernel backend (default auto: the best one on --device, "
                        "whatever the training run used)", "auto")
    p.add_argument("--overwrite", action="store_true", help=overwrite_help)


def _add_train_parser(sub, full: bool = True) -> None:
    """``ggnet train``; its options only when ``full``."""
    p = sub.add_parser("train", help="train a model (one fold, all folds, or resume a run)",
                       description="Train GG-Net (or an ablation/baseline variant). Writes config.json, "
                                   "last.pt/best.pt checkpoints, train_log.csv, val_log.csv and "
                                   "TensorBoard logs (tb/, when tensorboard is installed) into --out. "
                                   "Ctrl-C writes a checkpoint and exits 130 (resume with "
                                   "--resume). Multi-GPU: "
                                   "torchrun --nproc-per-node N -m ggnet_fast.cli train ...",
                       formatter_class=argparse.RawDescriptionHelpFormatter)
    p.set_defaults(func=cmd_train)
    if not full:
        return
    for add in (_add_data_args, _add_model_args, _add_optimisation_args, _add_execution_args):
        add(p)


def _add_eval_parser(sub, full: bool = True) -> None:
    """``ggnet eval``; its options only when ``full``."""
    p = sub.add_parser("eval", help="evaluate a run (or a folder of fold runs) on its test split",
                       description="Predict each test image, resize back to its original size, apply "
                                   "dense CRF, threshold, compute Dice/Jaccard/Recall/Precision/"
                                   "Specificity/Accuracy/HD/ABD; write per_image.csv, metrics.md "
                                   "(paper Table 5 layout) and overlays/.")
    p.set_defaults(func=cmd_eval)
    if not full:
        return
    p.add_argument("--run", required=True, help="run folder (with config.json) or a folder of fold runs")
    p.add_argument("--checkpoint", default="best.pt", help="checkpoint file name in each run (default best.pt)")
    p.add_argument("--overlays", type=int, default=8, help="overlay pictures per fold (-1 = all)")
    p.add_argument("--out", help="report folder (default RUN/eval_crf or RUN/eval)")
    p.add_argument("--data-root", help="dataset folder, if it moved since training")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    _add_inference_args(p, "replace the reports and overlays already in the report folder")


def _add_predict_parser(sub, full: bool = True) -> None:
    """``ggnet predict``; its options only when ``full``."""
    p = sub.add_parser("predict", help="segment one image or a folder of images",
                       description="Write OUT/masks/<name>.png (0/255) and OUT/overlays/<name>.png "
                                   "(red contour of the prediction) for each input image. Existing "
                                   "files of those names are refused unless --overwrite; inputs "
                                   "sharing a name stem (a.png, a.jpg) are refused.")
    p.set_defaults(func=cmd_predict)
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


def _add_demo_parser(sub, full: bool = True) -> None:
    """``ggnet demo``; its options only when ``full``."""
    p = sub.add_parser("demo", help="train + evaluate a small GG-Net on synthetic ultrasound (CPU)",
                       description="Generates synthetic B-mode images with exact lesion masks, trains a "
                                   "ResNet-18 GG-Net at 80x80 on the CPU, evaluates held-out images "
                                   "with dense CRF against trivial predictors, and writes metrics.md, "
                                   "per_image.csv and overlays/ into --out.")
    p.set_defaults(func=cmd_demo)
    if not full:
        return
    p.add_argument("--out", default="ggnet_demo", help="output folder (default ggnet_demo)")
    p.add_argument("--steps", type=int, help="training iterations (default 200)")
    p.add_argument("--n-images", type=int, help="synthetic images in total (default 360)")
    p.add_argument("--quick", action="store_true", help="a tiny smoke run (seconds, meaningless numbers)")
    p.add_argument("--no-crf", dest="crf", action="store_false", help="skip the dense CRF")
    p.add_argument("--overwrite", action="store_true", help="replace a previous demo in --out")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")


def _add_bench_parser(sub, full: bool = True) -> None:
    """``ggnet bench``; its options only when ``full``."""
    p = sub.add_parser("bench", help="time the guided-attention operators and a model step",
                       description="Times the spatial and channel guided attention on every available "
                                   "backend and one GG-Net forward; --pytest runs benchmarks/ instead.")
    p.set_defaults(func=cmd_bench)
    if not full:
        return
    p.add_argument("--device", default="auto", help="auto (default: cuda if available), cpu, cuda ...")
    p.add_argument("--repeats", type=int, default=5, help="timed repetitions per case (default 5)")
    p.add_argument("--pytest", action="store_true", help="run pytest benchmarks/ --benchmark-only")


def _add_compare_parser(sub, full: bool = True) -> None:
    """``ggnet compare``; its options only when ``full``."""
    p = sub.add_parser("compare", help="paired significance tests between evaluated methods",
                       description="Match the images of two or more per-image CSVs (ggnet eval "
                                   "reports or run folders), run paired Wilcoxon and t-tests per "
                                   "metric with Holm correction, and write compare.csv, "
                                   "compare.md (paper Table 8 layout) and compare.png into --out.")
    p.set_defaults(func=cmd_compare)
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


# The sub-commands in the order --help lists them, each with the function adding it.
COMMANDS = {"train": _add_train_parser, "eval": _add_eval_parser,
            "predict": _add_predict_parser, "compare": _add_compare_parser,
            "demo": _add_demo_parser, "bench": _add_bench_parser}


def build_parser(commands=None) -> argparse.ArgumentParser:
    """The ``ggnet`` parser. ``commands``: the sub-commands whose options are added
    (default: all); the others are listed with their one-line help only, so that
    ``ggnet --help`` or ``ggnet demo ...`` imports nothing a sub-command's options need
    (the dataset, loss, model and backend registries, and with them torch)."""
    parser = argparse.ArgumentParser(
        prog="ggnet", description=__doc__.split("\n\n")[0] + "\n\n" + "\n".join(__doc__.split("\n")[2:9]),
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


if __name__ == "__main__":
    sys.exit(main())
