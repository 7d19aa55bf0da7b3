"""Segmentation metrics: Dice of the dural sac and disc, and of the facet and foramen regions.

Computed only on levels where the report chose the truth's axial slice (truth masks exist only
there). Label maps are compared on the slice's own pixel grid (both are written in it).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from .data import LevelPair, slice_matches
from .stats import ci, mean

__all__ = ["segmentation_metrics"]

#: label values of each structure in the label maps (docs/architecture.md); regions pool both sides
STRUCTURES = {"dural_sac": (1,), "disc": (2,), "facet_region": (3, 4), "foramen_region": (5, 6)}


def _dice_by_side(p: np.ndarray, t: np.ndarray, values) -> float:
    from ..metrics import dice

    if len(values) == 1:
        return float(dice(p == values[0], t == values[0]))
    return float(np.mean([dice(p == v, t == v) for v in values]))


def segmentation_metrics(pairs: Sequence[LevelPair], n_boot: int, seed: int) -> dict[str, Any]:
    """``{"dice_dural_sac", "dice_disc", "dice_facet_region", "dice_foramen_region"}`` with CIs; the
    region Dice (mean of left and right) only where the image localiser placed the boxes (the
    report's labels 3-6 are its regions) and the truth has regions."""
    vals: dict[str, tuple[list, list]] = {k: ([], []) for k in STRUCTURES}
    for pair in pairs:
        if pair.pred is None or not slice_matches(pair):
            continue
        t, p = pair.truth_label_map, pair.pred_label_map
        if t is None or p is None or np.shape(t) != np.shape(p):
            continue
        t, p = np.asarray(t), np.asarray(p)
        regions = pair.pred.get("boxes_source") == "image"  # else labels 3-6 are filled boxes, not regions
        for name, values in STRUCTURES.items():
            if name.endswith("region") and not (regions and np.isin(t, values).any() and np.isin(p, values).any()):
                continue
            vals[name][0].append(_dice_by_side(p, t, values))
            vals[name][1].append(pair.patient_id)
    return {f"dice_{k}": ci(mean, [v[0]], v[1], n_boot, seed) for k, v in vals.items()}
