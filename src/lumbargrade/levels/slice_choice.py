"""The axial slice for each disc level.

With a sagittal series: each level's landmark (patient LPS mm) goes to the axial slice whose
plane is nearest the point and whose field of view contains it (:func:`geometry.find_slice`),
across all blocks, tilted ones included; the signed distance from the landmark to that plane is
kept so that reports can show it.

Without one (fallback, :func:`choose_slices_by_block`): an axial series acquired as one block per
disc (the usual per-disc stacks angled along each disc) is assigned to levels from the bottom up,
the lowest block being L5/S1, and within each block the slice nearest the block's centre along
its normal is taken, because technologists centre each stack on the disc mid-plane. A single
contiguous stack cannot be assigned to levels without landmarks: it gets no choice.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from ..geometry import SliceGeometry, find_slice
from .names import LEVELS

__all__ = [
    "SliceChoice",
    "block_centre_slice",
    "choose_slices_by_block",
    "choose_slices_for_landmarks",
    "landmarks_to_patient",
    "slice_for_point",
]


@dataclass(frozen=True)
class SliceChoice:
    """One level's axial slice: block and slice index (within the block, sorted along the
    normal), signed distance (mm) from the landmark to the slice plane (None for the per-block
    fallback), and the method ('landmarks' or 'block_centre')."""

    level: str
    block: int
    slice: int
    distance_mm: float | None
    method: str

    def to_dict(self) -> dict[str, Any]:
        return {"level": self.level, "block": self.block, "slice": self.slice,
                "distance_mm": None if self.distance_mm is None else round(float(self.distance_mm), 3),
                "method": self.method}


def landmarks_to_patient(rc: np.ndarray, geometry: SliceGeometry) -> np.ndarray:
    """``(n, 2)`` [row, col] pixels in a sagittal slice -> ``(n, 3)`` LPS mm."""
    return geometry.pixel_to_patient(np.asarray(rc, dtype=float))


def slice_for_point(point: np.ndarray, blocks: Sequence[Sequence[SliceGeometry]], margin_px: float = 0.0
                    ) -> tuple[int, int, float] | None:
    """``(block, slice, signed distance mm)`` of the nearest axial slice containing ``point``
    (LPS mm), or None (thin wrapper over :func:`geometry.find_slice`)."""
    return find_slice(np.asarray(point, dtype=float), blocks, margin_px)


def choose_slices_for_landmarks(points_mm: np.ndarray, blocks: Sequence[Sequence[SliceGeometry]],
                                levels: Sequence[str] = LEVELS, margin_px: float = 0.0
                                ) -> dict[str, SliceChoice | None]:
    """Per level, the :class:`SliceChoice` for its landmark ``points_mm[i]`` (LPS mm), or None
    when no axial slice's field of view contains it."""
    out: dict[str, SliceChoice | None] = {}
    for lv, p in zip(levels, np.asarray(points_mm, dtype=float)):
        hit = slice_for_point(p, blocks, margin_px)
        out[lv] = None if hit is None else SliceChoice(lv, hit[0], hit[1], hit[2], "landmarks")
    return out


def block_centre_slice(block: Sequence[SliceGeometry]) -> int:
    """Index of the slice nearest the block's centre along its normal (slices sorted along it)."""
    if not block:
        raise ValueError("empty block")
    n = block[0].normal
    d = np.array([float(s.position @ n) for s in block])
    mid = 0.5 * (d.min() + d.max())
    return int(np.argmin(np.abs(d - mid)))


def _superior_first(blocks: Sequence[Sequence[SliceGeometry]]) -> list[int]:
    def z(b: Sequence[SliceGeometry]) -> float:
        return float(np.mean([s.pixel_to_patient(np.array([(s.rows - 1) / 2, (s.columns - 1) / 2]))[2] for s in b]))

    return sorted(range(len(blocks)), key=lambda i: -z(blocks[i]))


def choose_slices_by_block(axial: Any, levels: Sequence[str] = LEVELS) -> dict[str, tuple[int, int]]:
    """Fallback without landmarks: ``{level: (block, slice)}``.

    ``axial`` is a :class:`lumbargrade.io.Series` (its blocks' geometries are used) or a list of
    blocks of :class:`SliceGeometry`. Blocks, ordered superior first, are assigned from the bottom
    up (the lowest block is L5/S1); with more than five blocks the lowest five are used, with
    fewer the upper levels get none. A series with a single block gets no assignment.
    """
    if hasattr(axial, "blocks"):
        blocks = [[s.geometry for s in b.slices] for b in axial.blocks]
    else:
        blocks = [list(b) for b in axial]
    blocks = [b for b in blocks if b]
    if len(blocks) < 2:
        return {}
    order = _superior_first(blocks)[-len(levels):]
    out: dict[str, tuple[int, int]] = {}
    for lv, b in zip(list(levels)[len(levels) - len(order):], order):
        out[lv] = (b, block_centre_slice(blocks[b]))
    return out
