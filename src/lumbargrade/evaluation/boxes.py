"""Localisation metrics: IoU of the facet and foramen boxes, for the reported boxes and for every
box source the report holds (``boxes_by_source``: image localiser, fitted rule, paper rule).

Truth boxes: truth.json ``boxes`` (the phantom's anatomical boxes), else the bounding boxes of
labels 3-6 of the truth label map. Left and right are pooled per box kind; only levels where the
report chose the truth's slice count.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from .data import BINARY_FINDINGS, LevelPair, slice_matches
from .stats import ci, mean

__all__ = ["box_metrics", "truth_boxes"]


def truth_boxes(pair: LevelPair) -> dict:
    boxes = dict(pair.truth.get("boxes") or {})
    if not boxes and pair.truth_label_map is not None:
        from ..boxes.rule import boxes_from_label_map

        boxes = boxes_from_label_map(pair.truth_label_map)
    return boxes


def _ious(pairs: Sequence[LevelPair], get_boxes) -> dict[str, tuple[list, list]]:
    from ..metrics import iou_boxes

    iou: dict[str, tuple[list, list]] = {"facet": ([], []), "foramen": ([], [])}
    for p in pairs:
        if p.pred is None or not slice_matches(p):
            continue
        pb = get_boxes(p.pred)
        if pb is None:
            continue
        tb = truth_boxes(p)
        for name in BINARY_FINDINGS:
            kind = name.split("_")[0]
            if tb.get(name) is None:
                continue
            iou[kind][0].append(iou_boxes(pb.get(name), tb[name]))
            iou[kind][1].append(p.patient_id)
    return iou


def box_metrics(pairs: Sequence[LevelPair], n_boot: int, seed: int) -> dict[str, Any]:
    """``{"iou_facet", "iou_foramen", "by_source": {source: {"iou_facet", "iou_foramen"}}}``."""
    out: dict[str, Any] = {f"iou_{k}": ci(mean, [v[0]], v[1], n_boot, seed)
                           for k, v in _ious(pairs, lambda rec: rec.get("boxes") or {}).items()}
    sources = sorted({s for p in pairs if p.pred for s in (p.pred.get("boxes_by_source") or {})})
    by: dict[str, Any] = {}
    for s in sources:
        def get(rec: Mapping, s=s):
            return (rec.get("boxes_by_source") or {}).get(s)

        by[s] = {f"iou_{k}": ci(mean, [v[0]], v[1], n_boot, seed) for k, v in _ious(pairs, get).items()}
    out["by_source"] = by
    used = sorted({p.pred.get("boxes_source") for p in pairs if p.pred and p.pred.get("boxes_source")})
    out["reported_source"] = "/".join(used) if used else None
    return out
