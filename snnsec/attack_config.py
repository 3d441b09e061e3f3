"""An attack's config and workspace, and :func:`resolve_attack`: the one place a config's framing, poison,
trigger, model config and training recipe are built, before any data is read (so bad input fails in
milliseconds, and :func:`~snnsec.attack_setup.prepare_attack` reuses what was built instead of building it
again)."""
from __future__ import annotations

import os
from dataclasses import dataclass, field, fields, replace
from pathlib import Path
from typing import Any

import torch

import snnsec.attacks  # noqa: F401  (registers triggers)
import snnsec.datasets  # noqa: F401  (registers datasets)
import snnsec.zoo  # noqa: F401  (registers models)
from snnsec.attacks import TRIGGERS, PoisonConfig, Trigger, create_trigger
from snnsec.attacks.event_injection import EVENT_TRIGGERS, EventInjector, create_injector
from snnsec.checks import check_seed, check_types
from snnsec.datasets import DATASETS
from snnsec.errors import ConfigError
from snnsec.framing import FramingConfig
from snnsec.training import TrainConfig
from snnsec.zoo import MODELS, InputSpec


@dataclass(frozen=True)
class AttackConfig:
    """Everything that determines an attack run's numbers (its hash is the run id)."""

    dataset: str = "digits-dvs"
    model: str = "spiking-cnn"
    model_config: str | None = None  # a named config of the model; None: the model's default for the data
    trigger: str = "static"
    trigger_size: float = 0.1
    position: str = "bottom-right"
    polarity: int = 1
    trigger_value: float | None = None  # None: 1 on binary frames, a high event count on count frames
    trigger_options: tuple[tuple[str, Any], ...] = ()  # trigger-specific options, e.g. (("speed", 2.0),)
    injection: str = "frame"  # "frame": trigger painted on frames; "event": synthetic events added before framing
    poison_rate: float = 0.1
    target: int = 0
    mode: str = "all-to-one"
    frames: int | None = None  # T; None: the dataset's default
    slicing: str = "time"
    size: int | None = None  # resize frames to size x size; None: sensor size
    encoding: str = "binary"
    epochs: int = 8
    batch_size: int = 32
    lr: float | None = None  # None: the model config's recipe (zoo), else DEFAULT_LR
    optimizer: str = "adamw"
    seed: int = 0


def fill_defaults(options: dict[str, Any]) -> None:
    """Fill the options left out (absent or None) from each other, in place: the dataset from the model's entry
    (digits-dvs when neither is given), then the model, slicing, encoding and trigger from the dataset's entry.
    The CLI and sweeps both use it; a digits-dvs run keeps :class:`AttackConfig`'s defaults."""
    from snnsec.datasets import DATASETS
    from snnsec.zoo import MODELS

    if options.get("dataset") is None:
        model = options.get("model")
        options["dataset"] = MODELS.get(model).default_dataset if model is not None else "digits-dvs"
    spec = DATASETS.get(options["dataset"])
    for name, default in (("model", spec.default_model), ("slicing", spec.default_slicing),
                          ("encoding", spec.default_encoding), ("trigger", spec.default_trigger)):
        if options.get(name) is None:
            options[name] = default


@dataclass(frozen=True)
class Workspace:
    """Where things are read and written; not part of a run's identity."""

    data_dir: Path | None = None
    cache_dir: Path = field(default_factory=lambda: default_cache_dir())  # SNNSEC_CACHE_DIR, else ~/.cache/snnsec
    out_dir: Path = Path("reports")
    device: str = "auto"
    publish_artifacts: bool = False  # records name content-addressed copies of their models in out_dir (bench)
    publish_dir: Path | None = None  # where they are published instead of out_dir (a Ray task's results folder)

    @property
    def publish_to(self) -> Path | None:
        """Where a record's model files are published (:mod:`snnsec.artifact_store`), or None."""
        return (self.publish_dir or self.out_dir) if self.publish_artifacts else None

    def torch_device(self) -> torch.device:
        if self.device == "auto":
            return torch.device("cuda" if torch.cuda.is_available() else "cpu")
        if self.device.startswith("cuda") and not torch.cuda.is_available():
            raise ConfigError(f"device {self.device!r} requested but CUDA is not available; use --device cpu")
        try:
            return torch.device(self.device)
        except RuntimeError:
            raise ConfigError(f"unknown device {self.device!r}; use auto, cpu, cuda or cuda:N") from None


def default_cache_dir() -> Path:
    """The frame and model cache: ``SNNSEC_CACHE_DIR`` when set (as the CLI reads it), else ``~/.cache/snnsec``."""
    return Path(os.environ.get("SNNSEC_CACHE_DIR") or Path.home() / ".cache" / "snnsec")


