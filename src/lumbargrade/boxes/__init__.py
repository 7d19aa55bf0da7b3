"""Facet and foramen regions and boxes, left and right (the localisation step).

Three ways to place the boxes, all on the slice's canonical view (:mod:`lumbargrade.io.orientation`):

* ``image`` (:mod:`.image`): the segmenter's facet and foramen regions, split into the patient's
  left and right by the dural sac's centroid; boxes are their bounding boxes;
* ``fitted`` (:mod:`.rule`): boxes as linear functions of landmarks of the sac and disc masks, the
  coefficients fitted on training masks (data: ``fitted_rule.json``, or a pack's ``box_rule.json``);
* ``paper`` (:mod:`.rule`, :meth:`BoxRuleConfig.paper`): the paper's 36 mm x 36 mm boxes from the
  dural sac's top-most point.

:mod:`.training` fits the rule on a manifest (``lumbargrade train boxes``). Importing this package
is cheap.
"""

from __future__ import annotations

import importlib
from typing import Any

__all__ = [
    "BOX_NAMES",
    "BoxRuleConfig",
    "box_iou",
    "boxes_from_label_map",
    "boxes_from_masks",
    "fit_box_rule",
    "region_boxes",
    "side_regions",
]

_LAZY = {
    "BOX_NAMES": ".rule",
    "BoxRuleConfig": ".rule",
    "box_iou": ".rule",
    "boxes_from_label_map": ".rule",
    "boxes_from_masks": ".rule",
    "fit_box_rule": ".rule",
    "region_boxes": ".image",
    "side_regions": ".image",
}


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        return getattr(importlib.import_module(_LAZY[name], __name__), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
