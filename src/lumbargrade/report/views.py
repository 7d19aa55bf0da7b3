"""What a browser needs to draw a level's pictures itself: pure functions on arrays (no file
access), used by ``report.html`` and the review app.

* :func:`edge_letters`: which patient direction each edge of a slice faces (``R``/``L``/``A``/
  ``P``/``S``/``I``), from its geometry; a page puts the letters beside the picture.
* :func:`encode_labels`: a label map as run lengths (small in a page, exact to decode).
* :func:`axial_view`: a level's axial slice (windowed to 8 bits, cropped around the masks) and its
  label map, for ``report.html``.
* :func:`sagittal_view`: the sagittal slice shown head-up, anterior left, with each level's
  landmark and the lines where the chosen (and, optionally, every other) axial slice cuts it, all in
  the displayed picture's pixels.

Images are ``[row, col]`` arrays; geometry is :class:`lumbargrade.geometry.SliceGeometry` (LPS mm).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

__all__ = ["axial_view", "edge_letters", "encode_labels", "png_gray", "sagittal_view"]

_LETTERS = (("R", "L"), ("A", "P"), ("I", "S"))  # -x/+x, -y/+y, -z/+z in LPS


def _letter(v: Sequence[float]) -> str:
    v = np.asarray(v, float)
    axis = int(np.argmax(np.abs(v)))
    return _LETTERS[axis][1 if v[axis] > 0 else 0]


def edge_letters(geometry: Any) -> dict[str, str]:
    """``{"left", "right", "top", "bottom"}``: the patient direction (LPS letter: R, L, A, P, I,
    S) each edge of the slice, shown as stored, faces."""
    rc, cc = np.asarray(geometry.row_cosine, float), np.asarray(geometry.col_cosine, float)
    return {"right": _letter(rc), "left": _letter(-rc), "bottom": _letter(cc), "top": _letter(-cc)}


def encode_labels(lab: np.ndarray) -> list[int]:
    """Run lengths ``[value, count, value, count, ...]`` of a uint8 label map in row-major order."""
    flat = np.asarray(lab, np.uint8).ravel()
    if flat.size == 0:
        return []
    change = np.flatnonzero(np.diff(flat)) + 1
    starts = np.concatenate([[0], change])
    counts = np.diff(np.concatenate([starts, [flat.size]]))
    out = np.empty(2 * len(starts), np.int64)
    out[0::2], out[1::2] = flat[starts], counts
    return out.tolist()


def png_gray(gray: np.ndarray) -> bytes:
    """An 8-bit grey ``[row, col]`` array as PNG bytes."""
    import io

    from PIL import Image

    buf = io.BytesIO()
    Image.fromarray(np.asarray(gray, np.uint8), mode="L").save(buf, format="PNG", compress_level=6)
    return buf.getvalue()


def axial_view(image: np.ndarray, labels: np.ndarray, geometry: Any, boxes: Mapping | None = None,
               zoom: bool = True) -> dict[str, Any]:
    """A level's axial slice for a page that draws the overlay itself.

    Returns ``{"png": 8-bit PNG bytes of the (cropped) slice, windowed on its own 1-99th
    percentiles, "labels": run lengths of the label map over the same crop (:func:`encode_labels`),
    "size": [rows, cols] of the crop, "crop": [row0, row1, col0, col1] in the slice,
    "spacing": [row mm, col mm], "edges": :func:`edge_letters`}``."""
    from .overlays import crop_window, window

    img = np.asarray(image)
    lab = np.asarray(labels, np.uint8)
    r0, r1, c0, c1 = (int(v) for v in (crop_window(img.shape, [lab == 1, lab == 2], boxes) if zoom
                                       else (0, img.shape[0], 0, img.shape[1])))
    return {
        "png": png_gray(window(img[r0:r1, c0:c1])),
        "labels": encode_labels(lab[r0:r1, c0:c1]),
        "size": [r1 - r0, c1 - c0],
        "crop": [r0, r1, c0, c1],
        "spacing": [float(v) for v in geometry.pixel_spacing],
        "edges": edge_letters(geometry),
    }


def sagittal_view(
    image: np.ndarray | None,
    geometry: Any,
    landmarks: Mapping[str, Sequence[float]] | None = None,
    axial: Mapping[str, Any] | None = None,
    candidates: Sequence[tuple[str, Any]] = (),
) -> dict[str, Any]:
    """The sagittal slice as a page shows it (head up, anterior left).

    Parameters
    ----------
    image: float ``[rows, cols]`` as stored (None: geometry only, no pixels returned).
    geometry: its SliceGeometry.
    landmarks: ``{level: (row, col)}`` in the stored slice's pixels.
    axial: ``{level: SliceGeometry}`` of the chosen axial slices.
    candidates: ``(SOPInstanceUID, SliceGeometry)`` of other axial slices whose lines a reader may
        choose from.

    Returns ``{"image": the displayed float array or None, "shape": [rows, cols] displayed,
    "transform": [transpose, flip_rows, flip_cols] (see
    :func:`lumbargrade.levels.mid_sagittal.display_transform`), "stored_shape", "spacing":
    [row mm, col mm] displayed, "landmarks": {level: [row, col]}, "lines": {level: [[r, c], [r, c]]},
    "candidates": [{"sop_instance_uid", "line"}]}`` with every point in displayed pixels."""
    from ..levels.mid_sagittal import display_transform, to_display
    from .overlays import _display_points, axial_line_on_sagittal

    t = display_transform(geometry.row_cosine, geometry.col_cosine)
    stored = (int(geometry.rows), int(geometry.columns))
    shape = [stored[1], stored[0]] if t[0] else list(stored)
    spacing = list(geometry.pixel_spacing[::-1]) if t[0] else list(geometry.pixel_spacing)

    def disp(rc: Sequence[float]) -> list[float]:
        p = _display_points(np.asarray(rc, float), stored, t)[0]
        return [round(float(p[0]), 2), round(float(p[1]), 2)]

    def line(g: Any) -> list[list[float]] | None:
        seg = axial_line_on_sagittal(geometry, g)
        return None if seg is None else [disp(seg[0]), disp(seg[1])]

    lines = {lv: ln for lv, g in (axial or {}).items() if (ln := line(g)) is not None}
    cands = [{"sop_instance_uid": uid, "line": ln} for uid, g in candidates if (ln := line(g)) is not None]
    return {
        "image": None if image is None else to_display(np.asarray(image), t),
        "shape": shape,
        "stored_shape": list(stored),
        "transform": [bool(v) for v in t],
        "spacing": [float(v) for v in spacing],
        "landmarks": {lv: disp(rc) for lv, rc in (landmarks or {}).items() if rc is not None},
        "lines": lines,
        "candidates": cands,
    }
