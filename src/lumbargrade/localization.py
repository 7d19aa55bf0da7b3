"""Facet and foramen boxes from the dural sac and disc masks: the paper's geometric rule, in mm.

Bharadwaj et al. 2023: "36 mm x 36 mm bounding boxes originating from the top-most point of the
predicted dural sac, with the centroid partitioning the image into left and right" (facets); "a
similar approach" for the foramina. Written here as a pure function of the masks and the pixel
spacing, every distance in mm (see ``docs/measurements.md``):

Anchors (image mm, measured from the image's top-left corner, i.e. pixel edges; the sac is its
largest 8-connected component):

* ``top``: the top-most (most anterior) edge of the dural sac; ``centroid``: the sac's centroid;
* ``disc_post``: the posterior-most edge of the disc (falls back to ``top`` if the disc is empty).

Facet box (each side): ``facet_size_mm = (height, width)``, default 36 x 36. Its top edge is at
``top + facet_top_offset_mm`` (positive = posterior), its medial edge at the centroid column
shifted laterally by ``facet_medial_offset_mm``; it extends ``width`` laterally and ``height``
posteriorly. With both offsets 0 this is the paper's rule literally: the box starts at the sac's
top-most point and the centroid splits left from right.

Foramen box (each side): ``foramen_size_mm``, default 36 x 36 (the paper's "similar approach").
It is centred vertically half-way between the disc's posterior edge and the sac centroid, shifted by
``foramen_center_offset_mm``; its medial edge is at the centroid column shifted laterally by
``foramen_medial_offset_mm`` (default 9 mm, about half a normal sac's width: the foramen lies
lateral to the sac at the posterolateral corner of the disc).

Boxes are ``[row0, col0, row1, col1]`` pixel bounds, end-exclusive, each edge rounded to the
nearest pixel edge and clipped to the image. The rule is mirror-equivariant by construction: the
low-column side is computed as the high-column side of the left-right flipped masks, mirrored back,
so a mirrored image gives exactly mirrored boxes with left and right swapped.

Sides are the **patient's**: with ``left_is_higher_col=True`` (standard axial display, row_cosine =
+x: the column index grows towards the patient's left) the higher-column boxes are ``*_left``.
The pipeline derives it from the slice: ``left_is_higher_col = row_cosine[0] > 0``. The rule
assumes anterior at low rows (col_cosine = +y); pass ``anterior_is_low_row=False`` otherwise.

:func:`fit_box_rule` tunes the offsets on training examples (masks + ground-truth boxes) by grid
search on mean IoU.
"""

from __future__ import annotations

import itertools
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import asdict, dataclass, field, replace

import numpy as np

__all__ = [
    "BOX_LABELS",
    "BOX_NAMES",
    "BoxExample",
    "BoxRuleConfig",
    "box_iou",
    "boxes_from_label_map",
    "boxes_from_masks",
    "evaluate_box_rule",
    "example_from_label_map",
    "fit_box_rule",
    "mirror_box",
]

BOX_NAMES = ("facet_left", "facet_right", "foramen_left", "foramen_right")
#: label-map values of the boxes (docs/architecture.md)
BOX_LABELS = {"facet_left": 3, "facet_right": 4, "foramen_left": 5, "foramen_right": 6}

Box = list[int]


@dataclass(frozen=True)
class BoxRuleConfig:
    """Parameters of the box rule, all in mm (sizes are ``(height along AP, width)``)."""

    facet_size_mm: tuple[float, float] = (36.0, 36.0)
    facet_top_offset_mm: float = 0.0
    facet_medial_offset_mm: float = 0.0
    foramen_size_mm: tuple[float, float] = (36.0, 36.0)
    foramen_center_offset_mm: float = 0.0
    foramen_medial_offset_mm: float = 9.0

    def to_dict(self) -> dict:
        d = asdict(self)
        d["facet_size_mm"] = list(self.facet_size_mm)
        d["foramen_size_mm"] = list(self.foramen_size_mm)
        return d

    @classmethod
    def from_dict(cls, d: Mapping) -> BoxRuleConfig:
        kw = {k: d[k] for k in cls.__dataclass_fields__ if k in d}
        for k in ("facet_size_mm", "foramen_size_mm"):
            if k in kw:
                v = kw[k]
                kw[k] = (float(v), float(v)) if np.isscalar(v) else (float(v[0]), float(v[1]))
        unknown = set(d) - set(cls.__dataclass_fields__)
        if unknown:
            raise ValueError(f"unknown box-rule parameter(s): {sorted(unknown)}")
        return cls(**kw)


def box_iou(a: Sequence[float] | None, b: Sequence[float] | None) -> float:
    """IoU of two ``[row0, col0, row1, col1]`` boxes (end-exclusive); both empty -> 1, one -> 0."""
    from .metrics import iou_boxes

    return iou_boxes(a, b)


