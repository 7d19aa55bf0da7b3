import math

import numpy as np
import pytest
from sklearn.metrics import cohen_kappa_score, roc_auc_score, roc_curve
from sklearn.metrics import confusion_matrix as sk_confusion

from lumbargrade.metrics import (
    accuracy,
    binary_auroc,
    bootstrap_ci,
    confusion_matrix,
    delong_ci,
    delong_test,
    dice,
    iou_boxes,
    linear_weighted_kappa,
    ovo_auroc,
    roc_curve_points,
)


def test_dice_and_iou():
    a = np.zeros((10, 10), bool)
    b = np.zeros((10, 10), bool)
    a[2:6, 2:6] = True  # 16
    b[4:8, 2:6] = True  # 16, overlap 8
    assert dice(a, b) == pytest.approx(0.5)
    assert dice(a, a) == 1.0
    assert dice(np.zeros((3, 3)), np.zeros((3, 3))) == 1.0
    assert iou_boxes([2, 2, 6, 6], [4, 2, 8, 6]) == pytest.approx(8 / 24)
    assert iou_boxes([0, 0, 2, 2], [5, 5, 7, 7]) == 0.0
    assert iou_boxes([0, 0, 4, 4], [0, 0, 4, 4]) == 1.0
    assert iou_boxes(None, [0, 0, 1, 1]) == 0.0


@pytest.mark.parametrize("seed", range(5))
def test_kappa_and_confusion_vs_sklearn(seed):
    rng = np.random.default_rng(seed)
    a = rng.integers(0, 4, 80)
    b = np.clip(a + rng.integers(-1, 2, 80) * (rng.random(80) < 0.5), 0, 3)
    ref = cohen_kappa_score(a, b, weights="linear", labels=[0, 1, 2, 3])
    assert linear_weighted_kappa(a, b, n_classes=4) == pytest.approx(ref, abs=1e-12)
    assert linear_weighted_kappa(a, b) == pytest.approx(ref, abs=1e-12)
    np.testing.assert_array_equal(confusion_matrix(a, b, 4), sk_confusion(a, b, labels=[0, 1, 2, 3]))
    assert accuracy(a, b) == pytest.approx(np.mean(a == b))


def test_kappa_known_values():
    assert linear_weighted_kappa([0, 1, 2, 3], [0, 1, 2, 3]) == pytest.approx(1.0)
    assert math.isnan(linear_weighted_kappa([1, 1, 1], [1, 1, 1], n_classes=4))


@pytest.mark.parametrize("seed", range(5))
def test_binary_auroc_vs_sklearn(seed):
    rng = np.random.default_rng(seed)
    y = rng.integers(0, 2, 60)
    s = np.round(y * 0.8 + rng.normal(size=60), 1)  # rounding creates ties
    assert binary_auroc(y, s) == pytest.approx(roc_auc_score(y, s), abs=1e-12)
    fpr, tpr, thr = roc_curve_points(y, s)
    assert thr[0] == np.inf and np.all(np.diff(thr[1:]) < 0)
    f2, t2, _ = roc_curve(y, s, drop_intermediate=False)
    np.testing.assert_allclose(fpr, f2)
    np.testing.assert_allclose(tpr, t2)
    assert math.isnan(binary_auroc(np.ones(5), np.arange(5)))


@pytest.mark.parametrize("seed", range(5))
def test_ovo_auroc_vs_sklearn(seed):
    rng = np.random.default_rng(seed)
    y = rng.integers(0, 4, 100)
    logits = rng.normal(size=(100, 4)) + 1.5 * np.eye(4)[y]
    p = np.exp(logits) / np.exp(logits).sum(1, keepdims=True)
    assert ovo_auroc(y, p) == pytest.approx(roc_auc_score(y, p, multi_class="ovo"), abs=1e-12)


