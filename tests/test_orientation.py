"""lumbargrade.io.orientation: one place decides where patient left and posterior lie in a slice."""

from __future__ import annotations

import numpy as np
import pytest

from lumbargrade.geometry import SliceGeometry
from lumbargrade.io.orientation import IDENTITY, LAYOUTS, axial_view, restore


def _geom(tilt=0.2, spacing=(0.8, 0.7), rows=5, columns=7):
    return SliceGeometry(position=np.array([-10.0, -20.0, 5.0]), row_cosine=np.array([1.0, 0, 0]),
                         col_cosine=np.array([0, np.cos(tilt), -np.sin(tilt)]), pixel_spacing=spacing,
                         rows=rows, columns=columns, thickness=3.0)


def _grid(g):
    rr, cc = np.meshgrid(np.arange(g.rows), np.arange(g.columns), indexing="ij")
    return g.pixel_to_patient(np.stack([rr, cc], -1).astype(float))


@pytest.mark.parametrize("layout", LAYOUTS)
def test_every_layout_gives_the_same_canonical_view(layout):
    g = _geom()
    img = np.arange(35.0).reshape(5, 7)
    stored, g2 = restore(img, g, layout)
    # every stored pixel keeps its patient position and value
    pts = _grid(g2)
    rc = np.rint(np.stack([g.patient_to_pixel(p) for p in pts.reshape(-1, 3)]))
    np.testing.assert_allclose(np.stack([g.patient_to_pixel(p) for p in pts.reshape(-1, 3)]), rc, atol=1e-6)
    np.testing.assert_array_equal(img[rc[:, 0].astype(int), rc[:, 1].astype(int)].reshape(stored.shape), stored)
    v = axial_view(g2)
    np.testing.assert_array_equal(v.to_canonical(stored), img)
    np.testing.assert_array_equal(v.from_canonical(img), stored)
    assert v.canonical_spacing(g2.pixel_spacing) == (0.8, 0.7)
    assert v.transpose == (layout[1] == "y")
    assert v.residual_deg == pytest.approx(0.0, abs=1e-6) and v.tilt_deg == pytest.approx(np.degrees(0.2))


@pytest.mark.parametrize("layout", LAYOUTS)
def test_boxes_and_points_round_trip(layout):
    g = _geom()
    img = np.zeros((5, 7))
    img[1:3, 4:6] = 1  # a box in the canonical view: rows 1-2, cols 4-5 (patient left, anterior)
    stored, g2 = restore(img, g, layout)
    v = axial_view(g2)
    box = v.box_from_canonical([1, 4, 3, 6], (5, 7))
    r0, c0, r1, c1 = box
    assert stored[r0:r1, c0:c1].all() and stored.sum() == (r1 - r0) * (c1 - c0)
    assert v.box_to_canonical(box, stored.shape) == [1, 4, 3, 6]
    p = v.point_from_canonical([1.5, 4.25], (5, 7))
    np.testing.assert_allclose(v.point_to_canonical(p, stored.shape), [1.5, 4.25])
    # the patient position of that point is the same in both geometries
    np.testing.assert_allclose(g2.pixel_to_patient(p), g.pixel_to_patient(np.array([1.5, 4.25])), atol=1e-9)


def test_patient_left_is_at_higher_columns_and_posterior_at_higher_rows():
    g = _geom(tilt=0.0)
    for layout in LAYOUTS:
        stored, g2 = restore(np.zeros((5, 7)), g, layout)
        v = axial_view(g2)
        a = g2.pixel_to_patient(v.point_from_canonical([2.0, 1.0], (5, 7)))
        b = g2.pixel_to_patient(v.point_from_canonical([2.0, 5.0], (5, 7)))
        c = g2.pixel_to_patient(v.point_from_canonical([4.0, 1.0], (5, 7)))
        assert b[0] > a[0] and abs(b[1] - a[1]) < 1e-9  # +columns = patient left (+x)
        assert c[1] > a[1]  # +rows = posterior (+y)


def test_not_axial_and_bad_orientation_are_refused():
    sag = SliceGeometry(position=np.zeros(3), row_cosine=np.array([0, 1.0, 0]), col_cosine=np.array([0, 0, -1.0]),
                        pixel_spacing=(1.0, 1.0), rows=4, columns=4, thickness=1.0)
    with pytest.raises(ValueError, match="not an axial slice"):
        axial_view(sag)
    bad = SliceGeometry(position=np.zeros(3), row_cosine=np.array([np.nan, 0, 0]), col_cosine=np.array([0, 1.0, 0]),
                        pixel_spacing=(1.0, 1.0), rows=4, columns=4, thickness=1.0)
    with pytest.raises(ValueError, match="not finite"):
        axial_view(bad)
    assert axial_view(None) is IDENTITY and IDENTITY.is_identity


def test_in_plane_rotation_is_measured():
    t = np.radians(30)
    g = SliceGeometry(position=np.zeros(3), row_cosine=np.array([np.cos(t), np.sin(t), 0]),
                      col_cosine=np.array([-np.sin(t), np.cos(t), 0]), pixel_spacing=(1.0, 1.0), rows=4, columns=4,
                      thickness=1.0)
    v = axial_view(g)
    assert v.is_identity and v.residual_deg == pytest.approx(30.0)
