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

Two forms:

* ``"pair"`` (above; ``box_rule.json`` files without a ``"form"`` key): each edge from the same
  edge of the region's box and of the rule's box;
* ``"joint"`` (the default of :func:`fit_calibration`): each edge of a box from all 16 edges of
  that side, the facet's and the foramen's, each from its region and from the rule
  (:data:`JOINT_FEATURES`): the facet joint and the foramen border each other, so the outline of
  one says where the other ends. Where one region of the side is missing, its rule box stands in
  for it among the features (and its own box is the rule's, as in the pair form).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np

from ..numbers import is_finite_number

__all__ = ["CALIBRATION_FORMS", "EDGE_NAMES", "JOINT_FEATURES", "apply_calibration", "box_to_edges",
           "check_calibration", "edges_to_box", "fit_calibration"]

EDGE_NAMES = ("ap_top", "lateral_inner", "ap_bottom", "lateral_outer")
KINDS = ("facet", "foramen")
CALIBRATION_FORMS = ("joint", "pair")
#: The inputs of a ``"joint"`` calibration, in order: per kind, the region box's edges, then the rule box's.
JOINT_FEATURES = tuple(f"{kind}_{src}_{edge}" for kind in KINDS for src in ("image", "rule") for edge in EDGE_NAMES)


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


def check_calibration(calibration: Mapping) -> None:
    """ValueError, naming the entry, unless ``calibration`` is a valid ``image_calibration``
    (empty, or the pair or joint form with a finite intercept and weights for every edge of each
    box kind it holds)."""
    if not calibration:
        return
    if not isinstance(calibration, Mapping):
        raise ValueError("image_calibration must be an object")
    form = _form(calibration)
    extra = set(calibration) - set(KINDS) - {"form", "features", "ridge"}
    if extra:
        raise ValueError(f"image_calibration: unknown entries {sorted(extra)}")
    if form == "joint" and "features" in calibration and list(calibration["features"]) != list(JOINT_FEATURES):
        raise ValueError("image_calibration.features must list the 16 joint features in order "
                         f"({JOINT_FEATURES[0]}, ..., {JOINT_FEATURES[-1]})")

    def finite(v, where):
        if not is_finite_number(v):
            raise ValueError(f"image_calibration.{where} must be a finite number, got {v!r}")

    for kind in KINDS:
        if kind not in calibration:
            continue
        for e in EDGE_NAMES:
            c = calibration[kind].get(e) if isinstance(calibration[kind], Mapping) else None
            if not isinstance(c, Mapping):
                raise ValueError(f"image_calibration.{kind} lacks the edge {e!r}")
            finite(c.get("intercept"), f"{kind}.{e}.intercept")
            if form == "joint":
                w = c.get("weights")
                if not isinstance(w, (list, tuple)) or len(w) != len(JOINT_FEATURES):
                    raise ValueError(f"image_calibration.{kind}.{e}.weights must be a list of {len(JOINT_FEATURES)} numbers")
                for k, v in enumerate(w):
                    finite(v, f"{kind}.{e}.weights[{k}]")
            else:
                for name in ("image", "rule"):
                    finite(c.get(name), f"{kind}.{e}.{name}")


def _form(calibration: Mapping) -> str:
    form = calibration.get("form", "pair")
    if form not in CALIBRATION_FORMS:
        raise ValueError(f"image calibration form must be one of {', '.join(CALIBRATION_FORMS)}, got {form!r}")
    return form


def _joint_features(img: Mapping, rule: Mapping, side: str, cen, spacing) -> np.ndarray | None:
    """The 16 side-frame edges (mm) of one side, :data:`JOINT_FEATURES` order; a missing region's
    box is replaced by the rule's (and a missing rule box by the region's); None when a kind has
    neither."""
    left = side == "left"
    out = []
    for kind in KINDS:
        name = f"{kind}_{side}"
        i, r = img.get(name), rule.get(name)
        i = r if i is None else i
        r = i if r is None else r
        if i is None:
            return None
        out.extend((box_to_edges(i, cen, spacing, left), box_to_edges(r, cen, spacing, left)))
    return np.concatenate(out)


def apply_calibration(image_boxes: Mapping[str, Sequence[int] | None], rule_boxes: Mapping[str, Sequence[int] | None],
                      sac: np.ndarray, spacing, calibration: Mapping) -> dict[str, list[int]]:
    """The calibrated boxes of one level (canonical pixels): for each of the four, the combination
    of its region's box and the rule's (and, in the joint form, of the side's other box); the
    rule's alone where the region is missing."""
    sac = np.asarray(sac, bool)
    cen = _centroid(sac)
    form = _form(calibration)
    joint = {side: _joint_features(image_boxes, rule_boxes, side, cen, spacing)
             if form == "joint" and cen is not None else None for side in ("left", "right")}
    out: dict[str, list[int]] = {}
    for kind in KINDS:
        coef = calibration.get(kind)
        for side in ("left", "right"):
            left = side == "left"
            name = f"{kind}_{side}"
            img, rule = image_boxes.get(name), rule_boxes.get(name)
            if img is None or cen is None or coef is None or (form == "joint" and joint[side] is None):
                if rule is not None:
                    out[name] = [int(v) for v in rule]
                elif img is not None:
                    out[name] = [int(v) for v in img]
                continue
            if form == "joint":
                edges = [coef[e]["intercept"] + float(np.dot(coef[e]["weights"], joint[side])) for e in EDGE_NAMES]
            else:
                e_img = box_to_edges(img, cen, spacing, left)
                e_rule = box_to_edges(rule, cen, spacing, left) if rule is not None else e_img
                edges = [coef[e]["intercept"] + coef[e]["image"] * e_img[k] + coef[e]["rule"] * e_rule[k]
                         for k, e in enumerate(EDGE_NAMES)]
            out[name] = edges_to_box(edges, cen, spacing, left, sac.shape)
    return out


def fit_calibration(cases: Sequence[tuple], ridge: float = 1e-2, form: str = "joint") -> dict:
    """Least-squares calibration from training cases ``(truth_boxes, image_boxes, rule_boxes, sac,
    spacing)`` (canonical pixels). ``ridge`` (mm² scale) keeps the weights of strongly correlated
    estimates steady. ``form="pair"``: ``{kind: {edge: {"intercept", "image", "rule"}}}``;
    ``form="joint"``: ``{"form": "joint", "features": JOINT_FEATURES, "ridge": ridge,
    kind: {edge: {"intercept", "weights": [16]}}}``."""
    if form not in CALIBRATION_FORMS:
        raise ValueError(f"form must be one of {', '.join(CALIBRATION_FORMS)}, got {form!r}")
    data: dict[str, list] = {k: [] for k in KINDS}
    for truth, img, rule, sac, spacing in cases:
        cen = _centroid(np.asarray(sac, bool))
        if cen is None:
            continue
        for side in ("left", "right"):
            left = side == "left"
            joint = _joint_features(img, rule, side, cen, spacing) if form == "joint" else None
            for kind in KINDS:
                name = f"{kind}_{side}"
                t, i, r = truth.get(name), img.get(name), rule.get(name)
                if t is None or i is None or r is None:
                    continue
                if form == "joint":
                    if joint is None:
                        continue
                    x = joint
                else:
                    x = np.stack([box_to_edges(i, cen, spacing, left), box_to_edges(r, cen, spacing, left)], 1)
                data[kind].append((box_to_edges(t, cen, spacing, left), x))
    out: dict = {"form": "joint", "features": list(JOINT_FEATURES), "ridge": ridge} if form == "joint" else {}
    for kind, rows in data.items():
        if len(rows) < (40 if form == "joint" else 8):
            continue
        t = np.array([r[0] for r in rows])
        out[kind] = {}
        for k, e in enumerate(EDGE_NAMES):
            if form == "joint":
                x = np.concatenate([np.ones((len(rows), 1)), np.array([r[1] for r in rows])], 1)
            else:
                x = np.stack([np.ones(len(rows)), [r[1][k, 0] for r in rows], [r[1][k, 1] for r in rows]], 1)
            reg = ridge * len(rows) * np.diag([0.0] + [1.0] * (x.shape[1] - 1))
            w = np.linalg.solve(x.T @ x + reg, x.T @ t[:, k])
            if form == "joint":
                out[kind][e] = {"intercept": round(float(w[0]), 4), "weights": [round(float(v), 5) for v in w[1:]]}
            else:
                out[kind][e] = {"intercept": round(float(w[0]), 4), "image": round(float(w[1]), 4),
                                "rule": round(float(w[2]), 4)}
    return out
