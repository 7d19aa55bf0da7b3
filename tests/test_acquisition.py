"""The fat-water shift of a slice from its header (lumbargrade.io.acquisition)."""

from __future__ import annotations

import pydicom
import pytest

from lumbargrade.geometry import SliceGeometry
from lumbargrade.io.acquisition import fat_water_shift

pytestmark = pytest.mark.core


def _header(**tags) -> pydicom.Dataset:
    ds = pydicom.Dataset()
    for k, v in tags.items():
        setattr(ds, k, v)
    return ds


AXIAL = SliceGeometry.from_dicom_values([0, 0, 0], [1, 0, 0, 0, 1, 0], [0.5, 0.8], 256, 256)
ROTATED = SliceGeometry.from_dicom_values([0, 0, 0], [0, 1, 0, -1, 0, 0], [0.5, 0.8], 256, 256)


def test_size_from_field_strength_and_bandwidth():
    # 3.5 ppm x 42.576 MHz/T x 3 T = 447.0 Hz; over 223.5 Hz per pixel: 2 pixels
    r = fat_water_shift(_header(MagneticFieldStrength="3", PixelBandwidth="223.5", InPlanePhaseEncodingDirection="COL"),
                        AXIAL)
    assert r["pixels"] == pytest.approx(2.0, abs=1e-3)
    assert r["mm"] == pytest.approx(2.0 * 0.8, abs=1e-3)  # readout along a row: the column spacing
    assert r["readout_axis"] == "left-right"


def test_axis_follows_the_phase_direction_and_the_slice_orientation():
    h = _header(MagneticFieldStrength="1.5", PixelBandwidth="223.5", InPlanePhaseEncodingDirection="ROW")
    r = fat_water_shift(h, AXIAL)  # readout down a column: col cosine +y
    assert r["readout_axis"] == "anterior-posterior" and r["mm"] == pytest.approx(1.0 * 0.5, abs=1e-3)
    r = fat_water_shift(h, ROTATED)  # the same header on a slice stored with its columns along x
    assert r["readout_axis"] == "left-right"


def test_missing_or_unusable_tags():
    assert fat_water_shift(_header(MagneticFieldStrength="3"), AXIAL) is None
    assert fat_water_shift(_header(PixelBandwidth="200"), AXIAL) is None
    assert fat_water_shift(_header(MagneticFieldStrength="3", PixelBandwidth="0"), AXIAL) is None
    r = fat_water_shift(_header(MagneticFieldStrength="3", PixelBandwidth="447"), AXIAL)
    assert r["readout_axis"] is None and r["mm"] == pytest.approx(0.8, abs=1e-3)  # the larger spacing: a bound
