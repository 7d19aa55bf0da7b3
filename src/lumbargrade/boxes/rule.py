"""Facet and foramen boxes from the dural sac and disc masks, by geometric rules in mm.

Two rules (``BoxRuleConfig.mode``), both pure functions of the masks and the pixel spacing, every
distance in mm (see ``docs/measurements.md``). Masks are first reduced to their largest
8-connected component.

``mode="fitted"`` (the default): a linear landmark rule. For each side, in a patient-oriented frame
(AP = rows, posterior positive; lateral = columns, positive away from the midline; the low-column
side is computed on the left-right flipped masks and mirrored back, so the rule is exactly
mirror-symmetric and one set of coefficients serves both sides), a handful of landmarks are
measured relative to the dural sac's centroid (:data:`FEATURES`). Each box's centre (AP, lateral)
and size (height along AP, width) in mm is ``intercept + sum(coef * landmark)`` over a few named
landmarks; the coefficients (``BoxRuleConfig.coefficients``) are fitted by least squares on
training examples (truth masks -> truth boxes) by :func:`fit_box_rule`. The default coefficients
were fitted that way on the phantom; they are data (``fitted_rule.json``), not code.

``mode="paper"`` (:meth:`BoxRuleConfig.paper`): Bharadwaj et al. 2023, "36 mm x 36 mm bounding
boxes originating from the top-most point of the predicted dural sac, with the centroid
partitioning the image into left and right" (facets); "a similar approach" for the foramina:

* facet box (each side): ``facet_size_mm = (height, width)``, default 36 x 36. Its top edge is at
  the sac's top-most edge ``+ facet_top_offset_mm`` (positive = posterior), its medial edge at the
  centroid column shifted laterally by ``facet_medial_offset_mm``;
* foramen box (each side): ``foramen_size_mm`` (36 x 36), centred vertically half-way between the
  disc's posterior edge and the sac centroid ``+ foramen_center_offset_mm``; medial edge at the
  centroid column shifted laterally by ``foramen_medial_offset_mm`` (9 mm).

Boxes are ``[row0, col0, row1, col1]`` pixel bounds, end-exclusive, each edge rounded to the
nearest pixel edge and clipped to the image.

Masks are in the slice's canonical view (:mod:`lumbargrade.io.orientation`: anterior at the
top, the patient's left at higher columns), so the higher-column boxes are the patient's
``*_left``; the caller puts a slice stored any other way into that view first.
"""

from __future__ import annotations

import functools
import itertools
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import asdict, dataclass, field, replace

import numpy as np

