"""Measurements of the dural sac and the disc on one axial slice, in mm and mm².

Pure functions of a binary mask (2D, ``[row, col]``) and its ``pixel_spacing = (row_mm, col_mm)``.
Nothing here opens a file.

Definitions (see also ``docs/measurements.md`` and :data:`RATIO_DEFINITIONS`):

* **Structure**: by default each mask is reduced to its largest 8-connected component before
  measuring, so that stray pixels of a predicted mask do not change the figures
  (``largest_component=False`` measures all pixels).
* **Area** (mm²): number of mask pixels x ``row_mm * col_mm``.
* **Centroid** (mm): mean pixel-centre position, in image mm ``(row_mm_position, col_mm_position)``
  with the centre of pixel ``(0, 0)`` at ``(0, 0)``.
* **AP diameter** (mm): the length of the chord of the structure along the anterior-posterior (AP)
  direction **through its centroid**, i.e. the midline AP diameter a radiologist draws on the disc
  (through the posterior concavity of a kidney-shaped disc) and on the dural sac. The chord runs
  from the first to the last boundary crossing along that line (holes are ignored). Boundaries are
  located with sub-pixel accuracy as the 0.5 level of the bilinearly interpolated mask, and the line
  is traced in mm, so the figure does not depend on pixel spacing and is rotation-invariant when
  ``ap_direction`` follows the anatomy. If the line misses the structure (a crescent whose centroid
  lies outside it) the caliper (Feret) extent along AP is used instead.
* **AP direction**: by default the row axis (anterior at low row index, as in a standard axial image
  whose col_cosine is +y posterior). ``ap_direction`` is a vector ``(d_row_mm, d_col_mm)`` in image mm
  space for an image that is rotated in plane.
* **Transverse diameter** (mm): the same chord along the direction perpendicular to AP.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field

import numpy as np

__all__ = [
    "AP_METHODS",
    "MEASUREMENT_DEFINITIONS",
    "RATIO_DEFINITIONS",
    "Measurements",
    "ap_diameter_mm",
    "area_mm2",
    "caliper_extent_mm",
    "centroid_mm",
    "chord_mm",
    "largest_component",
    "measure_level",
    "transverse_diameter_mm",
]

#: One-line definition of every ratio, for reports.
RATIO_DEFINITIONS: dict[str, str] = {
    "area_ratio": "dural sac cross-sectional area / disc cross-sectional area (mm² / mm², "
    "axial slice at the disc centre; the DDRCA of AJNR 2022)",
    "ap_ratio": "dural sac AP diameter / disc AP diameter (mm / mm, midline chords through each "
    "structure's centroid; the DDRDIA of AJNR 2022)",
    "sqrt_area_ratio": "square root of (dural sac area / disc area): a length-scale ratio, "
    "comparable to an AP-diameter ratio",
}

#: One-line definition of every measurement (units in the name).
MEASUREMENT_DEFINITIONS: dict[str, str] = {
    "dural_sac_area_mm2": "dural sac cross-sectional area, largest connected component (mm²)",
    "disc_area_mm2": "intervertebral disc cross-sectional area, largest connected component (mm²)",
    "dural_sac_ap_mm": "dural sac AP diameter: chord along AP through its centroid (mm)",
    "disc_ap_mm": "disc AP diameter: midline chord along AP through its centroid (mm)",
    "dural_sac_transverse_mm": "dural sac transverse diameter: chord perpendicular to AP through its centroid (mm)",
    "disc_transverse_mm": "disc transverse diameter: chord perpendicular to AP through its centroid (mm)",
    **RATIO_DEFINITIONS,
}

Spacing = Sequence[float]


def _check(mask: np.ndarray, spacing: Spacing) -> tuple[np.ndarray, float, float]:
    m = np.asarray(mask)
    if m.ndim != 2:
        raise ValueError(f"mask must be 2D [row, col], got shape {m.shape}")
    if len(spacing) != 2:
        raise ValueError(f"pixel spacing must be (row_mm, col_mm), got {spacing!r}")
    r, c = float(spacing[0]), float(spacing[1])
    if not (r > 0 and c > 0 and math.isfinite(r) and math.isfinite(c)):
        raise ValueError(f"pixel spacing must be positive, got {spacing!r}")
    return m.astype(bool), r, c


def largest_component(mask: np.ndarray) -> np.ndarray:
    """The largest 8-connected component of a 2D boolean mask (empty stays empty)."""
    from scipy import ndimage

    m = np.asarray(mask).astype(bool)
    if not m.any():
        return m
    lab, n = ndimage.label(m, structure=np.ones((3, 3), dtype=bool))
    if n <= 1:
        return m
    counts = np.bincount(lab.ravel())
    counts[0] = 0
    return lab == int(np.argmax(counts))


def _prep(mask: np.ndarray, spacing: Spacing, largest: bool) -> tuple[np.ndarray, float, float]:
    m, r, c = _check(mask, spacing)
    if largest:
        m = largest_component(m)
    return m, r, c


def area_mm2(mask: np.ndarray, spacing: Spacing, largest_component: bool = True) -> float:
    """Area of the mask in mm² (pixel count x row_mm x col_mm); 0.0 for an empty mask."""
    m, r, c = _prep(mask, spacing, largest_component)
    return float(m.sum()) * r * c


def centroid_mm(mask: np.ndarray, spacing: Spacing, largest_component: bool = True) -> tuple[float, float]:
    """Centroid ``(row_mm, col_mm)`` of the mask in image mm (pixel (0,0) centre at 0); NaN if empty."""
    m, r, c = _prep(mask, spacing, largest_component)
    rows, cols = np.nonzero(m)
    if rows.size == 0:
        return (math.nan, math.nan)
    return (float(rows.mean()) * r, float(cols.mean()) * c)


def _unit_dir(direction: Sequence[float] | None) -> np.ndarray:
    if direction is None:
        return np.array([1.0, 0.0])
    d = np.asarray(direction, dtype=float).reshape(2)
    n = float(np.hypot(d[0], d[1]))
    if not n > 0 or not math.isfinite(n):
        raise ValueError(f"direction must be a non-zero (row, col) vector, got {direction!r}")
    return d / n


def caliper_extent_mm(mask: np.ndarray, spacing: Spacing, direction: Sequence[float] | None = None,
                      largest_component: bool = True) -> float:
    """Caliper (Feret) extent of the mask along ``direction`` (mm): the spread of pixel-centre
    projections plus one pixel footprint along the direction. NaN if empty."""
    m, r, c = _prep(mask, spacing, largest_component)
    u = _unit_dir(direction)
    rows, cols = np.nonzero(m)
    if rows.size == 0:
        return math.nan
    proj = rows * r * u[0] + cols * c * u[1]
    return float(proj.max() - proj.min()) + abs(u[0]) * r + abs(u[1]) * c


def chord_mm(mask: np.ndarray, spacing: Spacing, point_mm: Sequence[float], direction: Sequence[float],
             step_px: float = 0.1) -> float:
    """Length (mm) between the first and the last boundary crossing of the line through
    ``point_mm`` (image mm, ``(row_mm, col_mm)``) along ``direction`` (image mm space).

    The boundary is the 0.5 level of the bilinearly interpolated mask (sub-pixel); the line is
    sampled every ``step_px`` of the smaller pixel size and crossings are refined linearly.
    Returns NaN if the line does not meet the mask. ``mask`` is used as given (no component
    selection).
    """
    from scipy import ndimage

    m, r, c = _check(mask, spacing)
    if not m.any():
        return math.nan
    u = _unit_dir(direction)
    p = np.asarray(point_mm, dtype=float).reshape(2)
    half = math.hypot(m.shape[0] * r, m.shape[1] * c) + 2 * max(r, c)
    step = step_px * min(r, c)
    t = np.arange(-half, half + step, step)
    rr = (p[0] + t * u[0]) / r
    cc = (p[1] + t * u[1]) / c
    f = ndimage.map_coordinates(m.astype(np.float32), [rr, cc], order=1, mode="constant", cval=0.0)
    inside = np.nonzero(f >= 0.5)[0]
    if inside.size == 0:
        return math.nan
    i0, i1 = int(inside[0]), int(inside[-1])

    def cross(ia: int, ib: int) -> float:  # t where f crosses 0.5 between samples ia (out) and ib (in)
        fa, fb = float(f[ia]), float(f[ib])
        w = (0.5 - fa) / (fb - fa) if fb != fa else 0.5
        return float(t[ia] + w * (t[ib] - t[ia]))

    t0 = cross(i0 - 1, i0) if i0 > 0 else float(t[i0])
    t1 = cross(i1 + 1, i1) if i1 + 1 < t.size else float(t[i1])
    return abs(t1 - t0)


AP_METHODS = ("chord", "caliper")


def _diameter(mask, spacing, direction, largest, method: str = "chord") -> float:
    if method not in AP_METHODS:
        raise ValueError(f"method must be one of {AP_METHODS}, got {method!r}")
    m, r, c = _prep(mask, spacing, largest)
    if not m.any():
        return math.nan
    if method == "caliper":
        return caliper_extent_mm(m, (r, c), direction, largest_component=False)
    cen = centroid_mm(m, (r, c), largest_component=False)
    d = chord_mm(m, (r, c), cen, direction)
    if math.isnan(d):
        d = caliper_extent_mm(m, (r, c), direction, largest_component=False)
    return d


def ap_diameter_mm(mask: np.ndarray, spacing: Spacing, ap_direction: Sequence[float] | None = None,
                   largest_component: bool = True, method: str = "chord") -> float:
    """AP diameter (mm): chord through the centroid along ``ap_direction`` (default: the row axis,
    anterior at low rows), boundaries at sub-pixel precision. NaN for an empty mask.

    ``method="caliper"`` gives the caliper (Feret) extent along AP instead (the maximal extent,
    which for a kidney-shaped disc exceeds its midline chord)."""
    return _diameter(mask, spacing, _unit_dir(ap_direction), largest_component, method)


def transverse_diameter_mm(mask: np.ndarray, spacing: Spacing, ap_direction: Sequence[float] | None = None,
                           largest_component: bool = True, method: str = "chord") -> float:
    """Transverse diameter (mm): chord through the centroid perpendicular to ``ap_direction``
    (``method="caliper"``: caliper extent). NaN for an empty mask."""
    u = _unit_dir(ap_direction)
    return _diameter(mask, spacing, (-u[1], u[0]), largest_component, method)


@dataclass
class Measurements:
    """Measurements of one level (mm, mm²; ratios unitless). NaN where a mask is empty.

    ``valid`` is False when any figure could not be measured; ``warnings`` says why.
    """

    dural_sac_area_mm2: float
    disc_area_mm2: float
    dural_sac_ap_mm: float
    disc_ap_mm: float
    dural_sac_transverse_mm: float
    disc_transverse_mm: float
    area_ratio: float
    ap_ratio: float
    sqrt_area_ratio: float
    dural_sac_empty: bool = False
    disc_empty: bool = False
    warnings: list[str] = field(default_factory=list)

    @property
    def valid(self) -> bool:
        return not (self.dural_sac_empty or self.disc_empty)

    def to_dict(self) -> dict:
        """JSON-ready dict: every figure (NaN becomes None), the empty flags, ``valid``, ``warnings``."""
        d = asdict(self)
        for k, v in d.items():
            if isinstance(v, float) and not math.isfinite(v):
                d[k] = None
        d["valid"] = self.valid
        return d

    def feature(self, name: str) -> float:
        """One figure by name (e.g. ``"ap_ratio"``)."""
        v = getattr(self, name, None)
        if not isinstance(v, float):
            raise KeyError(f"unknown measurement {name!r}; known: {sorted(MEASUREMENT_DEFINITIONS)}")
        return v


def _ratio(a: float, b: float) -> float:
    if not (math.isfinite(a) and math.isfinite(b)) or b <= 0:
        return math.nan
    return a / b


def measure_level(sac_mask: np.ndarray, disc_mask: np.ndarray, spacing: Spacing,
                  ap_direction: Sequence[float] | None = None, largest_component: bool = True,
                  diameter_method: str = "chord") -> Measurements:
    """All measurements and ratios of one axial slice. Empty masks give NaN and a flag, never raise.

    Parameters
    ----------
    sac_mask, disc_mask: 2D ``[row, col]`` masks (nonzero = structure), same shape.
    spacing: ``(row_mm, col_mm)``.
    ap_direction: AP unit vector ``(d_row, d_col)`` in image mm space; default the row axis.
    largest_component: measure only each structure's largest 8-connected component.
    diameter_method: ``"chord"`` (default: chords through the centroid) or ``"caliper"``.
    """
    s, r, c = _prep(sac_mask, spacing, largest_component)
    d, _, _ = _prep(disc_mask, spacing, largest_component)
    if s.shape != d.shape:
        raise ValueError(f"sac and disc masks differ in shape: {s.shape} vs {d.shape}")
    sp = (r, c)
    warnings: list[str] = []
    s_empty, d_empty = not s.any(), not d.any()
    if s_empty:
        warnings.append("dural sac mask is empty: its measurements and the ratios are NaN")
    if d_empty:
        warnings.append("disc mask is empty: its measurements and the ratios are NaN")
    sa = area_mm2(s, sp, False) if not s_empty else math.nan
    da = area_mm2(d, sp, False) if not d_empty else math.nan
    dm = diameter_method
    sap = ap_diameter_mm(s, sp, ap_direction, False, dm)
    dap = ap_diameter_mm(d, sp, ap_direction, False, dm)
    str_ = transverse_diameter_mm(s, sp, ap_direction, False, dm)
    dtr = transverse_diameter_mm(d, sp, ap_direction, False, dm)
    ar = _ratio(sa, da)
    return Measurements(
        dural_sac_area_mm2=sa, disc_area_mm2=da, dural_sac_ap_mm=sap, disc_ap_mm=dap,
        dural_sac_transverse_mm=str_, disc_transverse_mm=dtr,
        area_ratio=ar, ap_ratio=_ratio(sap, dap),
        sqrt_area_ratio=math.sqrt(ar) if math.isfinite(ar) else math.nan,
        dural_sac_empty=s_empty, disc_empty=d_empty, warnings=warnings,
    )
