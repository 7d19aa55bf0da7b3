"""Classifier patches: fixed-size, fixed-spacing crops of an axial slice around the structures.

Pure numpy / scipy. Conventions (see ``docs/architecture.md``):

* images are ``[row, col]``; ``spacing = (row_spacing, col_spacing)`` in mm;
* boxes are ``[row0, col0, row1, col1]`` pixel bounds, end-exclusive;
* slices come in their canonical view (:mod:`lumbargrade.io.orientation`: the radiological
  display, the patient's **left** at larger column indices, anterior at the top). A *left* patch
  is mirrored left-right, so that every lateral patch looks like a right-side patch and one
  network serves both sides.

A patch of ``out_px`` pixels spans ``size_mm``; its output pixel spacing is ``size_mm / out_px``.
Output pixel ``i`` has its centre at ``(i + 0.5 - out_px / 2) * out_spacing`` mm from the patch
centre, so the patch centre maps exactly onto ``centre_rc``.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field

import numpy as np

__all__ = [
    "LATERAL_FINDINGS",
    "PatchConfig",
    "box_centre",
    "box_size_mm",
    "central_patch",
    "extract_patch",
    "lateral_patch",
    "level_patches",
    "mirror_boxes",
    "normalise_context",
    "normalise_slice",
    "sac_centroid",
]

#: lateral findings, in report order; "left" / "right" are the patient's.
from .names import LATERAL_FINDINGS


@dataclass
class PatchConfig:
    """How patches are cut.

    patch_px: output size in pixels (square patches).
    central_mm: side of the central canal patch in mm, centred on the dural sac centroid.
    lateral_mm: side of the foramen / facet patches in mm; ``None`` means the box's larger side
        plus ``2 * lateral_margin_mm``.
    lateral_margin_mm: margin added on each side of a box when ``lateral_mm`` is None.
    percentiles: robust intensity range of the whole slice mapped to [0, 1].
    """

    patch_px: int = 64
    central_mm: float = 40.0
    lateral_mm: float | None = None
    lateral_margin_mm: float = 4.0
    percentiles: tuple[float, float] = field(default=(1.0, 99.0))

    @classmethod
    def from_dict(cls, d: Mapping) -> PatchConfig:
        keys = cls.__dataclass_fields__.keys()
        kw = {k: d[k] for k in keys if k in d}
        if "percentiles" in kw:
            kw["percentiles"] = tuple(float(v) for v in kw["percentiles"])
        return cls(**kw)

    def to_dict(self) -> dict:
        d = asdict(self)
        d["percentiles"] = list(d["percentiles"])
        return d


def normalise_slice(image: np.ndarray, percentiles: Sequence[float] = (1.0, 99.0)) -> np.ndarray:
    """Map the slice's robust intensity range (percentiles over all pixels) to [0, 1].

    Values outside the range are kept (not clipped). Returns float32 ``[rows, cols]``.
    """
    img = np.asarray(image, dtype=np.float32)
    if img.ndim != 2:
        raise ValueError(f"expected a 2D image, got shape {img.shape}")
    lo, scale = _robust_range(img, percentiles)
    return ((img - np.float32(lo)) / np.float32(scale)).astype(np.float32)


def _robust_range(img: np.ndarray, percentiles: Sequence[float]) -> tuple[float, float]:
    """(low, width) of ``img``'s robust intensity range; (0, max |img|) for a flat image."""
    lo, hi = np.percentile(img, [float(percentiles[0]), float(percentiles[1])])
    scale = float(hi - lo)
    if not np.isfinite(scale) or scale <= 1e-12:
        return 0.0, float(np.abs(img).max()) or 1.0
    return float(lo), scale


def normalise_context(image: np.ndarray, caudal: np.ndarray | None, cranial: np.ndarray | None,
                      percentiles: Sequence[float] = (1.0, 99.0)) -> np.ndarray:
    """A context stack ``[3, rows, cols]`` (caudal, graded, cranial; see
    :mod:`lumbargrade.grading.context`), every channel mapped by the graded slice's robust range
    (:func:`normalise_slice`) so the channels keep their relative brightness."""
    from .context import stack_context

    st = stack_context(image, caudal, cranial)
    lo, scale = _robust_range(st[1], percentiles)
    return ((st - np.float32(lo)) / np.float32(scale)).astype(np.float32)


