"""SPIDER PNG layout: disc centres from the disc mask (fixture masks and synthetic ones)."""

from pathlib import Path

import numpy as np
import pytest

from lumbargrade.errors import InputError
from lumbargrade.levels.spider import (
    DISC_VALUE,
    VERTEBRA_VALUE,
    disc_centres,
    list_spider,
    lumbar_disc_centres,
    read_spider_image,
    read_spider_mask,
)

FIX = Path(__file__).parent / "fixtures" / "spider"


def _synthetic(n_discs=7, split_lowest=False, speck=False):
    """Vertebrae (76) and discs (29) stacked down the image, 70 px apart, tilted a little."""
    m = np.zeros((640, 400), np.uint8)
    for k in range(n_discs + 1):
        top = 20 + 70 * k
        m[top:top + 56, 150:250] = VERTEBRA_VALUE
    centres = []
    for k in range(n_discs):
        r = 20 + 70 * k + 56 + 7
        m[r - 6:r + 7, 150:250] = DISC_VALUE
        centres.append((r, 199.5))
    if split_lowest:  # lowest disc in two pieces separated by a gap (no vertebra between)
        r = int(centres[-1][0])
        m[r - 6:r + 7, 195:205] = 0
    if speck:
        m[5:7, 10:12] = DISC_VALUE
    return m, np.array(centres, float)


def test_fixture_layout_and_five_ordered_lumbar_centres():
    items = list_spider(FIX)
    assert len(items) == 3
    for s in items:
        img = read_spider_image(s.image)
        mask = read_spider_mask(s.mask)
        assert img.ndim == 2 and img.shape == mask.shape
        c = lumbar_disc_centres(mask)
        assert c is not None and c.shape == (5, 2)
        assert np.all(np.diff(c[:, 0]) > 0)  # top to bottom
        gaps = np.hypot(*np.diff(c, axis=0).T)
        assert gaps.min() > 0.6 * np.median(gaps) and gaps.max() < 1.5 * np.median(gaps)
        # each centre lies on (or right next to) disc pixels
        for r, col in c:
            win = mask[int(r) - 6:int(r) + 7, int(col) - 6:int(col) + 7]
            assert (win == DISC_VALUE).any()
        # the lowest lumbar disc is the lowest disc in the image (L5/S1)
        assert c[-1, 0] == pytest.approx(disc_centres(mask)[-1, 0])


def test_study_35_shows_thoracic_discs_which_are_dropped():
    s = [s for s in list_spider(FIX) if s.study == "35"][0]
    mask = read_spider_mask(s.mask)
    assert len(disc_centres(mask)) > 5
    c = lumbar_disc_centres(mask)
    assert np.allclose(c, disc_centres(mask)[-5:])


def test_synthetic_split_disc_is_merged_and_specks_dropped():
    m, truth = _synthetic(split_lowest=True, speck=True)
    c = disc_centres(m)
    assert len(c) == len(truth)
    assert np.allclose(c, truth, atol=0.6)
    assert np.allclose(lumbar_disc_centres(m), truth[-5:], atol=0.6)


def test_too_few_discs_gives_none():
    m, _ = _synthetic(n_discs=4)
    assert lumbar_disc_centres(m) is None


def test_not_a_spider_folder(tmp_path):
    with pytest.raises(InputError):
        list_spider(tmp_path)
