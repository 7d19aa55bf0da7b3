"""Probability calibration (temperature scaling) and operating thresholds. Pure numpy / scipy.

``fit_temperature`` finds the single T > 0 that minimises the negative log-likelihood of
``softmax(logits / T)`` on held-out (validation) data (Guo et al. 2017). Dividing logits by T keeps
the arg-max, so grades and AUROC are unchanged; only the probabilities move. ``fit_platt`` (binary
tasks) also shifts the positive logit (Platt scaling, Platt 1999): the probability becomes
``sigmoid(a * d + c)`` of the logit difference ``d``, which keeps the ranking (AUROC) but moves
the operating point when a prior correction over- or under-shoots.
"""

from __future__ import annotations

import numpy as np

__all__ = [
    "expected_calibration_error",
    "fit_platt",
    "fit_temperature",
    "nll",
    "positive_probability",
    "softmax",
    "youden_threshold",
]


def softmax(logits: np.ndarray, temperature: float = 1.0) -> np.ndarray:
    """Row-wise softmax of ``logits / temperature``; ``[n, k]`` in, ``[n, k]`` out (float64)."""
    z = np.asarray(logits, dtype=np.float64) / float(temperature)
    z = z - z.max(axis=1, keepdims=True)
    e = np.exp(z)
    return e / e.sum(axis=1, keepdims=True)


def nll(logits: np.ndarray, labels: np.ndarray, temperature: float = 1.0) -> float:
    """Mean negative log-likelihood of integer ``labels`` under ``softmax(logits / T)``."""
    z = np.asarray(logits, dtype=np.float64) / float(temperature)
    y = np.asarray(labels, dtype=np.int64)
    m = z.max(axis=1, keepdims=True)
    lse = (m + np.log(np.exp(z - m).sum(axis=1, keepdims=True)))[:, 0]
    return float(np.mean(lse - z[np.arange(len(y)), y]))


def fit_temperature(logits: np.ndarray, labels: np.ndarray, bounds: tuple[float, float] = (0.25, 10.0)) -> float:
    """Temperature T minimising the validation NLL (bounded 1D search over log T).

    T is kept within ``bounds``: on a perfectly separated validation set the NLL falls without
    limit as T -> 0, and the lower bound stops the probabilities from becoming all 0 / 1.

    ``logits``: ``[n, k]``; ``labels``: ``[n]`` integers in ``0..k-1``. Returns 1.0 for empty input.
    """
    from scipy.optimize import minimize_scalar

    z = np.asarray(logits, dtype=np.float64)
    y = np.asarray(labels, dtype=np.int64)
    if z.ndim != 2 or len(z) != len(y):
        raise ValueError("logits must be [n, k] and labels [n]")
    if len(y) == 0:
        return 1.0
    res = minimize_scalar(
        lambda lt: nll(z, y, np.exp(lt)),
        bounds=(np.log(bounds[0]), np.log(bounds[1])),
        method="bounded",
        options={"xatol": 1e-4},
    )
    t = float(np.exp(res.x))
    # never worse than no scaling
    return t if nll(z, y, t) <= nll(z, y, 1.0) else 1.0