def _brute_delong(y, sa, sb):
    """Slow DeLong: explicit psi kernel over all positive/negative pairs."""
    X = [np.asarray(sa)[y == 1], np.asarray(sb)[y == 1]]
    Z = [np.asarray(sa)[y == 0], np.asarray(sb)[y == 0]]
    m, n = len(X[0]), len(Z[0])

    def psi(x, z):
        return 1.0 if x > z else (0.5 if x == z else 0.0)

    v10 = np.array([[np.mean([psi(X[r][i], Z[r][j]) for j in range(n)]) for i in range(m)] for r in range(2)])
    v01 = np.array([[np.mean([psi(X[r][i], Z[r][j]) for i in range(m)]) for j in range(n)] for r in range(2)])
    auc = v10.mean(1)
    S = np.cov(v10) / m + np.cov(v01) / n
    return auc, S


def test_delong_against_brute_force():
    rng = np.random.default_rng(3)
    y = rng.integers(0, 2, 50)
    sa = np.round(y + rng.normal(size=50), 1)
    sb = np.round(0.5 * y + rng.normal(size=50), 1)
    auc, S = _brute_delong(y, sa, sb)
    a1, a2, z, p = delong_test(y, sa, sb)
    assert a1 == pytest.approx(auc[0]) and a2 == pytest.approx(auc[1])
    assert a1 == pytest.approx(roc_auc_score(y, sa))
    var = S[0, 0] + S[1, 1] - 2 * S[0, 1]
    assert z == pytest.approx((auc[0] - auc[1]) / math.sqrt(var))
    from scipy.stats import norm
    assert p == pytest.approx(2 * norm.sf(abs(z)))
    # CI from the same variance
    a, lo, hi = delong_ci(y, sa)
    h = norm.ppf(0.975) * math.sqrt(S[0, 0])
    assert lo == pytest.approx(max(0, a - h)) and hi == pytest.approx(min(1, a + h))


def test_delong_symmetry_and_equal():
    rng = np.random.default_rng(0)
    y = rng.integers(0, 2, 40)
    sa = y + rng.normal(size=40)
    sb = y + rng.normal(size=40)
    a1, a2, z, p = delong_test(y, sa, sb)
    b1, b2, z2, p2 = delong_test(y, sb, sa)
    assert (a1, a2) == (b2, b1) and z == pytest.approx(-z2) and p == pytest.approx(p2)
    # same ranking -> identical AUCs, p = 1
    assert delong_test(y, sa, 3 * sa + 1)[3] == pytest.approx(1.0)
    # a strongly better score is significant
    y2 = np.repeat([0, 1], 100)
    good = y2 * 3 + rng.normal(size=200)
    bad = y2 * 0.2 + rng.normal(size=200)
    assert delong_test(y2, good, bad)[3] < 1e-6


def test_bootstrap_coverage_mean_of_normal():
    rng = np.random.default_rng(42)
    covered = 0
    reps = 200
    for _ in range(reps):
        x = rng.normal(1.0, 2.0, 40)
        ci = bootstrap_ci(np.mean, x, n_boot=300, rng=rng)
        covered += ci.low <= 1.0 <= ci.high
    # percentile bootstrap of the mean (n=40) is close to nominal; 200 reps: SD ~1.6%
    assert 0.87 <= covered / reps <= 0.99


def test_bootstrap_groups_and_skips():
    rng = np.random.default_rng(0)
    # 20 patients, 5 items each, strongly clustered values: resampling patients widens the CI
    pid = np.repeat(np.arange(20), 5)
    x = np.repeat(rng.normal(0, 1, 20), 5) + rng.normal(0, 0.05, 100)
    ci_g = bootstrap_ci(np.mean, x, groups=pid, n_boot=400, rng=1)
    ci_i = bootstrap_ci(np.mean, x, n_boot=400, rng=1)
    assert (ci_g.high - ci_g.low) > 1.8 * (ci_i.high - ci_i.low)
    assert ci_g.point == pytest.approx(x.mean())
    # AUROC with few positives: some resamples have one class only and are skipped
    y = np.zeros(30, int)
    y[:2] = 1
    s = rng.normal(size=30) + y
    ci = bootstrap_ci(binary_auroc, y, s, n_boot=200, rng=2)
    assert ci.n_skipped > 0 and ci.n_valid == 200 - ci.n_skipped
    point, lo, hi = ci
    assert point == ci.point
    assert lo <= hi and 0 <= lo and hi <= 1
    assert ci.to_dict()["n_skipped"] == ci.n_skipped
