"""Properties of the implicit phantom anatomy (lumbargrade.phantom.anatomy)."""

import numpy as np
import pytest

from lumbargrade.levels.names import LEVELS
from lumbargrade.phantom.anatomy import (
    AnatomyConfig,
    classify,
    sample_anatomy,
    structure_at,
    tissue_at,
)
from lumbargrade.phantom.pathology import LevelPathology
from lumbargrade.phantom.tissues import Structure, Tissue

SAC_TISSUES = {int(Tissue.CSF), int(Tissue.ROOTLET), int(Tissue.CORD)}
DISC_TISSUES = {int(Tissue.ANNULUS), int(Tissue.ANNULUS_INNER), int(Tissue.NUCLEUS), int(Tissue.NUCLEUS_P2),
                int(Tissue.NUCLEUS_P3), int(Tissue.NUCLEUS_P4), int(Tissue.NUCLEUS_P5)}


def _anat(seed=0, level="L4/L5", **kw):
    path = {lv: LevelPathology() for lv in LEVELS}
    path[level] = LevelPathology(**kw)
    return sample_anatomy(np.random.default_rng(seed), path, 50.0, "F")


def _disc_plane(anat, level, half=40.0, step=0.25, offset=0.0):
    """Points of the plane through the disc centre normal to the spine axis, (n, n, 3)."""
    lv = anat.levels[level]
    n = lv.normal_lps
    a = lv.ap_lps
    x = np.array([1.0, 0.0, 0.0])
    c = lv.centre_lps + n * offset - a * 20.0  # centre the grid on the canal
    t = np.arange(-half, half + 1e-9, step)
    A, X = np.meshgrid(t, t, indexing="ij")
    return c + A[..., None] * a + X[..., None] * x, step


def _sac_area(anat, level, offset=0.0, step=0.25):
    pts, step = _disc_plane(anat, level, offset=offset, step=step, half=25.0)
    return float((structure_at(anat, pts) == Structure.DURAL_SAC).sum()) * step * step


def test_levels_and_frames():
    anat = _anat()
    assert set(LEVELS) <= set(anat.levels)
    assert "T12/L1" in anat.levels
    zs = [anat.levels[lv].centre_lps[2] for lv in LEVELS]
    assert all(np.diff(zs) < 0), "levels must run cranial to caudal"
    for lv in anat.levels.values():
        assert abs(np.linalg.norm(lv.normal_lps) - 1) < 1e-9
        assert abs(np.linalg.norm(lv.ap_lps) - 1) < 1e-9
        assert abs(lv.normal_lps @ lv.ap_lps) < 1e-9
        assert lv.normal_lps[2] > 0.5 and lv.ap_lps[1] < -0.3
        assert lv.centre_lps[0] == 0.0
    # L5/S1 tilts more than L2/L3 (lordosis)
    tilt = {lv: np.degrees(np.arccos(anat.levels[lv].normal_lps[2])) for lv in LEVELS}
    assert tilt["L5/S1"] > tilt["L2/L3"]


def test_disc_centre_is_disc_and_sac_behind_it():
    anat = _anat()
    for name in LEVELS:
        lv = anat.levels[name]
        t = tissue_at(anat, lv.centre_lps[None])[0]
        assert int(t) in DISC_TISSUES
        # walking posteriorly from the disc centre we reach the dural sac
        d = np.arange(0, 40, 0.5)
        pts = lv.centre_lps - d[:, None] * lv.ap_lps
        lab = structure_at(anat, pts)
        assert (lab == Structure.DURAL_SAC).any()
        first_sac = np.argmax(lab == Structure.DURAL_SAC)
        assert (lab[:first_sac] == Structure.DURAL_SAC).sum() == 0


def test_tissue_structure_consistency():
    anat = _anat(central=0.6, facet_left=0.8, foramen_right=0.7, pfirrmann=3)
    g = np.random.default_rng(1)
    lv = anat.levels["L4/L5"]
    pts = lv.centre_lps + g.uniform(-45, 45, (60000, 3)) * [1.0, 1.0, 0.5] + [0, 15, 0]
    t, lab = classify(anat, pts)
    sac = lab == Structure.DURAL_SAC
    assert sac.sum() > 100
    assert np.isin(t[sac], list(SAC_TISSUES)).all()
    # CSF and rootlets occur only inside the sac
    assert (lab[np.isin(t, [int(Tissue.CSF), int(Tissue.ROOTLET)])] == Structure.DURAL_SAC).all()
    disc = lab == Structure.DISC
    assert disc.sum() > 100 and np.isin(t[disc], list(DISC_TISSUES)).all()
    assert (lab[np.isin(t, list(DISC_TISSUES))] == Structure.DISC).all()
    for lab_f in (Structure.FACET_LEFT, Structure.FACET_RIGHT):
        assert (lab == lab_f).sum() > 50
    assert (pts[lab == Structure.FACET_LEFT][:, 0] > 0).all()
    assert (pts[lab == Structure.FACET_RIGHT][:, 0] < 0).all()
    assert (pts[lab == Structure.FORAMEN_LEFT][:, 0] > 0).all()
    assert (pts[lab == Structure.FORAMEN_RIGHT][:, 0] < 0).all()
    # functions agree with classify
    assert (tissue_at(anat, pts[:500]) == t[:500]).all()
    assert (structure_at(anat, pts[:500]) == lab[:500]).all()