__all__ = [
    "BOX_LABELS",
    "BOX_NAMES",
    "default_coefficients",
    "default_feature_means",
    "DEFAULT_FEATURE_SETS",
    "FEATURES",
    "BoxExample",
    "BoxRuleConfig",
    "box_iou",
    "box_landmarks",
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
BOX_KINDS = ("facet", "foramen")
QUANTITIES = ("centre_ap", "centre_lat", "height", "width")

#: Landmarks of the fitted rule, mm, measured on one side in the patient-oriented frame relative to
#: the sac's centroid (AP: + posterior; lateral: + away from the midline, i.e. towards this side).
FEATURES = {
    "sac_top": "AP position of the sac's anterior-most edge (negative)",
    "sac_bottom": "AP position of the sac's posterior-most edge",
    "sac_half_width": "lateral position of the sac's outer edge on this side",
    "sac_corner_ap": "AP position of the sac's posterolateral corner on this side",
    "sac_corner_lat": "lateral position of the sac's posterolateral corner on this side",
    "disc_post": "AP position of the disc's posterior-most edge",
    "disc_ant": "AP position of the disc's anterior-most edge (negative)",
    "disc_half_width": "lateral position of the disc's outer edge on this side",
    "corner_ap": "AP position of the disc's posterolateral corner on this side",
    "corner_lat": "lateral position of the disc's posterolateral corner on this side",
}
_FIDX = {k: i for i, k in enumerate(FEATURES)}
_DISC_FEATURES = ("disc_post", "disc_ant", "disc_half_width", "corner_ap", "corner_lat")

#: which landmarks each quantity of the fitted rule uses (the same for both box kinds): all eight;
#: they are strongly correlated (sac extents with each other, disc width with the corner's lateral
#: position), hence the small ridge in :func:`fit_box_rule`
DEFAULT_FEATURE_SETS = {q: tuple(FEATURES) for q in ("centre_ap", "centre_lat", "height", "width")}

Box = list[int]


#: The default coefficients of the fitted rule and the landmark means: data, not design, in
#: ``fitted_rule.json`` beside this module (how they were fitted is recorded there); refit with
#: ``lumbargrade train boxes`` for a new phantom version or your own data.
_DEFAULT_FILE = "fitted_rule.json"


@functools.lru_cache(maxsize=1)
def _default_fitted() -> dict:
    import json
    from importlib import resources

    return json.loads(resources.files(__package__).joinpath(_DEFAULT_FILE).read_text())


def default_coefficients() -> dict:
    """A copy of the shipped fitted-rule coefficients (``fitted_rule.json``)."""
    return _copy_coefs(_default_fitted()["coefficients"])


def default_feature_means() -> dict:
    """A copy of the landmark means that stand in for an empty disc mask (``fitted_rule.json``)."""
    return {k: float(v) for k, v in _default_fitted()["feature_means"].items()}


@dataclass(frozen=True)
class BoxRuleConfig:
    """Parameters of the box rule, all in mm.

    ``mode="fitted"``: ``coefficients[kind][quantity] = {"intercept": mm, landmark: coef, ...}``
    for kind in ``facet``/``foramen`` and quantity in ``centre_ap``, ``centre_lat``, ``height``,
    ``width``; ``feature_means`` stand in for the disc landmarks when the disc mask is empty.
    ``mode="paper"``: the offset rule; sizes are ``(height along AP, width)``.
    """

    mode: str = "fitted"
    coefficients: Mapping = field(default_factory=default_coefficients)
    feature_means: Mapping = field(default_factory=default_feature_means)
    facet_size_mm: tuple[float, float] = (36.0, 36.0)
    facet_top_offset_mm: float = 0.0
    facet_medial_offset_mm: float = 0.0
    foramen_size_mm: tuple[float, float] = (36.0, 36.0)
    foramen_center_offset_mm: float = 0.0
    foramen_medial_offset_mm: float = 9.0
    # the image localiser's boxes combined with this rule's, per box kind and edge
    # (lumbargrade.boxes.calibration); empty: the regions' bounding boxes as they are
    image_calibration: Mapping = field(default_factory=dict)

    def __post_init__(self):
        if self.mode not in ("fitted", "paper"):
            raise ValueError(f"box-rule mode must be 'fitted' or 'paper', got {self.mode!r}")
        if self.mode == "fitted":
            _check_coefs(self.coefficients)
        if self.image_calibration:
            from .calibration import check_calibration

            check_calibration(self.image_calibration)

    @classmethod
    def paper(cls, size_mm: float = 36.0) -> BoxRuleConfig:
        """The paper's rule: ``size_mm`` square boxes from the sac's top-most point (facets) and
        at the disc's posterior edge (foramina), the sac centroid splitting left from right."""
        s = (float(size_mm), float(size_mm))
        return cls(mode="paper", coefficients={}, feature_means={}, facet_size_mm=s, foramen_size_mm=s)

    def to_dict(self) -> dict:
        d = asdict(self)
        d["facet_size_mm"] = list(self.facet_size_mm)
        d["foramen_size_mm"] = list(self.foramen_size_mm)
        d["coefficients"] = _copy_coefs(self.coefficients)
        d["feature_means"] = {k: float(v) for k, v in self.feature_means.items()}
        d["image_calibration"] = json_copy(self.image_calibration)
        return d

    @classmethod
    def from_dict(cls, d: Mapping) -> BoxRuleConfig:
        """From :meth:`to_dict`'s output. A dict without ``mode`` (older box_rule.json files, which
        hold only the offsets) is the offset (paper-mode) rule."""
        unknown = set(d) - set(cls.__dataclass_fields__)
        if unknown:
            raise ValueError(f"unknown box-rule parameter(s): {sorted(unknown)}")
        kw = {k: d[k] for k in cls.__dataclass_fields__ if k in d}
        kw.setdefault("mode", "paper")
        for k in ("facet_size_mm", "foramen_size_mm"):
            if k in kw:
                v = kw[k]
                kw[k] = (float(v), float(v)) if np.isscalar(v) else (float(v[0]), float(v[1]))
        if kw["mode"] == "paper":
            kw.setdefault("coefficients", {})
            kw.setdefault("feature_means", {})
        if "coefficients" in kw:
            kw["coefficients"] = _copy_coefs(kw["coefficients"])
        if "feature_means" in kw:
            kw["feature_means"] = {str(k): float(v) for k, v in kw["feature_means"].items()}
        if "image_calibration" in kw:
            kw["image_calibration"] = json_copy(kw["image_calibration"])
        return cls(**kw)

    def describe(self) -> str:
        """The rule in words (one line per box quantity), mm."""
        if self.mode == "paper":
            return (f"paper rule: facet {self.facet_size_mm[0]:g} x {self.facet_size_mm[1]:g} mm from the sac's "
                    f"top-most point; foramen {self.foramen_size_mm[0]:g} x {self.foramen_size_mm[1]:g} mm")
        lines = []
        for kind in BOX_KINDS:
            for q in QUANTITIES:
                c = self.coefficients[kind][q]
                terms = " ".join(f"{'+' if v >= 0 else '-'} {abs(v):.3f} * {k}" for k, v in c.items() if k != "intercept")
                lines.append(f"{kind}.{q} = {c['intercept']:.2f} mm {terms}".rstrip())
        return "\n".join(lines)


def json_copy(d: Mapping) -> dict:
    """A plain-dict deep copy (nested mappings; numbers as floats, lists of them as lists of floats;
    strings kept)."""
    def value(v):
        if isinstance(v, Mapping):
            return json_copy(v)
        if isinstance(v, str):
            return v
        if isinstance(v, (list, tuple)):
            return [value(x) for x in v]
        try:
            return float(v)
        except (TypeError, ValueError):
            raise ValueError(f"{v!r} is not a number") from None

    return {str(k): value(v) for k, v in (d or {}).items()}


def _copy_coefs(c: Mapping) -> dict:
    return {str(k): {str(q): {str(f): float(v) for f, v in fq.items()} for q, fq in kq.items()}
            for k, kq in c.items()}


def _check_coefs(c: Mapping) -> None:
    for kind in BOX_KINDS:
        for q in QUANTITIES:
            try:
                fq = c[kind][q]
            except (KeyError, TypeError):
                raise ValueError(f"box-rule coefficients lack {kind}.{q}") from None
            if "intercept" not in fq:
                raise ValueError(f"box-rule coefficients {kind}.{q} lack an intercept")
            bad = set(fq) - set(FEATURES) - {"intercept"}
            if bad:
                raise ValueError(f"box-rule coefficients {kind}.{q}: unknown landmark(s) {sorted(bad)}")


def box_iou(a: Sequence[float] | None, b: Sequence[float] | None) -> float:
    """IoU of two ``[row0, col0, row1, col1]`` boxes (end-exclusive); both empty -> 1, one -> 0."""
    from ..metrics import iou_boxes

    return iou_boxes(a, b)


def mirror_box(box: Sequence[int], n_cols: int) -> Box:
    """The box mirrored left-right in an image of ``n_cols`` columns."""
    r0, c0, r1, c1 = (int(v) for v in box)
    return [r0, n_cols - c1, r1, n_cols - c0]



# --------------------------------------------------------------------------- paper rule
def _anchors(sac: np.ndarray, disc: np.ndarray, spacing) -> np.ndarray | None:
    """``[top, cen_r, cen_c, disc_post]`` in edge mm (image top-left corner = 0), or None."""
    from ..measurements import largest_component

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


# --------------------------------------------------------------------------- fitted rule
def _corner(y: np.ndarray, x: np.ndarray, band_mm: float) -> tuple[float, float]:
    """Posterolateral corner of a pixel set (centres ``y`` AP, ``x`` lateral, mm): the mean position
    of the pixels within ``band_mm`` of the extreme of ``y + x`` (the 45-degree diagonal)."""
    t = y + x
    sel = t >= t.max() - band_mm
    return float(y[sel].mean()), float(x[sel].mean())


def _side_landmarks(s: np.ndarray, d: np.ndarray, spacing, means: Mapping) -> tuple | None:
    """``(cen_r, cen_c, features (F,))`` for the high-column side; image mm (edge-based); None if
    the sac is empty. ``s``, ``d`` are already largest components."""
    if not s.any():
        return None
    rm, cm = float(spacing[0]), float(spacing[1])
    rs, cs = np.nonzero(s)
    cr = (rs.mean() + 0.5) * rm
    cc = (cs.mean() + 0.5) * cm
    f = np.full(len(FEATURES), np.nan)
    f[_FIDX["sac_top"]] = rs.min() * rm - cr
    f[_FIDX["sac_bottom"]] = (rs.max() + 1) * rm - cr
    f[_FIDX["sac_half_width"]] = (cs.max() + 1) * cm - cc
    f[_FIDX["sac_corner_ap"]], f[_FIDX["sac_corner_lat"]] = _corner((rs + 0.5) * rm - cr, (cs + 0.5) * cm - cc, 1.0)
    if d.any():
        rd, cd = np.nonzero(d)
        f[_FIDX["disc_post"]] = (rd.max() + 1) * rm - cr
        f[_FIDX["disc_ant"]] = rd.min() * rm - cr
        f[_FIDX["disc_half_width"]] = (cd.max() + 1) * cm - cc
        f[_FIDX["corner_ap"]], f[_FIDX["corner_lat"]] = _corner((rd + 0.5) * rm - cr, (cd + 0.5) * cm - cc, 2.0)
    else:
        for k in _DISC_FEATURES:
            f[_FIDX[k]] = float(means.get(k, 0.0))
    return cr, cc, f


def box_landmarks(sac_mask: np.ndarray, disc_mask: np.ndarray | None, spacing: Sequence[float]) -> dict:
    """The fitted rule's landmarks (mm, :data:`FEATURES`) per side of the image, ``{"high_col":
    {...}, "low_col": {...}}`` (None when the sac is empty); for inspection."""
    from ..measurements import largest_component

    s, d = _check_masks(sac_mask, disc_mask, spacing)
    s, d = largest_component(s), largest_component(d)
    out = {}
    for name, (ss, dd) in (("high_col", (s, d)), ("low_col", (s[:, ::-1], d[:, ::-1]))):
        r = _side_landmarks(ss, dd, spacing, {})
        out[name] = None if r is None else {k: float(r[2][i]) for k, i in _FIDX.items()}
    return out


def _coef_matrix(coefs: Mapping, kind: str) -> np.ndarray:
    """(4, F + 1) matrix: rows = QUANTITIES, columns = intercept then FEATURES."""
    m = np.zeros((len(QUANTITIES), len(FEATURES) + 1))
    for i, q in enumerate(QUANTITIES):
        for k, v in coefs[kind][q].items():
            m[i, 0 if k == "intercept" else 1 + _FIDX[k]] = float(v)
    return m


def _edges_fitted(cen: np.ndarray, feats: np.ndarray, coefs: Mapping, kind: str) -> np.ndarray:
    """(n, 4) box edges in image mm [r0, c0, r1, c1] (high-column side); cen (n, 2) sac centroid."""
    m = _coef_matrix(coefs, kind)
    x = np.concatenate([np.ones((len(feats), 1)), feats], 1)
    ca, cl, h, w = (x @ m.T).T
    h, w = np.maximum(h, 1.0), np.maximum(w, 1.0)
    r = cen[:, 0] + ca
    c = cen[:, 1] + cl
    return np.stack([r - h / 2, c - w / 2, r + h / 2, c + w / 2], 1)


def _pixel_boxes(edges: np.ndarray, spacing: np.ndarray, shape: np.ndarray) -> np.ndarray:
    """mm edges (n, 4) -> int pixel boxes, rounded to the nearest pixel edge, clipped."""
    rm, cm = spacing.T
    rows, cols = shape.T
    b = np.stack([_round_edge(edges[:, 0], rm), _round_edge(edges[:, 1], cm),
                  _round_edge(edges[:, 2], rm), _round_edge(edges[:, 3], cm)], 1)
    b[:, 0] = np.clip(b[:, 0], 0, rows)
    b[:, 2] = np.clip(b[:, 2], b[:, 0], rows)
    b[:, 1] = np.clip(b[:, 1], 0, cols)
    b[:, 3] = np.clip(b[:, 3], b[:, 1], cols)
    return b


def _high_side_boxes(s: np.ndarray, d: np.ndarray, spacing, cfg: BoxRuleConfig) -> tuple | None:
    """(facet, foramen) int boxes of the high-column side, or None (empty sac)."""
    sp = np.array([[float(spacing[0]), float(spacing[1])]])
    shape = np.array([s.shape])
    if cfg.mode == "paper":
        a = _anchors(s, d, spacing)
        if a is None:
            return None
        fac, fora = _high_side(a[None], _params(cfg)[None], sp, shape)
        return [int(v) for v in fac[0]], [int(v) for v in fora[0]]
    r = _side_landmarks(s, d, spacing, cfg.feature_means)
    if r is None:
        return None
    cen, f = np.array([[r[0], r[1]]]), r[2][None]
    return tuple([int(v) for v in _pixel_boxes(_edges_fitted(cen, f, cfg.coefficients, k), sp, shape)[0]]
                 for k in BOX_KINDS)


def boxes_from_masks(sac_mask: np.ndarray, disc_mask: np.ndarray | None, spacing: Sequence[float],
                     config: BoxRuleConfig | None = None) -> dict[str, Box | None]:
    """Facet and foramen boxes (patient's left/right) from the masks by the geometric rule.

    Parameters
    ----------
    sac_mask, disc_mask: 2D ``[row, col]`` masks of one shape in the canonical view (``disc_mask``
        may be None).
    spacing: ``(row_mm, col_mm)``.
    config: the rule (default :class:`BoxRuleConfig`: the fitted landmark rule;
        :meth:`BoxRuleConfig.paper` for the paper's 36 mm boxes).

    Returns ``{"facet_left", "facet_right", "foramen_left", "foramen_right": [row0, col0, row1,
    col1]}`` (end-exclusive, clipped; a box clipped away entirely has zero area). All values are
    None when the sac mask is empty.
    """
    from ..measurements import largest_component

    cfg = config or BoxRuleConfig()
    s, d = _check_masks(sac_mask, disc_mask, spacing)
    s, d = largest_component(s), largest_component(d)
    hi_b = _high_side_boxes(s, d, spacing, cfg)
    if hi_b is None:
        return {k: None for k in BOX_NAMES}
    lo_b = _high_side_boxes(s[:, ::-1], d[:, ::-1], spacing, cfg)
    n = s.shape[1]
    hi = {"facet": hi_b[0], "foramen": hi_b[1]}
    lo = {"facet": mirror_box(lo_b[0], n), "foramen": mirror_box(lo_b[1], n)}
    return {"facet_left": hi["facet"], "facet_right": lo["facet"],
            "foramen_left": hi["foramen"], "foramen_right": lo["foramen"]}


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
    """One training example for :func:`fit_box_rule`: masks in the canonical view, spacing and
    ground-truth boxes (``truth[name] = [row0, col0, row1, col1]`` or None)."""

    sac_mask: np.ndarray
    disc_mask: np.ndarray
    spacing: tuple[float, float]
    truth: Mapping[str, Sequence[int] | None]


@dataclass
class _Cases:
    anchors: np.ndarray  # (n, 4) paper-rule anchors, every case in its "high side" frame
    centroid: np.ndarray  # (n, 2) sac centroid, image mm
    features: np.ndarray  # (n, F) fitted-rule landmarks; NaN disc landmarks where the disc is empty
    spacing: np.ndarray
    shape: np.ndarray
    truth_facet: np.ndarray  # (n, 4), NaN row where missing
    truth_foramen: np.ndarray
    names: list = field(default_factory=list)  # (example index, side) per case


def example_from_label_map(label_map: np.ndarray, spacing: Sequence[float],
                           truth: Mapping[str, Sequence[int] | None] | None = None) -> BoxExample:
    """A :class:`BoxExample` from a truth label map in the canonical view (1 sac, 2 disc, 3-6
    boxes): its masks and, as
    truth, ``truth`` if given (e.g. the phantom's truth.json boxes) else the bounding boxes of
    labels 3-6 (which the sac and disc may partly hide). Running the rule on such examples measures
    how well the rule can do at best (with perfect masks)."""
    lm = np.asarray(label_map)
    t = boxes_from_label_map(lm) if truth is None else {k: (list(truth[k]) if truth.get(k) is not None else None)
                                                         for k in BOX_NAMES}
    return BoxExample(lm == 1, lm == 2, (float(spacing[0]), float(spacing[1])), t)


def _as_example(e) -> BoxExample:
    if isinstance(e, BoxExample):
        return e
    if isinstance(e, Mapping):
        return BoxExample(**e)
    return BoxExample(*e)


def _cases(examples: Iterable) -> _Cases:
    from ..measurements import largest_component

    A, C, F, S, SH, TF, TO, names = [], [], [], [], [], [], [], []
    nan4 = [np.nan] * 4
    for k, e in enumerate(map(_as_example, examples)):
        s, d = _check_masks(e.sac_mask, e.disc_mask, e.spacing)
        s, d = largest_component(s), largest_component(d)
        n = s.shape[1]
        for side_hi in (True, False):
            ss, dd = (s, d) if side_hi else (s[:, ::-1], d[:, ::-1])
            a = _anchors(ss, dd, e.spacing)
            if a is None:
                continue
            cr, cc, f = _side_landmarks(ss, dd, e.spacing, {k: np.nan for k in _DISC_FEATURES})
            side = "left" if side_hi else "right"
            tf, to = e.truth.get(f"facet_{side}"), e.truth.get(f"foramen_{side}")
            if not side_hi:  # truth into the flipped frame
                tf = mirror_box(tf, n) if tf is not None else None
                to = mirror_box(to, n) if to is not None else None
            A.append(a)
            C.append([cr, cc])
            F.append(f)
            S.append([float(e.spacing[0]), float(e.spacing[1])])
            SH.append(s.shape)
            TF.append(tf if tf is not None else nan4)
            TO.append(to if to is not None else nan4)
            names.append((k, side))
    if not A:
        raise ValueError("no example with a non-empty dural sac mask")
    f = lambda x: np.asarray(x, dtype=float)
    return _Cases(f(A), f(C), f(F), f(S), np.asarray(SH, dtype=int), f(TF), f(TO), names)


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


def _case_boxes(c: _Cases, cfg: BoxRuleConfig) -> tuple[np.ndarray, np.ndarray]:
    if cfg.mode == "paper":
        p = np.repeat(_params(cfg)[None], len(c.anchors), 0)
        return _high_side(c.anchors, p, c.spacing, c.shape)
    feats = c.features.copy()
    for k in _DISC_FEATURES:
        col = feats[:, _FIDX[k]]
        col[~np.isfinite(col)] = float(cfg.feature_means.get(k, 0.0))
    return tuple(_pixel_boxes(_edges_fitted(c.centroid, feats, cfg.coefficients, k), c.spacing, c.shape)
                 for k in BOX_KINDS)


def _case_ious(c: _Cases, cfg: BoxRuleConfig) -> dict[str, np.ndarray]:
    fac, fora = _case_boxes(c, cfg)
    return {"facet": _iou_rows(fac.astype(float), c.truth_facet),
            "foramen": _iou_rows(fora.astype(float), c.truth_foramen)}


def _mean_iou(c: _Cases, cfg: BoxRuleConfig) -> dict[str, float]:
    return {k: (float(np.nanmean(v)) if np.isfinite(v).any() else float("nan"))
            for k, v in _case_ious(c, cfg).items()}


def evaluate_box_rule(examples: Iterable, config: BoxRuleConfig | None = None) -> dict[str, float]:
    """Mean IoU of the rule's boxes against the examples' truth, ``{"facet", "foramen"}`` (both
    sides pooled; missing truth boxes and empty sac masks are left out). ``config`` defaults to
    :class:`BoxRuleConfig` (the fitted default rule)."""
    return _mean_iou(_cases(examples), config or BoxRuleConfig())


def _truth_targets(c: _Cases, kind: str) -> np.ndarray:
    """(n, 4) truth [centre_ap, centre_lat, height, width] in mm relative to the sac centroid."""
    t = getattr(c, f"truth_{kind}")
    rm, cm = c.spacing.T
    r0, c0, r1, c1 = t[:, 0] * rm, t[:, 1] * cm, t[:, 2] * rm, t[:, 3] * cm
    return np.stack([(r0 + r1) / 2 - c.centroid[:, 0], (c0 + c1) / 2 - c.centroid[:, 1], r1 - r0, c1 - c0], 1)


def _lstsq(x: np.ndarray, y: np.ndarray, ridge: float) -> np.ndarray:
    """Ridge least squares on standardised columns (intercept unpenalised); raw coefficients
    ``[intercept, *coefs]``."""
    if x.shape[1] == 0:
        return np.array([float(np.mean(y))])
    mu, sd = x.mean(0), x.std(0)
    sd[sd < 1e-9] = 1.0
    z = (x - mu) / sd
    a = z.T @ z + ridge * len(z) * np.eye(z.shape[1])
    w = np.linalg.solve(a, z.T @ (y - y.mean()))
    coefs = w / sd
    return np.concatenate([[y.mean() - mu @ coefs], coefs])


def fit_box_rule(examples: Iterable, base: BoxRuleConfig | None = None,
                 offsets_mm: Sequence[float] = tuple(np.arange(-12.0, 12.01, 2.0)),
                 fine_step_mm: float = 0.5, sizes_mm: Sequence[float] | None = None,
                 feature_sets: Mapping[str, Sequence[str]] | None = None,
                 ridge: float = 1e-3) -> BoxRuleConfig:
    """Fit the box rule to ground-truth boxes (e.g. the phantom's anatomy, not this rule).

    Fitted mode (``base`` None or ``mode="fitted"``): for each box kind and each quantity
    (centre AP, centre lateral, height, width; mm, relative to the sac centroid), ridge least
    squares (``ridge`` x n on standardised landmarks, the intercept unpenalised) on the landmarks
    named in ``feature_sets[quantity]`` (default :data:`DEFAULT_FEATURE_SETS`). Both sides of every
    example are pooled in the mirrored frame; cases with an empty disc or without a truth box are
    left out. ``feature_means`` are the training means of the landmarks.

    Paper mode (``base.mode == "paper"``): tunes the offsets by grid search on mean IoU. For the
    facet boxes (top and medial offsets) and, separately, the foramen boxes (centre and medial
    offsets): ``base offset + offsets_mm`` for both, then a finer search (``fine_step_mm``, +-one
    coarse step) around the best; ``sizes_mm``, if given, also tries square box sizes.
    """
    c = _cases(examples)
    if base is not None and base.mode == "paper":
        return _fit_paper(c, base, offsets_mm, fine_step_mm, sizes_mm)
    sets = dict(DEFAULT_FEATURE_SETS)
    if feature_sets:
        sets.update({k: tuple(v) for k, v in feature_sets.items()})
    for q, fs in sets.items():
        if q not in QUANTITIES:
            raise ValueError(f"unknown box quantity {q!r}; expected one of {QUANTITIES}")
        bad = set(fs) - set(FEATURES)
        if bad:
            raise ValueError(f"unknown landmark(s) {sorted(bad)} for {q}")
    ok_disc = np.isfinite(c.features).all(1)
    means = {k: float(np.nanmean(c.features[:, i])) if np.isfinite(c.features[:, i]).any() else 0.0
             for k, i in _FIDX.items()}
    coefs: dict = {}
    for kind in BOX_KINDS:
        y = _truth_targets(c, kind)
        keep = ok_disc & np.isfinite(y).all(1)
        if not keep.any():
            raise ValueError(f"no example with a disc and a truth {kind} box to fit the box rule on")
        coefs[kind] = {}
        for qi, q in enumerate(QUANTITIES):
            idx = [_FIDX[f] for f in sets[q]]
            w = _lstsq(c.features[keep][:, idx], y[keep, qi], ridge)
            coefs[kind][q] = {"intercept": float(w[0]), **{f: float(v) for f, v in zip(sets[q], w[1:])}}
    return BoxRuleConfig(mode="fitted", coefficients=coefs, feature_means=means)


def _fit_paper(c: _Cases, base: BoxRuleConfig, offsets_mm, fine_step_mm, sizes_mm) -> BoxRuleConfig:
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
