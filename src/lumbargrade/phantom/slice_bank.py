"""The slice bank: every axial slice of a phantom patient with its tissue and structure maps.

Segmentation training with domain randomisation (:mod:`lumbargrade.segmentation.synth`) draws
new images from tissue maps, so the bank keeps, per patient, for every rendered axial slice:

* the slice's pixels (the DICOM file of the axial series, or a 16-bit PNG for the extra slices
  that are not part of the study),
* ``*_labels.png``: structure labels (0 background, 1 dural sac, 2 disc, 3/4 facet left/right,
  5/6 foramen left/right; docs/architecture.md),
* ``*_tissues.png``: tissue codes (:class:`lumbargrade.phantom.tissues.Tissue`).

Besides the axial blocks of the study (slices at and around each disc L1/L2..L5/S1), the bank
holds slices that are not in the study: the T11/T12 and T12/L1 discs (the conus and the spinal
cord fill the upper sac) and the middle of each vertebral body from T12 to L5 (no disc in the
slice). ``DIR/slices.csv`` lists them all, one row per slice (the manifest columns a segmentation
trainer needs, plus ``tissue_map``, ``kind`` and ``offset_mm``). The bank also keeps the tissue
maps of the mid-sagittal slice and its two neighbours (``sag_NNNN_tissues.png``; manifest column
``sagittal_tissue_map``), for the domain randomisation of the landmark networks.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from ..geometry import SliceGeometry

__all__ = ["BANK_COLUMNS", "EXTRA_DISCS", "extra_slice_plan", "frame_at_s", "save_u16_png"]

BANK_COLUMNS = (
    "patient_id", "split", "level", "kind", "offset_mm", "axial_image", "label_map", "tissue_map",
    "pixel_spacing_row_mm", "pixel_spacing_col_mm", "slice_thickness_mm",
)
#: discs above L1/L2 whose axial slices the bank adds (not written to the study)
EXTRA_DISCS = ("T11/T12", "T12/L1")


def frame_at_s(anat: Any, s: float) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(centre, normal, anterior) LPS of the spine centreline at arc length ``s`` (mm)."""
    j = int(np.clip(np.searchsorted(anat.curve_s, s), 0, len(anat.curve_s) - 1))
    y, z = (float(v) for v in anat.curve_yz[j])
    ph = float(anat.curve_phi[j])
    centre = np.array([0.0, y, z])
    normal = np.array([0.0, -np.sin(ph), np.cos(ph)])
    ap = np.array([0.0, -np.cos(ph), -np.sin(ph)])
    return centre, normal, ap


def extra_slice_plan(anat: Any, like: SliceGeometry, max_tilt_deg: float,
                     posterior_shift_mm: float) -> list[tuple[str, str, SliceGeometry]]:
    """``(level, kind, geometry)`` of the bank's extra slices: the :data:`EXTRA_DISCS` disc centres
    (kind ``disc_extra``) and the mid vertebral bodies T12..L5 (kind ``vertebra``), each a slice
    with the in-plane size, matrix and thickness of ``like`` (the study's axial slices)."""
    from .acquisition import _axial_inplane, block_normal
    from .anatomy import ALL_LEVELS

    if not all(hasattr(anat, a) for a in ("p", "curve_s", "curve_yz", "curve_phi")):
        return []  # an anatomy without a centreline (a test stand-in): no extra slices

    s_c = np.asarray(anat.p["s_c"], dtype=np.float64)
    out: list[tuple[str, str, SliceGeometry]] = []
    targets: list[tuple[str, str, float]] = [
        (name, "disc_extra", float(s_c[ALL_LEVELS.index(name)])) for name in EXTRA_DISCS
    ]
    first = ALL_LEVELS.index("T11/T12")
    names = ("T12", "L1", "L2", "L3", "L4", "L5")
    for k, name in zip(range(first, len(ALL_LEVELS) - 1), names):
        targets.append((name, "vertebra", 0.5 * float(s_c[k] + s_c[k + 1])))
    for level, kind, s in targets:
        centre, normal, ap = frame_at_s(anat, s)
        n = block_normal(normal, max_tilt_deg)
        r, c = _axial_inplane(n)
        post = -(ap - (ap @ n) * n)
        post = post / np.linalg.norm(post)
        inplane = centre + posterior_shift_mm * post
        m = like.rows
        ps = like.pixel_spacing[0]
        pos = inplane - (m - 1) / 2 * ps * r - (m - 1) / 2 * ps * c
        out.append((level, kind, SliceGeometry(position=pos, row_cosine=r, col_cosine=c,
                                               pixel_spacing=(ps, ps), rows=m, columns=m,
                                               thickness=like.thickness)))
    return out


def save_u16_png(arr: np.ndarray, path: Path) -> None:
    """A uint16 array as a 16-bit greyscale PNG."""
    from PIL import Image

    path.parent.mkdir(parents=True, exist_ok=True)
    a = np.ascontiguousarray(np.asarray(arr, dtype=np.uint16))
    Image.fromarray(a).save(path, format="PNG")
