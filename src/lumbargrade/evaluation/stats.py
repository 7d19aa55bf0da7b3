"""Bootstrap confidence intervals by patient, shared by every evaluation stage."""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence

import numpy as np

__all__ = ["ci", "mean"]


def ci(fn: Callable[..., float], arrays: Sequence, groups: Sequence, n_boot: int, seed: int) -> dict | None:
    """Bootstrap CI dict (value, ci_low, ci_high, n_boot, n_skipped, n, n_patients), or None when
    there are no items or the metric is undefined on the whole sample. Whole patients (``groups``)
    are resampled (:func:`lumbargrade.metrics.bootstrap_ci`)."""
    from ..metrics import bootstrap_ci

    if len(groups) == 0:
        return None
    arrs = [np.asarray(a) for a in arrays]
    try:
        v = float(fn(*arrs))
    except (ValueError, ZeroDivisionError):
        return None
    if not math.isfinite(v):
        return None
    r = bootstrap_ci(fn, *arrs, groups=np.asarray(groups), n_boot=n_boot, rng=seed).to_dict()
    r["n"] = len(groups)
    r["n_patients"] = len(set(groups))
    return r


def mean(x) -> float:
    x = np.asarray(x, dtype=float)
    if x.size == 0:
        raise ValueError("empty")
    return float(x.mean())
