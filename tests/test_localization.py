import numpy as np
import pytest

from lumbargrade.localization import (
    BOX_NAMES,
    BoxExample,
    BoxRuleConfig,
    box_iou,
    boxes_from_label_map,
    boxes_from_masks,
    evaluate_box_rule,
    example_from_label_map,
    fit_box_rule,
    mirror_box,
)

FOV = 160.0


def ellipse(spacing, centre, a, b, fov=FOV):
    """Pixel i has its centre at (i + 0.5) * spacing mm (image corner at 0)."""
    rm, cm = spacing
    rows, cols = round(fov / rm), round(fov / cm)
    rr, cc = np.meshgrid((np.arange(rows) + 0.5) * rm, (np.arange(cols) + 0.5) * cm, indexing="ij")
    return ((rr - centre[0]) / a) ** 2 + ((cc - centre[1]) / b) ** 2 <= 1.0


def scene(spacing, sac_c=(90.0, 80.0), disc_c=(70.0, 80.0)):
    sac = ellipse(spacing, sac_c, 6.0, 9.0)
    disc = ellipse(spacing, disc_c, 16.0, 24.0) & ~sac
    return sac, disc


def to_mm(box, spacing):
    return np.array([box[0] * spacing[0], box[1] * spacing[1], box[2] * spacing[0], box[3] * spacing[1]])


@pytest.mark.parametrize("spacing", [(0.5, 0.5), (0.9, 0.7)])
def test_boxes_at_expected_mm_positions(spacing):
    sac, disc = scene(spacing)
    b = boxes_from_masks(sac, disc, spacing)
    tol = max(spacing) + 1e-6
    # sac top at 84 mm, centroid (90, 80); disc posterior edge at 86 mm
    expected = {
        "facet_left": [84, 80, 120, 116],
        "facet_right": [84, 44, 120, 80],
        "foramen_left": [88 - 18, 89, 88 + 18, 125],
        "foramen_right": [88 - 18, 35, 88 + 18, 71],
    }
    for name, exp in expected.items():
        np.testing.assert_allclose(to_mm(b[name], spacing), exp, atol=tol, err_msg=name)


def test_same_mm_positions_at_two_spacings():
    b1 = boxes_from_masks(*scene((0.5, 0.5)), (0.5, 0.5))
    b2 = boxes_from_masks(*scene((1.1, 0.8)), (1.1, 0.8))
    for name in BOX_NAMES:
        np.testing.assert_allclose(to_mm(b1[name], (0.5, 0.5)), to_mm(b2[name], (1.1, 0.8)), atol=1.2)


def test_offsets_and_size_move_boxes():
    sp = (0.5, 0.5)
    sac, disc = scene(sp)
    cfg = BoxRuleConfig(facet_size_mm=(30, 20), facet_top_offset_mm=5, facet_medial_offset_mm=3,
                        foramen_size_mm=(10, 12), foramen_center_offset_mm=-4, foramen_medial_offset_mm=11)
    b = boxes_from_masks(sac, disc, sp, cfg)
    np.testing.assert_allclose(to_mm(b["facet_left"], sp), [89, 83, 119, 103], atol=0.5)
    np.testing.assert_allclose(to_mm(b["facet_right"], sp), [89, 57, 119, 77], atol=0.5)
    np.testing.assert_allclose(to_mm(b["foramen_left"], sp), [79, 91, 89, 103], atol=0.5)
    assert BoxRuleConfig.from_dict(cfg.to_dict()) == cfg


@pytest.mark.parametrize("spacing", [(0.5, 0.5), (0.77, 0.63)])
def test_mirror_gives_mirrored_boxes_sides_swapped(spacing):
    # asymmetric: sac off-centre and tilted blob added on one side
    sac, disc = scene(spacing, sac_c=(91.3, 77.1), disc_c=(70.2, 81.9))
    sac = sac | ellipse(spacing, (93.0, 84.0), 3.0, 3.0)
    n = sac.shape[1]
    b = boxes_from_masks(sac, disc, spacing)
    m = boxes_from_masks(sac[:, ::-1], disc[:, ::-1], spacing)
    for kind in ("facet", "foramen"):
        assert m[f"{kind}_left"] == mirror_box(b[f"{kind}_right"], n)
        assert m[f"{kind}_right"] == mirror_box(b[f"{kind}_left"], n)
    # swapping the display convention swaps the names
    s = boxes_from_masks(sac, disc, spacing, left_is_higher_col=False)
    assert s["facet_left"] == b["facet_right"] and s["foramen_right"] == b["foramen_left"]


def test_mirror_exact_for_symmetric_mask_with_ties():
    sp = (1.0, 1.0)
    sac = np.zeros((60, 61), bool)
    sac[20:30, 26:35] = True  # symmetric about column 30 (pixel centre): centroid edge 30.5
    disc = np.zeros_like(sac)
    disc[5:20, 15:46] = True
    b = boxes_from_masks(sac, disc, sp, BoxRuleConfig(facet_size_mm=(10, 10)))
    assert b["facet_left"] == mirror_box(b["facet_right"], 61)
    assert b["foramen_left"] == mirror_box(b["foramen_right"], 61)


