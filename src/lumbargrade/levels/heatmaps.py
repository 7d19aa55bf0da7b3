"""DSNT decoding in numpy (inference): heatmap logits -> coordinates and a confidence.

The same maths as :mod:`lumbargrade.levels.dsnt` (which is torch, for training): a spatial
softmax, the soft-argmax in normalised ``(x, y)`` with pixel centre ``i`` of ``n`` at
``(2 i + 1) / n - 1``, and the probability mass within ``radius_px`` heatmap pixels of it.
"""

from __future__ import annotations

import numpy as np

__all__ = ["decode_heatmaps", "normalized_to_pixel"]


def _axis(n: int) -> np.ndarray:
    return (2.0 * np.arange(n) + 1.0) / n - 1.0


def decode_heatmaps(logits: np.ndarray, radius_px: float = 3.0) -> tuple[np.ndarray, np.ndarray]:
    """``(B, P, H, W)`` logits -> ``(B, P, 2)`` normalised ``(x, y)`` and ``(B, P)`` concentration
    in [0, 1] (float64)."""
    z = np.asarray(logits, dtype=np.float64)
    b, p, h, w = z.shape
    flat = z.reshape(b, p, h * w)
    flat = np.exp(flat - flat.max(axis=-1, keepdims=True))
    heat = (flat / flat.sum(axis=-1, keepdims=True)).reshape(b, p, h, w)
    x = (heat.sum(axis=2) * _axis(w)).sum(axis=-1)
    y = (heat.sum(axis=3) * _axis(h)).sum(axis=-1)
    xy = np.stack([x, y], axis=-1)
    rc = normalized_to_pixel(xy, h, w)
    d2 = ((np.arange(h)[None, None, :, None] - rc[..., :1, None]) ** 2
          + (np.arange(w)[None, None, None, :] - rc[..., 1:, None]) ** 2)
    conc = (heat * (d2 <= radius_px ** 2)).sum(axis=(-2, -1))
    return xy, conc


def normalized_to_pixel(xy: np.ndarray, height: int, width: int) -> np.ndarray:
    """``(..., 2)`` normalised ``(x, y)`` -> ``(..., 2)`` pixel ``[row, col]`` (centres at integers)."""
    xy = np.asarray(xy, dtype=np.float64)
    col = ((xy[..., 0] + 1.0) * width - 1.0) / 2.0
    row = ((xy[..., 1] + 1.0) * height - 1.0) / 2.0
    return np.stack([row, col], axis=-1)