def _pair(v, name: str) -> tuple[float, float]:
    if np.ndim(v) == 0:
        return float(v), float(v)
    if len(v) != 2:
        raise ValueError(f"{name} must be a number or a pair")
    return float(v[0]), float(v[1])


def extract_patch(
    image: np.ndarray,
    spacing: Sequence[float],
    centre_rc: Sequence[float],
    size_mm: float | Sequence[float],
    out_px: int | Sequence[int],
    mirror: bool = False,
    *,
    antialias: bool = True,
    fill: float = 0.0,
) -> np.ndarray:
    """Resample a patch of ``size_mm`` (rows, cols) mm centred at ``centre_rc`` (pixels).

    Bilinear interpolation (``scipy.ndimage.map_coordinates``, order 1); pixels outside the
    image are ``fill``. With ``antialias``, when the patch spacing is coarser than the image's,
    the needed region is first smoothed with a Gaussian of sigma ``0.5 * (ratio - 1)`` pixels
    (per axis). ``mirror`` flips the patch left-right (columns) after sampling.

    Returns float32 ``[out_rows, out_cols]``; a stack ``[c, rows, cols]`` (a context stack,
    :func:`normalise_context`) gives ``[c, out_rows, out_cols]``, every channel cut alike.
    """
    from scipy import ndimage

    img = np.asarray(image, dtype=np.float32)
    if img.ndim == 3:
        return np.stack([extract_patch(ch, spacing, centre_rc, size_mm, out_px, mirror, antialias=antialias, fill=fill)
                         for ch in img])
    if img.ndim != 2:
        raise ValueError(f"expected a 2D image, got shape {img.shape}")
    sr, sc = _pair(spacing, "spacing")
    hr, hc = _pair(size_mm, "size_mm")
    nr, nc = (int(v) for v in _pair(out_px, "out_px"))
    if min(sr, sc, hr, hc) <= 0 or min(nr, nc) <= 0:
        raise ValueError("spacing, size_mm and out_px must be positive")
    cr, cc = float(centre_rc[0]), float(centre_rc[1])
    osr, osc = hr / nr, hc / nc  # output spacing, mm
    # sample positions in input pixel coordinates
    rr = cr + (np.arange(nr) + 0.5 - nr / 2.0) * (osr / sr)
    cols = cc + (np.arange(nc) + 0.5 - nc / 2.0) * (osc / sc)
    sig_r = 0.5 * (osr / sr - 1.0) if antialias else 0.0
    sig_c = 0.5 * (osc / sc - 1.0) if antialias else 0.0
    sig_r, sig_c = max(sig_r, 0.0), max(sig_c, 0.0)
    # crop the region needed (plus a margin for the filter and interpolation)
    mr, mc = int(np.ceil(4 * sig_r)) + 2, int(np.ceil(4 * sig_c)) + 2
    r0 = max(int(np.floor(rr.min())) - mr, 0)
    r1 = min(int(np.ceil(rr.max())) + mr + 1, img.shape[0])
    c0 = max(int(np.floor(cols.min())) - mc, 0)
    c1 = min(int(np.ceil(cols.max())) + mc + 1, img.shape[1])
    if r1 <= r0 or c1 <= c0:  # entirely outside the image
        out = np.full((nr, nc), fill, dtype=np.float32)
        return out
    crop = img[r0:r1, c0:c1]
    if sig_r > 0.05 or sig_c > 0.05:
        crop = ndimage.gaussian_filter(crop, (sig_r, sig_c), mode="nearest")
    grid_r, grid_c = np.meshgrid(rr - r0, cols - c0, indexing="ij")
    # inside the image, but beyond the crop because of clamping: only at image borders, where
    # "constant" gives fill just as it would on the whole image (crop edges = image edges there).
    out = ndimage.map_coordinates(crop, [grid_r, grid_c], order=1, mode="constant", cval=fill)
    out = out.astype(np.float32)
    if mirror:
        out = out[:, ::-1].copy()
    return out


