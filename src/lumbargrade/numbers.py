"""Small numeric helpers every stage shares: is a value a finite number, and a JSON-safe copy.

Reports, the SR, the evaluation and the config checks all ask the same two questions of values
that may be None, NaN, numpy scalars or something else; one home keeps the answers the same.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np

__all__ = ["is_finite_number", "json_safe"]


def is_finite_number(x: Any) -> bool:
    """True for a finite real number: an int or float, Python or numpy (not a bool, not a string,
    not None, NaN or infinity)."""
    if isinstance(x, (bool, np.bool_)) or not isinstance(x, (int, float, np.integer, np.floating)):
        return False
    return math.isfinite(float(x))


def json_safe(o: Any) -> Any:
    """A copy of ``o`` that JSON can hold: NaN and infinity -> None, recursively through dicts,
    lists and tuples (tuples become lists); numpy scalars -> Python numbers."""
    if isinstance(o, dict):
        return {k: json_safe(v) for k, v in o.items()}
    if isinstance(o, (list, tuple)):
        return [json_safe(v) for v in o]
    if isinstance(o, (float, np.floating)):
        return float(o) if np.isfinite(o) else None
    if isinstance(o, np.integer):
        return int(o)
    return o