def fit_platt(logits: np.ndarray, labels: np.ndarray, bias: np.ndarray | None = None,
              bounds: tuple[float, float] = (0.25, 10.0), max_shift: float = 5.0) -> tuple[float, np.ndarray]:
    """Temperature T and logit bias minimising the validation NLL of the binary probability
    ``softmax((logits + bias) / T)[:, 1]``: two parameters, the slope ``1 / T`` (T within
    ``bounds``) and a shift of the positive class's bias (within ``+-max_shift``).

    ``logits``: ``[n, 2]``; ``labels``: ``[n]`` in ``{0, 1}``; ``bias``: ``[2]`` (default 0).
    Returns ``(T, new_bias)``; never worse on the validation NLL than :func:`fit_temperature`
    with ``bias`` (which is what it returns when both classes are not present)."""
    from scipy.optimize import minimize

    z = np.asarray(logits, dtype=np.float64)
    y = np.asarray(labels, dtype=np.int64)
    b = np.zeros(2) if bias is None else np.asarray(bias, dtype=np.float64).copy()
    if z.ndim != 2 or z.shape[1] != 2 or len(z) != len(y):
        raise ValueError("logits must be [n, 2] and labels [n]")
    t_only = fit_temperature(z + b[None, :], y, bounds)
    if len(y) == 0 or y.min() == y.max():
        return t_only, b
    d = (z[:, 1] + b[1]) - (z[:, 0] + b[0])

    def loss(v: np.ndarray) -> float:
        u = np.exp(v[0]) * d + v[1]  # a * d + c
        return float(np.mean(np.logaddexp(0.0, u) - y * u))  # -log sigmoid(u) for y=1, -log(1-sigmoid(u)) for y=0

    lo, hi = np.log(1.0 / bounds[1]), np.log(1.0 / bounds[0])
    res = minimize(loss, x0=np.array([np.clip(-np.log(t_only), lo, hi), 0.0]), method="L-BFGS-B",
                   bounds=[(lo, hi), (-max_shift, max_shift)])
    a, c = float(np.exp(res.x[0])), float(res.x[1])
    if loss(res.x) > loss(np.array([-np.log(t_only), 0.0])):
        return t_only, b
    b[1] += c / a  # sigmoid(a * (d + c / a)) = sigmoid(a * d + c)
    return 1.0 / a, b


def expected_calibration_error(probs: np.ndarray, labels: np.ndarray, n_bins: int = 10) -> float:
    """Top-label expected calibration error with ``n_bins`` equal-width confidence bins.

    ``probs``: ``[n, k]`` (rows sum to 1); ``labels``: ``[n]``. For binary tasks pass ``[n, 2]``.
    """
    p = np.asarray(probs, dtype=np.float64)
    y = np.asarray(labels, dtype=np.int64)
    if len(y) == 0:
        return float("nan")
    conf = p.max(axis=1)
    correct = (p.argmax(axis=1) == y).astype(np.float64)
    edges = np.linspace(0.0, 1.0, n_bins + 1)
    idx = np.clip(np.digitize(conf, edges[1:-1], right=True), 0, n_bins - 1)
    ece = 0.0
    for b in range(n_bins):
        sel = idx == b
        if sel.any():
            ece += sel.mean() * abs(correct[sel].mean() - conf[sel].mean())
    return float(ece)


def youden_threshold(scores: np.ndarray, labels: np.ndarray) -> float:
    """Threshold on ``scores`` maximising Youden's J (sensitivity + specificity - 1).

    Predict positive when ``score >= threshold``. Returns 0.5 when only one class is present.
    The threshold is the midpoint between the two scores that bracket the best cut.
    """
    s = np.asarray(scores, dtype=np.float64)
    y = np.asarray(labels).astype(bool)
    if y.all() or (~y).all():
        return 0.5
    cand = np.unique(s)
    cuts = np.concatenate([[cand[0] - 1e-6], (cand[1:] + cand[:-1]) / 2.0, [cand[-1] + 1e-6]])
    pos, neg = y.sum(), (~y).sum()
    best, best_j = 0.5, -np.inf
    for c in cuts:
        pred = s >= c
        j = (pred & y).sum() / pos + (~pred & ~y).sum() / neg - 1.0
        if j > best_j + 1e-12:
            best, best_j = float(c), j
    return best


def positive_probability(probs: np.ndarray) -> np.ndarray:
    """Probability of moderate/severe: column 1 for binary ``[n, 2]``, ``p2 + p3`` for 4 grades."""
    p = np.asarray(probs, dtype=np.float64)
    if p.shape[1] == 2:
        return p[:, 1]
    if p.shape[1] == 4:
        return p[:, 2] + p[:, 3]
    raise ValueError(f"expected 2 or 4 classes, got {p.shape[1]}")
