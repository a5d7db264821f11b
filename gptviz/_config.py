"""`DictConfig`: to_dict / from_dict for the config dataclasses (GPTConfig, TrainConfig, FinetuneConfig), and the
one rule for the types of their fields, whether they come from Python, a JSON preset or a checkpoint:

- a `float` field takes a number or a string holding one (`"3e-3"`, `" 0.1 "`), as argparse's `type=float` does,
  and the number must be finite (`inf` / `nan` are refused, written as numbers or as strings);
- an `int` field takes a whole number only: `32`, not `"32"`, `32.0` or `true`;
- a `bool` field takes `true` / `false` only, not `"yes"`, `1` or `"false"`;
- a `str` field takes a string; `X | None` fields also take `null` / None; `list[str]` a list of strings.

Anything else is a `ConfigError` (a ValueError) naming the class, the field, the expected type and what was
given. The value checks of each config (ranges, choices) stay in its own `__post_init__`.
"""

from __future__ import annotations

import math
import typing
from dataclasses import asdict, fields

from .errors import ConfigError


def _describe(value: object) -> str:
    if isinstance(value, str):
        return f"the string {value!r}"
    return f"{value!r} ({type(value).__name__})"


def coerce_field(name: str, tp: object, value: object) -> tuple[object, str | None]:
    """(value converted to the field type `tp`, None) or (value, the problem) under the module's rule."""
    args = typing.get_args(tp)
    optional = type(None) in args
    base = next((a for a in args if a is not type(None)), tp) if optional else tp
    if value is None:
        return value, None if optional else f"{name} must be {_expected(base)}, got None (null)"
    if base is float:
        number = value
        if isinstance(value, str):
            try:
                number = float(value.strip())
            except ValueError:
                return value, f"{name} must be a number, got {_describe(value)}"
        elif isinstance(value, bool) or not isinstance(value, (int, float)):
            return value, f"{name} must be a number, got {_describe(value)}"
        if not math.isfinite(number):
            return value, f"{name} must be a finite number, got {value!r}"
        return float(number), None
    if base is int:
        if isinstance(value, bool) or not isinstance(value, int):
            hint = f" (write {value.strip()} without quotes)" if isinstance(value, str) and _is_int(value) else ""
            return value, f"{name} must be a whole number, got {_describe(value)}{hint}"
        return value, None
    if base is bool:
        if not isinstance(value, bool):
            return value, f"{name} must be true or false, got {_describe(value)}"
        return value, None
    if base is str:
        if not isinstance(value, str):
            return value, f"{name} must be a string, got {_describe(value)}"
        return value, None
    if typing.get_origin(base) is list:
        if not isinstance(value, (list, tuple)) or not all(isinstance(v, str) for v in value):
            return value, f"{name} must be a list of strings, got {_describe(value)}"
        return list(value), None
    return value, None  # a type this rule does not cover: the config's own checks decide


_EXPECTED = {float: "a number", int: "a whole number", bool: "true or false", str: "a string"}


def _expected(base: object) -> str:
    return _EXPECTED.get(base, "a value")  # type: ignore[call-overload]


def _is_int(text: str) -> bool:
    try:
        int(text.strip())
        return True
    except ValueError:
        return False


_HINTS: dict[type, dict[str, object]] = {}


def field_types(cls: type) -> dict[str, object]:
    """{field name: resolved type} of a dataclass (cached; the annotations are strings under __future__)."""
    if cls not in _HINTS:
        _HINTS[cls] = typing.get_type_hints(cls)
    return _HINTS[cls]


def coerce_fields(cls: type, values: dict) -> tuple[dict, list[str]]:
    """(values converted field by field, the problems) for dataclass `cls`; unknown keys pass through."""
    types, out, problems = field_types(cls), {}, []
    for key, value in values.items():
        if key in types:
            value, problem = coerce_field(key, types[key], value)
            if problem:
                problems.append(problem)
        out[key] = value
    return out, problems


class DictConfig:
    """Mixin for a dataclass: a plain dict out, and back in with unknown keys named (a typo is an error) and
    field types checked under the module's rule (numeric strings become floats for float fields)."""

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict):
        if not isinstance(d, dict):
            raise ConfigError(f"{cls.__name__} needs a dict (a JSON object) of fields, got {type(d).__name__}")
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(d) - known, key=str)
        if unknown:
            raise ConfigError(f"unknown {cls.__name__} fields {unknown}; known fields: {sorted(known)}")
        values, problems = coerce_fields(cls, d)
        if problems:
            raise ConfigError(f"invalid {cls.__name__}: " + "; ".join(problems))
        return cls(**values)

    def check_field_types(self) -> list[str]:
        """Coerce this config's fields in place under the module's rule; returns the problems (for __post_init__)."""
        values, problems = coerce_fields(type(self), {f.name: getattr(self, f.name) for f in fields(self)})
        if not problems:
            for key, value in values.items():
                object.__setattr__(self, key, value)
        return problems
