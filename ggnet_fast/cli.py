"""``ggnet``: train, evaluate and run GG-Net for breast-ultrasound lesion segmentation.

    ggnet demo                               # CPU demo on synthetic ultrasound (~1 min of training)
    ggnet train --data busi --data-root DIR --out runs/busi --fold all
    ggnet eval --run runs/busi               # per-fold + mean +- std table, overlays
    ggnet predict --checkpoint runs/busi/fold0/best.pt --input scan.png --out preds/
    ggnet bench                              # quick timing of the attention operators

Run ``ggnet <command> --help`` for the options of each command.
"""
from __future__ import annotations

import argparse
import json
import os
import sys

EPILOG = """examples:
  ggnet demo --out demo_run
      train a small GG-Net on synthetic B-mode images (CPU: about a minute of training on
      2 idle cores), evaluate with dense CRF, write metrics.md and overlays/ into demo_run/
  ggnet train --data busi --data-root ../shared/data/busi --out runs/busi --fold all \\
              --preset released --backbone resnext101_32x8d --weights resnext101.pth
      the paper's BUSI protocol: 3-fold CV on the 647 lesion images, one run per fold
  ggnet eval --run runs/busi
      evaluate every fold on its test split: runs/busi/eval_crf/metrics.md
  ggnet predict --checkpoint runs/busi/fold0/best.pt --input images/ --out preds
      write preds/masks/*.png and preds/overlays/*.png for every image in images/
"""


def _kv(text: str):
    if "=" not in text:
        raise argparse.ArgumentTypeError(f"expected KEY=VALUE, got {text!r}")
    k, v = text.split("=", 1)
    try:
        value = json.loads(v)
    except json.JSONDecodeError:
        value = v
    return k.strip(), value


