"""Patient geometry: pixels and voxels to patient LPS millimetres and back.

Conventions (used everywhere in lumbargrade):

* Patient coordinates are DICOM LPS, in mm: +x towards the patient's Left, +y Posterior,
  +z Superior.
* A 2D image is indexed ``[row, col]``; a volume ``[slice, row, col]`` (slice first).
* A volume affine is a 4x4 matrix ``A`` with ``A @ [slice, row, col, 1] = [x, y, z, 1]``.
* ``pixel_spacing`` is DICOM's ``PixelSpacing`` order: ``(row_spacing, col_spacing)`` in mm, i.e.
  the distance between rows, then between columns.
* ``row_cosine`` is ImageOrientationPatient[0:3], the direction in which the *column index*
  grows; ``col_cosine`` is ImageOrientationPatient[3:6], the direction in which the *row index*
  grows. ``position`` is ImagePositionPatient, the centre of pixel (0, 0).

Everything here is a pure function of arrays; no file access.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Sequence

import numpy as np

__all__ = [
    "SliceGeometry",
    "Volume",
    "plane_of",
    "affine_from_slices",
    "voxel_to_patient",
    "patient_to_voxel",
    "sort_slices_along_normal",
    "split_into_blocks",
    "signed_distances",
    "find_slice",
    "ras_to_lps",
    "nifti_to_volume_affine",
]

_AXES = {0: "sagittal", 1: "coronal", 2: "axial"}  # dominant component of the slice normal


def _unit(v: Sequence[float]) -> np.ndarray:
    a = np.asarray(v, dtype=np.float64)
    n = np.linalg.norm(a)
    if not np.isfinite(n) or n == 0:
        raise ValueError("direction vector is zero-length or not finite")
    return a / n


@dataclass(frozen=True)
class SliceGeometry:
    """Where one 2D slice lies in patient space.

    Attributes
    ----------
    position: (3,) LPS mm of the centre of pixel (row 0, col 0) (ImagePositionPatient).
    row_cosine: (3,) unit vector along which the column index grows (IOP[0:3]).
    col_cosine: (3,) unit vector along which the row index grows (IOP[3:6]).
    pixel_spacing: (row_spacing, col_spacing) in mm (DICOM PixelSpacing order).
    rows, columns: matrix size.
    thickness: slice thickness in mm, or None when unknown.
    """

    position: np.ndarray
    row_cosine: np.ndarray
    col_cosine: np.ndarray
    pixel_spacing: tuple[float, float]
    rows: int
    columns: int
    thickness: float | None = None

    @classmethod
    def from_dicom_values(
        cls,
        image_position: Sequence[float],
        image_orientation: Sequence[float],
        pixel_spacing: Sequence[float],
        rows: int,
        columns: int,
        thickness: float | None = None,
    ) -> "SliceGeometry":
        """Build from the DICOM tags ImagePositionPatient, ImageOrientationPatient, PixelSpacing."""
        iop = [float(v) for v in image_orientation]
        return cls(
            position=np.asarray([float(v) for v in image_position], dtype=np.float64),
            row_cosine=_unit(iop[:3]),
            col_cosine=_unit(iop[3:6]),
            pixel_spacing=(float(pixel_spacing[0]), float(pixel_spacing[1])),
            rows=int(rows),
            columns=int(columns),
            thickness=None if thickness is None else float(thickness),
        )

    @property
    def normal(self) -> np.ndarray:
        """(3,) unit slice normal, ``row_cosine x col_cosine``."""
        return _unit(np.cross(self.row_cosine, self.col_cosine))

    @property
    def orientation(self) -> tuple[float, ...]:
        """ImageOrientationPatient as 6 floats."""
        return tuple(float(v) for v in (*self.row_cosine, *self.col_cosine))

    @property
    def plane(self) -> str:
        """'axial', 'sagittal', 'coronal' or 'oblique' (see :func:`plane_of`)."""
        return plane_of(self.orientation)

    @property
    def affine2d(self) -> np.ndarray:
        """4x4 affine mapping ``[0, row, col, 1]`` (slice index 0) to LPS mm; column 0 is the normal
        scaled by the thickness (1 mm when unknown)."""
        a = np.eye(4)
        a[:3, 0] = self.normal * (self.thickness or 1.0)
        a[:3, 1] = self.col_cosine * self.pixel_spacing[0]
        a[:3, 2] = self.row_cosine * self.pixel_spacing[1]
        a[:3, 3] = self.position
        return a

    def pixel_to_patient(self, rc: np.ndarray) -> np.ndarray:
        """(..., 2) [row, col] pixel coordinates (floats allowed) -> (..., 3) LPS mm."""
        rc = np.asarray(rc, dtype=np.float64)
        return (
            self.position
            + rc[..., :1] * self.pixel_spacing[0] * self.col_cosine
            + rc[..., 1:2] * self.pixel_spacing[1] * self.row_cosine
        )

    def patient_to_pixel(self, xyz: np.ndarray) -> np.ndarray:
        """(..., 3) LPS mm -> (..., 3) [row, col, signed distance from the plane in mm]."""
        d = np.asarray(xyz, dtype=np.float64) - self.position
        row = d @ self.col_cosine / self.pixel_spacing[0]
        col = d @ self.row_cosine / self.pixel_spacing[1]
        dist = d @ self.normal
        return np.stack([row, col, dist], axis=-1)

    def signed_distance(self, xyz: np.ndarray) -> np.ndarray:
        """Signed distance in mm from point(s) (..., 3) to the slice plane (positive along normal)."""
        return (np.asarray(xyz, dtype=np.float64) - self.position) @ self.normal

    def contains(self, xyz: np.ndarray, margin_px: float = 0.0) -> bool:
        """True when the point's projection lies inside the field of view (pixel centres span
        ``-0.5 .. n-0.5``), extended by ``margin_px`` pixels."""
        r, c, _ = self.patient_to_pixel(xyz)
        return bool(
            -0.5 - margin_px <= r <= self.rows - 0.5 + margin_px
            and -0.5 - margin_px <= c <= self.columns - 0.5 + margin_px
        )

    def pixel_grid_lps(self) -> np.ndarray:
        """(rows, columns, 3) LPS mm of every pixel centre."""
        r, c = np.meshgrid(np.arange(self.rows), np.arange(self.columns), indexing="ij")
        return self.pixel_to_patient(np.stack([r, c], axis=-1))


@dataclass
class Volume:
    """A 3D image with its geometry: ``array[slice, row, col]`` and a 4x4 affine to LPS mm.

    ``slices`` keeps each slice's own :class:`SliceGeometry` (sorted along the normal), so that
    non-uniform spacing or per-slice metadata are never lost; ``affine`` describes the block as
    a regular grid (mean slice spacing).
    """

    array: np.ndarray
    affine: np.ndarray
    slices: list[SliceGeometry] = field(default_factory=list)

    @property
    def shape(self) -> tuple[int, ...]:
        return tuple(self.array.shape)

    @property
    def spacing(self) -> tuple[float, float, float]:
        """(slice, row, col) spacing in mm: the lengths of the affine's first three columns."""
        s = np.linalg.norm(self.affine[:3, :3], axis=0)
        return (float(s[0]), float(s[1]), float(s[2]))

    def voxel_to_patient(self, ijk: np.ndarray) -> np.ndarray:
        return voxel_to_patient(self.affine, ijk)

    def patient_to_voxel(self, xyz: np.ndarray) -> np.ndarray:
        return patient_to_voxel(self.affine, xyz)

    def slice_geometry(self, k: int) -> SliceGeometry:
        """Geometry of slice ``k``: the stored one when available, else derived from the affine."""
        if self.slices:
            return self.slices[k]
        a = self.affine
        ss, rs, cs = self.spacing
        return SliceGeometry(
            position=voxel_to_patient(a, np.array([k, 0.0, 0.0])),
            row_cosine=_unit(a[:3, 2]),
            col_cosine=_unit(a[:3, 1]),
            pixel_spacing=(rs, cs),
            rows=int(self.array.shape[1]),
            columns=int(self.array.shape[2]),
            thickness=ss,
        )


