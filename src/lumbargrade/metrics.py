"""Evaluation metrics: Dice, box IoU, weighted kappa, accuracy, AUROC (binary, one-vs-one),
DeLong's test, patient-level bootstrap CIs, ROC points and confusion matrices.

numpy / scipy only. Labels are integer class indices ``0..k-1``; scores are "higher = more likely
the positive class".
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence

import numpy as np

__all__ = [
    "BootstrapCI",
    "accuracy",
    "binary_auroc",
    "bootstrap_ci",
    "confusion_matrix",
    "delong_ci",
    "delong_test",
    "dice",
    "iou_boxes",
    "linear_weighted_kappa",
    "ovo_auroc",
    "roc_curve_points",
]


def dice(pred: np.ndarray, truth: np.ndarray) -> float:
    """Dice coefficient 2|P∩T| / (|P|+|T|) of two binary masks; 1.0 when both are empty."""
    p = np.asarray(pred).astype(bool)
    t = np.asarray(truth).astype(bool)
    if p.shape != t.shape:
        raise ValueError(f"shapes differ: {p.shape} vs {t.shape}")
    s = int(p.sum()) + int(t.sum())
    if s == 0:
        return 1.0
    return 2.0 * int((p & t).sum()) / s


def iou_boxes(a: Sequence[float] | None, b: Sequence[float] | None) -> float:
    """IoU of two boxes ``[row0, col0, row1, col1]`` (end-exclusive pixel bounds).

    Both empty (zero area or None) -> 1.0; one empty -> 0.0.
    """
    def area(x):
        return max(0.0, float(x[2]) - float(x[0])) * max(0.0, float(x[3]) - float(x[1]))

    aa = area(a) if a is not None else 0.0
    ab = area(b) if b is not None else 0.0
    if aa == 0 and ab == 0:
        return 1.0
    if aa == 0 or ab == 0:
        return 0.0
    h = min(a[2], b[2]) - max(a[0], b[0])
    w = min(a[3], b[3]) - max(a[1], b[1])
    inter = max(0.0, float(h)) * max(0.0, float(w))
    return inter / (aa + ab - inter)


def _labels(a) -> np.ndarray:
    x = np.asarray(a)
    if x.ndim != 1:
        raise ValueError(f"labels must be 1-D, got shape {x.shape}")
    if x.size and not np.all(np.equal(np.mod(x, 1), 0)):
        raise ValueError("labels must be integer class indices")
    return x.astype(int)


def confusion_matrix(truth, pred, n_classes: int | None = None) -> np.ndarray:
    """``C[i, j]`` = number of items with truth ``i`` predicted ``j`` (classes ``0..n_classes-1``)."""
    t, p = _labels(truth), _labels(pred)
    if t.shape != p.shape:
        raise ValueError("truth and pred differ in length")
    k = n_classes if n_classes is not None else (int(max(t.max(initial=-1), p.max(initial=-1))) + 1)
    if t.size and (t.min() < 0 or p.min() < 0 or t.max() >= k or p.max() >= k):
        raise ValueError(f"labels outside 0..{k - 1}")
    c = np.zeros((k, k), dtype=np.int64)
    np.add.at(c, (t, p), 1)
    return c


def accuracy(truth, pred) -> float:
    """Fraction of items where ``pred == truth``."""
    t, p = np.asarray(truth), np.asarray(pred)
    if t.shape != p.shape or t.size == 0:
        raise ValueError("need two non-empty label arrays of the same length")
    return float(np.mean(t == p))


def linear_weighted_kappa(a, b, n_classes: int | None = None) -> float:
    """Cohen's kappa with linear weights ``|i-j|/(k-1)`` between two ordinal ratings (0..k-1).

    Weights use the grade values, so a grade nobody used still counts in the distance; this equals
    ``sklearn.metrics.cohen_kappa_score(a, b, weights="linear", labels=range(k))``.
    ``n_classes`` defaults to the largest label + 1. NaN when undefined (e.g. both raters use one
    single class).
    """
    c = confusion_matrix(a, b, n_classes).astype(float)
    k = c.shape[0]
    n = c.sum()
    if n == 0 or k < 2:
        return math.nan
    i = np.arange(k)
    w = np.abs(i[:, None] - i[None, :]).astype(float)
    expected = np.outer(c.sum(1), c.sum(0)) / n
    den = float((w * expected).sum())
    if den == 0:
        return math.nan
    return 1.0 - float((w * c).sum()) / den


def _midrank(x: np.ndarray) -> np.ndarray:
    """Mid-ranks (1-based; ties share their mean rank)."""
    from scipy.stats import rankdata

    return rankdata(x, method="average")


def binary_auroc(y, score) -> float:
    """Area under the ROC curve (Mann-Whitney, ties count 1/2). ``y`` in {0, 1}. NaN if one class only."""
    y = np.asarray(y).astype(int).ravel()
    s = np.asarray(score, dtype=float).ravel()
    if y.shape != s.shape:
        raise ValueError("y and score differ in length")
    n1 = int((y == 1).sum())
    n0 = int((y == 0).sum())
    if n1 == 0 or n0 == 0:
        return math.nan
    r = _midrank(s)
    return float((r[y == 1].sum() - n1 * (n1 + 1) / 2.0) / (n1 * n0))


def ovo_auroc(y, prob) -> float:
    """One-vs-one multi-class AUROC (Hand & Till 2001), macro-averaged over class pairs.

    For each pair (a, b) of classes present in ``y``: the mean of AUC(a vs b, scored by
    ``prob[:, a]``) and AUC(b vs a, scored by ``prob[:, b]``) over the items of class a or b; the
    result is the mean over pairs. Matches ``sklearn.metrics.roc_auc_score(y, prob,
    multi_class="ovo")``. ``prob`` is ``(n, k)`` with column j the score of class j.
    """
    y = _labels(y)
    p = np.asarray(prob, dtype=float)
    if p.ndim != 2 or p.shape[0] != y.size:
        raise ValueError("prob must be (n, k) with n = len(y)")
    classes = np.unique(y)
    if classes.size < 2:
        return math.nan
    if classes.max() >= p.shape[1]:
        raise ValueError("a label has no probability column")
    vals = []
    for ia in range(classes.size):
        for ib in range(ia + 1, classes.size):
            a, b = classes[ia], classes[ib]
            sel = (y == a) | (y == b)
            ya = (y[sel] == a).astype(int)
            vals.append(0.5 * (binary_auroc(ya, p[sel, a]) + binary_auroc(1 - ya, p[sel, b])))
    return float(np.mean(vals))


def roc_curve_points(y, score) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """ROC curve ``(fpr, tpr, thresholds)``: one point per distinct score (descending), starting at
    (0, 0) with threshold +inf. An item is called positive when ``score >= threshold``."""
    y = np.asarray(y).astype(int).ravel()
    s = np.asarray(score, dtype=float).ravel()
    n1, n0 = int((y == 1).sum()), int((y == 0).sum())
    if n1 == 0 or n0 == 0:
        raise ValueError("ROC needs both classes")
    order = np.argsort(-s, kind="mergesort")
    s, y = s[order], y[order]
    tp = np.cumsum(y == 1)
    fp = np.cumsum(y == 0)
    last = np.r_[np.nonzero(np.diff(s))[0], s.size - 1]
    tpr = np.r_[0.0, tp[last] / n1]
    fpr = np.r_[0.0, fp[last] / n0]
    thr = np.r_[np.inf, s[last]]
    return fpr, tpr, thr


def _placements(y: np.ndarray, scores: np.ndarray):
    """Fast DeLong (Sun & Xu 2014): AUCs and the structural components V10 (per positive) and
    V01 (per negative) for each row of ``scores`` (shape (m, n))."""
    pos = y == 1
    neg = ~pos
    m1, n0 = int(pos.sum()), int(neg.sum())
    aucs, v10s, v01s = [], [], []
    for s in scores:
        x, z = s[pos], s[neg]
        tx, tz, txz = _midrank(x), _midrank(z), _midrank(np.r_[x, z])
        auc = (txz[:m1].sum() - m1 * (m1 + 1) / 2.0) / (m1 * n0)
        v10 = (txz[:m1] - tx) / n0        # fraction of negatives below each positive
        v01 = 1.0 - (txz[m1:] - tz) / m1  # fraction of positives above each negative
        aucs.append(auc)
        v10s.append(v10)
        v01s.append(v01)
    return np.array(aucs), np.array(v10s), np.array(v01s)


def _delong_cov(y, scores) -> tuple[np.ndarray, np.ndarray]:
    y = np.asarray(y).astype(int).ravel()
    sc = np.atleast_2d(np.asarray(scores, dtype=float))
    if sc.shape[1] != y.size:
        raise ValueError("scores and y differ in length")
    if not set(np.unique(y)) <= {0, 1}:
        raise ValueError("y must be binary 0/1")
    m1, n0 = int((y == 1).sum()), int((y == 0).sum())
    if m1 < 2 or n0 < 2:
        raise ValueError("DeLong needs at least two items of each class")
    aucs, v10, v01 = _placements(y, sc)
    s10 = np.atleast_2d(np.cov(v10))
    s01 = np.atleast_2d(np.cov(v01))
    return aucs, s10 / m1 + s01 / n0


def delong_ci(y, score, alpha: float = 0.05) -> tuple[float, float, float]:
    """AUROC with DeLong's asymptotic ``1-alpha`` CI: ``(auc, low, high)`` (clipped to [0, 1])."""
    from scipy.stats import norm

    aucs, cov = _delong_cov(y, score)
    auc, var = float(aucs[0]), float(cov[0, 0])
    h = norm.ppf(1 - alpha / 2) * math.sqrt(max(var, 0.0))
    return auc, max(0.0, auc - h), min(1.0, auc + h)


