"""Adjacent slices as extra patch channels (2.5-D classifier input).

A neural foramen sits mostly above the disc-centre slice (between the pedicles of the upper
vertebra), so the graded slice often cuts only its lower edge. With ``context_slices = 1`` a
classifier sees three channels, each cut with the same box: the slice below (caudal), the graded
slice, and the slice above (cranial), "below" and "above" by patient geometry (the superior
direction of the slice normal), never by file order or instance number.

A neighbour is a slice of the same series that is parallel to the graded slice and on the same
pixel grid (same rows, columns and spacing; in-plane offset under half a pixel), at most
``max_gap_mm`` from it along the normal. Where there is none (the end of a block, a single-slice
series, a PNG), the graded slice stands in for it, so the network still sees three channels.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

__all__ = ["CHANNEL_ORDER", "DEFAULT_MAX_GAP_MM", "neighbour_indices", "stack_context"]

#: channel order of a context stack
CHANNEL_ORDER = ("caudal", "centre", "cranial")
#: farthest a neighbour may lie from the graded slice along its normal, in mm
DEFAULT_MAX_GAP_MM = 6.5


def _normal(g) -> np.ndarray:
    n = np.cross(np.asarray(g.row_cosine, float), np.asarray(g.col_cosine, float))
    return n / (np.linalg.norm(n) or 1.0)


def neighbour_indices(centre, others: Sequence, max_gap_mm: float = DEFAULT_MAX_GAP_MM) -> tuple[int | None, int | None]:
    """Indices into ``others`` (:class:`~lumbargrade.geometry.SliceGeometry`) of the nearest slice
    caudal and cranial to ``centre`` on its pixel grid, each None where there is none.

    Distances are along ``centre``'s normal in mm; a slice within 0.3 mm of ``centre`` (the
    slice itself or a duplicate) is skipped. A slice whose normal has no superior component
    (|n_z| < 0.3: not an axial slice) has no neighbours.
    """
    n = _normal(centre)
    if abs(n[2]) < 0.3:
        return None, None
    up = 1.0 if n[2] > 0 else -1.0  # LPS: +z is superior (cranial)
    row_c = np.asarray(centre.row_cosine, float)
    col_c = np.asarray(centre.col_cosine, float)
    p0 = np.asarray(centre.position, float)
    sr, sc = float(centre.pixel_spacing[0]), float(centre.pixel_spacing[1])
    best: dict[int, tuple[float, int]] = {}
    for i, g in enumerate(others):
        if (int(g.rows), int(g.columns)) != (int(centre.rows), int(centre.columns)):
            continue
        if abs(float(g.pixel_spacing[0]) - sr) > 1e-3 * sr or abs(float(g.pixel_spacing[1]) - sc) > 1e-3 * sc:
            continue
        if float(np.dot(_normal(g), n)) < 0.9995 or float(np.dot(np.asarray(g.row_cosine, float), row_c)) < 0.9995:
            continue
        delta = np.asarray(g.position, float) - p0
        d = float(np.dot(delta, n))
        if abs(d) < 0.3 or abs(d) > max_gap_mm:
            continue
        # in-plane offset: PixelSpacing is (between rows, between columns); the row cosine is the
        # direction along a row, i.e. across columns
        if abs(float(np.dot(delta, row_c))) > 0.5 * sc or abs(float(np.dot(delta, col_c))) > 0.5 * sr:
            continue
        side = 1 if d * up > 0 else -1
        if side not in best or abs(d) < best[side][0]:
            best[side] = (abs(d), i)
    return (best[-1][1] if -1 in best else None), (best[1][1] if 1 in best else None)


def stack_context(centre: np.ndarray, caudal: np.ndarray | None, cranial: np.ndarray | None) -> np.ndarray:
    """``[3, rows, cols]`` float32 in :data:`CHANNEL_ORDER`; a missing neighbour is the centre."""
    c = np.asarray(centre, np.float32)
    parts = [c if a is None else np.asarray(a, np.float32) for a in (caudal, None, cranial)]
    parts[1] = c
    for a in parts:
        if a.shape != c.shape:
            raise ValueError(f"context slice shape {a.shape} differs from the graded slice's {c.shape}")
    return np.stack(parts)
