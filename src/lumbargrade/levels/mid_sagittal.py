"""Choosing the mid-sagittal slice of a sagittal series, and showing a sagittal slice head-up.

The body is close to mirror-symmetric about its mid-sagittal plane, so slices at equal distances
either side of that plane look alike. :func:`mid_sagittal_index` scores each candidate slice ``k``
by the mean correlation of the slice pairs ``(k - j, k + j)``, ``j = 1..J`` (one J for all
candidates: about ``half_width_mm``, at most a quarter of the slab), with a mild penalty for
distance from the slab centre; slabs of fewer than 5 slices give the central slice. The choice is
always overridable by index.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

__all__ = ["display_transform", "from_display", "mid_sagittal_index", "symmetry_scores", "to_display"]


def symmetry_scores(volume: np.ndarray, slice_spacing_mm: float = 1.0, half_width_mm: float = 12.0) -> np.ndarray:
    """(n,) mirror-symmetry score per slice of ``volume [slice, row, col]``: the mean correlation
    of slice pairs ``(k - j, k + j)``, ``j = 1..J``. The same J is used for every candidate (J
    covers ``half_width_mm`` but at most a quarter of the slab), so slices within J of the slab's
    edges, which cannot be tested with all pairs, get NaN."""
    v = np.asarray(volume, dtype=np.float32)
    n = v.shape[0]
    step = max(1, int(min(v.shape[1:]) // 96))  # downsample in-plane for speed and noise
    v = v[:, ::step, ::step]
    flat = v.reshape(n, -1)
    flat = flat - flat.mean(axis=1, keepdims=True)
    norm = np.linalg.norm(flat, axis=1)
    norm[norm == 0] = 1.0
    flat = flat / norm[:, None]
    jmax = max(1, int(round(half_width_mm / max(slice_spacing_mm, 1e-3))))
    j = max(1, min(jmax, (n - 1) // 4))
    out = np.full(n, np.nan)
    for k in range(j, n - j):
        out[k] = float(np.mean([flat[k - i] @ flat[k + i] for i in range(1, j + 1)]))
    return out


def mid_sagittal_index(volume: np.ndarray, slice_spacing_mm: float = 1.0, half_width_mm: float = 12.0,
                       centre_penalty: float = 0.05) -> int:
    """Index of the mid-sagittal slice of ``volume [slice, row, col]`` (slices sorted along the
    normal, ``slice_spacing_mm`` apart): the most mirror-symmetric slice, mildly pulled towards the
    slab centre (``centre_penalty`` per half-slab of distance)."""
    n = int(np.asarray(volume).shape[0])
    if n == 0:
        raise ValueError("empty volume")
    centre = (n - 1) / 2.0
    if n < 5:
        return int(round(centre))
    s = symmetry_scores(volume, slice_spacing_mm, half_width_mm)
    if np.all(np.isnan(s)):
        return int(round(centre))
    pen = centre_penalty * np.abs(np.arange(n) - centre) / max(centre, 1.0)
    score = np.where(np.isnan(s), -np.inf, s - pen)
    return int(np.argmax(score))


def display_transform(row_cosine: Sequence[float], col_cosine: Sequence[float]) -> tuple[bool, bool, bool]:
    """How to show a sagittal slice head-up with anterior on the left: ``(transpose, flip_rows,
    flip_cols)`` to apply, in that order, to the ``[row, col]`` array.

    After the transform, rows run superior -> inferior (-z) and columns anterior -> posterior (+y).
    """
    rc = np.asarray(row_cosine, dtype=float)  # direction of growing column index
    cc = np.asarray(col_cosine, dtype=float)  # direction of growing row index
    transpose = abs(rc[2]) > abs(cc[2])
    if transpose:
        rc, cc = cc, rc
    flip_rows = cc[2] > 0          # rows should grow towards -z (inferior)
    flip_cols = rc[1] < 0          # columns should grow towards +y (posterior)
    return bool(transpose), bool(flip_rows), bool(flip_cols)


def to_display(image: np.ndarray, t: tuple[bool, bool, bool]) -> np.ndarray:
    """Apply :func:`display_transform`'s ``t`` to a 2D image."""
    a = np.asarray(image)
    if t[0]:
        a = a.T
    if t[1]:
        a = a[::-1]
    if t[2]:
        a = a[:, ::-1]
    return np.ascontiguousarray(a)


def from_display(rc: np.ndarray, shape: tuple[int, int], t: tuple[bool, bool, bool]) -> np.ndarray:
    """Map ``(n, 2)`` [row, col] in the displayed image back to the original image's pixels.

    ``shape`` is the original image's (rows, cols)."""
    rc = np.array(rc, dtype=float, copy=True)
    h, w = (shape[1], shape[0]) if t[0] else (shape[0], shape[1])
    if t[2]:
        rc[:, 1] = (w - 1) - rc[:, 1]
    if t[1]:
        rc[:, 0] = (h - 1) - rc[:, 0]
    if t[0]:
        rc = rc[:, ::-1].copy()
    return rc
