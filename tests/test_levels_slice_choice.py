"""Landmarks (sagittal pixels) -> patient mm -> the axial slice for each level, tilted blocks too."""

import numpy as np
import pytest

from lumbargrade.geometry import SliceGeometry
from lumbargrade.levels.names import LEVELS
from lumbargrade.levels.slice_choice import (
    block_centre_slice,
    choose_slices_by_block,
    choose_slices_for_landmarks,
    landmarks_to_patient,
    slice_for_point,
)


def _slice(centre, row_c, col_c, rows=160, cols=160, ps=(1.0, 1.0), thick=4.0):
    r = np.asarray(row_c, float) / np.linalg.norm(row_c)
    c = np.asarray(col_c, float) / np.linalg.norm(col_c)
    pos = np.asarray(centre, float) - (rows - 1) / 2 * ps[0] * c - (cols - 1) / 2 * ps[1] * r
    return SliceGeometry(position=pos, row_cosine=r, col_cosine=c, pixel_spacing=ps, rows=rows,
                         columns=cols, thickness=thick)


def _axial_block(centre, tilt_deg, n=5, spacing=4.0):
    """Axial slices tilted about x (posterior edge lifted by +tilt), sorted along the normal."""
    t = np.radians(tilt_deg)
    row_c = np.array([1.0, 0.0, 0.0])
    col_c = np.array([0.0, np.cos(t), np.sin(t)])
    nrm = np.cross(row_c, col_c)
    return [_slice(np.asarray(centre) + (k - (n - 1) / 2) * spacing * nrm, row_c, col_c) for k in range(n)]


# disc centres along a lordotic curve (LPS mm) and the tilt of each disc
DISCS = np.array([[1.0, 5.0, 110.0], [1.0, 0.0, 72.0], [1.0, -3.0, 35.0], [1.0, -2.0, -2.0], [1.0, 6.0, -36.0]])
TILTS = [0.0, 5.0, 12.0, 20.0, 32.0]
TRUE_SLICE = [2, 1, 3, 2, 2]  # each disc sits next to this slice of its block


def _setup():
    blocks = []
    for d, t, k in zip(DISCS, TILTS, TRUE_SLICE):
        nrm = _axial_block(d, t)[0].normal
        # shift the block so that slice k lies 1.3 mm from the disc centre
        centre = d - (k - 2) * 4.0 * nrm - 1.3 * nrm
        blocks.append(_axial_block(centre, t))
    # sagittal slice through x = 1 mm: columns grow posterior (+y), rows grow inferior (-z)
    sag = _slice((1.0, 0.0, 40.0), (0, 1, 0), (0, 0, -1), rows=320, cols=256, ps=(0.7, 0.7), thick=3.0)
    return blocks, sag


def test_landmarks_to_patient_round_trip():
    _, sag = _setup()
    rc = sag.patient_to_pixel(DISCS)[:, :2]
    assert np.allclose(landmarks_to_patient(rc, sag), DISCS, atol=1e-9)
    assert np.all(np.diff(rc[:, 0]) > 0)  # L1/L2 at the top of the image


def test_each_level_gets_its_own_block_and_slice_including_tilted_blocks():
    blocks, sag = _setup()
    rc = sag.patient_to_pixel(DISCS)[:, :2]
    choice = choose_slices_for_landmarks(landmarks_to_patient(rc, sag), blocks)
    for i, lv in enumerate(LEVELS):
        c = choice[lv]
        assert c is not None and c.method == "landmarks"
        assert (c.block, c.slice) == (i, TRUE_SLICE[i]), lv
        assert c.distance_mm == pytest.approx(1.3, abs=1e-6)


def test_block_order_in_list_does_not_matter():
    blocks, sag = _setup()
    perm = [3, 0, 4, 1, 2]
    pts = landmarks_to_patient(sag.patient_to_pixel(DISCS)[:, :2], sag)
    choice = choose_slices_for_landmarks(pts, [blocks[i] for i in perm])
    for i, lv in enumerate(LEVELS):
        assert perm[choice[lv].block] == i


def test_point_outside_every_field_of_view_gets_none():
    blocks, _ = _setup()
    assert slice_for_point(np.array([300.0, 0.0, 0.0]), blocks) is None
    choice = choose_slices_for_landmarks(np.array([[300.0, 0.0, 110.0]] * 5), blocks)
    assert all(v is None for v in choice.values())


def test_distance_is_measured_to_the_tilted_plane():
    # one disc, two candidate blocks: a steep (30 degree) block whose middle plane passes through
    # the disc centre, and a flat block whose nearest slice is 1 mm away in z
    d = np.array([0.0, 20.0, -30.0])
    tilted = _axial_block(d, 30.0)
    flat = _axial_block(d + np.array([0.0, 0.0, 3.0]), 0.0)
    b, k, dist = slice_for_point(d, [flat, tilted])
    assert (b, k) == (1, 2) and abs(dist) < 1e-6


def test_block_centre_fallback():
    blocks, _ = _setup()
    assert block_centre_slice(blocks[0]) == 2
    assert block_centre_slice(_axial_block((0, 0, 0), 0.0, n=4)) in (1, 2)
    # shuffled, superior-first ordering is recovered from geometry; lowest block is L5/S1
    perm = [4, 2, 0, 3, 1]
    got = choose_slices_by_block([blocks[i] for i in perm])
    assert {lv: perm[b] for lv, (b, _) in got.items()} == {lv: i for i, lv in enumerate(LEVELS)}
    assert all(k == 2 for _, k in got.values())
    # three blocks cover the lowest three levels; a single stack cannot be assigned
    three = choose_slices_by_block(blocks[2:])
    assert sorted(three) == ["L3/L4", "L4/L5", "L5/S1"]
    assert choose_slices_by_block([blocks[0]]) == {}