def test_anterior_at_bottom():
    sp = (0.8, 0.8)
    sac, disc = scene(sp)
    b = boxes_from_masks(sac, disc, sp)
    f = boxes_from_masks(sac[::-1], disc[::-1], sp, anterior_is_low_row=False)
    rows = sac.shape[0]
    for name in BOX_NAMES:
        r0, c0, r1, c1 = b[name]
        assert f[name] == [rows - r1, c0, rows - r0, c1]


def test_clipping_and_empty():
    sp = (1.0, 1.0)
    sac, disc = scene(sp, sac_c=(150.0, 150.0), disc_c=(135.0, 150.0))
    b = boxes_from_masks(sac, disc, sp)
    rows, cols = sac.shape
    for name in BOX_NAMES:
        r0, c0, r1, c1 = b[name]
        assert 0 <= r0 <= r1 <= rows and 0 <= c0 <= c1 <= cols
    assert b["facet_left"][3] == cols and b["facet_left"][2] == rows
    assert b["facet_right"][3] - b["facet_right"][1] == 36  # unclipped side keeps its size
    e = boxes_from_masks(np.zeros_like(sac), disc, sp)
    assert all(v is None for v in e.values())
    with pytest.raises(ValueError):
        boxes_from_masks(sac, disc[:-1], sp)


def test_box_iou_and_mirror():
    assert box_iou([0, 0, 10, 10], [0, 5, 10, 15]) == pytest.approx(1 / 3)
    assert mirror_box([1, 2, 3, 5], 10) == [1, 5, 3, 8]
    assert mirror_box(mirror_box([1, 2, 3, 5], 10), 10) == [1, 2, 3, 5]


def test_boxes_from_label_map():
    lm = np.zeros((20, 30), np.uint8)
    lm[2:8, 3:9] = 3
    lm[10:12, 20:25] = 6
    b = boxes_from_label_map(lm)
    assert b["facet_left"] == [2, 3, 8, 9] and b["foramen_right"] == [10, 20, 12, 25]
    assert b["facet_right"] is None and b["foramen_left"] is None


def test_fit_box_rule_recovers_offsets():
    rng = np.random.default_rng(0)
    true_cfg = BoxRuleConfig(facet_size_mm=(36, 36), facet_top_offset_mm=4.0, facet_medial_offset_mm=6.0,
                             foramen_size_mm=(36, 36), foramen_center_offset_mm=-3.0,
                             foramen_medial_offset_mm=13.0)
    examples = []
    for k in range(12):
        sp = (float(rng.choice([0.6, 0.8, 1.0])),) * 2
        sac_c = (85 + rng.uniform(-5, 5), 80 + rng.uniform(-5, 5))
        sac = ellipse(sp, sac_c, rng.uniform(4, 7), rng.uniform(7, 10))
        disc = ellipse(sp, (sac_c[0] - 20, sac_c[1]), 16.0, 24.0) & ~sac
        truth = boxes_from_masks(sac, disc, sp, true_cfg, left_is_higher_col=bool(k % 2))
        # annotation jitter of about one pixel
        truth = {n: [v + int(rng.integers(-1, 2)) for v in b] for n, b in truth.items()}
        examples.append(BoxExample(sac, disc, sp, truth, left_is_higher_col=bool(k % 2)))
    before = evaluate_box_rule(examples)
    cfg = fit_box_rule(examples)
    after = evaluate_box_rule(examples, cfg)
    assert after["facet"] > 0.9 and after["foramen"] > 0.9
    assert after["facet"] > before["facet"] and after["foramen"] > before["foramen"]
    assert abs(cfg.facet_top_offset_mm - 4.0) <= 1.0 and abs(cfg.facet_medial_offset_mm - 6.0) <= 1.0
    assert abs(cfg.foramen_center_offset_mm + 3.0) <= 1.0 and abs(cfg.foramen_medial_offset_mm - 13.0) <= 1.0


def test_example_from_label_map_round_trip():
    sp = (0.8, 0.8)
    sac, disc = scene(sp)
    lm = np.zeros(sac.shape, np.uint8)
    b = boxes_from_masks(sac, disc, sp, BoxRuleConfig(foramen_size_mm=(12, 10)))
    for name, v in (("facet_left", 3), ("facet_right", 4), ("foramen_left", 5), ("foramen_right", 6)):
        r0, c0, r1, c1 = b[name]
        lm[r0:r1, c0:c1] = v
    lm[disc] = 2
    lm[sac] = 1
    ex = example_from_label_map(lm, sp)
    assert ex.truth["foramen_left"] == b["foramen_left"]
    res = evaluate_box_rule([ex], BoxRuleConfig(foramen_size_mm=(12, 10)))
    assert res["foramen"] == 1.0 and res["facet"] > 0.97
