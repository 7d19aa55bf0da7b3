import math

import numpy as np
import pytest

from lumbargrade.measurements import (
    RATIO_DEFINITIONS,
    ap_diameter_mm,
    area_mm2,
    caliper_extent_mm,
    centroid_mm,
    largest_component,
    measure_level,
    transverse_diameter_mm,
)

pytestmark = pytest.mark.core  # needs only the inference core


FOV_MM = 120.0


def ellipse(spacing, centre_mm, a_mm, b_mm, angle_deg=0.0, fov_mm=FOV_MM):
    """Binary mask of an ellipse (pixel-centre inside test, analytic), semi-axis ``a`` along the
    direction at ``angle_deg`` from the row axis (in mm space), ``b`` perpendicular."""
    r_mm, c_mm = spacing
    rows, cols = round(fov_mm / r_mm), round(fov_mm / c_mm)
    rr, cc = np.meshgrid(np.arange(rows) * r_mm, np.arange(cols) * c_mm, indexing="ij")
    th = math.radians(angle_deg)
    u = np.array([math.cos(th), math.sin(th)])
    dr, dc = rr - centre_mm[0], cc - centre_mm[1]
    x = dr * u[0] + dc * u[1]
    y = -dr * u[1] + dc * u[0]
    return (x / a_mm) ** 2 + (y / b_mm) ** 2 <= 1.0, u


SPACINGS = [(0.5, 0.5), (0.8, 0.8), (1.2, 1.2), (0.6, 1.1), (1.2, 0.7)]
ANGLES = [0.0, 17.0, 45.0, 73.0]


@pytest.mark.parametrize("spacing", SPACINGS)
@pytest.mark.parametrize("angle", ANGLES)
def test_ellipse_area_and_diameters(spacing, angle):
    a, b = 16.0, 24.0  # disc-like: AP 32 mm, width 48 mm
    m, u = ellipse(spacing, (61.3, 58.7), a, b, angle)
    true_area = math.pi * a * b
    assert area_mm2(m, spacing) == pytest.approx(true_area, rel=0.01)
    tol = max(spacing)  # within one pixel
    assert abs(ap_diameter_mm(m, spacing, ap_direction=u) - 2 * a) < tol
    assert abs(transverse_diameter_mm(m, spacing, ap_direction=u) - 2 * b) < tol
    cr, cc = centroid_mm(m, spacing)
    assert abs(cr - 61.3) < 0.1 * max(spacing) + 0.05 and abs(cc - 58.7) < 0.1 * max(spacing) + 0.05


def test_area_is_spacing_and_rotation_invariant():
    areas = [area_mm2(ellipse(sp, (60, 60), 16, 24, ang)[0], sp) for sp in SPACINGS for ang in ANGLES]
    areas = np.array(areas)
    assert areas.max() / areas.min() < 1.02


def test_small_sac_diameters_subpixel():
    # sac-like ellipse (AP 12, transverse 18 mm): sub-pixel boundaries make the chord accurate to
    # well under a pixel on average
    errs = []
    for sp in SPACINGS:
        for ang in ANGLES:
            m, u = ellipse(sp, (50.2, 63.9), 6.0, 9.0, ang)
            errs.append(ap_diameter_mm(m, sp, ap_direction=u) - 12.0)
            assert area_mm2(m, sp) == pytest.approx(math.pi * 54, rel=0.05)
    errs = np.array(errs)
    assert np.abs(errs).max() < 1.2
    assert abs(errs.mean()) < 0.3


def test_default_ap_is_row_axis():
    sp = (0.7, 0.9)
    m, _ = ellipse(sp, (60, 60), 10.0, 20.0, 0.0)  # a=10 along rows
    assert abs(ap_diameter_mm(m, sp) - 20.0) < 0.7
    assert abs(transverse_diameter_mm(m, sp) - 40.0) < 0.9
    # caliper extent along rows of an axis-aligned ellipse equals its AP diameter within a pixel
    assert abs(caliper_extent_mm(m, sp) - 20.0) < 0.7


