"""Pictures for the report: pure drawing on arrays (no file access).

* :func:`axial_overlay`: the axial slice, windowed by percentiles, with the outlines of the dural
  sac and disc masks and the four facet / foramen boxes, labelled with the patient's side.
* :func:`sagittal_overlay`: the mid-sagittal slice shown head-up, anterior left, with the disc
  landmarks and the lines where the chosen axial slices cut it (:func:`axial_line_on_sagittal`).

Images are ``[row, col]`` arrays; geometry is :class:`lumbargrade.geometry.SliceGeometry` (LPS mm).
Returned pictures are ``PIL.Image`` (RGB), enlarged by an integer factor for legibility.
"""

from __future__ import annotations

import functools
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

__all__ = [
    "COLORS",
    "axial_line_on_sagittal",
    "axial_overlay",
    "crop_window",
    "outline",
    "png_bytes",
    "to_palette",
    "sagittal_overlay",
    "window",
]

#: RGB colours of the drawn structures.
COLORS = {
    "dural_sac": (0, 220, 255),
    "disc": (255, 210, 0),
    "facet": (255, 70, 70),
    "foramen": (60, 230, 90),
    "landmark": (255, 60, 200),
    "line": (255, 160, 0),
    "line_other": (140, 140, 140),
}


def window(image: np.ndarray, low_pct: float = 1.0, high_pct: float = 99.0) -> np.ndarray:
    """uint8 ``[row, col]``: ``image`` linearly mapped so its ``low_pct`` / ``high_pct`` percentiles
    become 0 / 255 (a flat image gives 0)."""
    a = np.asarray(image, dtype=np.float64)
    finite = a[np.isfinite(a)]
    if finite.size == 0:
        return np.zeros(a.shape, np.uint8)
    lo, hi = np.percentile(finite, [low_pct, high_pct])
    if not hi > lo:
        return np.zeros(a.shape, np.uint8)
    out = np.clip((np.nan_to_num(a, nan=lo) - lo) / (hi - lo), 0.0, 1.0)
    return np.round(out * 255).astype(np.uint8)


def outline(mask: np.ndarray) -> np.ndarray:
    """Boolean ``[row, col]``: the mask's pixels that touch the background (4-neighbourhood)."""
    m = np.asarray(mask, dtype=bool)
    p = np.pad(m, 1, constant_values=False)
    inner = p[1:-1, 1:-1] & p[:-2, 1:-1] & p[2:, 1:-1] & p[1:-1, :-2] & p[1:-1, 2:]
    return m & ~inner


def _scale_for(shape: Sequence[int], target: int) -> int:
    return max(1, int(round(target / max(1, max(shape)))))


@functools.lru_cache(maxsize=16)
def _font(size: int) -> Any:
    """Pillow's default font at ``size`` (cached: loading it costs more than drawing with it)."""
    from PIL import ImageFont

    try:
        return ImageFont.load_default(size=size)
    except TypeError:  # Pillow < 10.1
        return ImageFont.load_default()


def _text(
    draw: Any, xy: tuple[float, float], text: str, fill: tuple[int, int, int], size: int
) -> None:
    """Text with a dark halo, readable on any background."""
    draw.text(xy, text, fill=fill, font=_font(size), stroke_width=1, stroke_fill=(0, 0, 0))


def _enlarge(gray: np.ndarray, k: int) -> Any:
    from PIL import Image

    img = Image.fromarray(gray, mode="L")
    if k > 1:
        img = img.resize((gray.shape[1] * k, gray.shape[0] * k), Image.BILINEAR)
    return img.convert("RGB")


def _paint_outline(rgb: np.ndarray, mask: np.ndarray, k: int, color: tuple[int, int, int]) -> None:
    """Paint the outline of ``mask`` (original pixels) on the enlarged ``rgb`` in place."""
    if mask is None or not np.asarray(mask).any():
        return
    big = np.kron(np.asarray(mask, dtype=np.uint8), np.ones((k, k), np.uint8)).astype(bool)
    edge = outline(big)
    if k >= 2:  # thicken to 2 px
        edge = edge | outline(big & ~edge)
    rgb[edge] = color


