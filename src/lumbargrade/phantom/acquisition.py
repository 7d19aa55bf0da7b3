"""Series planning: where each sagittal and axial slice lies in patient space (LPS mm).

Plans follow clinical lumbar protocols and the paper's Table 1:

* sagittal T2: 11, 13 or 15 slices of 3-4 mm (gap 0-1 mm) centred on the mid-sagittal plane of
  the anatomy, FOV 240-370 mm on a 256-512 matrix, covering T12/L1 to the sacrum; orientation
  row cosine ``[0, 1, 0]`` (columns run posterior), col cosine ``[0, 0, -1]`` (rows run
  inferior); the middle slice is the mid-sagittal one.
* axial T2: one block per disc L1/L2..L5/S1 of 3-5 slices (3-4 mm, gap 0-1 mm). A block's normal
  is the disc's ``normal_lps`` (superior), so it follows the disc (L5/S1 steeply tilted), except
  that a tilt beyond ``ax_max_tilt_deg`` (default 38 degrees from the z axis) is limited to it, as
  a technologist's angulation is, and so that readers still see an axial series (lumbargrade
  calls a normal more than 40 degrees from every axis 'oblique'); the disc then cuts obliquely
  through the slices, as in real studies; row
  cosine is +x projected onto the plane, col cosine ``normal x row`` (about +y, posterior). The disc
  centre lies in the block's truth slice, offset from it along the normal by a random amount below
  ``ax_offset_frac`` x half the thickness; the truth slice is the block's slice nearest the disc
  centre, and for even block sizes it is one of the two middle slices at random.
* optionally (``contiguous_axial``) a single parallel axial stack from above L1/L2 to below
  L5/S1 instead of the blocks.

Pure geometry: the functions read only the anatomy's disc centres and axes.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from ..geometry import SliceGeometry
from ..levels.names import LEVELS
from .config import AcquisitionConfig

__all__ = ["INPLANE_VARIANTS", "SeriesPlan", "block_normal", "disc_frames", "inplane_variant", "plan_axial",
           "plan_sagittal", "sample_fov_matrix"]

#: the 8 ways an axial slice can be stored: the patient axes (in-plane projections) that the row
#: cosine and the col cosine follow; '+x+y' is the standard radiological display
INPLANE_VARIANTS = ("+x+y", "-x+y", "+x-y", "-x-y", "+y+x", "-y+x", "+y-x", "-y-x")


@dataclass
class SeriesPlan:
    """Planned slices of one series.

    slices: slice geometries in acquisition order (InstanceNumber = index + 1).
    level_of: the disc level each slice belongs to (axial blocks) or None.
    truth_index: level -> index (into ``slices``) of the disc-centre slice (axial) ; for the
        sagittal plan ``{"mid": k}``.
    thickness, spacing: slice thickness and centre-to-centre spacing in mm.
    """

    name: str
    description: str
    slices: list[SliceGeometry]
    thickness: float
    spacing: float
    level_of: list[str | None] = field(default_factory=list)
    truth_index: dict[str, int] = field(default_factory=dict)
    inplane: str = "+x+y"  # storage variant of the slices (see INPLANE_VARIANTS)


def _unit(v) -> np.ndarray:
    v = np.asarray(v, dtype=np.float64)
    return v / np.linalg.norm(v)


def sample_fov_matrix(
    rng: np.random.Generator,
    fov_range: tuple[float, float],
    matrix_choices: tuple[int, ...],
    spacing_range: tuple[float, float],
) -> tuple[float, int]:
    """FOV (mm, uniform in range) and a square matrix whose pixel spacing falls in range (the
    matrix nearest the range when none does)."""
    fov = float(rng.uniform(*fov_range))
    ok = [m for m in matrix_choices if spacing_range[0] <= fov / m <= spacing_range[1]]
    if ok:
        m = int(ok[int(rng.integers(len(ok)))])
    else:
        mid = 0.5 * (spacing_range[0] + spacing_range[1])
        m = int(min(matrix_choices, key=lambda c: abs(fov / c - mid)))
    return round(fov, 1), m


def _geometry(centre, row_cos, col_cos, fov: float, matrix: int, thickness: float) -> SliceGeometry:
    ps = round(fov / matrix, 6)
    pos = centre - (matrix - 1) / 2 * ps * row_cos - (matrix - 1) / 2 * ps * col_cos
    return SliceGeometry(
        position=np.asarray(pos, dtype=np.float64),
        row_cosine=np.asarray(row_cos, dtype=np.float64),
        col_cosine=np.asarray(col_cos, dtype=np.float64),
        pixel_spacing=(ps, ps),
        rows=matrix,
        columns=matrix,
        thickness=thickness,
    )


def disc_frames(anat) -> dict[str, tuple[np.ndarray, np.ndarray, np.ndarray]]:
    """Level -> (centre, normal, ap) LPS arrays, read from ``anat.levels`` (all levels present)."""
    out = {}
    for name, lv in anat.levels.items():
        out[name] = (
            np.asarray(lv.centre_lps, dtype=np.float64),
            _unit(lv.normal_lps),
            _unit(lv.ap_lps),
        )
    return out


def plan_sagittal(rng: np.random.Generator, anat, cfg: AcquisitionConfig | None = None) -> SeriesPlan:
    """Sagittal T2 plan centred on the mid-sagittal plane (mean x of the disc centres)."""
    cfg = cfg or AcquisitionConfig()
    frames = disc_frames(anat)
    centres = np.array([frames[k][0] for k in frames])
    n = int(cfg.sag_n_slices[int(rng.integers(len(cfg.sag_n_slices)))])
    t = round(float(rng.uniform(*cfg.sag_thickness_range)), 1)
    gap = round(float(rng.uniform(*cfg.sag_gap_range)), 1)
    sp = t + gap
    fov, m = sample_fov_matrix(rng, cfg.sag_fov_range, cfg.sag_matrix_choices, cfg.sag_spacing_range)
    lumbar = np.array([frames[k][0] for k in LEVELS])
    top = frames.get("T12/L1", (lumbar[0] + (lumbar[0] - lumbar[1]),))[0]
    z_top, z_bot = float(top[2]), float(lumbar[-1][2])
    # centre between T12/L1 and a point ~40 mm below L5/S1 (sacrum), a few mm of random shift
    cz = 0.5 * (z_top + z_bot - 40.0) + float(rng.uniform(-5, 5))
    cy = float(np.mean(centres[:, 1])) + 20.0 + float(rng.uniform(-5, 5))
    cx = float(np.mean(lumbar[:, 0]))
    row_cos = np.array([0.0, 1.0, 0.0])
    col_cos = np.array([0.0, 0.0, -1.0])
    normal = np.cross(row_cos, col_cos)  # [-1, 0, 0]
    mid = n // 2
    slices = []
    for k in range(n):
        c = np.array([cx, cy, cz]) + (k - mid) * sp * normal
        slices.append(_geometry(c, row_cos, col_cos, fov, m, t))
    return SeriesPlan("sag_t2", "SAG T2 FSE", slices, t, sp, [None] * n, {"mid": mid})


def _axial_inplane(normal: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    x = np.array([1.0, 0.0, 0.0])
    r = _unit(x - (x @ normal) * normal)
    c = _unit(np.cross(normal, r))
    return r, c


def block_normal(disc_normal: np.ndarray, max_tilt_deg: float) -> np.ndarray:
    """The disc's normal, turned towards +z (in its own vertical plane) when it is tilted more than
    ``max_tilt_deg`` from the patient's z axis."""
    n = _unit(disc_normal)
    if n[2] < 0:
        n = -n
    if np.degrees(np.arccos(min(1.0, n[2]))) <= max_tilt_deg:
        return n
    h = n - n[2] * np.array([0.0, 0.0, 1.0])
    h = h / np.linalg.norm(h)
    t = np.radians(max_tilt_deg)
    return _unit(np.cos(t) * np.array([0.0, 0.0, 1.0]) + np.sin(t) * h)


