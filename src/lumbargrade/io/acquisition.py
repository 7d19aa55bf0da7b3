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

__all__ = ["FAT_WATER_PPM", "PROTON_MHZ_PER_T", "fat_water_shift", "fat_water_shift_px", "readout_index_axis"]

FAT_WATER_PPM = 3.5
PROTON_MHZ_PER_T = 42.576
_PATIENT_AXES = ("left-right", "anterior-posterior", "superior-inferior")  # LPS x, y, z


def _number(header: Any, keyword: str) -> float | None:
    try:
        v = float(getattr(header, keyword))
    except (AttributeError, TypeError, ValueError):
        return None
    return v if np.isfinite(v) and v > 0 else None


def fat_water_shift_px(header: Any) -> float | None:
    """The size of the fat-water shift in pixels (3.5 ppm x 42.576 MHz/T x ``MagneticFieldStrength``
    / ``PixelBandwidth``), None when the header lacks either."""
    field_t = _number(header, "MagneticFieldStrength")
    bandwidth = _number(header, "PixelBandwidth")
    if field_t is None or bandwidth is None:
        return None
    return FAT_WATER_PPM * PROTON_MHZ_PER_T * field_t / bandwidth


def readout_index_axis(header: Any) -> int | None:
    """The array axis of the stored pixels the readout runs along: 1 (along a row, the column
    index grows) when ``InPlanePhaseEncodingDirection`` is ``COL``, 0 when it is ``ROW``, None
    when the header does not say."""
    phase = str(getattr(header, "InPlanePhaseEncodingDirection", "") or "").upper()
    return {"COL": 1, "ROW": 0}.get(phase)


def fat_water_shift(header: Any, geometry: Any) -> dict[str, Any] | None:
    """The fat-water shift of one slice: ``{"pixels", "mm", "readout_axis"}``, or None when the
    header lacks the field strength or the pixel bandwidth.

    ``readout_axis``: the patient axis the readout (and with it the shift) runs along
    (``"left-right"``, ``"anterior-posterior"``, ``"superior-inferior"``), None when the header
    does not say the phase-encoding direction; ``mm`` is then the shift in pixels times the larger
    pixel spacing (an upper bound). ``geometry``: the slice's
    :class:`lumbargrade.geometry.SliceGeometry` (cosines in LPS, spacing ``(row, col)`` mm).
    """
    pixels = fat_water_shift_px(header)
    if pixels is None:
        return None
    axis = readout_index_axis(header)
    row_mm, col_mm = (float(v) for v in geometry.pixel_spacing)
    if axis == 1:  # readout along a row (the column index grows)
        direction, spacing = np.asarray(geometry.row_cosine, float), col_mm
    elif axis == 0:  # readout down a column (the row index grows)
        direction, spacing = np.asarray(geometry.col_cosine, float), row_mm
    else:
        direction, spacing = None, max(row_mm, col_mm)
    axis = None if direction is None else _PATIENT_AXES[int(np.argmax(np.abs(direction)))]
    return {"pixels": round(pixels, 3), "mm": round(pixels * spacing, 3), "readout_axis": axis}
