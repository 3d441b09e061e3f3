"""Type checks of config dataclasses from their annotations: a wrong type is one line, before any work.

Configs come from the CLI (typed by click), from sweep specs (JSON: ``"epochs": 2.5``, ``"seed": "x"``)
and from Python callers; :func:`check_types` checks every field of a config against its annotation in
one place, so a float where an integer belongs is rejected instead of truncated or failing deep inside.
"""
from __future__ import annotations

import math
import types
import typing
from dataclasses import fields
from typing import Any

import numpy as np

from snnsec.errors import ConfigError

#: Seeds are non-negative and fit numpy's legacy 32-bit seed range (torch takes 64 bits, numpy's
#: ``RandomState`` 32): one range that every RNG the toolkit seeds accepts.
MAX_SEED = 2**32 - 1


def check_seed(seed: object, name: str = "seed") -> None:
    """Raise a ConfigError unless ``seed`` is an integer in ``[0, MAX_SEED]``."""
    if not _is_int(seed) or not 0 <= seed <= MAX_SEED:  # type: ignore[operator]
        raise ConfigError(f"{name} must be an integer in [0, {MAX_SEED}], got {seed!r}")


def check_types(config: Any, what: str = "config") -> None:
    """Raise a ConfigError naming the first field of dataclass ``config`` whose value does not match
    its annotation (``int``, ``float``, ``str``, ``X | None``, ``tuple[...]``; ``Any`` takes anything)."""
    hints = typing.get_type_hints(type(config))
    for f in fields(config):
        value, hint = getattr(config, f.name), hints[f.name]
        if not _matches(value, hint):
            raise ConfigError(f"{what} field {f.name} must be {_describe(hint)}, got {value!r}")


def _is_int(value: object) -> bool:
    return isinstance(value, (int, np.integer)) and not isinstance(value, (bool, np.bool_))


def _matches(value: object, hint: Any) -> bool:
    if hint is Any:
        return True
    if hint is type(None):
        return value is None
    if hint is int:
        return _is_int(value)
    if hint is float:  # an integer is a fine float; a boolean, NaN or infinity is not
        return (_is_int(value) or isinstance(value, (float, np.floating))) and math.isfinite(value)  # type: ignore[arg-type]
    if hint is str:
        return isinstance(value, str)
    if hint is bool:
        return isinstance(value, (bool, np.bool_))
    origin, args = typing.get_origin(hint), typing.get_args(hint)
    if origin in (typing.Union, types.UnionType):
        return any(_matches(value, a) for a in args)
    if origin is tuple:  # a list is fine too (JSON has no tuples)
        if not isinstance(value, (tuple, list)):
            return False
        if len(args) == 2 and args[1] is Ellipsis:
            return all(_matches(v, args[0]) for v in value)
        return len(args) == len(value) and all(_matches(v, a) for v, a in zip(value, args))
    if isinstance(hint, type):
        return isinstance(value, hint)
    return True  # an annotation this checker does not know: the config's own checks decide


def _describe(hint: Any) -> str:
    if hint is type(None):
        return "null"
    names = {int: "an integer", float: "a finite number", str: "a string", bool: "true or false"}
    if hint in names:
        return names[hint]
    origin, args = typing.get_origin(hint), typing.get_args(hint)
    if origin in (typing.Union, types.UnionType):
        return " or ".join(_describe(a) for a in args)
    if origin is tuple:
        if len(args) == 2 and args[1] is Ellipsis:
            return f"a list of ({_describe(args[0])})"
        return f"a list [{', '.join(_describe(a) for a in args)}]"
    return getattr(hint, "__name__", str(hint))
