"""The image localiser: facet and foramen regions from the segmenter, split by side, and their boxes.

The segmenter predicts one facet class and one foramen class (the two sides look alike); the
side is decided here from the patient geometry: in the canonical axial view
(:mod:`lumbargrade.io.orientation`) the patient's left is at higher columns, so a region right of
the dural sac's centroid column is on the patient's left. Each side keeps its largest connected
component. Arrays are canonical ``[rows, cols]``; label values as in docs/architecture.md
(3/4 facet left/right, 5/6 foramen left/right).
"""

from __future__ import annotations

import numpy as np

from ..measurements import largest_component
from .rule import BOX_LABELS, boxes_from_label_map

__all__ = ["REGION_LABELS", "region_boxes", "side_regions"]

#: Label values of the regions (the same as a label map's box labels).
REGION_LABELS = BOX_LABELS


def side_regions(facet: np.ndarray, foramen: np.ndarray, sac: np.ndarray,
                 midline_col: float | None = None) -> np.ndarray:
    """uint8 ``[rows, cols]``: 3/4 facet left/right, 5/6 foramen left/right, 0 elsewhere.

    ``midline_col``: the column that splits the sides (default: the dural sac's centroid column,
    or the image's middle column when there is no sac).
    """
    facet, foramen, sac = (np.asarray(m, bool) for m in (facet, foramen, sac))
    if midline_col is None:
        midline_col = float(np.nonzero(sac)[1].mean()) if sac.any() else (sac.shape[1] - 1) / 2
    cols = np.arange(sac.shape[1])[None, :]
    left = np.broadcast_to(cols > midline_col, sac.shape)
    out = np.zeros(sac.shape, np.uint8)
    for mask, (lv, rv) in ((foramen, (5, 6)), (facet, (3, 4))):
        for side, value in ((left, lv), (~left, rv)):
            m = mask & side
            if m.any():
                m = largest_component(m)
                out[m & (out == 0)] = value
    return out


def region_boxes(regions: np.ndarray) -> dict[str, list[int] | None]:
    """Bounding boxes ``[row0, col0, row1, col1]`` (end-exclusive) of regions 3-6; None if absent
    (the same as a label map's boxes: :func:`.rule.boxes_from_label_map`)."""
    return boxes_from_label_map(regions)
