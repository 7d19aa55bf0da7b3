"""Patch extraction: geometry, spacing invariance, mirroring of left patches."""

from __future__ import annotations

import numpy as np
import pytest

from lumbargrade.grading.patches import (
    PatchConfig,
    box_centre,
    box_size_mm,
    extract_patch,
    level_patches,
    mirror_boxes,
    normalise_slice,
    sac_centroid,
)


def _offsets(n: int, size_mm: float) -> np.ndarray:
    return (np.arange(n) + 0.5 - n / 2) * (size_mm / n)


@pytest.mark.parametrize("antialias", [False, True])
def test_patch_geometry_on_linear_image(antialias):
    # f = 2 y + 3 x in mm is reproduced exactly by bilinear sampling (and by Gaussian smoothing)
    sr, sc = 0.6, 0.8
    rr, cc = np.mgrid[:200, :160].astype(np.float64)
    img = 2.0 * rr * sr + 3.0 * cc * sc
    centre = (91.3, 77.6)
    size, n = 30.0, 24  # output spacing 1.25 mm: coarser than the image, so antialias is active
    patch = extract_patch(img, (sr, sc), centre, size, n, antialias=antialias)
    off = _offsets(n, size)
    expect = 2.0 * (centre[0] * sr + off[:, None]) + 3.0 * (centre[1] * sc + off[None, :])
    assert patch.shape == (n, n) and patch.dtype == np.float32
    np.testing.assert_allclose(patch, expect, rtol=1e-5, atol=1e-2)
    # the patch centre (between the 4 middle pixels) is centre_rc
    mid = patch[n // 2 - 1 : n // 2 + 1, n // 2 - 1 : n // 2 + 1].mean()
    assert mid == pytest.approx(2 * centre[0] * sr + 3 * centre[1] * sc, abs=1e-2)


def test_patch_content_is_independent_of_image_spacing():
    # one analytic scene (smooth blobs, in mm) imaged at two spacings gives the same patch
    def scene(spacing, shape):
        y = np.arange(shape[0])[:, None] * spacing[0]
        x = np.arange(shape[1])[None, :] * spacing[1]
        return (np.exp(-((y - 50) ** 2 + (x - 60) ** 2) / (2 * 6.0**2))
                + 0.5 * np.exp(-((y - 42) ** 2 + (x - 70) ** 2) / (2 * 3.0**2)))

    centre_mm = (48.0, 62.0)
    patches = []
    for sp in [(0.5, 0.5), (0.9, 0.7)]:
        shape = (int(120 / sp[0]), int(130 / sp[1]))
        img = scene(sp, shape)
        patches.append(extract_patch(img, sp, (centre_mm[0] / sp[0], centre_mm[1] / sp[1]), 32.0, 32))
    assert np.abs(patches[0] - patches[1]).max() < 0.03
    assert patches[0].max() > 0.5  # the blobs are in the patch


def test_rectangular_patch_and_out_of_image_fill():
    img = np.ones((50, 50), np.float32)
    p = extract_patch(img, (1.0, 1.0), (0, 0), (20.0, 10.0), (20, 10), fill=-1.0)
    assert p.shape == (20, 10)
    assert p[0, 0] == -1.0 and p[-1, -1] == 1.0
    far = extract_patch(img, (1.0, 1.0), (500, 500), 10.0, 8, fill=-2.0)
    assert np.all(far == -2.0)


def test_mirror_flag_equals_patch_of_mirrored_image():
    rng = np.random.default_rng(1)
    img = rng.normal(size=(80, 90)).astype(np.float32)
    sp, centre = (0.7, 0.6), (37.2, 20.7)
    a = extract_patch(img, sp, centre, 25.0, 32)
    b = extract_patch(img[:, ::-1], sp, (centre[0], img.shape[1] - 1 - centre[1]), 25.0, 32, mirror=True)
    np.testing.assert_allclose(a, b, atol=1e-5)


def _scene():
    rng = np.random.default_rng(2)
    img = rng.normal(100, 20, size=(120, 140)).astype(np.float32)
    rr, cc = np.mgrid[:120, :140]
    sac = (rr - 60) ** 2 + (cc - 66) ** 2 < 12**2
    img[sac] += 300
    boxes = {
        "facet_left": [70, 85, 100, 115], "facet_right": [70, 20, 100, 50],
        "foramen_left": [50, 90, 72, 118], "foramen_right": [52, 15, 70, 45],
    }
    return img, sac, boxes


def test_left_patch_of_mirrored_image_is_right_patch_of_original():
    img, sac, boxes = _scene()
    sp = (0.7, 0.7)
    cfg = PatchConfig(patch_px=48, central_mm=40.0, lateral_margin_mm=4.0)
    orig = level_patches(img, sp, sac, boxes, cfg)
    mimg, msac = img[:, ::-1], sac[:, ::-1]
    mboxes = mirror_boxes(boxes, img.shape[1])
    assert mboxes["foramen_left"] == [52, 140 - 45, 70, 140 - 15]
    mirr = level_patches(mimg, sp, msac, mboxes, cfg)
    assert set(orig) == {"central", "facet_left", "facet_right", "foramen_left", "foramen_right"}
    for side, other in [("left", "right"), ("right", "left")]:
        for f in ("foramen", "facet"):
            np.testing.assert_allclose(mirr[f"{f}_{side}"], orig[f"{f}_{other}"], atol=1e-5)
    np.testing.assert_allclose(mirr["central"], orig["central"][:, ::-1], atol=1e-5)
    # a left patch is flipped: the un-flipped cut of the left box is its mirror image
    norm = normalise_slice(img, cfg.percentiles)
    size = max(box_size_mm(boxes["foramen_left"], sp)) + 8.0
    raw = extract_patch(norm, sp, box_centre(boxes["foramen_left"]), size, 48)
    np.testing.assert_allclose(orig["foramen_left"], raw[:, ::-1], atol=1e-6)


def test_level_patches_skips_missing_and_sizes():
    img, sac, boxes = _scene()
    out = level_patches(img, (0.7, 0.7), sac, {"facet_left": boxes["facet_left"], "foramen_right": None},
                        PatchConfig(patch_px=32, lateral_mm=30.0))
    assert set(out) == {"central", "facet_left"}
    assert all(p.shape == (32, 32) for p in out.values())
    out = level_patches(img, (0.7, 0.7), np.zeros_like(sac), None)
    assert out == {}


def test_helpers():
    assert box_centre([10, 20, 14, 30]) == (11.5, 24.5)
    assert box_size_mm([10, 20, 14, 30], (0.5, 2.0)) == (2.0, 20.0)
    m = np.zeros((10, 10), bool)
    m[2:5, 6:8] = True
    assert sac_centroid(m) == (3.0, 6.5)
    with pytest.raises(ValueError):
        sac_centroid(np.zeros((4, 4)))
    x = np.arange(10000, dtype=np.float32).reshape(100, 100)
    n = normalise_slice(x, (1, 99))
    assert np.percentile(n, 1) == pytest.approx(0.0, abs=1e-5)
    assert np.percentile(n, 99) == pytest.approx(1.0, abs=1e-5)
    assert np.all(np.isfinite(normalise_slice(np.zeros((5, 5)))))
    cfg = PatchConfig(patch_px=40, lateral_mm=30.0)
    assert PatchConfig.from_dict(cfg.to_dict()) == cfg
