"""The plausibility gate: when a slice's masks should not be trusted without a look.

A network trained on synthetic images can be confidently wrong on a real one. Every segmented
slice is checked against anatomy and against the network's own consistency, and what fails is
reported (``plausible: false`` in ``lumbargrade segment``, ``needs_review: true`` with reasons
on a level of ``lumbargrade analyze``), never silently graded.

Checks (masks in the canonical axial view, :mod:`lumbargrade.io.orientation`; areas in mm2,
lengths in mm). The limits come from anatomy (``../shared/specs`` ranges widened by about half)
and from the spread of the phantom validation slices; they were not chosen on the real test data.

* a dural sac is found, its area within ``sac_area_mm2`` and its AP and transverse extent within
  ``sac_extent_mm``;
* on a disc-level slice a disc is found, its area within ``disc_area_mm2``;
* the sac lies behind the disc (its centroid posterior to the disc's by ``sac_behind_disc_mm``)
  and within the disc's width (``sac_lateral_mm`` from the disc's midline);
* the network is sure of its masks (mean probability of the winning class inside the sac at
  least ``min_confidence``);
* the direct and the left-right mirrored looks agree (Dice of the sac at least ``min_mirror_dice``);
* with a dural sac refiner, its outline and the first look's agree (Dice at least
  ``min_refiner_dice``; the refiner moves the outline by design, median Dice 0.96 on phantom
  levels, so the bar is lower than the mirrored look's).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import numpy as np

__all__ = ["QualityConfig", "check_slice"]


@dataclass(frozen=True)
class QualityConfig:
    sac_area_mm2: tuple[float, float] = (15.0, 450.0)
    sac_extent_mm: tuple[float, float] = (3.0, 35.0)
    disc_area_mm2: tuple[float, float] = (500.0, 3500.0)
    sac_behind_disc_mm: tuple[float, float] = (5.0, 45.0)
    sac_lateral_mm: float = 12.0
    min_confidence: float = 0.75
    min_mirror_dice: float = 0.8
    min_refiner_dice: float = 0.7

    def to_dict(self) -> dict:
        return asdict(self)


def _centroid_mm(mask: np.ndarray, spacing) -> tuple[float, float]:
    ii, jj = np.nonzero(mask)
    return float(ii.mean()) * spacing[0], float(jj.mean()) * spacing[1]


def _extent_mm(mask: np.ndarray, spacing) -> tuple[float, float]:
    rows = np.flatnonzero(mask.any(axis=1))
    cols = np.flatnonzero(mask.any(axis=0))
    return (rows[-1] - rows[0] + 1) * spacing[0], (cols[-1] - cols[0] + 1) * spacing[1]


def check_slice(
    sac: np.ndarray,
    disc: np.ndarray | None,
    spacing: tuple[float, float],
    quality: dict | None = None,
    disc_expected: bool = True,
    config: QualityConfig | None = None,
) -> list[str]:
    """Reasons a canonical slice's masks are implausible (an empty list when they pass).

    sac, disc: boolean ``[rows, cols]`` in the canonical view; spacing (row_mm, col_mm);
    quality: the segmenter's numbers (:class:`lumbargrade.segmentation.inference.SegOutput`);
    disc_expected: the slice is meant to cut a disc (an analyzed level), so a missing disc fails.
    """
    cfg = config or QualityConfig()
    q = quality or {}
    px = float(spacing[0]) * float(spacing[1])
    out: list[str] = []
    sac = np.asarray(sac, bool)
    disc = np.asarray(disc, bool) if disc is not None else np.zeros_like(sac)
    if not sac.any():
        out.append("no dural sac found")
    else:
        a = float(sac.sum()) * px
        lo, hi = cfg.sac_area_mm2
        if not lo <= a <= hi:
            out.append(f"dural sac area {a:.0f} mm2 outside {lo:.0f}-{hi:.0f} mm2")
        ap, tr = _extent_mm(sac, spacing)
        lo, hi = cfg.sac_extent_mm
        if not (lo <= ap <= hi and lo <= tr <= hi):
            out.append(f"dural sac {ap:.0f} x {tr:.0f} mm (AP x transverse) outside {lo:.0f}-{hi:.0f} mm")
    if disc.any():
        a = float(disc.sum()) * px
        lo, hi = cfg.disc_area_mm2
        if not lo <= a <= hi:
            out.append(f"disc area {a:.0f} mm2 outside {lo:.0f}-{hi:.0f} mm2")
        if sac.any():
            (sr, sc), (dr, dc) = _centroid_mm(sac, spacing), _centroid_mm(disc, spacing)
            behind = sr - dr
            lo, hi = cfg.sac_behind_disc_mm
            if not lo <= behind <= hi:
                where = "in front of" if behind < 0 else "behind"
                out.append(f"dural sac {abs(behind):.0f} mm {where} the disc centre (expected {lo:.0f}-{hi:.0f} mm behind)")
            if abs(sc - dc) > cfg.sac_lateral_mm:
                out.append(f"dural sac {abs(sc - dc):.0f} mm off the disc's midline")
    elif disc_expected:
        out.append("no disc found on a disc-level slice")
    conf = q.get("sac_confidence")
    if conf is not None and conf < cfg.min_confidence:
        out.append(f"network unsure of the dural sac (mean probability {conf:.2f} < {cfg.min_confidence})")
    md = q.get("mirror_dice_sac")
    if md is not None and sac.any() and md < cfg.min_mirror_dice:
        out.append(f"direct and mirrored looks disagree on the dural sac (Dice {md:.2f} < {cfg.min_mirror_dice})")
    rd = q.get("refiner_dice_sac")
    if rd is not None and sac.any() and rd < cfg.min_refiner_dice:
        out.append(f"first and second (refined) look disagree on the dural sac (Dice {rd:.2f} < {cfg.min_refiner_dice})")
    return out