def crop_window(
    shape: Sequence[int],
    masks: Sequence[np.ndarray | None],
    boxes: Mapping[str, Sequence[int] | None] | None,
    margin: float = 0.12,
) -> tuple[int, int, int, int]:
    """A square-ish ``(row0, row1, col0, col1)`` window (end-exclusive) around the masks and boxes
    with a margin of ``margin`` x the image size; the whole image when there is nothing to frame."""
    h, w = int(shape[0]), int(shape[1])
    rs, cs = [], []
    for m in masks:
        if m is not None and np.asarray(m).any():
            rr, cc = np.nonzero(m)
            rs += [rr.min(), rr.max() + 1]
            cs += [cc.min(), cc.max() + 1]
    for b in (boxes or {}).values():
        if b and b[2] > b[0] and b[3] > b[1]:
            rs += [b[0], b[2]]
            cs += [b[1], b[3]]
    if not rs:
        return 0, h, 0, w
    pad = max(8, int(round(margin * max(h, w))))
    side = max(max(rs) - min(rs), max(cs) - min(cs)) + 2 * pad
    cr, cc = (min(rs) + max(rs)) / 2, (min(cs) + max(cs)) / 2
    r0 = int(np.clip(round(cr - side / 2), 0, max(0, h - side)))
    c0 = int(np.clip(round(cc - side / 2), 0, max(0, w - side)))
    return r0, min(h, r0 + side), c0, min(w, c0 + side)


