"""Where patient left and posterior lie in a stored axial slice: the one place that decides it.

An axial slice may be stored in any of 8 ways (rotated by 90 degrees, flipped, transposed:
prone or feet-first patients, a row direction running anterior-posterior). Every per-level step
of lumbargrade (segmentation, measurements, boxes, classifiers, pictures) works on the slice's
*canonical view*: the stored pixels rotated/flipped (exactly, no resampling) so that

* the column index grows towards the patient's **left** (+x in LPS),
* the row index grows towards the patient's **posterior** (+y),

the radiological display of an axial image. :func:`axial_view` finds the transform from
ImageOrientationPatient (the slice's :class:`~lumbargrade.geometry.SliceGeometry`); results go
back to the stored grid with :meth:`AxialView.from_canonical`, so label maps, DICOM SEG and boxes
are written in the pixel grid the study came in. A slice with no geometry (a PNG) is taken as
canonical already.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

__all__ = ["AxialView", "IDENTITY", "LAYOUTS", "axial_view", "restore", "MAX_TILT_DEG", "MAX_RESIDUAL_DEG"]

#: the 8 ways to store an axial slice: the patient axes that the row cosine and the col cosine
#: follow ('+x+y' is the radiological display: left on the image's right, anterior at the top)
LAYOUTS = ("+x+y", "-x+y", "+x-y", "-x-y", "+y+x", "-y+x", "+y-x", "-y-x")

#: an axial slice whose normal is further than this from the patient's z axis is not graded
MAX_TILT_DEG = 50.0
#: warn when the canonical axes are rotated further than this from the patient's (x, y)
MAX_RESIDUAL_DEG = 20.0


@dataclass(frozen=True)
class AxialView:
    """An exact transform (transpose, then flips) from a stored slice to its canonical view.

    ``residual_deg``: in-plane angle between the canonical column axis and the patient's x axis
    projected onto the slice (0 for slices stored along the patient axes). ``tilt_deg``: angle of
    the slice normal from the patient's z axis.
    """

    transpose: bool = False
    flip_rows: bool = False
    flip_cols: bool = False
    residual_deg: float = 0.0
    tilt_deg: float = 0.0

    @property
    def is_identity(self) -> bool:
        return not (self.transpose or self.flip_rows or self.flip_cols)

    def to_canonical(self, arr: np.ndarray) -> np.ndarray:
        """Stored ``[..., rows, cols]`` -> canonical ``[..., rows', cols']`` (a copy)."""
        a = np.asarray(arr)
        if self.transpose:
            a = np.swapaxes(a, -1, -2)
        if self.flip_rows:
            a = a[..., ::-1, :]
        if self.flip_cols:
            a = a[..., :, ::-1]
        return np.ascontiguousarray(a)

    def from_canonical(self, arr: np.ndarray) -> np.ndarray:
        """Canonical ``[..., rows', cols']`` -> stored ``[..., rows, cols]`` (a copy)."""
        a = np.asarray(arr)
        if self.flip_cols:
            a = a[..., :, ::-1]
        if self.flip_rows:
            a = a[..., ::-1, :]
        if self.transpose:
            a = np.swapaxes(a, -1, -2)
        return np.ascontiguousarray(a)

    def canonical_spacing(self, spacing: tuple[float, float]) -> tuple[float, float]:
        """Stored (row_mm, col_mm) -> canonical (row_mm, col_mm)."""
        return (float(spacing[1]), float(spacing[0])) if self.transpose else (float(spacing[0]), float(spacing[1]))

    def canonical_shape(self, shape: tuple[int, int]) -> tuple[int, int]:
        return (int(shape[1]), int(shape[0])) if self.transpose else (int(shape[0]), int(shape[1]))

    def point_from_canonical(self, rc, canonical_shape: tuple[int, int]) -> np.ndarray:
        """Canonical (row, col) pixel coordinates (``[..., 2]``, fractional allowed) -> stored."""
        p = np.array(rc, dtype=np.float64)
        h, w = canonical_shape
        if self.flip_cols:
            p[..., 1] = (w - 1) - p[..., 1]
        if self.flip_rows:
            p[..., 0] = (h - 1) - p[..., 0]
        if self.transpose:
            p = p[..., ::-1].copy()
        return p

    def point_to_canonical(self, rc, stored_shape: tuple[int, int]) -> np.ndarray:
        """Stored (row, col) pixel coordinates -> canonical."""
        p = np.array(rc, dtype=np.float64)
        if self.transpose:
            p = p[..., ::-1].copy()
        h, w = self.canonical_shape(stored_shape)
        if self.flip_rows:
            p[..., 0] = (h - 1) - p[..., 0]
        if self.flip_cols:
            p[..., 1] = (w - 1) - p[..., 1]
        return p

    def box_from_canonical(self, box, canonical_shape: tuple[int, int]) -> list[int] | None:
        """A canonical ``[row0, col0, row1, col1]`` (end-exclusive) -> the stored grid's."""
        if box is None:
            return None
        r0, c0, r1, c1 = (int(v) for v in box)
        h, w = canonical_shape
        if self.flip_cols:
            c0, c1 = w - c1, w - c0
        if self.flip_rows:
            r0, r1 = h - r1, h - r0
        if self.transpose:
            r0, c0, r1, c1 = c0, r0, c1, r1
        return [r0, c0, r1, c1]

    def box_to_canonical(self, box, stored_shape: tuple[int, int]) -> list[int] | None:
        """A stored ``[row0, col0, row1, col1]`` -> the canonical grid's."""
        if box is None:
            return None
        r0, c0, r1, c1 = (int(v) for v in box)
        if self.transpose:
            r0, c0, r1, c1 = c0, r0, c1, r1
        h, w = self.canonical_shape(stored_shape)
        if self.flip_rows:
            r0, r1 = h - r1, h - r0
        if self.flip_cols:
            c0, c1 = w - c1, w - c0
        return [r0, c0, r1, c1]

    def to_dict(self) -> dict:
        return {"transpose": self.transpose, "flip_rows": self.flip_rows, "flip_cols": self.flip_cols,
                "residual_deg": round(self.residual_deg, 2), "tilt_deg": round(self.tilt_deg, 2)}