def inplane_variant(r: np.ndarray, c: np.ndarray, variant: str) -> tuple[np.ndarray, np.ndarray]:
    """Row and col cosines of a storage variant (:data:`INPLANE_VARIANTS`) from the standard ones
    ``r`` (about +x) and ``c`` (about +y)."""
    if variant not in INPLANE_VARIANTS:
        raise ValueError(f"unknown in-plane variant {variant!r}; known: {', '.join(INPLANE_VARIANTS)}")
    axes = {"x": r, "y": c}
    sign = {"+": 1.0, "-": -1.0}
    return sign[variant[0]] * axes[variant[1]], sign[variant[2]] * axes[variant[3]]


def _choose_variant(rng: np.random.Generator, cfg: AcquisitionConfig) -> str:
    v = getattr(cfg, "ax_inplane", "standard")
    if v == "standard":
        return "+x+y"
    if v == "mixed":
        return INPLANE_VARIANTS[int(rng.integers(len(INPLANE_VARIANTS)))]
    if v not in INPLANE_VARIANTS:
        raise ValueError(f"ax_inplane must be standard, mixed or one of {', '.join(INPLANE_VARIANTS)}; got {v!r}")
    return v


def plan_axial(rng: np.random.Generator, anat, cfg: AcquisitionConfig | None = None) -> SeriesPlan:
    """Axial T2 plan: one tilted block per disc (default) or one contiguous stack, stored as
    ``cfg.ax_inplane`` says (:func:`inplane_variant`)."""
    cfg = cfg or AcquisitionConfig()
    variant = _choose_variant(rng, cfg)
    plan = _plan_axial(rng, anat, cfg)
    if variant != "+x+y":
        for k, g in enumerate(plan.slices):
            r, c = inplane_variant(g.row_cosine, g.col_cosine, variant)
            centre = g.pixel_to_patient(np.array([(g.rows - 1) / 2, (g.columns - 1) / 2]))
            plan.slices[k] = _geometry(centre, r, c, g.pixel_spacing[0] * g.rows, g.rows, g.thickness)
    plan.inplane = variant
    return plan


