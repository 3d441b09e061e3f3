"""The zoo's contract: what a model entry declares and how models are called.

Every zoo model takes frames ``[T, B, C, H, W]`` (spikingjelly's multi-step layout) and returns
per-step logits ``[T', B, K]`` (``T' = T`` for SNNs, ``1`` for ANN baselines that read all bins at
once and for SNNs whose reference loss reduces time itself, e.g. delay-snn's ``sum_t softmax``).
Only :class:`snnsec.classifier.Classifier` calls models; it resets SNN state and averages logits over the
first axis. Every model the zoo builds remembers its :class:`InputSpec` (``net.input_spec``)
and rejects, in one line, frames whose T, polarity channels, size or dtype do not match it.
"""
from __future__ import annotations

import functools
from collections.abc import Callable, Mapping
from dataclasses import asdict, dataclass, field, fields, replace
from typing import TYPE_CHECKING, Any, Protocol

from torch import Tensor, nn

from snnsec.errors import ConfigError, UnknownNameError
from snnsec.registry import Registry

if TYPE_CHECKING:
    from snnsec.training import TrainConfig


@dataclass(frozen=True)
class InputSpec:
    """The shape of the frames a model will see and the number of classes."""

    frames: int  # T
    channels: int  # polarities P (2 for DVS)
    height: int
    width: int
    num_classes: int

    def check(self, x: Tensor, time_major: bool = True, who: str = "model") -> None:
        """Raise :class:`ConfigError` (one line) unless ``x`` is float frames of this spec: ``[T, B, P, H, W]``
        (``time_major``, how zoo models read them) or ``[B, T, P, H, W]`` (the dataset layout)."""
        layout = "[T, B, P, H, W]" if time_major else "[B, T, P, H, W]"
        want = f"{who} takes float frames {layout} with T={self.frames}, P={self.channels}, H={self.height}, W={self.width}"
        if not isinstance(x, Tensor):
            raise ConfigError(f"{want}; got a {type(x).__name__}")
        if not x.is_floating_point():
            raise ConfigError(f"{want}; got dtype {x.dtype} (convert with x.float())")
        shape = tuple(x.shape)
        if len(shape) != 5:
            raise ConfigError(f"{want}; got shape {shape}")
        time, frame = (shape[0] if time_major else shape[1]), shape[2:]
        if time != self.frames or frame != (self.channels, self.height, self.width):
            hint = ""
            if (shape[1] if time_major else shape[0]) == self.frames != time:  # the two leading axes swapped
                hint = (" (it looks batch-first: call models through snnsec.classifier.Classifier, which takes "
                        "[B, T, P, H, W])" if time_major else " (it looks time-major [T, B, P, H, W]: swap the first two axes)")
            raise ConfigError(f"{want}; got shape {shape}{hint}")


def input_spec_of(net: nn.Module) -> InputSpec | None:
    """The :class:`InputSpec` a zoo model was built for (``None`` for a module the zoo did not build)."""
    spec = getattr(net, "input_spec", None)
    return spec if isinstance(spec, InputSpec) else None


class _InputCheck:
    """Forward pre-hook of every zoo model: frames that do not match its :class:`InputSpec` (wrong T, polarity
    channels or size, batch-first instead of time-major, an integer dtype) fail in one line before any layer
    runs. A picklable class, not a closure, so that models stay copyable and picklable."""

    def __init__(self, spec: InputSpec, name: str) -> None:
        self.spec, self.name = spec, name

    def __call__(self, _module: nn.Module, args: tuple[Any, ...]) -> None:
        if args:
            self.spec.check(args[0], time_major=True, who=f"zoo model {self.name!r}")


def with_input_check(net: nn.Module, spec: InputSpec, name: str) -> nn.Module:
    """``net`` remembering ``spec`` (``net.input_spec``) and checking its input against it on every call."""
    net.input_spec = spec
    net.register_forward_pre_hook(_InputCheck(spec, name))
    return net