def mirror_box(box: Sequence[int], n_cols: int) -> Box:
    """The box mirrored left-right in an image of ``n_cols`` columns."""
    r0, c0, r1, c1 = (int(v) for v in box)
    return [r0, n_cols - c1, r1, n_cols - c0]


def _flip_rows(box: Sequence[int], n_rows: int) -> Box:
    r0, c0, r1, c1 = (int(v) for v in box)
    return [n_rows - r1, c0, n_rows - r0, c1]


# --------------------------------------------------------------------------- anchors
def _anchors(sac: np.ndarray, disc: np.ndarray, spacing) -> np.ndarray | None:
    """``[top, cen_r, cen_c, disc_post]`` in edge mm (image top-left corner = 0), or None."""
    from .measurements import largest_component

    s = largest_component(sac)
    if not s.any():
        return None
    rs, cs = np.nonzero(s)
    rm, cm = float(spacing[0]), float(spacing[1])
    top = rs.min() * rm
    cen_r = (rs.mean() + 0.5) * rm
    cen_c = (cs.mean() + 0.5) * cm
    d = largest_component(disc)
    disc_post = (np.nonzero(d)[0].max() + 1) * rm if d.any() else top
    return np.array([top, cen_r, cen_c, disc_post], dtype=float)


def _round_edge(mm: np.ndarray, sp: float) -> np.ndarray:
    return np.floor(np.asarray(mm) / sp + 0.5).astype(int)


def _high_side(anchors: np.ndarray, params: np.ndarray, spacing: np.ndarray, shape: np.ndarray) -> tuple:
    """Vectorised high-column-side boxes.

    anchors (n, 4); params (n, 8) = facet h, w, top_off, medial_off, foramen h, w, centre_off,
    medial_off; spacing (n, 2); shape (n, 2). Returns (facet (n, 4), foramen (n, 4)) int pixel boxes.
    """
    top, cen_r, cen_c, post = anchors.T
    fh, fw, fto, fmo, oh, ow, oco, omo = params.T
    rm, cm = spacing.T
    rows, cols = shape.T

    def box(r0, r1, c0, c1):
        b = np.stack([_round_edge(r0, rm), _round_edge(c0, cm), _round_edge(r1, rm), _round_edge(c1, cm)], 1)
        b[:, 0] = np.clip(b[:, 0], 0, rows)
        b[:, 2] = np.clip(b[:, 2], b[:, 0], rows)
        b[:, 1] = np.clip(b[:, 1], 0, cols)
        b[:, 3] = np.clip(b[:, 3], b[:, 1], cols)
        return b

    f0 = top + fto
    fc0 = cen_c + fmo
    facet = box(f0, f0 + fh, fc0, fc0 + fw)
    rc = 0.5 * (post + cen_r) + oco
    oc0 = cen_c + omo
    foramen = box(rc - oh / 2, rc + oh / 2, oc0, oc0 + ow)
    return facet, foramen


def _params(cfg: BoxRuleConfig) -> np.ndarray:
    return np.array([cfg.facet_size_mm[0], cfg.facet_size_mm[1], cfg.facet_top_offset_mm,
                     cfg.facet_medial_offset_mm, cfg.foramen_size_mm[0], cfg.foramen_size_mm[1],
                     cfg.foramen_center_offset_mm, cfg.foramen_medial_offset_mm], dtype=float)


def _check_masks(sac, disc, spacing):
    s = np.asarray(sac).astype(bool)
    d = np.asarray(disc).astype(bool) if disc is not None else np.zeros_like(s)
    if s.ndim != 2 or s.shape != d.shape:
        raise ValueError(f"sac and disc masks must be 2D and of one shape, got {s.shape} and {d.shape}")
    if len(spacing) != 2 or not (float(spacing[0]) > 0 and float(spacing[1]) > 0):
        raise ValueError(f"pixel spacing must be (row_mm, col_mm) > 0, got {spacing!r}")
    return s, d


