"""Simulated readers: kappas in their configured ranges, disagreement near grade boundaries."""

from __future__ import annotations

import numpy as np
import pytest

from lumbargrade.phantom.config import PathologyConfig, ReaderConfig
from lumbargrade.phantom.grades import (
    CENTRAL_CUTS,
    binary_grade,
    central_grade,
    sample_age_sex,
    sample_levels,
)
from lumbargrade.phantom.readers import (
    pairwise_kappas,
    read_binary,
    read_central,
    simulate_readers,
    weighted_kappa,
)


def _levels(n_patients: int, seed: int):
    cfg = PathologyConfig()
    rng = np.random.default_rng(seed)
    age = np.array([sample_age_sex(rng, cfg)[0] for _ in range(n_patients)])
    return rng, sample_levels(rng, age, cfg)


def test_weighted_kappa_matches_sklearn():
    from sklearn.metrics import cohen_kappa_score

    rng = np.random.default_rng(0)
    a = rng.integers(0, 4, 500)
    b = np.clip(a + rng.integers(-1, 2, 500), 0, 3)
    for w in (None, "linear", "quadratic"):
        assert weighted_kappa(a, b, 4, w) == pytest.approx(cohen_kappa_score(a, b, weights=w), abs=1e-9)


def test_kappas_on_1000_levels_in_configured_ranges():
    """200 patients x 5 levels (bilateral findings: both sides, 2,000 ratings)."""
    rc = ReaderConfig()
    rng, s = _levels(200, seed=21)
    k = pairwise_kappas(read_central(rng, s["central"].ravel(), rc), 4, "linear")
    lo, hi = rc.central_kappa_range
    assert lo <= np.mean(k) <= hi and min(k) >= lo - 0.03 and max(k) <= hi + 0.03, k
    for f in ("foramen", "facet"):
        sev = np.concatenate([s[f"{f}_left"].ravel(), s[f"{f}_right"].ravel()])
        k = pairwise_kappas(read_binary(rng, sev, f, rc), 2, None)
        lo, hi = getattr(rc, f"{f}_kappa_range")
        assert lo <= np.mean(k) <= hi and min(k) >= lo - 0.03 and max(k) <= hi + 0.03, (f, k)


def test_each_pair_in_range_on_large_sample():
    rc = ReaderConfig()
    rng, s = _levels(4000, seed=22)
    k = pairwise_kappas(read_central(rng, s["central"].ravel(), rc), 4, "linear")
    assert all(rc.central_kappa_range[0] <= v <= rc.central_kappa_range[1] for v in k), k
    assert k[0] > k[2]  # readers differ: pair 1-2 agrees best, pair 2-3 least (paper 0.86 / 0.74)
    for f in ("foramen", "facet"):
        sev = np.concatenate([s[f"{f}_left"].ravel(), s[f"{f}_right"].ravel()])
        k = pairwise_kappas(read_binary(rng, sev, f, rc), 2, None)
        lo, hi = getattr(rc, f"{f}_kappa_range")
        assert all(lo <= v <= hi for v in k), (f, k)


def test_disagreement_concentrates_near_boundaries_and_is_adjacent():
    rc = ReaderConfig()
    rng, s = _levels(4000, seed=23)
    sev = s["central"].ravel()
    r = read_central(rng, sev, rc)
    truth = central_grade(sev)
    d = np.min(np.abs(sev[:, None] - np.asarray(CENTRAL_CUTS)), axis=1)
    wrong = r[:, 0] != truth
    near, far = d < 0.02, d > 0.1
    assert wrong[near].mean() > 0.3
    assert wrong[far].mean() < 0.02
    assert wrong[near].mean() > 10 * wrong[far].mean()
    steps = np.abs(r[:, [0, 0, 1]] - r[:, [1, 2, 2]])
    assert (steps <= 1).mean() > 0.995  # disagreement between adjacent grades
    assert (np.abs(r - truth[:, None]) <= 1).mean() > 0.995


def test_reader1_supports_auroc_095_and_noise_is_configurable():
    from sklearn.metrics import roc_auc_score

    rng, s = _levels(2000, seed=24)
    for f in ("foramen", "facet"):
        sev = np.concatenate([s[f"{f}_left"].ravel(), s[f"{f}_right"].ravel()])
        r1 = read_binary(rng, sev, f)[:, 0]
        assert roc_auc_score(r1, sev) > 0.95
        assert weighted_kappa(r1, binary_grade(sev), 2, None) > 0.8
    noisy = ReaderConfig(foramen_width=(0.1, 0.12, 0.14), foramen_lapse=0.05)
    sev = s["foramen_left"].ravel()
    k_default = np.mean(pairwise_kappas(read_binary(rng, sev, "foramen"), 2, None))
    k_noisy = np.mean(pairwise_kappas(read_binary(rng, sev, "foramen", noisy), 2, None))
    assert k_noisy < k_default - 0.15


def test_simulate_readers_schema():
    out = simulate_readers(np.random.default_rng(0), {"central": 0.8, "foramen_left": 0.05,
                                                      "foramen_right": 0.95, "facet_left": 0.3,
                                                      "facet_right": 0.7})
    assert set(out) == {"central_canal", "foramen_left", "foramen_right", "facet_left", "facet_right"}
    assert out["central_canal"]["truth"] == 3 and len(out["central_canal"]["readers"]) == 3
    assert out["foramen_left"] == {"truth": 0, "readers": [0, 0, 0]}
    assert out["foramen_right"] == {"truth": 1, "readers": [1, 1, 1]}