#: DVS128 Gesture as the DVS papers feed it (T=16, 128x128, 11 classes) and the embedded digits-dvs.
DVS128_INPUT = InputSpec(frames=16, channels=2, height=128, width=128, num_classes=11)
CIFAR10DVS_INPUT = InputSpec(frames=16, channels=2, height=128, width=128, num_classes=10)
EMBEDDED_INPUT = InputSpec(frames=10, channels=2, height=34, width=34, num_classes=10)


@dataclass(frozen=True)
class TrainRecipe:
    """How a named config must be trained from scratch where the CLI defaults fail it; each field replaces the
    :class:`snnsec.training.TrainConfig` field of the same name (``TrainConfig.with_recipe``). The budget
    (epochs, batch size) stays the caller's."""

    lr: float
    weight_decay: float = 1e-2
    warmup_steps: int = 0  # linear warm-up steps before the cosine decay
    bn_recalibration_batches: int = 0  # batches to re-estimate BatchNorm statistics on after training

    def __post_init__(self) -> None:
        if not self.lr > 0:
            raise ConfigError(f"recipe learning rate must be > 0, got {self.lr}")
        if self.weight_decay < 0 or self.warmup_steps < 0 or self.bn_recalibration_batches < 0:
            raise ConfigError(f"recipe weight decay, warm-up and BN batches must be >= 0, got {self}")


#: Schedules an :class:`OptimizerGroup` may ask for (``snnsec.training`` builds them).
GROUP_SCHEDULES = ("cosine", "constant", "one-cycle")


@dataclass(frozen=True, eq=False)  # holds tensors: compared by identity
class OptimizerGroup:
    """Parameters that get their own optimizer and learning-rate schedule (see :class:`TrainingHooks`).

    ``optimizer`` is one of ``snnsec.training.OPTIMIZERS``. ``schedule``: ``"cosine"`` (decay to 0,
    ``CosineAnnealingLR``), ``"constant"``, or ``"one-cycle"`` (``torch.optim.lr_scheduler.OneCycleLR`` with peak
    ``max_lr`` and its defaults: it starts at ``max_lr / 25``, whatever ``lr`` says, and cycles Adam's beta1).
    ``per_epoch``: the schedule steps once per epoch over ``epochs`` steps instead of once per batch.
    """

    name: str
    params: tuple[Tensor, ...]
    lr: float
    weight_decay: float = 0.0
    optimizer: str = "adam"
    schedule: str = "cosine"
    max_lr: float | None = None  # one-cycle only
    per_epoch: bool = False

    def __post_init__(self) -> None:
        if not self.lr > 0 or self.weight_decay < 0:
            raise ConfigError(f"optimizer group {self.name!r} needs lr > 0 and weight decay >= 0, got lr {self.lr}, "
                              f"weight decay {self.weight_decay}")
        if self.schedule not in GROUP_SCHEDULES:
            raise ConfigError(f"optimizer group {self.name!r}: schedule must be one of {GROUP_SCHEDULES}, "
                              f"got {self.schedule!r}")
        if (self.schedule == "one-cycle") != (self.max_lr is not None):
            raise ConfigError(f"optimizer group {self.name!r}: max_lr is set exactly for the one-cycle schedule")


class TrainingHooks(Protocol):
    """Optional methods of a zoo model that :func:`snnsec.training.train` calls where the model defines them
    (a model defines any subset; models without them train as before, bit for bit):

    - ``optimizer_groups(config)``: the model's parameters split into :class:`OptimizerGroup` s, one optimizer
      and one schedule each, in place of the config's single optimizer and schedule (the groups may read the
      config's ``lr`` and ``weight_decay``). Every trainable parameter must be in exactly one group. All
      optimizers and schedules are saved in, and restored from, the resume checkpoint.
    - ``after_step()``: called after every optimizer step (e.g. clamping parameters into their range).
    - ``end_epoch(epoch, epochs)``: called after each epoch (``epoch`` counts from 0, ``epochs`` is the run's
      total), after the per-epoch schedules step (e.g. annealing a kernel width).
    """

    def optimizer_groups(self, config: TrainConfig) -> list[OptimizerGroup]: ...

    def after_step(self) -> None: ...

    def end_epoch(self, epoch: int, epochs: int) -> None: ...


