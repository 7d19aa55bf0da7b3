"""Latent pathology per patient and level, and the true grades derived from it.

Model
-----
For each patient (age, sex) and level, a latent Gaussian score per finding is the sum of

* an age term ``w_age * (age - 50) / 15``,
* a patient-wide degeneration factor,
* a factor shared by every finding of the level (so central stenosis, facet arthropathy and
  foraminal stenosis of one level are correlated),
* a factor shared by the left and right side of a bilateral finding,
* an idiosyncratic term, and
* a fixed level effect (L4/L5 and L5/S1 worst, L1/L2 rarely affected).

The latent score is turned into its population quantile ``u`` (empirical CDF of a large simulated
population, fixed seed, cached per config), and ``u`` is mapped piecewise-linearly to a severity
in [0, 1] so that the grade prevalences equal the configured targets exactly in expectation:

* central canal: ``grade = digitize(severity, CENTRAL_CUTS)`` with ``CENTRAL_CUTS = (0.25, 0.5,
  0.75)``; 0 normal (Schizas A1-A2), 1 mild (A3-A4), 2 moderate (B), 3 severe (C-D).
* foramen (Lee) and facet (Weishaupt): binary truth ``severity >= 0.5`` = grade 2-3
  (moderate/severe), below = grade 0-1.
* Pfirrmann grade 1-5 from the quantile of its own latent score (correlated with age, level and
  the level's shared factor).

Defaults reproduce the paper's cohort: central 49/36/7/8 %, foramen 18 % and facet 32 % positive.
"""

from __future__ import annotations

from functools import lru_cache

import numpy as np

from ..levels.names import LEVELS
from .config import PathologyConfig
from .pathology import LevelPathology

__all__ = [
    "BILATERAL_FINDINGS",
    "BINARY_CUT",
    "CENTRAL_CUTS",
    "CENTRAL_NAMES",
    "FINDINGS",
    "SCHIZAS_MAPPING",
    "binary_grade",
    "central_grade",
    "sample_age_sex",
    "sample_levels",
    "sample_patient_pathology",
    "true_grades",
]

#: Severity cuts between central grades 0|1, 1|2, 2|3.
CENTRAL_CUTS: tuple[float, float, float] = (0.25, 0.5, 0.75)
#: Severity at and above which a binary finding is positive (Lee / Weishaupt grade 2-3).
BINARY_CUT: float = 0.5
CENTRAL_NAMES = ("normal", "mild", "moderate", "severe")
#: The 4-class mapping of Schizas grades used throughout (spec section 3a).
SCHIZAS_MAPPING = {0: ("A1", "A2"), 1: ("A3", "A4"), 2: ("B",), 3: ("C", "D")}
BILATERAL_FINDINGS = ("foramen_left", "foramen_right", "facet_left", "facet_right")
FINDINGS = ("central_canal",) + BILATERAL_FINDINGS


def central_grade(severity) -> np.ndarray | int:
    """Central canal grade 0-3 from latent severity in [0, 1] (array or scalar)."""
    g = np.digitize(np.asarray(severity, dtype=np.float64), CENTRAL_CUTS)
    return int(g) if np.ndim(g) == 0 else g


def binary_grade(severity) -> np.ndarray | int:
    """Binary foramen / facet truth: 1 when severity >= 0.5 (grade 2-3), else 0."""
    g = (np.asarray(severity, dtype=np.float64) >= BINARY_CUT).astype(int)
    return int(g) if np.ndim(g) == 0 else g


def true_grades(p: LevelPathology) -> dict[str, int]:
    """True grades of one level: ``central_canal`` 0-3 and the four binary findings 0/1."""
    out = {"central_canal": int(central_grade(p.central))}
    for f in BILATERAL_FINDINGS:
        out[f] = int(binary_grade(getattr(p, f)))
    return out


def sample_age_sex(rng: np.random.Generator, cfg: PathologyConfig) -> tuple[float, str]:
    """Age in years (clipped normal, one decimal) and sex 'M' / 'F'."""
    lo, hi = cfg.age_range
    age = float(np.clip(rng.normal(cfg.age_mean, cfg.age_sd), lo, hi))
    sex = "M" if rng.random() < cfg.p_male else "F"
    return round(age, 1), sex