def delong_test(y, score_a, score_b) -> tuple[float, float, float, float]:
    """Paired DeLong test of two correlated AUROCs on the same items.

    Returns ``(auc_a, auc_b, z, p)`` with two-sided ``p``. When the two scores give identical
    placements (variance of the difference 0) ``z = 0`` and ``p = 1``.
    """
    from scipy.stats import norm

    aucs, cov = _delong_cov(y, np.vstack([np.asarray(score_a, float), np.asarray(score_b, float)]))
    var = float(cov[0, 0] + cov[1, 1] - 2 * cov[0, 1])
    diff = float(aucs[0] - aucs[1])
    if var <= 1e-15:
        return float(aucs[0]), float(aucs[1]), 0.0, 1.0
    z = diff / math.sqrt(var)
    p = float(2 * norm.sf(abs(z)))
    return float(aucs[0]), float(aucs[1]), z, p


class BootstrapCI(tuple):
    """``(point, low, high)``; also ``.n_boot``, ``.n_valid`` and ``.n_skipped`` (resamples where the
    metric was undefined and which were left out)."""

    def __new__(cls, point: float, low: float, high: float, n_boot: int, n_skipped: int):
        self = super().__new__(cls, (point, low, high))
        self.n_boot = n_boot
        self.n_skipped = n_skipped
        self.n_valid = n_boot - n_skipped
        return self

    point = property(lambda self: self[0])
    low = property(lambda self: self[1])
    high = property(lambda self: self[2])

    def to_dict(self) -> dict:
        f = lambda v: None if not math.isfinite(v) else float(v)
        return {"value": f(self[0]), "ci_low": f(self[1]), "ci_high": f(self[2]),
                "n_boot": self.n_boot, "n_skipped": self.n_skipped}


