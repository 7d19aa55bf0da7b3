"""Placing the four boxes of a level: the one function the pipeline and the classifier training share.

``place_boxes(source, sac, disc, spacing, regions, rule)`` on canonical arrays
(:mod:`lumbargrade.io.orientation`) returns the boxes by the chosen source:

* ``image``: bounding boxes of the image localiser's regions (:func:`.image.region_boxes`),
  combined edge by edge with the fitted rule's when the rule carries an ``image_calibration``
  (:mod:`.calibration`); a side whose region is missing is placed by the fitted rule (and said so);
* ``fitted``: the fitted rule on the masks (``rule``, default the shipped coefficients);
* ``paper``: the paper's 36 mm rule.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

__all__ = ["BOX_SOURCES", "place_boxes"]

BOX_SOURCES = ("image", "fitted", "paper")


def place_boxes(
    source: str,
    sac: np.ndarray,
    disc: np.ndarray | None,
    spacing: Sequence[float],
    regions: np.ndarray | None = None,
    rule: Any = None,
    fill_missing: bool = True,
) -> tuple[dict[str, list[int]], str, list[str]]:
    """``(boxes, source used, notes)``; boxes ``{"facet_left": [r0, c0, r1, c1], ...}`` (only those
    found), canonical pixels, end-exclusive. ``fill_missing`` (image source): place a side without
    a region by the fitted rule; otherwise (a reader's regions, as drawn) leave it without a box and
    take the regions' boxes as they are."""
    from .image import region_boxes
    from .rule import BOX_NAMES, BoxRuleConfig, boxes_from_masks

    if source not in BOX_SOURCES:
        raise ValueError(f"box source must be one of {', '.join(BOX_SOURCES)}, got {source!r}")
    notes: list[str] = []
    sac = np.asarray(sac, bool)
    if source == "image" and regions is None:
        notes.append("boxes: the segmenter has no facet/foramen regions; the fitted rule is used")
        source = "fitted"
    if source == "image":
        found = {k: b for k, b in region_boxes(regions).items() if b is not None}
        missing = [k for k in BOX_NAMES if k not in found]
        if not fill_missing:
            return {k: [int(v) for v in b] for k, b in found.items()}, source, notes
        calib = getattr(rule, "image_calibration", None) if rule is not None else None
        if calib and sac.any():  # each edge from the region's box and the fitted rule's together
            from .calibration import apply_calibration

            ruled = boxes_from_masks(sac, disc, spacing, config=rule)
            found = apply_calibration(found, {k: b for k, b in ruled.items() if b is not None}, sac, spacing, calib)
            if missing:
                notes.append("boxes: no " + ", ".join(m.replace("_", " ") for m in missing)
                             + " region found; the fitted rule placed them")
            return {k: [int(v) for v in b] for k, b in found.items()}, source, notes
        if missing and sac.any():
            ruled = boxes_from_masks(sac, disc, spacing, config=rule or BoxRuleConfig())
            for k in missing:
                if ruled.get(k) is not None:
                    found[k] = ruled[k]
            notes.append("boxes: no " + ", ".join(m.replace("_", " ") for m in missing)
                         + " region found; the fitted rule placed them")
        return {k: [int(v) for v in b] for k, b in found.items()}, source, notes
    if not sac.any():
        return {}, source, notes
    cfg = BoxRuleConfig.paper() if source == "paper" else (rule or BoxRuleConfig())
    boxes = boxes_from_masks(sac, disc, spacing, config=cfg)
    return {k: [int(v) for v in b] for k, b in boxes.items() if b is not None}, source, notes