@pytest.mark.parametrize("central", [0.0, 0.6])
def test_sac_label_area_matches_analytic(central):
    anat = _anat(central=central)
    lv = anat.levels["L4/L5"]
    area = _sac_area(anat, "L4/L5")
    assert area == pytest.approx(lv.sac_area_mm2, rel=0.03)


def test_sac_area_monotone_in_central_with_grade_bands():
    sev = np.linspace(0.0, 1.0, 11)
    areas = [_sac_area(_anat(seed=3, central=c), "L4/L5", step=0.4) for c in sev]
    assert all(np.diff(areas) < 0), areas
    a0 = areas[0]
    assert 100 < a0 < 260
    # grade bands (spec 1c: <100 relative, <75 absolute stenosis at a typical normal area)
    assert areas[5] / a0 < 0.65 and areas[10] / a0 < 0.3 and areas[2] / a0 > 0.75


def test_severe_central_has_no_csf_at_the_disc():
    anat = _anat(central=0.9)
    pts, _ = _disc_plane(anat, "L4/L5")
    t = tissue_at(anat, pts)
    lab = structure_at(anat, pts)
    assert (lab == Structure.DURAL_SAC).sum() > 0
    assert (t == Tissue.CSF).sum() == 0
    anat0 = _anat(central=0.0)
    pts0, _ = _disc_plane(anat0, "L4/L5")
    t0 = tissue_at(anat0, pts0)
    assert (t0 == Tissue.CSF).sum() > (t0 == Tissue.ROOTLET).sum()


def _foramen_fat_fraction(anat, side="left"):
    lab_f = Structure.FORAMEN_LEFT if side == "left" else Structure.FORAMEN_RIGHT
    fr = []
    for off in (-1.5, 0.0, 1.5, 3.0):
        pts, _ = _disc_plane(anat, "L4/L5", offset=off, half=35.0, step=0.4)
        t, lab = classify(anat, pts)
        m = lab == lab_f
        fr.append((m.sum(), (t[m] == Tissue.EPIDURAL_FAT).sum()))
    tot = sum(a for a, _ in fr)
    return sum(b for _, b in fr) / max(tot, 1), tot


def test_foramen_fat_falls_with_severity():
    fracs = [_foramen_fat_fraction(_anat(seed=5, foramen_left=s))[0] for s in (0.0, 0.35, 0.6, 0.9)]
    assert fracs[0] > 0.4
    assert all(np.diff(fracs) < 0), fracs
    assert fracs[-1] < 0.3 * fracs[0]


def test_left_pathology_changes_left_side_only():
    a0 = _anat(seed=7)
    a1 = _anat(seed=7, facet_left=0.95, foramen_left=0.9)
    lv = a0.levels["L4/L5"]
    g = np.random.default_rng(2)
    pts = lv.centre_lps + g.uniform(-50, 50, (80000, 3)) * [1.0, 1.0, 0.4] + [0, 20, 0]
    t0, t1 = tissue_at(a0, pts), tissue_at(a1, pts)
    diff = t0 != t1
    assert diff.sum() > 50
    assert (pts[diff][:, 0] > 0).all()


def test_same_seed_same_anatomy_and_config_dict():
    a = _anat(seed=11, central=0.4)
    b = _anat(seed=11, central=0.4)
    pts = a.levels["L3/L4"].centre_lps + np.random.default_rng(0).normal(0, 20, (2000, 3))
    assert (tissue_at(a, pts) == tissue_at(b, pts)).all()
    c = sample_anatomy(np.random.default_rng(11), {}, 50, "F", config={"n_rootlets": 10})
    assert c.config.n_rootlets == 10
    with pytest.raises(ValueError):
        sample_anatomy(np.random.default_rng(0), {}, 50, "F", config={"bogus": 1})
    assert isinstance(AnatomyConfig(), AnatomyConfig)


