"""Parameters that crossed KFP: dict and list parameters travel as JSON/protobuf, where every number is a
double, so ``{"iterations": 300}`` arrives as ``{"iterations": 300.0}``."""

from __future__ import annotations

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