def boxes_from_masks(sac_mask: np.ndarray, disc_mask: np.ndarray | None, spacing: Sequence[float],
                     config: BoxRuleConfig | None = None, left_is_higher_col: bool = True,
                     anterior_is_low_row: bool = True) -> dict[str, Box | None]:
    """Facet and foramen boxes (patient's left/right) from the masks by the geometric rule.

    Parameters
    ----------
    sac_mask, disc_mask: 2D ``[row, col]`` masks of one shape (``disc_mask`` may be None).
    spacing: ``(row_mm, col_mm)``.
    config: the rule's parameters in mm (default :class:`BoxRuleConfig`: 36 mm boxes).
    left_is_higher_col: the column index grows towards the patient's left (row_cosine = +x).
    anterior_is_low_row: anterior is at the top (col_cosine = +y).

    Returns ``{"facet_left", "facet_right", "foramen_left", "foramen_right": [row0, col0, row1,
    col1]}`` (end-exclusive, clipped; a box clipped away entirely has zero area). All values are
    None when the sac mask is empty.
    """
    cfg = config or BoxRuleConfig()
    s, d = _check_masks(sac_mask, disc_mask, spacing)
    if not anterior_is_low_row:
        out = boxes_from_masks(s[::-1], d[::-1], spacing, cfg, left_is_higher_col, True)
        return {k: (_flip_rows(v, s.shape[0]) if v is not None else None) for k, v in out.items()}
    sp = np.array([[float(spacing[0]), float(spacing[1])]])
    shape = np.array([s.shape])
    p = _params(cfg)[None]
    a_hi = _anchors(s, d, spacing)
    if a_hi is None:
        return {k: None for k in BOX_NAMES}
    a_lo = _anchors(s[:, ::-1], d[:, ::-1], spacing)
    fac_hi, for_hi = _high_side(a_hi[None], p, sp, shape)
    fac_lo, for_lo = _high_side(a_lo[None], p, sp, shape)
    n = s.shape[1]
    hi = {"facet": [int(v) for v in fac_hi[0]], "foramen": [int(v) for v in for_hi[0]]}
    lo = {"facet": mirror_box(fac_lo[0], n), "foramen": mirror_box(for_lo[0], n)}
    left, right = (hi, lo) if left_is_higher_col else (lo, hi)
    return {"facet_left": left["facet"], "facet_right": right["facet"],
            "foramen_left": left["foramen"], "foramen_right": right["foramen"]}


def boxes_from_label_map(label_map: np.ndarray) -> dict[str, Box | None]:
    """Bounding boxes of the box labels (3-6) of a label map; None where a label is absent.

    Boxes in a label map are drawn under the sac and disc, so a box whose whole edge is hidden by
    them comes out slightly smaller than drawn.
    """
    lm = np.asarray(label_map)
    out: dict[str, Box | None] = {}
    for name, v in BOX_LABELS.items():
        rs, cs = np.nonzero(lm == v)
        out[name] = None if rs.size == 0 else [int(rs.min()), int(cs.min()), int(rs.max()) + 1, int(cs.max()) + 1]
    return out


# --------------------------------------------------------------------------- fitting
@dataclass
class BoxExample:
    """One training example for :func:`fit_box_rule`: masks, spacing and ground-truth boxes
    (``truth[name] = [row0, col0, row1, col1]`` or None)."""

    sac_mask: np.ndarray
    disc_mask: np.ndarray
    spacing: tuple[float, float]
    truth: Mapping[str, Sequence[int] | None]
    left_is_higher_col: bool = True


@dataclass
class _Cases:
    anchors: np.ndarray  # (n, 4), every case in its "high side" frame
    spacing: np.ndarray
    shape: np.ndarray
    truth_facet: np.ndarray  # (n, 4), NaN row where missing
    truth_foramen: np.ndarray
    names: list = field(default_factory=list)  # (example index, side) per case


def example_from_label_map(label_map: np.ndarray, spacing: Sequence[float],
                           left_is_higher_col: bool = True) -> BoxExample:
    """A :class:`BoxExample` from a truth label map (1 sac, 2 disc, 3-6 boxes): its masks and the
    bounding boxes of labels 3-6 as truth. Running the rule on such examples measures how well the
    rule can do at best (with perfect masks)."""
    lm = np.asarray(label_map)
    return BoxExample(lm == 1, lm == 2, (float(spacing[0]), float(spacing[1])),
                      boxes_from_label_map(lm), left_is_higher_col)


def _as_example(e) -> BoxExample:
    if isinstance(e, BoxExample):
        return e
    if isinstance(e, Mapping):
        return BoxExample(**e)
    return BoxExample(*e)


def _cases(examples: Iterable) -> _Cases:
    A, S, SH, TF, TO, names = [], [], [], [], [], []
    nan4 = [np.nan] * 4
    for k, e in enumerate(map(_as_example, examples)):
        s, d = _check_masks(e.sac_mask, e.disc_mask, e.spacing)
        n = s.shape[1]
        for side_hi in (True, False):
            a = _anchors(s, d, e.spacing) if side_hi else _anchors(s[:, ::-1], d[:, ::-1], e.spacing)
            if a is None:
                continue
            side = "left" if side_hi == e.left_is_higher_col else "right"
            tf, to = e.truth.get(f"facet_{side}"), e.truth.get(f"foramen_{side}")
            if not side_hi:  # truth into the flipped frame
                tf = mirror_box(tf, n) if tf is not None else None
                to = mirror_box(to, n) if to is not None else None
            A.append(a)
            S.append([float(e.spacing[0]), float(e.spacing[1])])
            SH.append(s.shape)
            TF.append(tf if tf is not None else nan4)
            TO.append(to if to is not None else nan4)
            names.append((k, side))
    if not A:
        raise ValueError("no example with a non-empty dural sac mask")
    f = lambda x: np.asarray(x, dtype=float)
    return _Cases(f(A), f(S), np.asarray(SH, dtype=int), f(TF), f(TO), names)