def plane_of(orientation: Sequence[float], oblique_deg: float = 40.0) -> str:
    """Classify ImageOrientationPatient (6 floats) as 'axial', 'sagittal', 'coronal' or 'oblique'.

    The plane is named after the patient axis nearest the slice normal; a normal more than
    ``oblique_deg`` degrees from every axis is 'oblique'. Tilted axial blocks that follow a disc
    (up to about 35 degrees at L5/S1) are therefore still 'axial'.
    """
    o = [float(v) for v in orientation]
    n = _unit(np.cross(_unit(o[:3]), _unit(o[3:6])))
    axis = int(np.argmax(np.abs(n)))
    angle = np.degrees(np.arccos(min(1.0, abs(n[axis]))))
    return "oblique" if angle > oblique_deg else _AXES[axis]


def sort_slices_along_normal(slices: Sequence[SliceGeometry]) -> list[int]:
    """Indices that sort slices by position along the (first slice's) normal, ascending.

    Never uses InstanceNumber or file order.
    """
    if not slices:
        return []
    n = slices[0].normal
    d = [float(s.position @ n) for s in slices]
    return [int(i) for i in np.argsort(d, kind="stable")]


def split_into_blocks(
    slices: Sequence[SliceGeometry], angle_tol_deg: float = 1.0, gap_factor: float = 1.5
) -> list[list[int]]:
    """Group slices (indices) into blocks that share one orientation, each block sorted along its
    normal. Blocks are ordered by the position of their centre along the patient's z axis,
    superior first (so an axial series of per-disc blocks reads L1/L2 first).

    Parallel slices are also split where the step along the normal exceeds ``gap_factor`` times
    the median step of their group (two parallel per-disc blocks with a gap between them), so
    that each block is a regular grid that :func:`affine_from_slices` describes correctly.
    """
    blocks: list[list[int]] = []
    normals: list[np.ndarray] = []
    cos_tol = np.cos(np.radians(angle_tol_deg))
    for i, s in enumerate(slices):
        n = s.normal
        for b, bn in zip(blocks, normals):
            same_rc = abs(float(s.row_cosine @ slices[b[0]].row_cosine)) >= cos_tol
            if abs(float(n @ bn)) >= cos_tol and same_rc:
                b.append(i)
                break
        else:
            blocks.append([i])
            normals.append(n)
    out = []
    for b in blocks:
        order = sort_slices_along_normal([slices[i] for i in b])
        idx = [b[i] for i in order]
        n = slices[idx[0]].normal
        d = np.diff([float(slices[i].position @ n) for i in idx])
        moving = d[d > 1e-3]
        if len(moving) >= 2:
            limit = gap_factor * float(np.median(moving))
            start = 0
            for k, step in enumerate(d):
                if step > limit:
                    out.append(idx[start:k + 1])
                    start = k + 1
            out.append(idx[start:])
        else:
            out.append(idx)

    def centre_z(b: list[int]) -> float:
        return -float(np.mean([slices[i].pixel_to_patient(
            np.array([(slices[i].rows - 1) / 2, (slices[i].columns - 1) / 2]))[2] for i in b]))

    out.sort(key=centre_z)
    return out


