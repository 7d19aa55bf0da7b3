"""Names of the five lumbar disc levels graded by lumbargrade."""

from __future__ import annotations

__all__ = ["LEVELS", "level_dirname", "level_from_dirname"]

#: The five disc levels, cranial to caudal.
LEVELS: tuple[str, ...] = ("L1/L2", "L2/L3", "L3/L4", "L4/L5", "L5/S1")


def level_dirname(level: str) -> str:
    """'L4/L5' -> 'L4-L5' (for file and folder names)."""
    if level not in LEVELS:
        raise ValueError(f"unknown level {level!r}; expected one of {', '.join(LEVELS)}")
    return level.replace("/", "-")


def level_from_dirname(name: str) -> str:
    """'L4-L5' (or 'L4/L5') -> 'L4/L5'."""
    level = name.replace("-", "/")
    if level not in LEVELS:
        raise ValueError(f"unknown level {name!r}; expected one of {', '.join(LEVELS)}")
    return level