INJECTIONS = ("frame", "event")
DEFAULT_LR = 2e-3

#: Smallest framed side: SSIM's 7x7 window (Wang et al. 2004; scikit-image's default) needs
#: frames of at least 7x7 (at 4 or 6 pixels the stealth metric fails after both models were trained).
#: On 1-D (audio) data SSIM runs over the time x channel image: T and the channel count must reach it.
MIN_FRAME_SIZE = 7

#: Trigger parameters set by top-level attack options, never through ``--trigger-opt``.
TOP_LEVEL_TRIGGER_OPTIONS = {"size": "--trigger-size", "position": "--position", "polarity": "--polarity",
                             "value": "--trigger-value", "seed": "--seed", "bins": "--frames",
                             "events_per_pixel_per_bin": "--trigger-value", "bin_us": "--slicing",
                             "resolution": "--size"}


@dataclass(frozen=True)
class ResolvedAttack:
    """A checked config and the objects it names, built once by :func:`resolve_attack`."""

    config: AttackConfig  # frames filled in; trigger_value too, unless it is read from the count frames (None)
    framing: FramingConfig
    poison: PoisonConfig
    input_spec: InputSpec  # the model input the sensor size, frames and --size give
    model_config: Any  # the model's resolved config for input_spec
    training: TrainConfig  # the training budget with the model config's recipe (lr, warm-up, BN re-estimation)
    trigger: Trigger | EventInjector  # unfitted; built with value 1 standing in while trigger_value is None

    def for_frames(self, input_spec: InputSpec) -> ResolvedAttack:
        """This attack for loaded frames of ``input_spec``: ``self`` when they match the declared sensor size
        (always, for a consistent dataset), else the model config and recipe built for the frames."""
        if input_spec == self.input_spec:
            return self
        return replace(self, input_spec=input_spec, **_model_parts(self.config, input_spec))


def resolve(config: AttackConfig) -> AttackConfig:
    """Fill dataset-dependent defaults and validate names, so the record holds the full config."""
    return resolve_attack(config).config


def resolve_attack(config: AttackConfig) -> ResolvedAttack:
    """Check ``config`` and build what it names, before any data is read: bad input fails in milliseconds,
    not after framing."""
    check_types(config, "attack config")
    check_seed(config.seed)
    spec = DATASETS.get(config.dataset)
    MODELS.get(config.model)
    TRIGGERS.get(config.trigger)
    frames = config.frames if config.frames is not None else spec.default_frames
    size = config.size if config.size is not None else spec.default_size
    width, height, polarities = spec.info.sensor_size
    if size is not None and not MIN_FRAME_SIZE <= size <= max(width, height):
        unit = "channels" if height == 1 else "pixels"
        raise ConfigError(f"--size must be in [{MIN_FRAME_SIZE}, {max(width, height)}] {unit} for {config.dataset} "
                          f"({width}x{height} sensor; SSIM's 7x7 window needs 7), got {size}")
    if height == 1 and frames < MIN_FRAME_SIZE:
        raise ConfigError(f"--frames must be >= {MIN_FRAME_SIZE} for {config.dataset} (1-D data: stealth's SSIM runs "
                          f"over the time x channel image with a 7x7 window), got {frames}")
    value = config.trigger_value
    if value is None and config.encoding == "binary":
        value = 1.0
    config = replace(config, frames=frames, size=size, trigger_value=value)
    framing = framing_of(config)
    side = (height, width) if size is None else ((1, size) if height == 1 else (size, size))
    input_spec = InputSpec(frames, polarities, *side, spec.info.num_classes)
    model = _model_parts(config, input_spec)
    poison = poison_of(config)
    poison.check_classes(spec.info.num_classes)
    if config.injection not in INJECTIONS:
        raise ConfigError(f"injection must be one of {', '.join(INJECTIONS)}; got {config.injection!r}")
    _check_trigger_layout(config, height)
    _check_trigger_options(config)
    trigger = make_trigger(config if value is not None else replace(config, trigger_value=1.0))
    return ResolvedAttack(config, framing, poison, input_spec, trigger=trigger, **model)


def _model_parts(config: AttackConfig, input_spec: InputSpec) -> dict[str, Any]:
    """The model's resolved config for ``input_spec`` and the training recipe of that config."""
    entry = MODELS.get(config.model)
    model_config = entry.resolve_config(config.model_config, input_spec)
    name = config.model_config or entry.default_config(input_spec)
    return {"model_config": model_config, "training": training_of(config, entry.recipe_for(name))}