def affine_from_slices(slices: Sequence[SliceGeometry]) -> np.ndarray:
    """4x4 affine of a stack of parallel slices given in order along the normal.

    The slice axis is the mean step between consecutive ImagePositionPatient values (so a
    gap between slices is honoured); a single slice uses its normal times its thickness.
    """
    if not slices:
        raise ValueError("no slices")
    s0 = slices[0]
    a = s0.affine2d.copy()
    if len(slices) > 1:
        step = (slices[-1].position - s0.position) / (len(slices) - 1)
        a[:3, 0] = step
    return a


def voxel_to_patient(affine: np.ndarray, ijk: np.ndarray) -> np.ndarray:
    """(..., 3) [slice, row, col] voxel coordinates -> (..., 3) LPS mm."""
    ijk = np.asarray(ijk, dtype=np.float64)
    return ijk @ affine[:3, :3].T + affine[:3, 3]


def patient_to_voxel(affine: np.ndarray, xyz: np.ndarray) -> np.ndarray:
    """(..., 3) LPS mm -> (..., 3) [slice, row, col] voxel coordinates (floats)."""
    xyz = np.asarray(xyz, dtype=np.float64)
    inv = np.linalg.inv(affine)
    return xyz @ inv[:3, :3].T + inv[:3, 3]


def signed_distances(point: np.ndarray, slices: Sequence[SliceGeometry]) -> np.ndarray:
    """Signed distance (mm) from one LPS point to each slice's plane."""
    return np.array([float(s.signed_distance(point)) for s in slices])


def find_slice(
    point: np.ndarray,
    blocks: Sequence[Sequence[SliceGeometry]],
    margin_px: float = 0.0,
) -> tuple[int, int, float] | None:
    """The slice whose plane is nearest to a patient point and whose field of view contains it.

    Parameters
    ----------
    point: (3,) LPS mm.
    blocks: slices grouped in blocks (each a sequence of :class:`SliceGeometry`).

    Returns
    -------
    ``(block_index, slice_index, signed_distance_mm)`` or None when no slice contains the point.
    """
    best: tuple[int, int, float] | None = None
    for b, block in enumerate(blocks):
        for k, s in enumerate(block):
            if not s.contains(point, margin_px):
                continue
            d = float(s.signed_distance(point))
            if best is None or abs(d) < abs(best[2]):
                best = (b, k, d)
    return best


def ras_to_lps(affine_ras: np.ndarray) -> np.ndarray:
    """Convert a 4x4 affine to RAS+ (NIfTI) into one to LPS (DICOM): flip x and y."""
    return np.diag([-1.0, -1.0, 1.0, 1.0]) @ np.asarray(affine_ras, dtype=np.float64)


def nifti_to_volume_affine(
    affine_ras: np.ndarray, slice_axis: int
) -> tuple[np.ndarray, tuple[int, int, int]]:
    """Re-express a NIfTI affine (array axes i, j, k -> RAS mm) for lumbargrade's
    ``[slice, row, col]`` layout with ``slice_axis`` (0, 1 or 2 of the NIfTI array) first.

    Returns the LPS affine of the transposed array and the axis order to pass to
    ``np.transpose`` (the two remaining axes keep their NIfTI order as rows, then columns).
    """
    order = (slice_axis, *[a for a in range(3) if a != slice_axis])
    lps = ras_to_lps(affine_ras)
    out = np.eye(4)
    out[:3, :3] = lps[:3, list(order)]
    out[:3, 3] = lps[:3, 3]
    return out, order  # type: ignore[return-value]
