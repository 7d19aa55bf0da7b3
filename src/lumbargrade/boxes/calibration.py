"""Image-localiser boxes, calibrated: each box edge from the region the segmenter found and the
fitted rule's edge together.

The bounding box of a predicted region is precise where the region's outline is sharp and biased
where the region is systematically thinner than the annotated one (e.g. the medial edge of a facet
joint region that touches the ligamentum flavum). The fitted rule's boxes have the opposite
profile. A calibration learnt on training predictions combines them per box kind and per edge::

    edge = intercept + w_image * image_edge + w_rule * rule_edge        (mm)

Edges are measured in each side's own frame relative to the dural sac's centroid (AP: rows,
posterior positive; lateral: away from the midline), so one calibration serves both sides, as the
fitted rule does: ``(ap_top, lateral_inner, ap_bottom, lateral_outer)``. A side without a region
keeps the rule's box. The coefficients are data (``image_calibration`` in ``box_rule.json``).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np

__all__ = ["EDGE_NAMES", "apply_calibration", "box_to_edges", "edges_to_box", "fit_calibration"]

EDGE_NAMES = ("ap_top", "lateral_inner", "ap_bottom", "lateral_outer")
KINDS = ("facet", "foramen")


def _centroid(sac: np.ndarray) -> tuple[float, float] | None:
    r, c = np.nonzero(sac)
    if not r.size:
        return None
    return float(r.mean()), float(c.mean())


def box_to_edges(box: Sequence[int], centroid: tuple[float, float], spacing, left: bool) -> np.ndarray:
    """Pixel box ``[r0, c0, r1, c1]`` (end-exclusive) -> its 4 edges (mm) in the side frame."""
    r0, c0, r1, c1 = (float(v) for v in box)
    sr, sc = float(spacing[0]), float(spacing[1])
    cr, cc = (centroid[0] + 0.5) * sr, (centroid[1] + 0.5) * sc  # pixel centre -> edge coordinates
    if left:  # the patient's left = higher columns in the canonical view
        return np.array([r0 * sr - cr, c0 * sc - cc, r1 * sr - cr, c1 * sc - cc])
    return np.array([r0 * sr - cr, cc - c1 * sc, r1 * sr - cr, cc - c0 * sc])


def edges_to_box(edges: Sequence[float], centroid: tuple[float, float], spacing, left: bool,
                 shape: tuple[int, int]) -> list[int]:
    """Side-frame edges (mm) -> pixel box, each edge rounded to the nearest pixel edge, clipped."""
    sr, sc = float(spacing[0]), float(spacing[1])
    cr, cc = (centroid[0] + 0.5) * sr, (centroid[1] + 0.5) * sc
    t, inner, b, outer = (float(v) for v in edges)
    if outer < inner:
        inner, outer = outer, inner
    if b < t:
        t, b = b, t
    if left:
        c0, c1 = cc + inner, cc + outer
    else:
        c0, c1 = cc - outer, cc - inner
    r0, r1 = cr + t, cr + b
    rows, cols = shape
    pr0 = int(np.clip(np.floor(r0 / sr + 0.5), 0, rows))
    pr1 = int(np.clip(np.floor(r1 / sr + 0.5), pr0, rows))
    pc0 = int(np.clip(np.floor(c0 / sc + 0.5), 0, cols))
    pc1 = int(np.clip(np.floor(c1 / sc + 0.5), pc0, cols))
    return [pr0, pc0, pr1, pc1]


def apply_calibration(image_boxes: Mapping[str, Sequence[int] | None], rule_boxes: Mapping[str, Sequence[int] | None],
                      sac: np.ndarray, spacing, calibration: Mapping) -> dict[str, list[int]]:
    """The calibrated boxes of one level (canonical pixels): for each of the four, the combination
    of its region's box and the rule's; the rule's alone where the region is missing."""
    sac = np.asarray(sac, bool)
    cen = _centroid(sac)
    out: dict[str, list[int]] = {}
    for kind in KINDS:
        coef = calibration.get(kind)
        for side in ("left", "right"):
            name = f"{kind}_{side}"
            img, rule = image_boxes.get(name), rule_boxes.get(name)
            if img is None or cen is None or coef is None:
                if rule is not None:
                    out[name] = [int(v) for v in rule]
                elif img is not None:
                    out[name] = [int(v) for v in img]
                continue
            left = side == "left"
            e_img = box_to_edges(img, cen, spacing, left)
            e_rule = box_to_edges(rule, cen, spacing, left) if rule is not None else e_img
            edges = [coef[e]["intercept"] + coef[e]["image"] * e_img[k] + coef[e]["rule"] * e_rule[k]
                     for k, e in enumerate(EDGE_NAMES)]
            out[name] = edges_to_box(edges, cen, spacing, left, sac.shape)
    return out


def fit_calibration(cases: Sequence[tuple], ridge: float = 1e-2) -> dict:
    """Least-squares calibration from training cases ``(truth_boxes, image_boxes, rule_boxes, sac,
    spacing)`` (canonical pixels). Returns ``{kind: {edge: {"intercept", "image", "rule"}}}``;
    ``ridge`` (mm² scale) keeps the weights of two strongly correlated estimates steady."""
    data: dict[str, list] = {k: [] for k in KINDS}
    for truth, img, rule, sac, spacing in cases:
        cen = _centroid(np.asarray(sac, bool))
        if cen is None:
            continue
        for kind in KINDS:
            for side in ("left", "right"):
                name = f"{kind}_{side}"
                t, i, r = truth.get(name), img.get(name), rule.get(name)
                if t is None or i is None or r is None:
                    continue
                left = side == "left"
                data[kind].append((box_to_edges(t, cen, spacing, left), box_to_edges(i, cen, spacing, left),
                                   box_to_edges(r, cen, spacing, left)))
    out: dict = {}
    for kind, rows in data.items():
        if len(rows) < 8:
            continue
        t = np.array([r[0] for r in rows])
        i = np.array([r[1] for r in rows])
        ru = np.array([r[2] for r in rows])
        out[kind] = {}
        for k, e in enumerate(EDGE_NAMES):
            x = np.stack([np.ones(len(rows)), i[:, k], ru[:, k]], 1)
            reg = ridge * len(rows) * np.diag([0.0, 1.0, 1.0])
            w = np.linalg.solve(x.T @ x + reg, x.T @ t[:, k])
            out[kind][e] = {"intercept": round(float(w[0]), 4), "image": round(float(w[1]), 4),
                            "rule": round(float(w[2]), 4)}
    return out