def _add_train_args(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group("data")
    g.add_argument("--data", choices=["phantom", "busi", "folder"], default=None,
                   help="dataset: built-in synthetic ultrasound (default), BUSI "
                        "(Dataset_BUSI_with_GT layout) or a folder with images/ and masks/")
    g.add_argument("--data-root", help="dataset folder (busi: Dataset_BUSI_with_GT or its parent)")
    g.add_argument("--include-normal", action="store_true", default=None,
                   help="BUSI: also use the 133 normal images (paper Table 6)")
    g.add_argument("--phantom-n", type=int, help="synthetic: number of images (default 300)")
    g.add_argument("--phantom-size", type=int, help="synthetic: image side in pixels (default 128)")
    g.add_argument("--split", choices=["kfold", "holdout"], help="k-fold CV (default) or one hold-out split")
    g.add_argument("--folds", type=int, help="number of CV folds (default 3, as in the paper)")
    g.add_argument("--fold", default=None,
                   help="test fold index, or 'all' to train every fold into OUT/fold<k> (default 0)")
    g.add_argument("--fold-seed", type=int, help="seed of the fold shuffle (default 42)")
    g.add_argument("--val-fraction", type=float,
                   help="fraction of the training images kept for validation/model selection (default 0.1)")
    g.add_argument("--test-fraction", type=float, help="hold-out split: test fraction (default 0.2)")
    g = p.add_argument_group("model")
    g.add_argument("--preset", choices=["paper", "released"],
                   help="paper: as published (100 epochs, step at 50); released: the authors' code "
                        "(13,400 iterations, 2x bias lr, early stopping). Sets model, loss and schedule.")
    g.add_argument("--variant", help="full (default), baseline (DeepLabV3+), ggb, snlb, cnlb, ... ")
    g.add_argument("--backbone", help="resnext101_32x8d (paper), resnext50_32x4d, resnet34, resnet18")
    g.add_argument("--weights", help="ImageNet weights: path to a torchvision state dict (nothing is downloaded)")
    g.add_argument("--ggb-stride", type=int, choices=[4, 8], help="feature stride of the guidance block (default: the preset's, paper 8, released 4)")
    g.add_argument("--backend", help="attention kernel backend: auto, reference, eager, triton, cuda, cpu")
    g.add_argument("--model-opt", type=_kv, action="append", default=[], metavar="KEY=VALUE",
                   help="extra build_ggnet keyword (JSON value), repeatable")
    g.add_argument("--loss-opt", type=_kv, action="append", default=[], metavar="KEY=VALUE",
                   help="extra GGNetLoss keyword (JSON value), repeatable")
    g = p.add_argument_group("optimisation")
    g.add_argument("--image-size", type=int, help="network input side (default 256)")
    g.add_argument("--batch-size", type=int, help="images per step and process (default 4)")
    g.add_argument("--lr", type=float, help="base learning rate (default 1e-3)")
    g.add_argument("--schedule", choices=["epochs", "iterations"], help="override the preset's schedule")
    g.add_argument("--epochs", type=int, help="epochs schedule: number of epochs")
    g.add_argument("--lr-step-epochs", type=int, help="epochs schedule: lr x0.1 every this many epochs")
    g.add_argument("--iterations", type=int, help="iterations schedule: number of iterations")
    g.add_argument("--lr-step-iters", type=int, help="iterations schedule: lr x0.1 at this iteration")
    g.add_argument("--val-every", type=int, help="iterations between validations (default: one epoch)")
    g.add_argument("--early-stop", dest="early_stop_patience", type=int,
                   help="stop after this many validations without a better Dice (0 = never)")
    g = p.add_argument_group("execution")
    g.add_argument("--out", help="run folder (refused if it exists and is not empty)")
    g.add_argument("--config", help="start from this config.json; flags given here override it")
    g.add_argument("--resume", action="store_true", help="continue the run in --out from its last.pt")
    g.add_argument("--overwrite", action="store_true", help="replace the checkpoints/logs in a non-empty --out")
    g.add_argument("--device", help="auto (default), cpu, cuda, cuda:1 ...")
    g.add_argument("--amp", choices=["auto", "on", "off"], help="mixed precision (auto = on CUDA)")
    g.add_argument("--workers", type=int, help="data-loader worker processes (default 2)")
    g.add_argument("--seed", type=int, help="training seed (default 0)")
    g.add_argument("--deterministic", action="store_true", default=None,
                   help="deterministic algorithms (bitwise-reproducible on the CPU)")
    g.add_argument("--ckpt-every", type=int, help="extra checkpoint every N iterations (default: at validations)")
    g.add_argument("--max-steps", type=int, help="stop with a checkpoint at this global step (resume later)")
    g.add_argument("--no-progress", dest="progress", action="store_false", default=None)
    g.add_argument("--no-tensorboard", dest="tensorboard", action="store_false", default=None)


_FIELD_MAP = {"early_stop_patience": "early_stop_patience"}


def config_from_args(args):
    """Merge --config, the preset's schedule and explicit flags into a TrainConfig."""
    from .train import TrainConfig, preset_schedule

    base = TrainConfig.load(args.config).to_dict() if args.config else TrainConfig().to_dict()
    preset = args.preset or base["preset"]
    if args.preset or not args.config:
        base.update(preset_schedule(preset))
    base["preset"] = preset
    names = set(base)
    for key, value in vars(args).items():
        if key in names and value is not None and key not in ("fold",):
            base[key] = value
    if args.model_opt:
        base["model_overrides"] = {**base.get("model_overrides", {}), **dict(args.model_opt)}
    if args.loss_opt:
        base["loss_overrides"] = {**base.get("loss_overrides", {}), **dict(args.loss_opt)}
    if args.out:
        base["out_dir"] = args.out
    cfg = TrainConfig.from_dict(base)
    from .train.loop import check_overrides
    check_overrides(cfg)  # a bad --model-opt/--loss-opt is refused before anything runs
    return cfg


def cmd_train(args) -> int:
    from .train import TrainConfig, Trainer

    if not args.out:
        raise SystemExit("ggnet train: --out DIR is required (the run folder)")
    if args.resume:
        root = args.out
        fold_dirs = sorted(d for d in os.listdir(root) if d.startswith("fold")) \
            if os.path.isdir(root) and not os.path.exists(os.path.join(root, "config.json")) else []
        targets = [os.path.join(root, d) for d in fold_dirs] or [root]
        for rd in targets:
            cfg = TrainConfig.load(os.path.join(rd, "config.json"))
            for key in ("device", "workers", "max_steps", "progress", "tensorboard"):
                if getattr(args, key, None) is not None:
                    setattr(cfg, key, getattr(args, key))
            if not os.path.exists(os.path.join(rd, "last.pt")):
                print(f"{rd}: no checkpoint yet, starting it", flush=True)
                Trainer(cfg, overwrite=True).fit()
                continue
            summary = _read_json(os.path.join(rd, "summary.json"))
            if summary and not summary.get("halted_at_max_steps") and (
                    summary.get("stopped_early") or summary["global_step"] >= summary["total_steps"]):
                if not (args.max_steps and args.max_steps > summary["global_step"]):
                    print(f"{rd}: already finished", flush=True)
                    continue
            print(json.dumps(Trainer(cfg, resume=True).fit()), flush=True)
        return 0
    cfg = config_from_args(args)
    folds = range(cfg.folds) if str(args.fold) == "all" else [int(args.fold or cfg.fold)]
    for k in folds:
        cfg.fold = k
        if str(args.fold) == "all":
            cfg.out_dir = os.path.join(args.out, f"fold{k}")
        print(f"training {cfg.variant} ({cfg.backbone}) fold {k} -> {cfg.out_dir}", flush=True)
        summary = Trainer(cfg, overwrite=args.overwrite).fit()
        print(json.dumps(summary), flush=True)
    return 0


def _read_json(path):
    try:
        with open(path, encoding="utf-8") as fh:
            return json.load(fh)
    except (FileNotFoundError, json.JSONDecodeError):
        return None


def cmd_eval(args) -> int:
    from .eval import evaluate_run

    from .crf import parse_crf_params

    res = evaluate_run(args.run, checkpoint=args.checkpoint, crf=args.crf,
                       threshold=args.threshold, overlays=args.overlays, out_dir=args.out,
                       device=_device(args.device), data_root=args.data_root,
                       progress=not args.no_progress, backend=args.backend,
                       overwrite=args.overwrite, crf_params=parse_crf_params(args.crf_param))
    print(res["table"])
    print(f"written to {res['out_dir']}")
    return 0


def _device(name):
    import torch
    if name in (None, "auto"):
        return "cuda" if torch.cuda.is_available() else "cpu"
    return name


def cmd_predict(args) -> int:
    from .data.base import is_image_file, read_image
    from .eval import Predictor, load_model
    from .eval.overlay import save_mask, save_overlay

    from .crf import parse_crf_params

    crf_params = parse_crf_params(args.crf_param)
    device = _device(args.device)
    if os.path.isdir(args.input):
        paths = [os.path.join(args.input, f) for f in sorted(os.listdir(args.input)) if is_image_file(f)]
        if not paths:
            raise SystemExit(f"ggnet predict: no images in {args.input}")
    elif os.path.isfile(args.input):
        paths = [args.input]
    else:
        raise SystemExit(f"ggnet predict: --input {args.input} does not exist")
    # outputs are named by the input's stem: a.png and a.jpg would write the same files
    by_stem: dict[str, str] = {}
    for p in paths:
        stem = os.path.splitext(os.path.basename(p))[0]
        if stem in by_stem:
            raise ValueError(f"inputs {by_stem[stem]} and {p} would both be written as "
                             f"{stem}.png; rename one of them or predict them separately")
        by_stem[stem] = p
    targets = [os.path.join(args.out, sub, stem + ".png")
               for stem in by_stem for sub in ("masks", "overlays")]
    existing = [t for t in targets if os.path.exists(t)]
    if existing and not args.overwrite:
        more = f" (and {len(existing) - 3} more)" if len(existing) > 3 else ""
        raise FileExistsError(f"{', '.join(existing[:3])}{more} already exist; pass --overwrite "
                              f"to replace them or choose another --out")
    model, cfg = load_model(args.checkpoint, device, backend=args.backend)
    size = args.image_size or cfg.get("image_size", 256)
    if args.crf:
        from .crf import crf_available
        reason = crf_available()
        if reason:
            raise SystemExit(f"ggnet predict: dense CRF unavailable ({reason}); pass --no-crf")
    predictor = Predictor(model, size, device, crf=args.crf, threshold=args.threshold,
                          crf_params=crf_params)
    for stem, p in by_stem.items():
        image = read_image(p)
        _prob, mask = predictor.predict([image])[0]
        save_mask(os.path.join(args.out, "masks", stem + ".png"), mask)
        save_overlay(os.path.join(args.out, "overlays", stem + ".png"), image, None, mask)
        print(f"{p}: lesion {mask.mean() * 100:.1f}% of the image -> {args.out}/masks/{stem}.png")
    return 0


def cmd_demo(args) -> int:
    from .demo import run_demo

    run_demo(args.out, quick=args.quick, steps=args.steps, overwrite=args.overwrite,
             crf=args.crf, progress=not args.no_progress, n_images=args.n_images)
    return 0


def cmd_bench(args) -> int:
    if args.pytest:
        import subprocess
        return subprocess.call([sys.executable, "-m", "pytest", "benchmarks/", "--benchmark-only", "-q"])
    from .bench import run_bench
    run_bench(device=_device(args.device), repeats=args.repeats)
    return 0


def _add_crf_args(p: argparse.ArgumentParser) -> None:
    """--no-crf and --crf-param, shared by eval and predict."""
    from .crf import DEFAULTS

    p.add_argument("--no-crf", dest="crf", action="store_false", help="skip the dense CRF")
    p.add_argument("--crf-param", action="append", default=[], metavar="NAME=VALUE",
                   help=f"dense-CRF setting, repeatable: {', '.join(DEFAULTS)} (defaults in "
                        "ggnet_fast.crf.DEFAULTS; tune them on the validation split)")


def _add_inference_device_args(p: argparse.ArgumentParser) -> None:
    """--device and --backend of a trained model's inference (eval and predict)."""
    p.add_argument("--device", default="auto")
    p.add_argument("--backend", default="auto",
                   help="attention kernel backend (default auto: the best one on --device, "
                        "whatever the training run used)")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="ggnet", description=__doc__.split("\n\n")[0] + "\n\n" + "\n".join(__doc__.split("\n")[2:8]),
        formatter_class=argparse.RawDescriptionHelpFormatter, epilog=EPILOG)
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)

    p = sub.add_parser("train", help="train a model (one fold, all folds, or resume a run)",
                       description="Train GG-Net (or an ablation/baseline variant). Writes config.json, "
                                   "last.pt/best.pt checkpoints, train_log.csv, val_log.csv and "
                                   "TensorBoard logs (tb/) into --out. Multi-GPU: "
                                   "torchrun --nproc-per-node N -m ggnet_fast.cli train ...",
                       formatter_class=argparse.RawDescriptionHelpFormatter)
    _add_train_args(p)
    p.set_defaults(func=cmd_train)

    p = sub.add_parser("eval", help="evaluate a run (or a folder of fold runs) on its test split",
                       description="Predict each test image, resize back to its original size, apply "
                                   "dense CRF, threshold, compute Dice/Jaccard/Recall/Precision/"
                                   "Specificity/Accuracy/HD/ABD; write per_image.csv, metrics.md "
                                   "(paper Table 5 layout) and overlays/.")
    p.add_argument("--run", required=True, help="run folder (with config.json) or a folder of fold runs")
    p.add_argument("--checkpoint", default="best.pt", help="checkpoint file name in each run (default best.pt)")
    _add_crf_args(p)
    p.add_argument("--threshold", type=float, default=0.5, help="foreground threshold (default 0.5)")
    p.add_argument("--overlays", type=int, default=8, help="overlay pictures per fold (-1 = all)")
    p.add_argument("--out", help="report folder (default RUN/eval_crf or RUN/eval)")
    p.add_argument("--data-root", help="dataset folder, if it moved since training")
    _add_inference_device_args(p)
    p.add_argument("--overwrite", action="store_true",
                   help="replace the reports and overlays already in the report folder")
    p.add_argument("--no-progress", action="store_true")
    p.set_defaults(func=cmd_eval)

    p = sub.add_parser("predict", help="segment one image or a folder of images",
                       description="Write OUT/masks/<name>.png (0/255) and OUT/overlays/<name>.png "
                                   "(red contour of the prediction) for each input image. Existing "
                                   "files of those names are refused unless --overwrite; inputs "
                                   "sharing a name stem (a.png, a.jpg) are refused.")
    p.add_argument("--checkpoint", required=True, help="best.pt or last.pt from a training run")
    p.add_argument("--input", required=True, help="an image file or a folder of images")
    p.add_argument("--out", required=True, help="output folder")
    _add_crf_args(p)
    p.add_argument("--threshold", type=float, default=0.5)
    p.add_argument("--image-size", type=int, help="network input side (default: as trained)")
    _add_inference_device_args(p)
    p.add_argument("--overwrite", action="store_true",
                   help="replace masks/overlays of the same names already in --out")
    p.set_defaults(func=cmd_predict)

    p = sub.add_parser("demo", help="train + evaluate a small GG-Net on synthetic ultrasound (CPU)",
                       description="Generates synthetic B-mode images with exact lesion masks, trains a "
                                   "ResNet-18 GG-Net at 80x80 on the CPU, evaluates held-out images "
                                   "with dense CRF against trivial predictors, and writes metrics.md, "
                                   "per_image.csv and overlays/ into --out.")
    p.add_argument("--out", default="ggnet_demo", help="output folder (default ggnet_demo)")
    p.add_argument("--steps", type=int, help="training iterations (default 200)")
    p.add_argument("--n-images", type=int, help="synthetic images in total (default 360)")
    p.add_argument("--quick", action="store_true", help="a tiny smoke run (seconds, meaningless numbers)")
    p.add_argument("--no-crf", dest="crf", action="store_false")
    p.add_argument("--overwrite", action="store_true", help="replace a previous demo in --out")
    p.add_argument("--no-progress", action="store_true")
    p.set_defaults(func=cmd_demo)

    p = sub.add_parser("bench", help="time the guided-attention operators and a model step",
                       description="Times the spatial and channel guided attention on every available "
                                   "backend and one GG-Net forward; --pytest runs benchmarks/ instead.")
    p.add_argument("--device", default="auto")
    p.add_argument("--repeats", type=int, default=5)
    p.add_argument("--pytest", action="store_true", help="run pytest benchmarks/ --benchmark-only")
    p.set_defaults(func=cmd_bench)
    return parser


def main(argv=None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return args.func(args)
    except (FileExistsError, FileNotFoundError, ValueError, ImportError) as exc:
        if os.environ.get("GGNET_DEBUG"):
            raise
        print(f"ggnet {args.command}: error: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
