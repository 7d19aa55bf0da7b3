"""lumbargrade.quality: the plausibility gate."""

from __future__ import annotations

import numpy as np

from lumbargrade.quality import QualityConfig, check_slice


def _disc_and_sac(shape=(160, 160), sac_behind_mm=22.0, sac_r_mm=7.0, spacing=(0.7, 0.7)):
    rr, cc = np.meshgrid(np.arange(shape[0]) * spacing[0], np.arange(shape[1]) * spacing[1], indexing="ij")
    cy, cx = 45.0, 56.0
    disc = ((rr - cy) / 16) ** 2 + ((cc - cx) / 22) ** 2 <= 1
    sac = ((rr - cy - sac_behind_mm) / sac_r_mm) ** 2 + ((cc - cx) / (sac_r_mm * 1.3)) ** 2 <= 1
    return sac & ~disc, disc


def test_a_normal_level_passes():
    sac, disc = _disc_and_sac()
    q = {"sac_confidence": 0.97, "mirror_dice_sac": 0.96}
    assert check_slice(sac, disc, (0.7, 0.7), q) == []


def test_each_check_can_fail():
    sp = (0.7, 0.7)
    sac, disc = _disc_and_sac()
    assert check_slice(np.zeros_like(sac), disc, sp) == ["no dural sac found"]
    assert "no disc found on a disc-level slice" in check_slice(sac, np.zeros_like(disc), sp)
    assert check_slice(sac, np.zeros_like(disc), sp, disc_expected=False) == []
    tiny, _ = _disc_and_sac(sac_r_mm=1.5)
    assert any("area" in r for r in check_slice(tiny, disc, sp))
    front, _ = _disc_and_sac(sac_behind_mm=-25.0)
    assert any("in front of" in r for r in check_slice(front & ~disc, disc, sp))
    assert any("unsure" in r for r in check_slice(sac, disc, sp, {"sac_confidence": 0.5}))
    assert any("mirrored" in r for r in check_slice(sac, disc, sp, {"mirror_dice_sac": 0.4}))
    assert any("refined" in r for r in check_slice(sac, disc, sp, {"refiner_dice_sac": 0.5}))
    assert check_slice(sac, disc, sp, {"refiner_dice_sac": 0.9, "sac_refined": True}) == []
    shifted = np.roll(sac, 40, axis=1)
    assert any("midline" in r for r in check_slice(shifted, disc, sp))


def test_limits_come_from_the_config():
    sac, disc = _disc_and_sac()
    strict = QualityConfig(sac_area_mm2=(400.0, 500.0))
    assert any("dural sac area" in r for r in check_slice(sac, disc, (0.7, 0.7), config=strict))
