"""Two sets of reports on the same studies, compared metric by metric, paired.

Use: a retrained model pack against the one it replaces, on the same cohort(s). For each headline
metric the items both sets graded are paired (a level, or a level's side for the foramen and facet),
and the difference *this - baseline* gets a percentile bootstrap 95% CI that resamples whole
patients, both sets together (so the patients' shared difficulty cancels); the two binary AUROCs of
a finding get DeLong's paired test too. Values are on the paired items only, so they can differ a
little from the unpaired figures of each set when one set left a level out.

Metrics (reference: the reader given, reader 1 by default; see :mod:`lumbargrade.evaluation`):

* ``dice_dural_sac``, ``dice_disc``: mean Dice per level, levels where both sets chose the truth's
  axial slice;
* ``central_tree_kappa``, ``central_cnn_kappa``: linearly weighted kappa, 4 grades;
* ``central_cnn_auroc``: binary AUROC of the CNN's ``binary_probability`` (moderate/severe);
* ``foramen_auroc``, ``facet_auroc``: binary AUROC of each side's ``probability``, sides pooled.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np

from .data import LevelPair, finite, grade_index, reader_grade, slice_matches

__all__ = ["METRICS", "compare_reports", "paired_items"]

#: metric -> kind ("dice", "kappa" or "auroc")
METRICS: dict[str, str] = {
    "dice_dural_sac": "dice",
    "dice_disc": "dice",
    "central_tree_kappa": "kappa",
    "central_cnn_kappa": "kappa",
    "central_cnn_auroc": "auroc",
    "foramen_auroc": "auroc",
    "facet_auroc": "auroc",
}

_Item = tuple[str, int, float]  # (patient id, reference label, value)


def _central(pair: LevelPair, model: str) -> dict:
    return (((pair.pred or {}).get("central_canal") or {}).get(model)) or {}


def paired_items(pairs: Sequence[LevelPair], reader: int = 0) -> dict[str, dict[tuple, _Item]]:
    """Per metric of :data:`METRICS`, ``{(patient, level[, side]): (patient, reference, value)}``:
    the value is a level's Dice, a grade index or a probability; the reference is the reader's grade
    (central canal), its binary label (AUROCs), or 0 for Dice."""
    from .segmentation import STRUCTURES, _dice_by_side

    out: dict[str, dict[tuple, _Item]] = {m: {} for m in METRICS}
    for p in pairs:
        if p.pred is None:
            continue
        key = (p.patient_id, p.level)
        t, q = p.truth_label_map, p.pred_label_map
        if slice_matches(p) and t is not None and q is not None and np.shape(t) == np.shape(q):
            for name in ("dural_sac", "disc"):
                out[f"dice_{name}"][key] = (p.patient_id, 0, _dice_by_side(np.asarray(q), np.asarray(t),
                                                                           STRUCTURES[name]))
        y = reader_grade(p.truth, "central_canal", reader)
        if y is not None:
            for model in ("tree", "cnn"):
                g = grade_index(_central(p, model).get("grade"))
                if g is not None:
                    out[f"central_{model}_kappa"][key] = (p.patient_id, int(y), float(g))
            b = _central(p, "cnn").get("binary_probability")
            if finite(b):
                out["central_cnn_auroc"][key] = (p.patient_id, int(y >= 2), float(b))
        for kind in ("foramen", "facet"):
            for side in ("left", "right"):
                f = f"{kind}_{side}"
                y = reader_grade(p.truth, f, reader)
                prob = (p.pred.get(f) or {}).get("probability")
                if y is not None and finite(prob):
                    out[f"{kind}_auroc"][(*key, side)] = (p.patient_id, int(y), float(prob))
    return out


def _metric_fn(kind: str) -> Callable[[np.ndarray, np.ndarray], float]:
    from ..metrics import binary_auroc, linear_weighted_kappa

    if kind == "dice":
        return lambda y, v: float(np.mean(v))
    if kind == "kappa":
        return lambda y, v: linear_weighted_kappa(y, v.astype(int), n_classes=4)
    return binary_auroc


def compare_reports(pairs: Sequence[LevelPair], baseline: Sequence[LevelPair], n_boot: int = 1000, seed: int = 0,
                    reader: int = 0) -> dict[str, Any]:
    """``{metric: {"value", "baseline", "difference": {"value", "ci_low", "ci_high", ...}, "n",
    "n_patients"[, "delong_p"]}}`` for every metric of :data:`METRICS` with paired items (None
    where none or the metric is undefined). ``pairs`` and ``baseline`` pair the same truth with the
    two sets of reports (:func:`lumbargrade.evaluation.make_pairs`)."""
    from ..metrics import delong_test
    from .stats import ci

    a_items, b_items = paired_items(pairs, reader), paired_items(baseline, reader)
    out: dict[str, Any] = {}
    for name, kind in METRICS.items():
        keys = sorted(set(a_items[name]) & set(b_items[name]))
        if not keys:
            out[name] = None
            continue
        groups = [a_items[name][k][0] for k in keys]
        y = np.array([a_items[name][k][1] for k in keys], int)
        a = np.array([a_items[name][k][2] for k in keys], float)
        b = np.array([b_items[name][k][2] for k in keys], float)
        fn = _metric_fn(kind)
        try:
            va, vb = float(fn(y, a)), float(fn(y, b))
        except (ValueError, ZeroDivisionError):
            va = vb = math.nan
        if not (math.isfinite(va) and math.isfinite(vb)):
            out[name] = None
            continue
        diff = ci(lambda yy, aa, bb, f=fn: f(yy, aa) - f(yy, bb), [y, a, b], groups, n_boot, seed)
        entry: dict[str, Any] = {"value": va, "baseline": vb, "difference": diff, "n": len(keys),
                                 "n_patients": len(set(groups))}
        if kind == "auroc":
            try:
                entry["delong_p"] = float(delong_test(y, a, b)[3])
            except ValueError:
                entry["delong_p"] = None
        out[name] = entry
    return out
