"""The landmark refiner's geometry: patch frames, crops and the way back to slice pixels."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from lumbargrade.levels.refine import (
    REFINER_DEFAULTS,
    LoadedRefiner,
    crop_patch,
    patch_frame,
    refine_landmarks,
)


def _apply(m, rc):
    return (np.c_[np.atleast_2d(rc), np.ones(1)] @ m.T)[0, :2]


def _spine(spacing=(0.5, 0.8)):
    # five points 40 mm apart along a line tilted 20 degrees from the rows, in slice pixels
    t = np.radians(20)
    mm = np.array([[100 + 40 * k * np.cos(t), 60 + 40 * k * np.sin(t)] for k in range(5)])
    return mm / np.array(spacing), spacing


@pytest.mark.parametrize("k", [0, 2, 4])
def test_patch_frame_centre_axis_and_scale(k):
    rc, sp = _spine()
    size = 64
    m = patch_frame(rc, k, sp, size, crop_factor=1.0)
    c = (size - 1) / 2
    assert np.allclose(_apply(m, [c, c]), rc[k])
    # one patch row down moves along the spine axis by gap/size mm
    step_mm = (_apply(m, [c + 1, c]) - rc[k]) * np.array(sp)
    assert np.isclose(np.linalg.norm(step_mm), 40.0 / size)
    axis = np.array([np.cos(np.radians(20)), np.sin(np.radians(20))])
    assert np.allclose(step_mm / np.linalg.norm(step_mm), axis)
    # a patch column step is perpendicular and points towards increasing slice columns
    col_mm = (_apply(m, [c, c + 1]) - rc[k]) * np.array(sp)
    assert abs(col_mm @ axis) < 1e-9 and col_mm[1] > 0


def test_crop_follows_the_frame():
    rc, sp = _spine(spacing=(1.0, 1.0))
    img = np.zeros((400, 300), np.float32)
    blob = rc[2] + np.array([3.0, -2.0])  # a bright dot 3 px below, 2 px left of landmark 2
    rr, cc = np.mgrid[:400, :300]
    img += np.exp(-((rr - blob[0]) ** 2 + (cc - blob[1]) ** 2) / 2.0)
    m = patch_frame(rc, 2, sp, 64)
    patch = crop_patch(img, m, 64)
    ij = np.unravel_index(np.argmax(patch), patch.shape)
    back = _apply(m, np.array(ij, float))
    assert np.hypot(*(back - blob)) < 1.0  # within a patch pixel (40/64 px)


class _PeakNet:
    """Stands in for the network: a heatmap whose logits are the (strided) input, scaled, so the
    soft-argmax lands on the brightest spot of the patch."""

    def __call__(self, x):  # x: [n, 1, h, w] float32 array -> 2x2 average pooled, scaled
        n, c, h, w = x.shape
        return 40.0 * x.reshape(n, c, h // 2, 2, w // 2, 2).mean(axis=(3, 5))


def test_refine_moves_landmarks_onto_the_disc_and_back():
    rc_true, sp = _spine(spacing=(0.7, 0.7))
    img = np.zeros((400, 400), np.float32)
    rr, cc = np.mgrid[:400, :400]
    for r, c in rc_true:
        img += np.exp(-((rr - r) ** 2 + (cc - c) ** 2) / 8.0)
    rng = np.random.default_rng(0)
    coarse = rc_true + rng.normal(0, 3.0, rc_true.shape)  # ~2 mm coarse errors
    ref = LoadedRefiner(_PeakNet(), {"refiner": dict(REFINER_DEFAULTS)}, Path("."))
    out = refine_landmarks(ref, img, coarse, sp, normalised=True)
    err_coarse = np.hypot(*(coarse - rc_true).T).mean()
    err_ref = np.hypot(*(out - rc_true).T).mean()
    assert err_ref < 0.3 * err_coarse
    assert err_ref < 1.0


def test_refine_keeps_the_coarse_point_when_the_patch_says_something_absurd():
    rc_true, sp = _spine(spacing=(1.0, 1.0))
    img = np.zeros((400, 400), np.float32)
    rr, cc = np.mgrid[:400, :400]
    far = rc_true[1] + np.array([0.0, 18.0])  # a bright spot 18 px (0.45 x gap) away, nothing at the disc
    img += np.exp(-((rr - far[0]) ** 2 + (cc - far[1]) ** 2) / 8.0)
    ref = LoadedRefiner(_PeakNet(), {"refiner": dict(REFINER_DEFAULTS)}, Path("."))
    out = refine_landmarks(ref, img, rc_true, sp, normalised=True, max_shift_frac=0.35)
    assert np.allclose(out[1], rc_true[1])


def _disc_image(rc, shape=(500, 400)):
    img = np.zeros(shape, np.float32)
    rr, cc = np.mgrid[: shape[0], : shape[1]]
    for r, c in rc:
        img += np.exp(-((rr - r) ** 2 + (cc - c) ** 2) / 8.0)
    return img


def test_repair_finds_the_disc_the_network_skipped():
    """L1/L2 placed on T12/L1 and L2/L3 half-way up (the level-count error): both are re-found
    one disc spacing above the level below, where the discs are."""
    from lumbargrade.levels.refine import repair_skipped_discs

    true = np.array([[100.0 + 40 * k, 150.0 + 3 * k] for k in range(5)])  # 40 px = 40 mm apart
    t12 = true[0] - (true[1] - true[0])
    img = _disc_image(np.vstack([t12[None], true]))
    wrong = true.copy()
    wrong[0] = t12
    wrong[1] = 0.5 * (true[0] + true[1])
    ref = LoadedRefiner(_PeakNet(), {"refiner": dict(REFINER_DEFAULTS)}, Path("."))
    out, notes = repair_skipped_discs(ref, img, wrong, (1.0, 1.0), normalised=True)
    assert np.hypot(*(out - true).T).max() < 1.5
    assert [n.split(":")[0] for n in notes] == ["L2/L3", "L1/L2"]


def test_repair_leaves_a_regular_spine_alone():
    from lumbargrade.levels.refine import repair_skipped_discs

    true = np.array([[100.0 + 40 * k, 150.0] for k in range(5)])
    img = _disc_image(true)
    ref = LoadedRefiner(_PeakNet(), {"refiner": dict(REFINER_DEFAULTS)}, Path("."))
    out, notes = repair_skipped_discs(ref, img, true, (1.0, 1.0), normalised=True)
    assert notes == [] and np.allclose(out, true)
    # a long upper gap with no disc where one spacing would put it is not "repaired"
    odd = true.copy()
    odd[0] = true[1] - np.array([60.0, 0.0])
    img = _disc_image(odd)
    out, notes = repair_skipped_discs(ref, img, odd, (1.0, 1.0), normalised=True)
    assert notes == [] and np.allclose(out, odd)


def test_short_training_learns_to_find_synthetic_discs():
    """A few dozen steps on synthetic sagittal slices (bright discs on a noisy background) move
    the refined landmarks closer to the discs than the untrained network does."""
    import torch

    from lumbargrade.levels.refine import TRAIN_DEFAULTS, create_refiner, refine_landmarks, train_refiner
    from lumbargrade.levels.training import Sample

    rng = np.random.default_rng(0)

    def sample(k):
        t = np.array([[60.0 + 38 * i, 100.0 + 4 * i + rng.normal(0, 3)] for i in range(5)])
        img = _disc_image(t, (300, 220)) + rng.normal(0, 0.05, (300, 220)).astype(np.float32)
        return Sample(img.astype(np.float32), t, (1.0, 1.0), f"g{k}", "phantom", f"s{k}")

    train = [sample(k) for k in range(6)]
    test = [sample(10 + k) for k in range(3)]
    cfg = dict(TRAIN_DEFAULTS, steps=80, batch_size=8, threads=1, seed=0)
    prm = dict(REFINER_DEFAULTS)

    def error(net):
        ref = LoadedRefiner(net, {"refiner": prm}, Path("."))
        errs = []
        for s in test:
            coarse = s.targets + np.random.default_rng(1).normal(0, 4.0, s.targets.shape)
            out = refine_landmarks(ref, s.image, coarse, s.spacing, normalised=True)
            errs.append(np.hypot(*(out - s.targets).T).mean())
        return float(np.mean(errs))

    torch.manual_seed(0)
    before = error(create_refiner(**prm).eval())
    after = error(train_refiner(cfg, prm, train, [], log=lambda m: None))
    assert after < 0.7 * before, (before, after)
