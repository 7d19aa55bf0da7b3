"""Disc levels: names, landmarks on the mid-sagittal T2, and the axial slice for each disc.

Import-light: torch is imported only inside the functions that run the network
(:mod:`lumbargrade.levels.landmarks`, :mod:`lumbargrade.levels.training`).
"""

from .mid_sagittal import mid_sagittal_index
from .names import LEVELS, level_dirname
from .slice_choice import (
    SliceChoice,
    choose_slices_by_block,
    choose_slices_for_landmarks,
    slice_for_point,
)

__all__ = [
    "LEVELS",
    "SliceChoice",
    "choose_slices_by_block",
    "choose_slices_for_landmarks",
    "level_dirname",
    "mid_sagittal_index",
    "slice_for_point",
]
