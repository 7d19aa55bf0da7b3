"""Mid-sagittal slice choice and head-up display transforms."""

import numpy as np
import pytest

from lumbargrade.levels.mid_sagittal import (
    display_transform,
    from_display,
    mid_sagittal_index,
    to_display,
)


def _body(n_slices, mid, rng):
    """A left-right symmetric 'body' about slice ``mid`` (slices 2 mm apart) with noise."""
    rows, cols = 64, 48
    rr, cc = np.meshgrid(np.arange(rows), np.arange(cols), indexing="ij")
    vol = np.zeros((n_slices, rows, cols), np.float32)
    for k in range(n_slices):
        x = abs(k - mid) * 2.0  # mm from the mid plane
        canal = np.exp(-((cc - 30) ** 2) / 8.0) * np.exp(-x ** 2 / 30.0)  # bright CSF, midline only
        bodies = (np.sin(rr / 5.0) > 0) * np.exp(-x ** 2 / 400.0) * (np.abs(cc - 15) < 8)
        muscle = np.exp(-((x - 20) ** 2) / 50.0) * (np.abs(cc - 38) < 6) * (0.5 + 0.5 * np.cos(rr / 3.0 + x / 7.0))
        vol[k] = 2 * canal + bodies + muscle + rng.normal(0, 0.05, (rows, cols))
    return vol


@pytest.mark.parametrize("n,mid", [(15, 7), (19, 6), (21, 13)])
def test_mid_sagittal_is_the_symmetry_plane(n, mid):
    vol = _body(n, mid, np.random.default_rng(n))
    assert mid_sagittal_index(vol, slice_spacing_mm=2.0) == mid


def test_thin_slab_gives_centre():
    vol = np.random.default_rng(0).random((3, 16, 16))
    assert mid_sagittal_index(vol) == 1


@pytest.mark.parametrize("row_c,col_c,expect", [
    ((0, 1, 0), (0, 0, -1), (False, False, False)),   # standard DICOM sagittal
    ((0, -1, 0), (0, 0, -1), (False, False, True)),   # anterior on the right
    ((0, 1, 0), (0, 0, 1), (False, True, False)),     # feet up
    ((0, 0, -1), (0, 1, 0), (True, False, False)),    # transposed
])
def test_display_transform_and_inverse(row_c, col_c, expect):
    t = display_transform(row_c, col_c)
    assert t == expect
    img = np.arange(6 * 4).reshape(6, 4)
    disp = to_display(img, t)
    pts = np.array([[0.0, 0.0], [disp.shape[0] - 1.0, 1.0], [2.0, disp.shape[1] - 1.0]])
    back = from_display(pts, img.shape, t)
    for (r, c), (r0, c0) in zip(pts, back):
        assert disp[int(r), int(c)] == img[int(r0), int(c0)]
