"""Parameters that crossed KFP: dict and list parameters travel as JSON/protobuf, where every number is a
double, so ``{"iterations": 300}`` arrives as ``{"iterations": 300.0}``."""

from __future__ import annotations

import dataclasses
from typing import Any


def integral_floats_to_int(obj: Any) -> Any:
    """``obj`` with every float that is a whole number turned back into an int, recursively through dicts
    and lists. Safe for float fields too: Python arithmetic treats 4 and 4.0 alike."""
    if isinstance(obj, float) and obj.is_integer():
        return int(obj)
    if isinstance(obj, dict):
        return {k: integral_floats_to_int(v) for k, v in obj.items()}
    if isinstance(obj, list | tuple):
        return type(obj)(integral_floats_to_int(v) for v in obj)
    return obj


def is_int(value: Any, low: int = 1) -> bool:
    """Whether ``value`` is an integer (Python or numpy, not a bool) of at least ``low``."""
    import numbers

    return isinstance(value, numbers.Integral) and not isinstance(value, bool) and value >= low


def positive_int(value: Any, name: str) -> int:
    """``value`` as a plain int if it is an integer >= 1 (numpy integers too, bools not); else a ``ValueError``
    naming ``name`` and the value."""
    if not is_int(value):
        raise ValueError(f"invalid {name} {value!r}; expected a positive integer")
    return int(value)


def config_from(parameter: str, cls: Any, fields: dict[str, Any]) -> Any:
    """``cls.from_dict(fields)`` for the pipeline parameter ``parameter``; what it raises (an unknown field, a bad
    value) becomes one ``ValueError`` that names the parameter."""
    try:
        return cls.from_dict(fields)
    except (ValueError, TypeError) as e:
        raise ValueError(f"{parameter}: {e}") from None


class FromDict:
    """Mixin for config dataclasses: ``from_dict`` (unknown keys are an error, naming the valid ones) and
    ``to_dict`` (plain dicts, as stored in checkpoints and KFP parameters)."""

    @classmethod
    def from_dict(cls, d: dict[str, Any]):
        names = {f.name for f in dataclasses.fields(cls)}
        if unknown := sorted(set(d) - names):
            raise ValueError(f"unknown {cls.__name__} field(s) {unknown}; expected some of {sorted(names)}")
        return cls(**d)

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)
