"""Level naming: the view-consistency check and the landmark trainers' domain randomisation."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from lumbargrade.levels.landmarks import LoadedLandmarkModel, naming_consistency


def _heatmaps_at(rc_in: np.ndarray, size: int = 256, stride: int = 4) -> np.ndarray:
    """(1, 5, H, W) logits peaked at the given input-pixel [row, col] points."""
    h = size // stride
    yy, xx = np.mgrid[:h, :h]
    out = np.zeros((1, len(rc_in), h, h), np.float32)
    for k, (r, c) in enumerate(rc_in):
        out[0, k] = -((yy - (r + 0.5) / stride + 0.5) ** 2 + (xx - (c + 0.5) / stride + 0.5) ** 2) * 4.0
    return out


class _Bright:
    """A 'network' that finds the five brightest blobs (disc-like) of its input: it follows the anatomy."""

    def __call__(self, x):
        from scipy import ndimage

        out = []
        for img in x[:, 0]:
            lab, n = ndimage.label(img > 0.5)
            cents = sorted(ndimage.center_of_mass(img, lab, range(1, n + 1)))[-5:]
            out.append(_heatmaps_at(np.array(cents))[0])
        return np.stack(out)


class _Counting:
    """A 'network' that puts the levels at fixed places of its input whatever it sees: it counts
    from the edges of the image."""

    def __call__(self, x):
        pts = np.array([[60 + 32 * k, 128] for k in range(5)], float)
        return np.concatenate([_heatmaps_at(pts) for _ in range(len(x))])


def _image():
    img = np.zeros((300, 200), np.float32)
    rows = [70 + 38 * k for k in range(6)]  # six discs: T12/L1 .. L5/S1
    for r in rows:
        img[r - 3:r + 4, 80:120] = 1.0
    return img, np.array([[r, 100.0] for r in rows[1:]])


def test_a_network_that_follows_the_anatomy_passes():
    img, rc = _image()
    model = LoadedLandmarkModel(_Bright(), {}, Path("."))
    assert naming_consistency(model, img, None, rc) == []


def test_a_network_that_counts_from_the_image_edge_is_flagged():
    img, rc = _image()
    model = LoadedLandmarkModel(_Counting(), {}, Path("."))
    warn = naming_consistency(model, img, None, rc)
    assert warn and "level naming unstable" in warn[0]


def test_synthetic_copies_of_phantom_samples():
    from lumbargrade.levels.training import Sample, add_synthetic_copies

    rng = np.random.default_rng(0)
    tissues = np.full((80, 60), 9, np.uint8)
    tissues[:, 25:35] = 1  # a CSF column
    tissues[::16, 5:25] = 4  # discs
    targets = np.array([[8.0 + 16 * k, 15.0] for k in range(5)])
    pre = {"percentiles": [1.0, 99.5], "clip": [-0.2, 1.5]}
    s = Sample(rng.random((80, 60)).astype(np.float32), targets, (1.0, 1.0), "P0", "phantom", "x", tissues)
    other = Sample(rng.random((80, 60)).astype(np.float32), targets, None, "P1", "phantom", "y")
    out = add_synthetic_copies([s, other], 3, {}, pre, seed=1)
    assert len(out) == 2 + 3  # copies only of the sample with a tissue map
    copies = out[2:]
    assert all(c.source == "phantom-synth" and c.tissues is None for c in copies)
    assert all(np.array_equal(c.targets, targets) for c in copies)
    assert not np.allclose(copies[0].image, copies[1].image)
    assert add_synthetic_copies([s], 0, {}, pre) == [s]


@pytest.mark.parametrize("bad", [0.2, 0.9])
def test_the_threshold_is_in_disc_spacings(bad):
    """A shift of about one disc spacing is flagged, a sub-disc wobble is not (max_shift 0.75)."""
    img, rc = _image()

    class _Shift:
        def __call__(self, x):
            res = _Bright()(x)
            return np.roll(res, int(round(bad * 38 * 256 / 300 / 4)), axis=2)  # move every heatmap down

    warn = naming_consistency(LoadedLandmarkModel(_Shift(), {}, Path(".")), img, None, rc)
    assert bool(warn) == (bad > 0.75)
