"""A training configuration from its sources, in order: a saved ``config.json`` (or the
defaults), the preset's schedule, then the settings given explicitly (``ggnet train``'s
flags); and the settings a resume may be given. No argument parsing here: the command
line hands in plain dicts."""
from __future__ import annotations

from ..data.layout import dataset_of_root
from .config import TrainConfig, _flag, preset_schedule
from .run_dir import NOT_COMPARED

# The settings of each schedule: its length (which selects it) and its lr step.
SCHEDULE_FLAGS = {"epochs": ("epochs", "lr_step_epochs"),
                  "iterations": ("iterations", "lr_step_iters")}


def schedule_of(settings: dict, default: str) -> str:
    """The schedule a run uses: ``settings["schedule"]``, else the one whose length
    (``epochs``, ``iterations``) is given, else ``default`` (the preset's or the saved
    configuration's). A setting of the other schedule cannot take effect: ``ValueError``."""
    explicit = settings.get("schedule")
    given = {s: [f for f in names if settings.get(f) is not None]
             for s, names in SCHEDULE_FLAGS.items()}
    chosen = explicit or next((s for s, names in SCHEDULE_FLAGS.items()
                               if names[0] in given[s]), default)
    for other, names in given.items():
        if other != chosen and names:
            raise ValueError(f"{' and '.join(map(_flag, names))} cannot take effect: "
                             f"{'they belong' if len(names) > 1 else 'it belongs'} to the "
                             f"{other} schedule, and this run uses the {chosen} schedule"
                             + (" (--schedule)" if explicit else "")
                             + f"; drop it, or pass --schedule {other}")
    return chosen


def dataset_options_for(dataset: str, options_by_dataset: dict[str, dict],
                        flag_of=None) -> dict:
    """The options given for ``dataset``; one given for another dataset is refused
    (``flag_of(owner, key)`` names it in the message)."""
    for owner, options in options_by_dataset.items():
        if owner != dataset and options:
            key = next(iter(options))
            name = flag_of(owner, key) if flag_of else f"{owner}.{key}"
            raise ValueError(f"{name} is an option of --data {owner}, not of {dataset}")
    return dict(options_by_dataset.get(dataset, {}))


def config_from_settings(settings: dict, *, config: str | None = None,
                         options_by_dataset: dict[str, dict] | None = None,
                         model_overrides: dict | None = None,
                         loss_overrides: dict | None = None, flag_of=None,
                         announce=print) -> TrainConfig:
    """Merge ``config`` (a ``config.json`` path; else the defaults), the preset's schedule
    and ``settings`` (TrainConfig fields, ``None`` = not given; ``fold`` is the caller's)
    into a TrainConfig, validated later by the Trainer that runs it. A ``data_root`` given
    without ``data`` (and no ``config``) selects the dataset of its layout, announced
    through ``announce``."""
    settings = dict(settings)
    base = TrainConfig.load(config).to_dict() if config else TrainConfig().to_dict()
    preset = settings.get("preset") or base["preset"]
    if settings.get("preset") or not config:
        base.update(preset_schedule(preset))
    base["preset"] = preset
    settings["schedule"] = schedule_of(settings, base["schedule"])
    if settings.get("data") is None and settings.get("data_root") and not config:
        settings["data"] = dataset_of_root(settings["data_root"])
        announce(f"--data-root {settings['data_root']}: {settings['data']} layout, training "
                 f"on --data {settings['data']}")
    if settings.get("data") and settings["data"] != base["data"]:
        base["data_options"] = {}  # the options of another dataset do not carry over
    for key, value in settings.items():
        if key in base and value is not None and key != "fold":
            base[key] = value
    base["data_options"] = {**base["data_options"],
                            **dataset_options_for(base["data"], options_by_dataset or {},
                                                  flag_of)}
    if model_overrides:
        base["model_overrides"] = {**base.get("model_overrides", {}), **model_overrides}
    if loss_overrides:
        base["loss_overrides"] = {**base.get("loss_overrides", {}), **loss_overrides}
    return TrainConfig.from_dict(base)


def resume_settings(settings: dict, *, fold=None, options_by_dataset=None,
                    model_overrides: dict | None = None,
                    loss_overrides: dict | None = None) -> dict:
    """The settings given with a resume other than the operational ones (each must equal
    the run's saved value, checked by :func:`~ggnet_fast.train.run_dir.check_resume_config`)."""
    names = {f for f in TrainConfig().to_dict() if f not in NOT_COMPARED and f != "fold"}
    chosen = {k: v for k, v in settings.items() if k in names and v is not None}
    if fold is not None and str(fold) != "all":
        chosen["fold"] = int(fold)
    options = {k: v for opts in (options_by_dataset or {}).values() for k, v in opts.items()}
    if options:
        chosen["data_options"] = options
    if model_overrides:
        chosen["model_overrides"] = dict(model_overrides)
    if loss_overrides:
        chosen["loss_overrides"] = dict(loss_overrides)
    return chosen
