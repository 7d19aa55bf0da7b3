"""Level metrics: landmark error (mm), level identification and the axial slice choice.

* landmark error: Euclidean distance (LPS mm) between the report's landmark and the truth disc
  centre; mean over levels, and per level;
* level identification: the predicted landmark is nearer its own truth disc centre than any other
  of the patient's (a level without a landmark counts as not identified);
* slice choice: the report's axial SOPInstanceUID is the truth's (a missing level is wrong).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from .data import LevelPair, slice_matches
from .stats import ci, mean

__all__ = ["level_metrics", "slice_choice_metrics"]


def slice_choice_metrics(pairs: Sequence[LevelPair], n_boot: int, seed: int) -> tuple[dict | None, int]:
    """(slice choice accuracy with CI, number of levels with the truth's slice)."""
    sc, g = [], []
    for p in pairs:
        if p.truth.get("axial_sop_instance_uid"):
            sc.append(float(slice_matches(p)))
            g.append(p.patient_id)
    return ci(mean, [sc], g, n_boot, seed), int(sum(sc))


def level_metrics(pairs: Sequence[LevelPair], n_boot: int, seed: int) -> dict[str, Any]:
    err, eg, per_level = [], [], {}
    ident, ig = [], []
    any_pred = any(p.pred_landmark_mm is not None for p in pairs)
    for p in pairs:
        t = p.truth.get("landmark_patient_mm")
        if t is None:
            continue
        t = np.asarray(t, float)
        q = None if p.pred_landmark_mm is None else np.asarray(p.pred_landmark_mm, float)
        if q is not None:
            e = float(np.linalg.norm(q - t))
            err.append(e)
            eg.append(p.patient_id)
            per_level.setdefault(p.level, ([], []))
            per_level[p.level][0].append(e)
            per_level[p.level][1].append(p.patient_id)
        if any_pred:
            ok = 0.0
            if q is not None and p.truth_landmarks:
                dist = {lv: float(np.linalg.norm(q - np.asarray(c, float))) for lv, c in p.truth_landmarks.items()}
                ok = float(min(dist, key=dist.get) == p.level)
            ident.append(ok)
            ig.append(p.patient_id)
    return {
        "landmark_error_mm": ci(mean, [err], eg, n_boot, seed),
        "landmark_error_mm_per_level": {lv: ci(mean, [v[0]], v[1], n_boot, seed) for lv, v in sorted(per_level.items())},
        "level_identification_accuracy": ci(mean, [ident], ig, n_boot, seed) if any_pred else None,
    }