def framing_of(config: AttackConfig) -> FramingConfig:
    """How a resolved ``config`` turns events into frames (``size`` is the channel count on 1-D sensors)."""
    one_d = DATASETS.get(config.dataset).info.sensor_size[1] == 1
    size = None if config.size is None else ((1, config.size) if one_d else (config.size, config.size))
    return FramingConfig(frames=config.frames, slicing=config.slicing, size=size, encoding=config.encoding)


def poison_of(config: AttackConfig) -> PoisonConfig:
    """Which training samples ``config`` poisons, and their labels."""
    return PoisonConfig(rate=config.poison_rate, target=config.target, mode=config.mode, seed=config.seed)


def training_of(config: AttackConfig, recipe) -> TrainConfig:
    """The attack's training budget with the model config's recipe (lr, warm-up, BN re-estimation);
    an explicit ``lr`` wins over the recipe's."""
    training = TrainConfig(epochs=config.epochs, batch_size=config.batch_size, lr=DEFAULT_LR,
                           optimizer=config.optimizer, seed=config.seed).with_recipe(recipe)
    return training if config.lr is None else replace(training, lr=config.lr)


def make_trigger(config: AttackConfig) -> Trigger | EventInjector:
    """The (unfitted) trigger of a resolved ``config`` with a trigger value: painted on frames, or for
    ``injection="event"`` its event-level version adding ``trigger_value`` events per pixel and time bin."""
    if config.injection == "event":
        own = {f.name for f in fields(EVENT_TRIGGERS.get(config.trigger))}
        framing = framing_of(config)
        extra = {"bin_us": framing.bin_us if framing.slicing == "window" else None,  # bins as the framing cuts them
                 "resolution": None if framing.size is None else framing.size[1]}  # the band's framed channels
        return create_injector(config.trigger, size=config.trigger_size, position=config.position,
                               polarity=config.polarity, seed=config.seed, bins=config.frames,
                               events_per_pixel_per_bin=max(1, round(config.trigger_value)),
                               **{k: v for k, v in extra.items() if k in own}, **dict(config.trigger_options))
    return create_trigger(config.trigger, size=config.trigger_size, position=config.position,
                          polarity=config.polarity, value=config.trigger_value, seed=config.seed,
                          **dict(config.trigger_options))


def _check_trigger_layout(config: AttackConfig, height: int) -> None:
    """One line when the trigger cannot act on the dataset's frames: 2-D patch triggers on 1-D (audio) strips
    and the other way round, or an event trigger whose time bins cannot follow the ``window`` slicing."""
    triggers = EVENT_TRIGGERS if config.injection == "event" else TRIGGERS
    dims = 1 if height == 1 else 2
    level = "event-level " if config.injection == "event" else ""
    if dims not in triggers.get(config.trigger).dims:
        usable = [n for n in triggers.names() if dims in triggers.get(n).dims]
        kind = "1-D (audio) frames [T, 1, 1, W]" if dims == 1 else "2-D frames [T, P, H, W]"
        raise ConfigError(f"{level}trigger {config.trigger!r} does not work on {config.dataset}'s {kind}; use one "
                          f"of: {', '.join(usable)}")
    if config.injection == "event" and config.slicing == "window" and not any(
            f.name == "bin_us" for f in fields(triggers.get(config.trigger))):
        usable = [n for n in triggers.names() if any(f.name == "bin_us" for f in fields(triggers.get(n)))]
        raise ConfigError(f"event-level trigger {config.trigger!r} spreads its events over each sample's duration, "
                          f"not over the window slicing's fixed bins; use --slicing time or one of: "
                          f"{', '.join(usable)}")


def _check_trigger_options(config: AttackConfig) -> None:
    """Trigger options are (name, value) pairs naming options of the trigger itself; one that a top-level
    option sets points at that option, an unknown one lists the trigger's own options."""
    triggers = EVENT_TRIGGERS if config.injection == "event" else TRIGGERS
    own = sorted({f.name for f in fields(triggers.get(config.trigger))} - set(TOP_LEVEL_TRIGGER_OPTIONS))
    for key, _ in config.trigger_options:
        if key in TOP_LEVEL_TRIGGER_OPTIONS:
            flag = TOP_LEVEL_TRIGGER_OPTIONS[key]
            raise ConfigError(f"trigger option {key!r} is set by the attack option {flag} (sweep field "
                              f"{flag[2:].replace('-', '_')}), not by --trigger-opt")
        if key not in own:
            raise ConfigError(f"trigger {config.trigger!r} has no option {key!r}; its --trigger-opt options: "
                              f"{', '.join(own) or '(none)'}")
