"""Studies in: DICOM folders, .zip archives and NIfTI files -> :class:`Study` with patient geometry.

``read_study(path, rules=None) -> Study``; a :class:`Study` holds :class:`Series`, each split into
:class:`Block` s of parallel slices sorted along their normal; ``Block.volume()`` gives a
:class:`lumbargrade.geometry.Volume` (LPS mm affine). pydicom and nibabel are imported only when
a file is read. Synthetic DICOM series for tests: :mod:`lumbargrade.io.testing`.
"""

from __future__ import annotations

from .model import Block, Series, SliceRef, Study
from .roles import assign_roles, default_rules, load_rules
from .study import read_study

__all__ = [
    "Block",
    "Series",
    "SliceRef",
    "Study",
    "assign_roles",
    "default_rules",
    "load_rules",
    "read_study",
]