IDENTITY = AxialView()


def axial_view(geometry) -> AxialView:
    """The canonical view of an axial slice from its geometry (``SliceGeometry``; None -> identity).

    Of the 8 transforms, the one whose canonical column and row axes follow the patient's +x and
    +y best. Raises ValueError for a slice that is not axial (normal further than
    :data:`MAX_TILT_DEG` from z) or whose orientation is not finite.
    """
    if geometry is None:
        return IDENTITY
    r = np.asarray(geometry.row_cosine, dtype=np.float64)  # direction of growing column index
    c = np.asarray(geometry.col_cosine, dtype=np.float64)  # direction of growing row index
    if not (np.all(np.isfinite(r)) and np.all(np.isfinite(c))):
        raise ValueError("ImageOrientationPatient is not finite")
    n = np.cross(r, c)
    nn = float(np.linalg.norm(n))
    if nn < 1e-6:
        raise ValueError("ImageOrientationPatient row and column directions are parallel")
    n = n / nn
    tilt = float(np.degrees(np.arccos(min(1.0, abs(n[2])))))
    if tilt > MAX_TILT_DEG:
        raise ValueError(f"the slice is {tilt:.0f} degrees from axial (more than {MAX_TILT_DEG:.0f}): "
                         "not an axial slice")
    x, y = np.array([1.0, 0.0, 0.0]), np.array([0.0, 1.0, 0.0])
    # canonical columns follow +x: from the stored columns (row cosine r) or, transposed, the rows (c)
    straight = abs(r @ x) + abs(c @ y)
    crossed = abs(c @ x) + abs(r @ y)
    transpose = crossed > straight
    col_dir, row_dir = (c, r) if transpose else (r, c)
    flip_cols = bool(col_dir @ x < 0)
    flip_rows = bool(row_dir @ y < 0)
    col_dir = -col_dir if flip_cols else col_dir
    # residual: angle between the canonical column axis and +x projected onto the slice plane
    xp = x - (x @ n) * n
    xp_norm = float(np.linalg.norm(xp))
    residual = 0.0 if xp_norm < 1e-6 else float(np.degrees(np.arccos(np.clip(col_dir @ xp / xp_norm, -1, 1))))
    return AxialView(bool(transpose), flip_rows, flip_cols, residual, tilt)


def restore(image: np.ndarray, geometry, layout: str):
    """The same slice stored in another of the 8 layouts (:data:`LAYOUTS`): ``(pixels, geometry)``
    with the pixels rearranged exactly and ImageOrientationPatient / ImagePositionPatient to match
    (every pixel keeps its patient position). For tests and for checking that results do not
    depend on how a study was stored."""
    import dataclasses

    if layout not in LAYOUTS:
        raise ValueError(f"unknown layout {layout!r}; known: {', '.join(LAYOUTS)}")
    view = axial_view(geometry)
    canon = view.to_canonical(image)
    cs = view.canonical_spacing(geometry.pixel_spacing)
    # canonical axes in patient space: column direction (towards +x) and row direction (+y)
    col_dir, row_dir = ((geometry.col_cosine, geometry.row_cosine) if view.transpose
                        else (geometry.row_cosine, geometry.col_cosine))
    col_dir = -np.asarray(col_dir) if view.flip_cols else np.asarray(col_dir)
    row_dir = -np.asarray(row_dir) if view.flip_rows else np.asarray(row_dir)
    axes = {"x": col_dir, "y": row_dir}
    sign = {"+": 1.0, "-": -1.0}
    r_new = sign[layout[0]] * axes[layout[1]]
    c_new = sign[layout[2]] * axes[layout[3]]
    spacing_of = {"x": cs[1], "y": cs[0]}
    g_new = dataclasses.replace(geometry, row_cosine=np.asarray(r_new, float), col_cosine=np.asarray(c_new, float),
                                pixel_spacing=(float(spacing_of[layout[3]]), float(spacing_of[layout[1]])),
                                rows=0, columns=0)
    v_new = axial_view(g_new)
    stored = v_new.from_canonical(canon)
    corner = v_new.point_to_canonical(np.array([0.0, 0.0]), stored.shape)
    # patient position of that canonical pixel, through the original geometry
    orig = view.point_from_canonical(corner, canon.shape)
    pos = geometry.pixel_to_patient(orig)
    g_new = dataclasses.replace(g_new, position=np.asarray(pos, float), rows=int(stored.shape[0]),
                                columns=int(stored.shape[1]))
    return stored, g_new