def bootstrap_ci(metric_fn: Callable[..., float], *arrays, groups=None, n_boot: int = 1000,
                 alpha: float = 0.05, rng: np.random.Generator | int | None = None) -> BootstrapCI:
    """Percentile bootstrap CI of ``metric_fn(*arrays)``, resampling **groups** (patients).

    ``arrays`` share their first axis (items). ``groups`` gives each item's group (e.g. patient
    id); whole groups are drawn with replacement and all their items kept (``None``: every item is
    its own group). A resample where ``metric_fn`` raises ``ValueError`` / ``ZeroDivisionError`` or
    returns a non-finite value (e.g. AUROC with one class only) is skipped and counted in
    ``n_skipped``. Returns :class:`BootstrapCI` ``(point, low, high)``; low/high are NaN if fewer
    than 2 resamples were valid.
    """
    arrs = [np.asarray(a) for a in arrays]
    if not arrs:
        raise ValueError("no arrays given")
    n = arrs[0].shape[0]
    if any(a.shape[0] != n for a in arrs):
        raise ValueError("arrays differ in length")
    if not isinstance(rng, np.random.Generator):
        rng = np.random.default_rng(rng)
    point = float(metric_fn(*arrs))
    if groups is None:
        members = None
        ng = n
    else:
        g = np.asarray(groups)
        if g.shape[0] != n:
            raise ValueError("groups differ in length from the arrays")
        _, inv = np.unique(g, return_inverse=True)
        order = np.argsort(inv, kind="stable")
        bounds = np.r_[0, np.cumsum(np.bincount(inv))]
        members = [order[bounds[i]:bounds[i + 1]] for i in range(len(bounds) - 1)]
        ng = len(members)
    vals = []
    skipped = 0
    for _ in range(n_boot):
        pick = rng.integers(0, ng, size=ng)
        idx = pick if members is None else np.concatenate([members[i] for i in pick])
        try:
            v = float(metric_fn(*[a[idx] for a in arrs]))
        except (ValueError, ZeroDivisionError):
            v = math.nan
        if math.isfinite(v):
            vals.append(v)
        else:
            skipped += 1
    if len(vals) < 2:
        return BootstrapCI(point, math.nan, math.nan, n_boot, skipped)
    lo, hi = np.percentile(vals, [100 * alpha / 2, 100 * (1 - alpha / 2)])
    return BootstrapCI(point, float(lo), float(hi), n_boot, skipped)