def _latents(rng: np.random.Generator, age: np.ndarray, cfg: PathologyConfig) -> dict[str, np.ndarray]:
    """Latent scores, each (n_patients, 5 levels) (bilateral: one array per side)."""
    n = age.shape[0]
    L = len(LEVELS)
    a = cfg.w_age * ((age[:, None] - 50.0) / 15.0)
    pat = cfg.w_patient * rng.standard_normal((n, 1))
    shared = cfg.w_level_shared * rng.standard_normal((n, L))
    base = a + pat + shared
    out = {"central": base + cfg.w_own * rng.standard_normal((n, L))
           + np.asarray(cfg.level_effect_central)}
    for name, eff in (("foramen", cfg.level_effect_foramen), ("facet", cfg.level_effect_facet)):
        side = cfg.w_side_shared * rng.standard_normal((n, L))
        for s in ("left", "right"):
            out[f"{name}_{s}"] = base + side + cfg.w_own * rng.standard_normal((n, L)) + np.asarray(eff)
    out["pfirrmann"] = (a + pat + 0.5 * shared + cfg.w_own * rng.standard_normal((n, L))
                        + np.asarray(cfg.level_effect_pfirrmann))
    return out


@lru_cache(maxsize=8)
def _calibration(cfg: PathologyConfig) -> dict[str, np.ndarray]:
    """Sorted latent scores of a large simulated population (fixed seed): empirical CDFs."""
    rng = np.random.default_rng(20230417)
    n = cfg.calibration_samples
    age = np.round(np.clip(rng.normal(cfg.age_mean, cfg.age_sd, n), *cfg.age_range), 1)
    z = _latents(rng, age, cfg)
    return {
        "central": np.sort(z["central"].ravel()),
        "foramen": np.sort(np.concatenate([z["foramen_left"].ravel(), z["foramen_right"].ravel()])),
        "facet": np.sort(np.concatenate([z["facet_left"].ravel(), z["facet_right"].ravel()])),
        "pfirrmann": np.sort(z["pfirrmann"].ravel()),
    }


def _quantile(z: np.ndarray, sorted_ref: np.ndarray) -> np.ndarray:
    n = sorted_ref.shape[0]
    u = (np.searchsorted(sorted_ref, z, side="left") + 0.5) / (n + 1)
    return np.clip(u, 0.0, 1.0)


def _central_severity(u: np.ndarray, prev: tuple[float, ...]) -> np.ndarray:
    knots_u = np.concatenate([[0.0], np.cumsum(prev)[:-1] / np.sum(prev), [1.0]])
    knots_s = np.array([0.0, *CENTRAL_CUTS, 1.0])
    return np.interp(u, knots_u, knots_s)


def _binary_severity(u: np.ndarray, prevalence: float) -> np.ndarray:
    return np.interp(u, [0.0, 1.0 - prevalence, 1.0], [0.0, BINARY_CUT, 1.0])


def sample_levels(
    rng: np.random.Generator, age: np.ndarray, cfg: PathologyConfig | None = None
) -> dict[str, np.ndarray]:
    """Vectorised sampling for many patients: severities (n, 5) per finding and Pfirrmann (n, 5).

    Keys: ``central, foramen_left, foramen_right, facet_left, facet_right`` (floats in [0, 1]) and
    ``pfirrmann`` (ints 1-5). ``age`` is (n,) years.
    """
    cfg = cfg or PathologyConfig()
    cal = _calibration(cfg)
    z = _latents(rng, np.asarray(age, dtype=np.float64), cfg)
    out = {"central": _central_severity(_quantile(z["central"], cal["central"]), cfg.central_prevalence)}
    for name, prev in (("foramen", cfg.foramen_prevalence), ("facet", cfg.facet_prevalence)):
        for s in ("left", "right"):
            k = f"{name}_{s}"
            out[k] = _binary_severity(_quantile(z[k], cal[name]), prev)
    up = _quantile(z["pfirrmann"], cal["pfirrmann"])
    cum = np.cumsum(cfg.pfirrmann_prevalence)[:-1] / np.sum(cfg.pfirrmann_prevalence)
    out["pfirrmann"] = np.digitize(up, cum) + 1
    return out


def sample_patient_pathology(
    rng: np.random.Generator, cfg: PathologyConfig | None = None
) -> tuple[float, str, dict[str, LevelPathology]]:
    """Age (years), sex and per-level :class:`LevelPathology` of one patient."""
    cfg = cfg or PathologyConfig()
    age, sex = sample_age_sex(rng, cfg)
    s = sample_levels(rng, np.array([age]), cfg)
    levels = {}
    for i, lv in enumerate(LEVELS):
        levels[lv] = LevelPathology(
            central=float(s["central"][0, i]),
            foramen_left=float(s["foramen_left"][0, i]),
            foramen_right=float(s["foramen_right"][0, i]),
            facet_left=float(s["facet_left"][0, i]),
            facet_right=float(s["facet_right"][0, i]),
            pfirrmann=int(s["pfirrmann"][0, i]),
        )
    return age, sex, levels