def box_centre(box: Sequence[float]) -> tuple[float, float]:
    """Centre (row, col) in pixel coordinates of an end-exclusive box ``[r0, c0, r1, c1]``."""
    r0, c0, r1, c1 = (float(v) for v in box)
    return (r0 + r1 - 1.0) / 2.0, (c0 + c1 - 1.0) / 2.0


def box_size_mm(box: Sequence[float], spacing: Sequence[float]) -> tuple[float, float]:
    """(height, width) in mm of an end-exclusive box ``[r0, c0, r1, c1]``."""
    r0, c0, r1, c1 = (float(v) for v in box)
    return (r1 - r0) * float(spacing[0]), (c1 - c0) * float(spacing[1])


def mirror_boxes(boxes: Mapping[str, Sequence[float]], columns: int) -> dict[str, list[float]]:
    """Boxes of the left-right mirrored image (``image[:, ::-1]``), sides swapped accordingly."""
    out = {}
    for name, b in boxes.items():
        if b is None:
            continue
        r0, c0, r1, c1 = b
        other = name.replace("_left", "_tmp").replace("_right", "_left").replace("_tmp", "_right")
        out[other] = [r0, columns - c1, r1, columns - c0]
    return out


def sac_centroid(sac_mask: np.ndarray) -> tuple[float, float]:
    """Centroid (row, col) in pixels of a binary dural sac mask; ValueError when empty."""
    m = np.asarray(sac_mask) > 0
    if not m.any():
        raise ValueError("the dural sac mask is empty")
    rows, cols = np.nonzero(m)
    return float(rows.mean()), float(cols.mean())


def central_patch(norm_image: np.ndarray, spacing, sac_mask: np.ndarray, cfg: PatchConfig) -> np.ndarray:
    """Central canal patch: ``central_mm`` square on the dural sac centroid (normalised canonical
    slice in)."""
    return extract_patch(norm_image, spacing, sac_centroid(sac_mask), cfg.central_mm, cfg.patch_px)


def lateral_patch(norm_image: np.ndarray, spacing, box, name: str, cfg: PatchConfig) -> np.ndarray:
    """Foramen / facet patch centred on ``box``, shown as a right-side patch: a patient-left patch
    (``name`` ending in ``_left``) is mirrored left-right."""
    if cfg.lateral_mm is not None:
        size = float(cfg.lateral_mm)
    else:
        size = max(box_size_mm(box, spacing)) + 2.0 * float(cfg.lateral_margin_mm)
    p = extract_patch(norm_image, spacing, box_centre(box), size, cfg.patch_px)
    return np.ascontiguousarray(p[..., ::-1]) if name.endswith("_left") else p


def level_patches(
    image: np.ndarray,
    spacing: Sequence[float],
    sac_mask: np.ndarray | None,
    boxes: Mapping[str, Sequence[float] | None] | None,
    cfg: PatchConfig | None = None,
    *,
    normalised: bool = False,
    which: Sequence[str] | None = None,
) -> dict[str, np.ndarray]:
    """All patches of one level (canonical view): ``"central"`` plus each lateral finding that has
    a box.

    The slice is normalised once (robust percentiles of the whole slice) before cutting, unless
    ``normalised`` says it already is. Left patches come back mirrored. ``which`` limits the
    patches cut (names among ``"central"`` and :data:`LATERAL_FINDINGS`). A normalised context
    stack ``[c, rows, cols]`` (:func:`normalise_context`) gives patches ``[c, h, w]``, every
    channel cut at the same place.
    """
    cfg = cfg or PatchConfig()
    norm = np.asarray(image, np.float32) if normalised else normalise_slice(image, cfg.percentiles)
    out: dict[str, np.ndarray] = {}
    wanted = set(which) if which is not None else {"central", *LATERAL_FINDINGS}
    if "central" in wanted and sac_mask is not None and np.any(sac_mask):
        out["central"] = central_patch(norm, spacing, sac_mask, cfg)
    for name in LATERAL_FINDINGS:
        box = (boxes or {}).get(name) if name in wanted else None
        if box is None:
            continue
        r0, c0, r1, c1 = box
        if r1 <= r0 or c1 <= c0:
            continue
        out[name] = lateral_patch(norm, spacing, box, name, cfg)
    return out
