"""What each ``ggnet`` sub-command does: turn the parsed arguments into one library call.
The work (configuration merging, dataset layouts, run folders) lives in the library."""
from __future__ import annotations

import sys

DATA_OPT = "__data_opt__"  # argparse dest of a dataset option: DATA_OPT<dataset>DATA_OPT<option>


def _options_by_dataset(args) -> dict[str, dict]:
    """The dataset options given on the command line, by dataset."""
    given: dict[str, dict] = {}
    for dest, value in vars(args).items():
        if dest.startswith(DATA_OPT) and value is not None:
            owner, key = dest[len(DATA_OPT):].split(DATA_OPT)
            given.setdefault(owner, {})[key] = value
    return given


def _flag_of(dataset: str, option: str) -> str:
    from ..data import dataset_spec

    return dataset_spec(dataset).flag(option)


def config_from_args(args):
    """The TrainConfig of a ``ggnet train`` command line (validated by the Trainer that
    runs it): :func:`~ggnet_fast.train.overrides.config_from_settings`."""
    from ..train.overrides import config_from_settings

    settings = {k: v for k, v in vars(args).items() if not k.startswith(DATA_OPT)}
    settings["out_dir"] = args.out
    return config_from_settings(settings, config=args.config,
                                options_by_dataset=_options_by_dataset(args),
                                model_overrides=dict(args.model_opt),
                                loss_overrides=dict(args.loss_opt), flag_of=_flag_of,
                                announce=lambda text: print(text, flush=True))


def cmd_train(args) -> int:
    from ..train.overrides import resume_settings
    from ..train.run_dir import OPERATIONAL_FIELDS
    from ..train.runs import resume_runs, train_folds

    if not args.out:
        raise ValueError("--out DIR is required (the run folder)")
    if args.resume:
        if args.config or args.overwrite:
            raise ValueError("--resume continues a run with its saved settings: it cannot be "
                             "combined with " + ("--config" if args.config else "--overwrite"))
        resume_runs(args.out, {k: getattr(args, k) for k in OPERATIONAL_FIELDS
                               if getattr(args, k, None) is not None},
                    resume_settings(vars(args), fold=args.fold,
                                    options_by_dataset=_options_by_dataset(args),
                                    model_overrides=dict(args.model_opt),
                                    loss_overrides=dict(args.loss_opt)),
                    max_steps=args.max_steps or 0)
        return 0
    cfg = config_from_args(args)
    if str(args.fold) == "all":
        train_folds(cfg, range(cfg.folds), args.out, overwrite=args.overwrite)
    else:
        train_folds(cfg, [int(args.fold or cfg.fold)], overwrite=args.overwrite)
    return 0


def cmd_eval(args) -> int:
    from ..crf import parse_crf_params
    from ..eval import evaluate_run

    device = _device(args.device)
    _check_threshold(args.threshold)
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
    from ..train.build import resolve_device

    return str(resolve_device(name or "auto"))


def _check_threshold(value: float) -> None:
    """``--threshold`` is a probability strictly between 0 and 1 (checked before any work)."""
    if not 0.0 < value < 1.0:
        raise ValueError(f"--threshold must be in (0, 1), got {value}")


def cmd_predict(args) -> int:
    from ..crf import parse_crf_params
    from ..eval import Predictor, load_model
    from ..eval.predict import input_images, pending_inputs, predict_to_folder

    crf_params = parse_crf_params(args.crf_param)
    device = _device(args.device)
    _check_threshold(args.threshold)
    inputs = input_images(args.input)
    inputs = pending_inputs(args.out, inputs, overwrite=args.overwrite,
                            skip_existing=args.skip_existing)
    model, cfg = load_model(args.checkpoint, device, backend=args.backend)
    if args.crf:
        from ..crf import crf_available
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
    from ..demo import run_demo

    run_demo(args.out, quick=args.quick, steps=args.steps, overwrite=args.overwrite,
             crf=args.crf, progress=not args.no_progress, n_images=args.n_images)
    return 0


def cmd_compare(args) -> int:
    from ..eval.compare import run_compare

    res = run_compare(args.inputs, args.out, reference=args.reference, overwrite=args.overwrite)
    print(res["markdown"])
    print(f"written to {args.out}")
    return 0


def cmd_bench(args) -> int:
    if args.pytest:
        import subprocess
        return subprocess.call([sys.executable, "-m", "pytest", "benchmarks/",
                                "--benchmark-only", "-q"])
    device = _device(args.device)
    from ..bench import run_bench
    run_bench(device=device, repeats=args.repeats)
    return 0


def cmd_probe(args) -> int:
    from ..eval.probe import write_probe

    print(write_probe(args.run, args.out, checkpoint=args.checkpoint, data_root=args.data_root,
                      overwrite=args.overwrite), end="")
    return 0


def cmd_export(args) -> int:
    from ..export.command import run

    return run(args)