def axial_overlay(
    image: np.ndarray,
    sac_mask: np.ndarray | None,
    disc_mask: np.ndarray | None,
    boxes: Mapping[str, Sequence[int] | None] | None,
    target_px: int = 512,
    title: str | None = None,
    zoom: bool = True,
    regions: np.ndarray | None = None,
) -> Any:
    """The axial slice, in its canonical view (radiological display: the patient's left on the
    image's right, marked ``L``), with mask outlines and boxes (and the facet / foramen regions'
    outlines).

    Parameters
    ----------
    image: float ``[rows, cols]`` slice.
    sac_mask, disc_mask: boolean ``[rows, cols]`` (None: not drawn).
    boxes: ``{"facet_left": [row0, col0, row1, col1], ...}`` end-exclusive pixel bounds.
    target_px: approximate size of the longer side of the picture.
    zoom: show only a window around the masks and boxes (:func:`crop_window`); the window is
        windowed (grey levels) on its own pixels.
    regions: uint8 ``[rows, cols]`` facet / foramen regions (3-6) drawn as thin outlines.
    """
    from PIL import Image, ImageDraw

    img = np.asarray(image)
    r0, r1, c0, c1 = (
        crop_window(img.shape, [sac_mask, disc_mask], boxes)
        if zoom
        else (0, img.shape[0], 0, img.shape[1])
    )
    img = img[r0:r1, c0:c1]
    sac = None if sac_mask is None else np.asarray(sac_mask)[r0:r1, c0:c1]
    disc = None if disc_mask is None else np.asarray(disc_mask)[r0:r1, c0:c1]
    k = _scale_for(img.shape, target_px)
    rgb = np.asarray(_enlarge(window(img), k)).copy()
    if regions is not None:
        reg = np.asarray(regions)[r0:r1, c0:c1]
        for values, color in (((3, 4), COLORS["facet"]), ((5, 6), COLORS["foramen"])):
            for v in values:
                if (reg == v).any():
                    _paint_outline(rgb, reg == v, k, tuple(int(0.6 * c) for c in color))
    _paint_outline(rgb, disc, k, COLORS["disc"])
    _paint_outline(rgb, sac, k, COLORS["dural_sac"])
    pic = Image.fromarray(rgb)
    draw = ImageDraw.Draw(pic)
    fs = max(11, int(round(pic.width / 34)))
    for name, box in (boxes or {}).items():
        if not box:
            continue
        br0, bc0, br1, bc1 = (int(v) - o for v, o in zip(box, (r0, c0, r0, c0)))
        if br1 <= br0 or bc1 <= bc0:
            continue
        kind, _, side = name.partition("_")
        color = COLORS.get(kind, (255, 255, 255))
        draw.rectangle(
            [bc0 * k, br0 * k, bc1 * k - 1, br1 * k - 1], outline=color, width=max(2, k // 2)
        )
        label = ("L " if side == "left" else "R ") + kind
        # foramen labels above their box, facet labels below (they sit one above the other)
        y = br0 * k - fs - 3 if kind == "foramen" else br1 * k + 2
        _text(draw, (bc0 * k + 2, min(max(y, 0), pic.height - fs - 2)), label, color, fs)
    left_x, right_x = pic.width - fs - 4, 4
    _text(draw, (left_x, pic.height / 2 - fs / 2), "L", (255, 255, 255), fs + 2)
    _text(draw, (right_x, pic.height / 2 - fs / 2), "R", (255, 255, 255), fs + 2)
    if title:
        _text(draw, (4, 4), title, (255, 255, 255), fs + 2)
    return pic


def axial_line_on_sagittal(
    sagittal: Any, axial: Any, n: int = 400
) -> tuple[np.ndarray, np.ndarray] | None:
    """Where the axial slice's plane cuts the sagittal slice, within both fields of view.

    ``sagittal``, ``axial``: :class:`~lumbargrade.geometry.SliceGeometry`. Returns the two end
    points ``[row, col]`` (sagittal pixels, floats) or None when the planes do not meet inside
    both images (parallel planes, or the cut lies outside the axial field of view).
    """
    s = sagittal
    nrm = np.asarray(axial.normal, float)
    a = s.pixel_spacing[0] * float(nrm @ s.col_cosine)  # per row
    b = s.pixel_spacing[1] * float(nrm @ s.row_cosine)  # per col
    d = float(nrm @ (np.asarray(s.position, float) - np.asarray(axial.position, float)))
    if abs(a) < 1e-9 and abs(b) < 1e-9:
        return None
    # sample the line a*r + b*c + d = 0 across the sagittal image
    if abs(a) >= abs(b):
        cols = np.linspace(-0.5, s.columns - 0.5, n)
        rows = -(d + b * cols) / a
    else:
        rows = np.linspace(-0.5, s.rows - 0.5, n)
        cols = -(d + a * rows) / b
    rc = np.stack([rows, cols], axis=1)
    inside = (rows >= -0.5) & (rows <= s.rows - 0.5) & (cols >= -0.5) & (cols <= s.columns - 0.5)
    if inside.any():
        p = s.pixel_to_patient(rc[inside])
        rcd = axial.patient_to_pixel(p)
        ok = (
            (rcd[:, 0] >= -0.5)
            & (rcd[:, 0] <= axial.rows - 0.5)
            & (rcd[:, 1] >= -0.5)
            & (rcd[:, 1] <= axial.columns - 0.5)
        )
        pts = rc[inside][ok]
        if len(pts) >= 2:
            return pts[0], pts[-1]
    return None


def _display_points(
    rc: np.ndarray, shape: tuple[int, int], t: tuple[bool, bool, bool]
) -> np.ndarray:
    """Stored-pixel ``[row, col]`` -> displayed-pixel ``[row, col]`` for a display transform ``t``
    of :func:`lumbargrade.levels.mid_sagittal.display_transform` (transpose, flip rows, flip cols)."""
    p = np.array(rc, dtype=float, copy=True).reshape(-1, 2)
    h, w = shape
    if t[0]:
        p = p[:, ::-1].copy()
        h, w = w, h
    if t[1]:
        p[:, 0] = (h - 1) - p[:, 0]
    if t[2]:
        p[:, 1] = (w - 1) - p[:, 1]
    return p


_SAG_CACHE: dict[tuple, tuple] = {}


def _sagittal_base(img: np.ndarray, geometry: Any, target_px: int) -> tuple:
    """``(RGB picture, display transform, display shape)`` of the windowed, enlarged sagittal
    slice; the last one is cached (one study draws it once per level)."""
    from PIL import Image

    from ..levels.mid_sagittal import display_transform, to_display

    key = (img.shape, img.dtype.str, hash(img.tobytes()), tuple(geometry.row_cosine),
           tuple(geometry.col_cosine), tuple(geometry.pixel_spacing), target_px)
    if key in _SAG_CACHE:
        return _SAG_CACHE[key]
    t = display_transform(geometry.row_cosine, geometry.col_cosine)
    disp = to_display(img, t)
    # non-square pixels: stretch rows/cols to mm so anatomy keeps its proportions
    sp_r, sp_c = geometry.pixel_spacing[::-1] if t[0] else geometry.pixel_spacing
    k = _scale_for(disp.shape, target_px)
    base = _enlarge(window(disp), k)
    if abs(sp_r - sp_c) > 1e-3:
        h = int(round(base.height * sp_r / min(sp_r, sp_c)))
        w = int(round(base.width * sp_c / min(sp_r, sp_c)))
        base = base.resize((w, h), Image.BILINEAR)
    _SAG_CACHE.clear()
    _SAG_CACHE[key] = (base, t, disp.shape)
    return _SAG_CACHE[key]


def sagittal_overlay(
    image: np.ndarray,
    geometry: Any,
    landmarks: Mapping[str, Sequence[float]] | None = None,
    axial_slices: Mapping[str, Any] | None = None,
    highlight: str | None = None,
    target_px: int = 512,
) -> Any:
    """The sagittal slice shown head-up, anterior left, with landmarks and axial slice lines.

    Parameters
    ----------
    image: float ``[rows, cols]`` sagittal slice as stored; ``geometry`` its SliceGeometry.
    landmarks: ``{level: (row, col)}`` in the stored slice's pixels.
    axial_slices: ``{level: SliceGeometry}`` of the chosen axial slices; each is drawn as the line
        where it cuts this slice (``highlight`` in colour, the others grey).
    """
    from PIL import ImageDraw

    img = np.asarray(image)
    base, t, disp_shape = _sagittal_base(img, geometry, target_px)
    base = base.copy()
    sy, sx = base.height / disp_shape[0], base.width / disp_shape[1]
    draw = ImageDraw.Draw(base)
    fs = max(10, int(round(base.width / 36)))

    def xy(rc: np.ndarray) -> tuple[float, float]:
        d = _display_points(np.asarray(rc), img.shape, t)[0]
        return ((d[1] + 0.5) * sx, (d[0] + 0.5) * sy)

    for level, geom in (axial_slices or {}).items():
        seg = axial_line_on_sagittal(geometry, geom)
        if seg is None:
            continue
        color = COLORS["line"] if level == highlight else COLORS["line_other"]
        p0, p1 = xy(seg[0]), xy(seg[1])
        draw.line([p0, p1], fill=color, width=3 if level == highlight else 1)
        if level == highlight:
            _text(
                draw, (max(p0[0], p1[0]) - 5 * fs, min(p0[1], p1[1]) - fs - 2), "axial", color, fs
            )
    for level, rc in (landmarks or {}).items():
        if rc is None:
            continue
        x, y = xy(np.asarray(rc, float))
        r = max(3, fs // 3)
        color = COLORS["landmark"]
        draw.ellipse(
            [x - r, y - r, x + r, y + r],
            outline=color,
            width=2,
            fill=color if level == highlight else None,
        )
        _text(draw, (x + r + 3, y - fs / 2), level, color, fs)
    _text(draw, (4, 4), "S", (255, 255, 255), fs + 2)
    _text(draw, (4, base.height / 2), "A", (255, 255, 255), fs + 2)
    _text(draw, (base.width - fs - 4, base.height / 2), "P", (255, 255, 255), fs + 2)
    return base


#: Grey levels of the PNG palette (the rest of its 256 entries hold the overlay colours).
PALETTE_GREYS = 224


@functools.lru_cache(maxsize=1)
def _palette() -> tuple[np.ndarray, np.ndarray]:
    """``(palette [256, 3] uint8, colour entries [n, 3] int)``: ``PALETTE_GREYS`` evenly spaced grey
    levels, then each overlay colour at full, 3/4, 1/2 and 1/4 strength (text edges fade to black)."""
    greys = np.round(np.linspace(0, 255, PALETTE_GREYS)).astype(int)
    colours = []
    for c in COLORS.values():
        for f in (1.0, 0.75, 0.5, 0.25):
            colours.append([int(round(v * f)) for v in c])
    colours = np.array(colours[: 256 - PALETTE_GREYS], int)
    pal = np.zeros((256, 3), np.uint8)
    pal[:PALETTE_GREYS] = greys[:, None]
    pal[PALETTE_GREYS : PALETTE_GREYS + len(colours)] = colours
    return pal, colours


def to_palette(picture: Any) -> Any:
    """An RGB picture as a palette ('P') image: grey pixels to the nearest of ``PALETTE_GREYS``
    levels (at most 0.6 of an 8-bit level off), overlay colours exactly, other coloured pixels
    (text edges) to the nearest palette colour or grey. The pictures are grey with a few colours:
    a third of the bytes to compress."""
    from PIL import Image

    pal, colours = _palette()
    a = np.asarray(picture if picture.mode == "RGB" else picture.convert("RGB"))
    n = PALETTE_GREYS - 1
    idx = ((a[..., 0].astype(np.uint16) * n + 127) // 255).astype(np.uint8)  # exact for grey pixels
    rows, cols = np.nonzero((a[..., 0] != a[..., 1]) | (a[..., 1] != a[..., 2]))
    if len(rows):
        px = a[rows, cols].astype(np.int32)  # [m, 3]
        # exact overlay colours (most coloured pixels) by lookup
        keys = (px[:, 0] << 16) | (px[:, 1] << 8) | px[:, 2]
        ckeys = (colours[:, 0] << 16) | (colours[:, 1] << 8) | colours[:, 2]
        order = np.argsort(ckeys)
        pos = np.clip(np.searchsorted(ckeys[order], keys), 0, len(ckeys) - 1)
        exact = ckeys[order][pos] == keys
        idx[rows[exact], cols[exact]] = PALETTE_GREYS + order[pos[exact]]
        # the rest by distance
        rest = ~exact
        if rest.any():
            q = px[rest]
            gi = np.clip(np.round(q.mean(axis=1) * n / 255), 0, n).astype(int)
            d_grey = ((q - np.round(gi * 255 / n)[:, None]) ** 2).sum(axis=1)
            d_col = ((q[:, None, :] - colours[None]) ** 2).sum(axis=2)
            best = d_col.argmin(axis=1)
            use_col = d_col[np.arange(len(q)), best] < d_grey
            idx[rows[rest], cols[rest]] = np.where(use_col, PALETTE_GREYS + best, gi).astype(np.uint8)
    out = Image.fromarray(idx, mode="P")
    out.putpalette(pal.ravel().tolist())
    return out


def png_bytes(picture: Any) -> bytes:
    """The picture encoded as PNG (palette; see :func:`to_palette`)."""
    import io

    buf = io.BytesIO()
    # palette + zlib level 1: about a third of the RGB encoding time and size
    to_palette(picture).save(buf, format="PNG", compress_level=1)
    return buf.getvalue()