def _plan_axial(rng: np.random.Generator, anat, cfg: AcquisitionConfig) -> SeriesPlan:
    frames = disc_frames(anat)
    t = round(float(rng.uniform(*cfg.ax_thickness_range)), 1)
    fov, m = sample_fov_matrix(rng, cfg.ax_fov_range, cfg.ax_matrix_choices, cfg.ax_spacing_range)
    if cfg.contiguous_axial:
        return _plan_contiguous(rng, frames, cfg, fov, m)
    gap = round(float(rng.uniform(*cfg.ax_gap_range)), 1)
    sp = t + gap
    n = int(cfg.ax_n_slices[int(rng.integers(len(cfg.ax_n_slices)))])
    slices: list[SliceGeometry] = []
    level_of: list[str | None] = []
    truth: dict[str, int] = {}
    for lv in LEVELS:
        centre, disc_normal, ap = frames[lv]
        normal = block_normal(disc_normal, cfg.ax_max_tilt_deg)
        r, c = _axial_inplane(normal)
        jitter = rng.uniform(-cfg.ax_fov_jitter_mm, cfg.ax_fov_jitter_mm, size=2)
        # FOV centre: behind the disc centre (posterior = -ap, projected into the plane)
        post = _unit(-(ap - (ap @ normal) * normal))
        inplane = centre + cfg.ax_posterior_shift_mm * post + jitter[0] * r + jitter[1] * c
        ci = (n - 1) // 2 if n % 2 or rng.random() < 0.5 else n // 2
        delta = float(rng.uniform(-1, 1)) * cfg.ax_offset_frac * t / 2
        for j in range(n):
            # slice j's plane passes through inplane + o_j * normal; the disc centre is delta
            # above (along the normal) the plane of slice ci
            o = (j - ci) * sp - delta
            slices.append(_geometry(inplane + o * normal, r, c, fov, m, t))
            level_of.append(lv)
        truth[lv] = len(slices) - n + ci
    return SeriesPlan("ax_t2", "AX T2 FSE", slices, t, sp, level_of, truth)


def _plan_contiguous(rng, frames, cfg: AcquisitionConfig, fov: float, m: int) -> SeriesPlan:
    sp = float(cfg.contiguous_spacing_mm)
    t = sp
    normal = np.array([0.0, 0.0, 1.0])
    r, c = _axial_inplane(normal)
    cs = np.array([frames[lv][0] for lv in LEVELS])
    z_hi, z_lo = cs[:, 2].max() + 15.0, cs[:, 2].min() - 15.0
    n = int(np.ceil((z_hi - z_lo) / sp)) + 1
    xy = cs[:, :2].mean(0) + np.array([0.0, cfg.ax_posterior_shift_mm])
    xy = xy + rng.uniform(-cfg.ax_fov_jitter_mm, cfg.ax_fov_jitter_mm, size=2)
    slices = [
        _geometry(np.array([xy[0], xy[1], z_lo + k * sp]), r, c, fov, m, t) for k in range(n)
    ]
    truth = {}
    for lv, centre in zip(LEVELS, cs):
        d = [abs(float(s.signed_distance(centre))) for s in slices]
        truth[lv] = int(np.argmin(d))
    return SeriesPlan("ax_t2", "AX T2 FSE", slices, t, sp, [None] * n, truth)
