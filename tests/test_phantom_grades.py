"""Pathology sampling and true grades of the phantom (no rendering)."""

from __future__ import annotations

import numpy as np

from lumbargrade.levels.names import LEVELS
from lumbargrade.phantom.config import PathologyConfig
from lumbargrade.phantom.grades import (
    CENTRAL_CUTS,
    SCHIZAS_MAPPING,
    binary_grade,
    central_grade,
    sample_age_sex,
    sample_levels,
    sample_patient_pathology,
    true_grades,
)
from lumbargrade.phantom.pathology import LevelPathology


def _sample(n_patients: int, seed: int, cfg: PathologyConfig | None = None):
    cfg = cfg or PathologyConfig()
    rng = np.random.default_rng(seed)
    age = np.array([sample_age_sex(rng, cfg)[0] for _ in range(n_patients)])
    return age, sample_levels(rng, age, cfg)


def test_grade_cuts():
    assert central_grade([0.0, 0.2499, 0.25, 0.49, 0.5, 0.74, 0.75, 1.0]).tolist() == [0, 0, 1, 1, 2, 2, 3, 3]
    assert binary_grade([0.0, 0.4999, 0.5, 1.0]).tolist() == [0, 0, 1, 1]
    assert CENTRAL_CUTS == (0.25, 0.5, 0.75)
    assert SCHIZAS_MAPPING[0] == ("A1", "A2") and SCHIZAS_MAPPING[3] == ("C", "D")
    g = true_grades(LevelPathology(central=0.6, foramen_left=0.7, foramen_right=0.1,
                                   facet_left=0.5, facet_right=0.49))
    assert g == {"central_canal": 2, "foramen_left": 1, "foramen_right": 0, "facet_left": 1, "facet_right": 0}


def test_prevalences_1000_levels_match_paper():
    """200 patients x 5 levels: the grade mix is the paper's (49/36/7/8 %, 18 %, 32 %)."""
    cfg = PathologyConfig()
    _, s = _sample(200, seed=11, cfg=cfg)
    c = np.bincount(central_grade(s["central"]).ravel(), minlength=4) / s["central"].size
    target = np.asarray(cfg.central_prevalence)
    assert np.all(np.abs(c - target) <= [0.06, 0.06, 0.035, 0.035]), (c, target)
    for name, p in (("foramen", cfg.foramen_prevalence), ("facet", cfg.facet_prevalence)):
        both = np.concatenate([s[f"{name}_left"].ravel(), s[f"{name}_right"].ravel()])
        assert abs(binary_grade(both).mean() - p) <= 0.06, (name, binary_grade(both).mean(), p)


def test_prevalences_calibrated_on_large_sample():
    cfg = PathologyConfig()
    _, s = _sample(6000, seed=3, cfg=cfg)
    c = np.bincount(central_grade(s["central"]).ravel(), minlength=4) / s["central"].size
    assert np.allclose(c, cfg.central_prevalence, atol=0.015), c
    for name, p in (("foramen", cfg.foramen_prevalence), ("facet", cfg.facet_prevalence)):
        both = np.concatenate([s[f"{name}_left"].ravel(), s[f"{name}_right"].ravel()])
        assert abs(binary_grade(both).mean() - p) < 0.015
    pf = np.bincount(s["pfirrmann"].ravel(), minlength=6)[1:] / s["pfirrmann"].size
    assert np.allclose(pf, cfg.pfirrmann_prevalence, atol=0.02), pf


def test_custom_prevalence_is_honoured():
    cfg = PathologyConfig(central_prevalence=(0.25, 0.25, 0.25, 0.25), foramen_prevalence=0.5)
    _, s = _sample(3000, seed=5, cfg=cfg)
    c = np.bincount(central_grade(s["central"]).ravel(), minlength=4) / s["central"].size
    assert np.allclose(c, 0.25, atol=0.02), c
    assert abs(binary_grade(s["foramen_left"]).mean() - 0.5) < 0.03


def test_level_age_and_cross_finding_correlation():
    age, s = _sample(3000, seed=7)
    g = central_grade(s["central"])
    lv = {name: i for i, name in enumerate(LEVELS)}
    severe = (g >= 2).mean(axis=0)
    assert severe[lv["L4/L5"]] > severe[lv["L3/L4"]] > severe[lv["L1/L2"]]
    assert severe[lv["L5/S1"]] > severe[lv["L1/L2"]]
    assert severe[lv["L1/L2"]] < 0.05
    for f in ("central", "facet_left", "foramen_right", "pfirrmann"):
        r = np.corrcoef(np.repeat(age, 5), s[f].ravel())[0, 1]
        assert r > 0.3, (f, r)
    assert np.corrcoef(s["central"].ravel(), s["facet_left"].ravel())[0, 1] > 0.4
    assert np.corrcoef(s["facet_left"].ravel(), s["facet_right"].ravel())[0, 1] > 0.5
    old = (age > 65)[:, None].repeat(5, 1)
    assert (g[old] >= 2).mean() > 2 * (g[~old] >= 2).mean()


def test_sample_patient_pathology_types_and_determinism():
    a = sample_patient_pathology(np.random.default_rng(4))
    b = sample_patient_pathology(np.random.default_rng(4))
    assert a == b
    age, sex, levels = a
    assert 20 <= age <= 85 and sex in ("M", "F")
    assert list(levels) == list(LEVELS)
    for p in levels.values():
        assert isinstance(p, LevelPathology)
        for f in ("central", "foramen_left", "foramen_right", "facet_left", "facet_right"):
            assert 0.0 <= getattr(p, f) <= 1.0
        assert p.pfirrmann in (1, 2, 3, 4, 5)
