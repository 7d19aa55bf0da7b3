"""Landmark training helpers: augmentation keeps targets on their structures; evaluation metrics."""

import numpy as np
import pytest

from lumbargrade.levels.landmarks import PREPROCESS_DEFAULTS
from lumbargrade.levels.training import DEFAULT_CONFIG, Sample, augment, evaluate


def _dots_sample(spacing=None):
    h, w = 400, 300
    img = np.zeros((h, w), np.float32)
    t = np.array([[80.0, 140.0], [140.0, 150.0], [200.0, 155.0], [260.0, 150.0], [320.0, 140.0]])
    for r, c in t:
        img[int(r) - 4:int(r) + 5, int(c) - 4:int(c) + 5] = 1.0
    return Sample(img, t + 0.0, spacing, "g", "test", "dots")


@pytest.mark.parametrize("spacing", [None, (0.6, 0.9)])
def test_augmented_targets_follow_the_image(spacing):
    from scipy import ndimage

    aug = dict(DEFAULT_CONFIG["aug"], gain=[1.0, 1.0], bias=0.0, gamma=[1.0, 1.0], noise=[0.0, 0.0], p_crop=0.7)
    s = _dots_sample(spacing)
    rng = np.random.default_rng(3)
    for _ in range(6):
        x, t = augment(s, rng, PREPROCESS_DEFAULTS, aug)
        assert x.shape == (256, 256)
        assert np.all((t > 0) & (t < 255))
        lab, n = ndimage.label(x > 0.3)
        assert n == 5
        cents = np.array(ndimage.center_of_mass(x, lab, range(1, n + 1)))
        for tt in t:  # every target sits on a dot
            assert np.min(np.hypot(*(cents - tt).T)) < 1.0


def test_evaluate_errors_and_identification():
    s = _dots_sample((0.5, 0.5))
    good = s.targets + np.array([3.0, 4.0])  # 5 px = 2.5 mm off everywhere
    m = evaluate([good], [s])
    assert m["px"]["all"]["mean"] == pytest.approx(5.0)
    assert m["mm"]["all"]["mean"] == pytest.approx(2.5)
    assert m["frac_height"]["all"]["mean"] == pytest.approx(5.0 / 400)
    assert m["level_identification_accuracy"] == 1.0 and m["images_all_levels_identified"] == 1.0
    shifted = s.targets.copy()
    shifted[:4] = s.targets[1:]  # every landmark one level too low except the last
    m = evaluate([shifted], [s])
    assert m["level_identification_accuracy"] == pytest.approx(0.2)
    assert m["images_all_levels_identified"] == 0.0
