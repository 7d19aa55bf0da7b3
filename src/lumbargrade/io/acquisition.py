"""Acquisition facts a reader of the outlines should know, from a slice's DICOM header.

The fat-water shift (chemical shift of the first kind): on spin-echo images fat is displaced
relative to water along the frequency-encoding (readout) axis by the fat-water frequency
difference, 3.5 ppm of the Larmor frequency (about 224 Hz at 1.5 T, 447 Hz at 3 T), over the
receiver bandwidth per pixel. Edges drawn against fat (the disc's lateral and posterior margins,
the fat-filled neural foramina, the facet joints) can be displaced by up to that distance; the dural
sac (CSF is water) is not. The header gives the size and the axis (``MagneticFieldStrength``,
``PixelBandwidth``, ``InPlanePhaseEncodingDirection``: the readout runs across the phase-encoding
direction), not the sign, which depends on the scanner's readout polarity.
"""

from __future__ import annotations

from typing import Any

import numpy as np

__all__ = ["FAT_WATER_PPM", "PROTON_MHZ_PER_T", "fat_water_shift"]

FAT_WATER_PPM = 3.5
PROTON_MHZ_PER_T = 42.576
_PATIENT_AXES = ("left-right", "anterior-posterior", "superior-inferior")  # LPS x, y, z


def _number(header: Any, keyword: str) -> float | None:
    try:
        v = float(getattr(header, keyword))
    except (AttributeError, TypeError, ValueError):
        return None
    return v if np.isfinite(v) and v > 0 else None


def fat_water_shift(header: Any, geometry: Any) -> dict[str, Any] | None:
    """The fat-water shift of one slice: ``{"pixels", "mm", "readout_axis"}``, or None when the
    header lacks the field strength or the pixel bandwidth.

    ``readout_axis``: the patient axis the readout (and with it the shift) runs along
    (``"left-right"``, ``"anterior-posterior"``, ``"superior-inferior"``), None when the header
    does not say the phase-encoding direction; ``mm`` is then the shift in pixels times the larger
    pixel spacing (an upper bound). ``geometry``: the slice's
    :class:`lumbargrade.geometry.SliceGeometry` (cosines in LPS, spacing ``(row, col)`` mm).
    """
    field_t = _number(header, "MagneticFieldStrength")
    bandwidth = _number(header, "PixelBandwidth")
    if field_t is None or bandwidth is None:
        return None
    pixels = FAT_WATER_PPM * PROTON_MHZ_PER_T * field_t / bandwidth
    phase = str(getattr(header, "InPlanePhaseEncodingDirection", "") or "").upper()
    row_mm, col_mm = (float(v) for v in geometry.pixel_spacing)
    if phase == "COL":  # phase down the columns -> readout along a row (the column index grows)
        direction, spacing = np.asarray(geometry.row_cosine, float), col_mm
    elif phase == "ROW":  # phase along a row -> readout down a column (the row index grows)
        direction, spacing = np.asarray(geometry.col_cosine, float), row_mm
    else:
        direction, spacing = None, max(row_mm, col_mm)
    axis = None if direction is None else _PATIENT_AXES[int(np.argmax(np.abs(direction)))]
    return {"pixels": round(pixels, 3), "mm": round(pixels * spacing, 3), "readout_axis": axis}
