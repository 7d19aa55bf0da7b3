"""The in-memory study: :class:`Study` -> :class:`Series` -> :class:`Block` -> :class:`SliceRef`.

Geometry is in patient LPS mm (see :mod:`lumbargrade.geometry`). Headers are kept, pixel data is
read only when asked for (:meth:`SliceRef.pixels`, :meth:`Block.volume`) and then cached.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from ..errors import InputError
from ..geometry import SliceGeometry, Volume, affine_from_slices

__all__ = ["Block", "Series", "SliceRef", "Study"]


@dataclass(eq=False)
class SliceRef:
    """One 2D image: its geometry, identity and header; pixels loaded lazily.

    ``path`` is the file on disk (for a .zip, the extracted copy); ``display`` is how messages name
    it (``archive.zip:member``). ``header`` is the pydicom Dataset read without pixel data (None
    for NIfTI). ``frame`` is the frame index in an enhanced multi-frame file, else None.
    """

    geometry: SliceGeometry
    sop_instance_uid: str | None
    path: Path | None
    header: Any = None
    display: str = ""
    instance_number: int | None = None
    frame: int | None = None
    _loader: Callable[[], np.ndarray] | None = field(default=None, repr=False)
    _pixels: np.ndarray | None = field(default=None, repr=False)

    def pixels(self) -> np.ndarray:
        """``[row, col]`` float32 image with RescaleSlope / RescaleIntercept applied (cached)."""
        if self._pixels is None:
            if self._loader is not None:
                arr = np.asarray(self._loader(), dtype=np.float32)
            else:
                from .dicom import load_pixels

                arr = load_pixels(self)
            g = self.geometry
            if arr.shape != (g.rows, g.columns):
                raise InputError(
                    self.display or self.path,
                    f"pixel data has shape {arr.shape}, header says {g.rows}x{g.columns}",
                )
            self._pixels = arr
        return self._pixels

    def release(self) -> None:
        """Forget cached pixels (they are re-read on the next :meth:`pixels`)."""
        self._pixels = None


@dataclass(eq=False)
class Block:
    """Parallel slices sharing one orientation, sorted by position along the normal (ascending)."""

    slices: list[SliceRef]

    def __len__(self) -> int:
        return len(self.slices)

    @property
    def geometries(self) -> list[SliceGeometry]:
        return [s.geometry for s in self.slices]

    @property
    def plane(self) -> str:
        return self.slices[0].geometry.plane

    @property
    def normal(self) -> np.ndarray:
        return self.slices[0].geometry.normal

    @property
    def affine(self) -> np.ndarray:
        """4x4 affine ``[slice, row, col, 1] -> LPS mm`` (:func:`geometry.affine_from_slices`)."""
        return affine_from_slices(self.geometries)

    def volume(self) -> Volume:
        """The block as a :class:`geometry.Volume`: float32 ``[slice, row, col]``, rescaled."""
        arr = np.stack([s.pixels() for s in self.slices], axis=0).astype(np.float32, copy=False)
        return Volume(array=arr, affine=self.affine, slices=self.geometries)


@dataclass(eq=False)
class Series:
    """One series (one SeriesInstanceUID; for NIfTI, one file), split into blocks.

    ``plane`` is the plane of its blocks, or ``'mixed'`` when blocks lie in different planes
    (three-plane localizers). ``pixel_spacing`` is ``(row, col)`` mm; ``slice_thickness`` mm or
    None. ``role`` is ``'axial_t2'``, ``'sagittal_t2'`` or None (see :mod:`lumbargrade.io.roles`).
    """

    series_instance_uid: str
    description: str
    modality: str
    plane: str
    blocks: list[Block]
    role: str | None = None
    rows: int = 0
    columns: int = 0
    pixel_spacing: tuple[float, float] = (0.0, 0.0)
    slice_thickness: float | None = None
    series_number: int | None = None
    image_type: tuple[str, ...] = ()
    sequence_name: str = ""
    scanning_sequence: str = ""
    protocol_name: str = ""
    echo_time_ms: float | None = None
    repetition_time_ms: float | None = None
    is_localizer: bool = False
    files: list[str] = field(default_factory=list)

    @property
    def n_slices(self) -> int:
        return sum(len(b) for b in self.blocks)

    @property
    def n_blocks(self) -> int:
        return len(self.blocks)

    def all_slices(self) -> list[SliceRef]:
        """Every slice, block by block (blocks superior first, each sorted along its normal)."""
        return [s for b in self.blocks for s in b.slices]

    def block_geometries(self) -> list[list[SliceGeometry]]:
        """Geometries grouped by block, the input of :func:`geometry.find_slice`."""
        return [b.geometries for b in self.blocks]

    def find_slice(
        self, point: np.ndarray, margin_px: float = 0.0
    ) -> tuple[SliceRef, float] | None:
        """The slice whose plane is nearest a LPS point (mm) and that contains it, with the signed
        distance in mm; None when no slice contains it."""
        from ..geometry import find_slice

        hit = find_slice(np.asarray(point, dtype=np.float64), self.block_geometries(), margin_px)
        if hit is None:
            return None
        b, k, d = hit
        return self.blocks[b].slices[k], d

    def summary(self) -> dict:
        """The JSON row of ``lumbargrade inspect --json``."""
        return {
            "series_instance_uid": self.series_instance_uid,
            "description": self.description,
            "plane": self.plane,
            "n_slices": self.n_slices,
            "n_blocks": self.n_blocks,
            "rows": int(self.rows),
            "columns": int(self.columns),
            "pixel_spacing_mm": [float(self.pixel_spacing[0]), float(self.pixel_spacing[1])],
            "slice_thickness_mm": None
            if self.slice_thickness is None
            else float(self.slice_thickness),
            "role": self.role,
        }


@dataclass(eq=False)
class Study:
    """A study: its series (ordered by SeriesNumber, then UID) and warnings about skipped input.

    ``source`` is the path that was read. A study read from a .zip keeps its extracted files in a
    temporary folder until :meth:`close` (or garbage collection).
    """

    study_instance_uid: str | None
    series: list[Series]
    warnings: list[str]
    source: str
    _tmpdir: Any = field(default=None, repr=False)

    def find(self, role: str) -> Series | None:
        """The series with this role (``'axial_t2'`` / ``'sagittal_t2'``), or None."""
        for s in self.series:
            if s.role == role:
                return s
        return None

    def to_dict(self) -> dict:
        """The JSON object of ``lumbargrade inspect --json``."""
        return {
            "study_instance_uid": self.study_instance_uid,
            "series": [s.summary() for s in self.series],
            "warnings": list(self.warnings),
        }

    def close(self) -> None:
        """Remove the temporary folder of a study read from a .zip (pixels already read stay)."""
        if self._tmpdir is not None:
            self._tmpdir.cleanup()
            self._tmpdir = None

    def __enter__(self) -> Study:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