def test_midline_chord_of_concave_shape():
    # kidney-like: ellipse with a posterior notch at the midline; the AP chord through the
    # centroid is shorter than the caliper extent
    sp = (0.5, 0.5)
    m, _ = ellipse(sp, (60, 60), 15.0, 24.0)
    rr, cc = np.meshgrid(np.arange(m.shape[0]) * 0.5, np.arange(m.shape[1]) * 0.5, indexing="ij")
    notch = ((rr - 75.0) / 6.0) ** 2 + ((cc - 60.0) / 8.0) ** 2 <= 1.0
    k = m & ~notch
    ap = ap_diameter_mm(k, sp)
    assert ap < caliper_extent_mm(k, sp) - 4.0
    assert ap_diameter_mm(k, sp, method="caliper") == pytest.approx(caliper_extent_mm(k, sp))
    assert measure_level(k, k, sp, diameter_method="caliper").disc_ap_mm == pytest.approx(30.0, abs=0.6)
    # notch reaches row 69 mm; anterior edge at 45 mm -> midline chord about 24 mm
    assert abs(ap - 24.0) < 0.6


def test_largest_component_used_by_default():
    sp = (1.0, 1.0)
    m, _ = ellipse(sp, (60, 60), 10, 10)
    m2 = m.copy()
    m2[5:8, 5:8] = True  # stray blob
    assert area_mm2(m2, sp) == area_mm2(m, sp)
    assert area_mm2(m2, sp, largest_component=False) == area_mm2(m, sp) + 9
    assert largest_component(m2).sum() == m.sum()
    assert ap_diameter_mm(m2, sp) == pytest.approx(ap_diameter_mm(m, sp))


def test_measure_level_ratios():
    sp = (0.6, 0.8)
    disc, _ = ellipse(sp, (50, 60), 16.0, 24.0)
    sac, _ = ellipse(sp, (80, 60), 6.0, 9.0)
    ms = measure_level(sac, disc, sp)
    assert ms.valid and not ms.warnings
    assert ms.area_ratio == pytest.approx(ms.dural_sac_area_mm2 / ms.disc_area_mm2)
    assert ms.area_ratio == pytest.approx((6 * 9) / (16 * 24), rel=0.04)
    assert ms.ap_ratio == pytest.approx(ms.dural_sac_ap_mm / ms.disc_ap_mm)
    assert ms.ap_ratio == pytest.approx(12 / 32, rel=0.06)
    assert ms.sqrt_area_ratio == pytest.approx(math.sqrt(ms.area_ratio))
    d = ms.to_dict()
    for k in RATIO_DEFINITIONS:
        assert isinstance(d[k], float)
    assert d["valid"] is True
    assert ms.feature("ap_ratio") == ms.ap_ratio
    with pytest.raises(KeyError):
        ms.feature("nope")


def test_empty_masks_give_nan_and_flag():
    sp = (1.0, 1.0)
    disc, _ = ellipse(sp, (50, 60), 16.0, 24.0)
    ms = measure_level(np.zeros_like(disc), disc, sp)
    assert not ms.valid and ms.dural_sac_empty and not ms.disc_empty
    assert math.isnan(ms.dural_sac_area_mm2) and math.isnan(ms.area_ratio) and math.isnan(ms.ap_ratio)
    assert ms.disc_area_mm2 > 0 and ms.warnings
    d = ms.to_dict()
    assert d["area_ratio"] is None and d["valid"] is False
    ms2 = measure_level(np.zeros_like(disc), np.zeros_like(disc), sp)
    assert ms2.disc_empty and ms2.dural_sac_empty and len(ms2.warnings) == 2


def test_bad_arguments():
    with pytest.raises(ValueError):
        area_mm2(np.zeros((3, 3, 3)), (1, 1))
    with pytest.raises(ValueError):
        area_mm2(np.zeros((3, 3)), (0, 1))
    with pytest.raises(ValueError):
        ap_diameter_mm(np.ones((3, 3)), (1, 1), ap_direction=(0, 0))
