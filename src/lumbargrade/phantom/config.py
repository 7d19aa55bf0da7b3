"""Configuration of the phantom cohort: pathology prevalences, reader noise, acquisition ranges.

Everything the cohort generator samples is a field here, so a cohort is reproduced by its seed and
its resolved config (written to ``DIR/phantom_config.json``). Units: mm, ms, years.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any

__all__ = [
    "AcquisitionConfig",
    "PathologyConfig",
    "PhantomConfig",
    "ReaderConfig",
    "config_from_dict",
]


@dataclass(frozen=True)
class PathologyConfig:
    """How latent severities are sampled (see :mod:`lumbargrade.phantom.grades`).

    Prevalence targets are the paper's cohort (Bharadwaj 2023): central canal 487/351/72/77 of
    987 levels, foramen 809/178, facet 671/316 (fractions of all levels, both sides pooled for the
    bilateral findings).
    """

    age_range: tuple[float, float] = (20.0, 85.0)
    age_mean: float = 58.0  # years; age ~ clip(N(age_mean, age_sd), *age_range)
    age_sd: float = 15.0
    p_male: float = 0.5
    central_prevalence: tuple[float, float, float, float] = (487 / 987, 351 / 987, 72 / 987, 77 / 987)
    foramen_prevalence: float = 178 / 987
    facet_prevalence: float = 316 / 987
    pfirrmann_prevalence: tuple[float, float, float, float, float] = (0.08, 0.30, 0.30, 0.22, 0.10)
    # weights of the latent Gaussian factors (the sum is standardised afterwards)
    w_age: float = 0.9  # per (age - 50) / 15 years
    w_patient: float = 0.6  # patient-wide degeneration
    w_level_shared: float = 0.5  # shared by all findings of one level (couples facet and central)
    w_side_shared: float = 0.5  # shared by left/right of one bilateral finding
    w_own: float = 0.75  # idiosyncratic
    # additive level effects on the latent scale, L1/L2..L5/S1
    level_effect_central: tuple[float, ...] = (-1.3, -0.7, 0.0, 0.9, 0.4)
    level_effect_foramen: tuple[float, ...] = (-1.2, -0.7, -0.1, 0.6, 0.8)
    level_effect_facet: tuple[float, ...] = (-1.2, -0.6, 0.0, 0.8, 0.6)
    level_effect_pfirrmann: tuple[float, ...] = (-0.8, -0.5, -0.1, 0.6, 0.7)
    calibration_samples: int = 40000  # patients simulated (fixed seed) to calibrate the quantiles


@dataclass(frozen=True)
class ReaderConfig:
    """Simulated readers (see :mod:`lumbargrade.phantom.readers`).

    A reader moves a true grade to the adjacent grade across the nearest cut with probability
    ``p_boundary * 2 / (1 + exp(d / width))``, where ``d`` >= 0 is the distance (severity units)
    from the latent severity to that cut: ``p_boundary`` exactly at the cut, falling off
    logistically with ``d``. ``*_width`` holds one width per reader (reader 1 first); a
    further ``*_lapse`` adds a small boundary-independent adjacent-grade error.
    """

    central_p_boundary: float = 0.5
    central_width: tuple[float, float, float] = (0.020, 0.027, 0.035)
    central_lapse: float = 0.005
    foramen_p_boundary: float = 0.5
    foramen_width: tuple[float, float, float] = (0.025, 0.032, 0.040)
    foramen_lapse: float = 0.007
    facet_p_boundary: float = 0.5
    facet_width: tuple[float, float, float] = (0.040, 0.050, 0.060)
    facet_lapse: float = 0.01
    # ranges the default readers are calibrated into (pairwise kappa; linear weights for central)
    central_kappa_range: tuple[float, float] = (0.74, 0.86)
    foramen_kappa_range: tuple[float, float] = (0.72, 0.88)
    facet_kappa_range: tuple[float, float] = (0.65, 0.82)


@dataclass(frozen=True)
class AcquisitionConfig:
    """Series planning (see :mod:`lumbargrade.phantom.acquisition`). Sizes in mm, pixels.

    Defaults stay inside the paper's Table 1 (matrix 256-512, 3-4 mm slices, pixel spacing
    0.47-1.45 mm): sagittal FOV 240-370 mm on 256-384 (0.75-1.2 mm pixels); axial FOV 200-260 mm
    (clinical axial FOVs are 160-260 mm; spec 2a) on 256-320 (0.6-0.95 mm pixels). The matrices
    are kept at the low end of Table 1 so that a 200-patient cohort renders in minutes; larger
    ones (up to 512) are a config change.
    """

    sag_n_slices: tuple[int, ...] = (11, 13, 15)
    sag_thickness_range: tuple[float, float] = (3.0, 4.0)
    sag_gap_range: tuple[float, float] = (0.0, 1.0)
    sag_fov_range: tuple[float, float] = (240.0, 370.0)
    sag_matrix_choices: tuple[int, ...] = (256, 320, 384)
    sag_spacing_range: tuple[float, float] = (0.75, 1.2)
    ax_n_slices: tuple[int, ...] = (3, 4, 5)
    ax_thickness_range: tuple[float, float] = (3.0, 4.0)
    ax_gap_range: tuple[float, float] = (0.0, 1.0)
    ax_fov_range: tuple[float, float] = (200.0, 260.0)
    ax_matrix_choices: tuple[int, ...] = (256, 320)
    ax_spacing_range: tuple[float, float] = (0.6, 0.95)
    # random offset of the disc centre from the central slice, as a fraction of half the thickness
    ax_offset_frac: float = 0.8
    ax_max_tilt_deg: float = 38.0  # a block's normal is at most this far from +z (L5/S1)
    ax_posterior_shift_mm: float = 25.0  # FOV centre lies this far behind the disc centre
    ax_fov_jitter_mm: float = 8.0  # random in-plane shift of the FOV centre
    contiguous_axial: bool = False  # one stack from L1/L2 to L5/S1 instead of one block per disc
    contiguous_spacing_mm: float = 4.0
    supersample: int = 3  # passed to render_slice (partial volume along the slice normal)
    # how the axial series is stored in its pixel grid: 'standard' (row cosine +x, col cosine +y:
    # patient left on the image's right, anterior at the top), one fixed variant given as the
    # axes of the row and col cosines ('-x+y', '+y+x', '+x-y', ...: any of the 8 rotations and
    # flips), or 'mixed' (one of the 8 at random per patient)
    ax_inplane: str = "standard"


@dataclass(frozen=True)
class PhantomConfig:
    """Everything the cohort generator samples, apart from the anatomy's own config."""

    pathology: PathologyConfig = field(default_factory=PathologyConfig)
    readers: ReaderConfig = field(default_factory=ReaderConfig)
    acquisition: AcquisitionConfig = field(default_factory=AcquisitionConfig)
    field_strengths: tuple[float, ...] = (1.5, 3.0)
    csf_value_range: tuple[float, float] = (1500.0, 3000.0)  # stored value of CSF (12-bit)
    anatomy: dict | None = None  # passed to sample_anatomy(config=...) when given
    # write each patient's slice bank (every axial slice with its label and tissue maps, plus
    # T11/T12, T12/L1 and mid-vertebral slices) and DIR/slices.csv: the training data of the
    # segmenter's domain randomisation (lumbargrade.phantom.slice_bank)
    slice_bank: bool = True

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


def _build(cls, d: dict | None):
    if d is None:
        return cls()
    names = {f.name: f for f in dataclasses.fields(cls)}
    unknown = set(d) - set(names)
    if unknown:
        raise ValueError(f"unknown {cls.__name__} keys: {sorted(unknown)}")
    kw = {}
    for k, v in d.items():
        kw[k] = tuple(v) if isinstance(v, list) else v
    return cls(**kw)


def config_from_dict(d: dict | None) -> PhantomConfig:
    """PhantomConfig from a (possibly partial) nested dict, e.g. a saved ``phantom_config.json``."""
    d = dict(d or {})
    subs = {
        "pathology": _build(PathologyConfig, d.pop("pathology", None)),
        "readers": _build(ReaderConfig, d.pop("readers", None)),
        "acquisition": _build(AcquisitionConfig, d.pop("acquisition", None)),
    }
    top = {k: tuple(v) if isinstance(v, list) else v for k, v in d.items()}
    names = {f.name for f in dataclasses.fields(PhantomConfig)}
    unknown = set(top) - names
    if unknown:
        raise ValueError(f"unknown PhantomConfig keys: {sorted(unknown)}")
    return PhantomConfig(**subs, **top)
