"""The bundled segmenter on real MRI: eight axial planes of a real 3D T2 volume (tests/fixtures/
real_axial, outlines drawn without the networks). A regression guard: the pack's networks were
trained on the phantom only and must keep finding the real dural sac, whatever the storage
layout, and never return a wrong sac as plausible."""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pytest

BENCH = Path(__file__).resolve().parents[1] / "benchmarks"


@pytest.fixture(scope="module")
def results():
    sys.path.insert(0, str(BENCH))
    try:
        from real_mri_reference import load_reference
    finally:
        sys.path.remove(str(BENCH))
    from lumbargrade.io.orientation import axial_view, restore
    from lumbargrade.metrics import dice
    from lumbargrade.modelpack import load_pack
    from lumbargrade.segment_runner import SliceInput, segment_slices

    refs, recs, masks = load_reference()
    seg = load_pack().get("segmentation")
    out = []
    for ref, rec, truth in zip(refs, recs, masks):
        row = {"index": rec["index"]}
        for layout in ("+x+y", "-y+x"):
            img, g = restore(ref.pixels(), ref.geometry, layout)
            (r,) = segment_slices([SliceInput(layout, rec["index"], tuple(g.pixel_spacing), g, layout, image=img)], seg)
            sac = axial_view(g).to_canonical(r["labels"]) == 1
            row[layout] = {"sac": sac, "dice": float(dice(sac, truth)), "plausible": r["record"]["plausible"]}
        out.append(row)
    return out


def test_the_reference_masks_are_what_the_reference_tool_draws():
    sys.path.insert(0, str(BENCH))
    try:
        from real_mri_reference import load_reference, reference_mask
    finally:
        sys.path.remove(str(BENCH))
    refs, recs, masks = load_reference()
    for ref, rec, m in zip(refs, recs, masks):
        np.testing.assert_array_equal(reference_mask(ref.pixels(), rec["roi"]), m)


def test_the_reference_tool_says_where_its_outline_is_the_region_not_the_image():
    """A bright disc (radius 6 px) on a dark plane: a region around it leaves every ray to the
    image's half-maximum; a region cut through the disc bounds the rays that meet the cut; bright tissue touching one side of
    the disc inside the region bounds the rays on that side and enlarges the outline."""
    sys.path.insert(0, str(BENCH))
    try:
        from real_mri_reference import reference_outline
    finally:
        sys.path.remove(str(BENCH))
    rr, cc = np.mgrid[0:64, 0:64].astype(float)
    disc = np.hypot(rr - 32, cc - 32) <= 6
    plane = np.where(disc, 100.0, 5.0)
    free, share = reference_outline(plane, {"ellipse": [32, 32, 9, 9]})
    assert share == 0.0 and abs(free.sum() - np.pi * 36) < 0.1 * np.pi * 36
    cut, share = reference_outline(plane, {"ellipse": [32, 32, 9, 9], "cuts": [[0, 1, 34.0]]})
    assert abs(share - 140 / 360) < 0.05 and cut.sum() < free.sum()  # rays within 70 deg of the cut's normal
    fat = plane.copy()
    fat[(cc >= 37) & (np.abs(rr - 32) <= 4)] = 90.0  # bright tissue against the disc's right side
    grown, share = reference_outline(fat, {"ellipse": [32, 32, 9, 9]})
    assert 0.05 < share < 0.5 and grown.sum() > free.sum()


def test_the_sac_is_found_on_real_planes(results):
    dices = np.array([r["+x+y"]["dice"] for r in results])
    assert np.median(dices) >= 0.8, dices  # the phantom-only pack before domain randomisation: 0.0
    assert (dices >= 0.5).sum() >= 6, dices


def test_same_sac_in_every_layout(results):
    for r in results:
        np.testing.assert_array_equal(r["+x+y"]["sac"], r["-y+x"]["sac"])


def test_a_wrong_sac_is_never_returned_as_plausible(results):
    for r in results:
        for layout in ("+x+y", "-y+x"):
            if r[layout]["dice"] < 0.5:
                assert not r[layout]["plausible"], (r["index"], layout, r[layout]["dice"])
