"""Disc levels: names, landmarks on the mid-sagittal T2, and the axial slice for each disc."""

from .names import LEVELS, level_dirname

__all__ = ["LEVELS", "level_dirname"]