def test_bean_disc_trefoil_recess_and_back_without_wall_ring():
    anat = _anat(seed=3)
    lv = anat.levels["L4/L5"]
    a, x = lv.ap_lps, np.array([1.0, 0.0, 0.0])
    # disc posterior margin (the most posterior disc point along AP lines at u) is concave:
    # further back at u = +-14 mm than in the midline (an ellipse would be further forward)
    t = np.arange(-30.0, 0.01, 0.25)

    def back_edge(u):
        pts = lv.centre_lps + t[:, None] * a + u * x
        d = structure_at(anat, pts) == Structure.DISC
        return float(t[np.argmax(d)])  # first (most posterior) disc sample

    mid = back_edge(0.0)
    assert back_edge(14.0) < mid - 0.4 and back_edge(-14.0) < mid - 0.4
    # L4/L5 has traversing roots in fat-filled lateral recesses; L1/L2 has none
    pts, _ = _disc_plane(anat, "L4/L5", half=30.0, step=0.3)
    tis = tissue_at(anat, pts)
    assert (tis == Tissue.NERVE_ROOT).sum() > 0
    lab = structure_at(anat, pts)
    roots_in_foramen = (tis == Tissue.NERVE_ROOT) & ((lab == Structure.FORAMEN_LEFT) | (lab == Structure.FORAMEN_RIGHT))
    assert (tis == Tissue.NERVE_ROOT).sum() > roots_in_foramen.sum()
    pts2, _ = _disc_plane(anat, "L1/L2", half=30.0, step=0.3)
    t2, l2 = classify(anat, pts2)
    assert ((t2 == Tissue.NERVE_ROOT) & (l2 == 0)).sum() == 0
    # behind the spine, in the midline, the back muscles meet the subcutaneous fat: the ray from
    # the spinous process to the skin crosses muscle -> fat once, never fat -> muscle again
    ray = lv.centre_lps - np.arange(60.0, 200.0, 0.5)[:, None] * a + 25.0 * x
    tr = tissue_at(anat, ray)
    tr = tr[tr != Tissue.AIR]
    fat = tr == Tissue.SUBCUT_FAT
    first = int(np.argmax(fat))
    assert fat.any() and not (tr[first:] == Tissue.MUSCLE).any()


def _centreline_tissues(anat, s_lo, s_hi):
    """Tissue codes along the spine's centreline (midline) between arc lengths s_lo..s_hi (mm;
    0 at the S1 upper endplate, negative below)."""
    m = (anat.curve_s >= s_lo) & (anat.curve_s <= s_hi)
    yz = anat.curve_yz[m]
    pts = np.stack([np.zeros(len(yz)), yz[:, 0], yz[:, 1]], axis=1)
    return tissue_at(anat, pts)


def test_lumbarised_s1_adds_a_disc_below_l5_s1_and_changes_nothing_else():
    path = {lv: LevelPathology() for lv in LEVELS}
    plain = sample_anatomy(np.random.default_rng(5), path, 50.0, "M")
    lumb = sample_anatomy(np.random.default_rng(5), path, 50.0, "M", config={"lumbarised_s1_rate": 1.0})
    assert plain.p["s1s2_h"] == 0.0 and 3.0 <= lumb.p["s1s2_h"] <= 7.0
    assert plain.p["transition"] is None and lumb.p["transition"] == "lumbarised S1"
    # the same patient otherwise: same levels, same centreline
    for lv in LEVELS:
        np.testing.assert_array_equal(plain.levels[lv].centre_lps, lumb.levels[lv].centre_lps)
    # around 30 mm below the S1 endplate: bone (marrow, endplate lines) without, a disc with
    below_plain = set(_centreline_tissues(plain, -34, -26).tolist())
    below_lumb = set(_centreline_tissues(lumb, -34, -26).tolist())
    assert not below_plain & DISC_TISSUES
    assert below_lumb & DISC_TISSUES and int(Tissue.CORTEX) in below_lumb
    # above S1 nothing changes
    np.testing.assert_array_equal(_centreline_tissues(plain, 0, 120), _centreline_tissues(lumb, 0, 120))
    # the S1/S2 disc is not a graded level: no structure label on it
    m = (lumb.curve_s >= -31) & (lumb.curve_s <= -29)
    yz = lumb.curve_yz[m]
    pts = np.stack([np.zeros(len(yz)), yz[:, 0], yz[:, 1]], axis=1)
    assert (structure_at(lumb, pts) == Structure.BACKGROUND).all()


def test_sacralised_l5_thins_the_l5_s1_disc_only():
    path = {lv: LevelPathology() for lv in LEVELS}
    plain = sample_anatomy(np.random.default_rng(6), path, 50.0, "F")
    sacr = sample_anatomy(np.random.default_rng(6), path, 50.0, "F", config={"sacralised_l5_rate": 1.0})
    assert sacr.p["transition"] == "sacralised L5" and sacr.p["s1s2_h"] == 0.0
    assert sacr.levels["L5/S1"].disc_height_mm <= 4.0 < plain.levels["L5/S1"].disc_height_mm
    for lv in LEVELS[:-1]:
        assert sacr.levels[lv].disc_height_mm == plain.levels[lv].disc_height_mm
        assert sacr.levels[lv].disc_ap_mm == plain.levels[lv].disc_ap_mm
    # still a disc at the L5/S1 centre
    assert int(tissue_at(sacr, sacr.levels["L5/S1"].centre_lps[None])[0]) in DISC_TISSUES
    # both rates: each patient gets at most one of the two
    both = [sample_anatomy(np.random.default_rng(s), path, 50.0, "F",
                           config={"lumbarised_s1_rate": 0.5, "sacralised_l5_rate": 0.5}).p["transition"]
            for s in range(8)]
    assert set(both) == {"lumbarised S1", "sacralised L5"}