def _iou_rows(b: np.ndarray, t: np.ndarray) -> np.ndarray:
    """Row-wise IoU; NaN where the truth row is NaN."""
    h = np.clip(np.minimum(b[:, 2], t[:, 2]) - np.maximum(b[:, 0], t[:, 0]), 0, None)
    w = np.clip(np.minimum(b[:, 3], t[:, 3]) - np.maximum(b[:, 1], t[:, 1]), 0, None)
    inter = h * w
    ab = (b[:, 2] - b[:, 0]) * (b[:, 3] - b[:, 1])
    at = (t[:, 2] - t[:, 0]) * (t[:, 3] - t[:, 1])
    union = ab + at - inter
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(union > 0, inter / union, 0.0) + 0 * t[:, 0]


def _mean_iou(c: _Cases, cfg: BoxRuleConfig) -> dict[str, float]:
    p = np.repeat(_params(cfg)[None], len(c.anchors), 0)
    fac, fora = _high_side(c.anchors, p, c.spacing, c.shape)
    out = {}
    for key, b, t in (("facet", fac, c.truth_facet), ("foramen", fora, c.truth_foramen)):
        v = _iou_rows(b.astype(float), t)
        out[key] = float(np.nanmean(v)) if np.isfinite(v).any() else float("nan")
    return out


def evaluate_box_rule(examples: Iterable, config: BoxRuleConfig | None = None) -> dict[str, float]:
    """Mean IoU of the rule's boxes against the examples' truth, ``{"facet", "foramen"}`` (both
    sides pooled; missing truth boxes and empty sac masks are left out)."""
    return _mean_iou(_cases(examples), config or BoxRuleConfig())


def fit_box_rule(examples: Iterable, base: BoxRuleConfig | None = None,
                 offsets_mm: Sequence[float] = tuple(np.arange(-12.0, 12.01, 2.0)),
                 fine_step_mm: float = 0.5, sizes_mm: Sequence[float] | None = None) -> BoxRuleConfig:
    """Tune the rule's offsets to maximise mean IoU against ground-truth boxes.

    For the facet boxes (top and medial offsets) and, separately, the foramen boxes (centre and
    medial offsets): a grid search over ``base offset + offsets_mm`` for both offsets, then a
    finer search (``fine_step_mm``, +-one coarse step) around the best. ``sizes_mm``, if given,
    also tries square box sizes (the same candidates for both box types). The truth boxes come from
    the annotation (e.g. the phantom's anatomy), not from this rule.
    """
    base = base or BoxRuleConfig()
    c = _cases(examples)
    offs = np.asarray(offsets_mm, dtype=float)
    coarse = float(np.min(np.diff(np.sort(offs)))) if offs.size > 1 else 2.0
    cfg = base
    specs = {
        "facet": ("facet_top_offset_mm", "facet_medial_offset_mm", "facet_size_mm"),
        "foramen": ("foramen_center_offset_mm", "foramen_medial_offset_mm", "foramen_size_mm"),
    }
    for key, (fa, fb, fs) in specs.items():
        if not np.isfinite(getattr(c, f"truth_{key}")).any():
            continue
        sizes = [getattr(cfg, fs)] if sizes_mm is None else [(float(s), float(s)) for s in sizes_mm]

        def search(cands_a, cands_b, sizes, cfg=cfg, fa=fa, fb=fb, fs=fs, key=key):
            best, best_v = None, -1.0
            for sz, a, b in itertools.product(sizes, cands_a, cands_b):
                trial = replace(cfg, **{fa: float(a), fb: float(b), fs: sz})
                v = _mean_iou(c, trial)[key]
                if v > best_v + 1e-12:
                    best, best_v = trial, v
            return best

        b1 = search(getattr(base, fa) + offs, getattr(base, fb) + offs, sizes)
        fine = np.arange(-coarse, coarse + 1e-9, fine_step_mm)
        b2 = search(getattr(b1, fa) + fine, getattr(b1, fb) + fine, [getattr(b1, fs)], cfg=b1)
        cfg = replace(cfg, **{fa: getattr(b2, fa), fb: getattr(b2, fb), fs: getattr(b2, fs)})
    return cfg