@dataclass(frozen=True)
class ModelEntry:
    """A registry entry: named configurations and a builder.

    ``build(config, spec)`` returns an ``nn.Module``; ``config`` is one of ``configs`` (possibly with
    fields overridden). ``default_config(spec)`` picks a configuration for a dataset. ``feature_layer``
    names the module whose output is the penultimate representation defenses read.
    """

    name: str
    build: Callable[[Any, InputSpec], nn.Module]
    configs: Mapping[str, Any]
    default_config: Callable[[InputSpec], str]
    spiking: bool
    feature_layer: str
    description: str
    reference: str = ""
    #: Reported accuracies of the reference paper, by dataset name, e.g. {"dvs128": 0.983}.
    reference_accuracy: Mapping[str, float] = field(default_factory=dict)
    #: The input each named config was designed for (parameter counts depend on it); default EMBEDDED_INPUT.
    config_inputs: Mapping[str, InputSpec] = field(default_factory=dict)
    #: Training recipes by config name, for configs that need one (see :class:`TrainRecipe`); others: none.
    recipes: Mapping[str, TrainRecipe] = field(default_factory=dict)
    #: The dataset the command line picks when --dataset is omitted and this model is named (not an identity).
    default_dataset: str = "digits-dvs"

    def __post_init__(self) -> None:
        unknown = sorted(set(self.recipes) - set(self.configs))
        if unknown:
            raise ConfigError(f"model {self.name!r} has recipes for unknown config(s) {unknown}")
        # ``build`` is wrapped once (as DatasetSpec wraps ``load``) so that every model the zoo builds, by any
        # caller or plugin, checks its input against its spec: the one place input shapes are checked.
        if not getattr(self.build, "_snnsec_checked", False):
            builder, name = self.build, self.name

            def build(config: Any, spec: InputSpec) -> nn.Module:
                return with_input_check(builder(config, spec), spec, name)

            functools.update_wrapper(build, builder, updated=())
            build._snnsec_checked = True  # type: ignore[attr-defined]
            object.__setattr__(self, "build", build)

    def recipe_for(self, config_name: str) -> TrainRecipe | None:
        """The training recipe of config ``config_name``, or ``None`` where the defaults serve."""
        return self.recipes.get(config_name)

    def input_for(self, config_name: str) -> InputSpec:
        return self.config_inputs.get(config_name, EMBEDDED_INPUT)

    def resolve_config(self, config_name: str | None, spec: InputSpec, **overrides: Any) -> Any:
        name = config_name or self.default_config(spec)
        if name not in self.configs:
            raise UnknownNameError(
                f"unknown config {name!r} for model {self.name!r}; choose one of: {', '.join(self.configs)}"
            )
        config = self.configs[name]
        if overrides:
            known = {f.name for f in fields(config)}
            bad = sorted(set(overrides) - known)
            if bad:
                raise ConfigError(f"model {self.name!r} has no option(s) {bad}; options: {sorted(known)}")
            config = replace(config, **overrides)
        return config


MODELS: Registry[ModelEntry] = Registry("model", "snnsec.models")


def create_model(name: str, spec: InputSpec, config: str | None = None, **overrides: Any) -> nn.Module:
    """Build zoo model ``name`` for inputs ``spec`` (``timm.create_model`` style)."""
    entry = MODELS.get(name)
    return entry.build(entry.resolve_config(config, spec, **overrides), spec)


def describe(name: str, config_name: str) -> dict[str, Any]:
    """A JSON-able card of one named config: its input, fields, parameter count and references."""
    entry = MODELS.get(name)
    spec = entry.input_for(config_name)
    config = entry.resolve_config(config_name, spec)
    net = entry.build(config, spec)
    recipe = entry.recipe_for(config_name)
    return {
        "model": name,
        "config": config_name,
        "input": {"frames": spec.frames, "channels": spec.channels, "height": spec.height,
                  "width": spec.width, "num_classes": spec.num_classes},
        "options": asdict(config),
        "params": sum(p.numel() for p in net.parameters()),
        "spiking": entry.spiking,
        "description": entry.description,
        "reference": entry.reference,
        "reference_accuracy": dict(entry.reference_accuracy),
        "recipe": asdict(recipe) if recipe else None,
    }
