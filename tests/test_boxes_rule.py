import numpy as np
import pytest

from lumbargrade.boxes.rule import (
    BOX_NAMES,
    FEATURES,
    BoxExample,
    BoxRuleConfig,
    box_iou,
    box_landmarks,
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
def test_paper_preset_boxes_at_expected_mm_positions(spacing):
    sac, disc = scene(spacing)
    b = boxes_from_masks(sac, disc, spacing, BoxRuleConfig.paper())
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
        r0, c0, r1, c1 = to_mm(b[name], spacing)
        assert abs((r1 - r0) - 36) <= 1.01 * spacing[0] and abs((c1 - c0) - 36) <= 1.01 * spacing[1]
    b30 = boxes_from_masks(sac, disc, spacing, BoxRuleConfig.paper(30.0))
    r0, c0, r1, c1 = to_mm(b30["facet_left"], spacing)
    assert abs((r1 - r0) - 30) <= 1.01 * spacing[0] and abs((c1 - c0) - 30) <= 1.01 * spacing[1]


@pytest.mark.parametrize("cfg", [BoxRuleConfig(), BoxRuleConfig.paper()], ids=["fitted", "paper"])
def test_same_mm_positions_at_two_spacings(cfg):
    b1 = boxes_from_masks(*scene((0.5, 0.5)), (0.5, 0.5), cfg)
    b2 = boxes_from_masks(*scene((1.1, 0.8)), (1.1, 0.8), cfg)
    for name in BOX_NAMES:
        np.testing.assert_allclose(to_mm(b1[name], (0.5, 0.5)), to_mm(b2[name], (1.1, 0.8)), atol=1.2)


def test_offsets_and_size_move_boxes():
    sp = (0.5, 0.5)
    sac, disc = scene(sp)
    cfg = BoxRuleConfig(mode="paper", facet_size_mm=(30, 20), facet_top_offset_mm=5, facet_medial_offset_mm=3,
                        foramen_size_mm=(10, 12), foramen_center_offset_mm=-4, foramen_medial_offset_mm=11)
    b = boxes_from_masks(sac, disc, sp, cfg)
    np.testing.assert_allclose(to_mm(b["facet_left"], sp), [89, 83, 119, 103], atol=0.5)
    np.testing.assert_allclose(to_mm(b["facet_right"], sp), [89, 57, 119, 77], atol=0.5)
    np.testing.assert_allclose(to_mm(b["foramen_left"], sp), [79, 91, 89, 103], atol=0.5)
    assert BoxRuleConfig.from_dict(cfg.to_dict()) == cfg


@pytest.mark.parametrize("cfg", [BoxRuleConfig(), BoxRuleConfig.paper()], ids=["fitted", "paper"])
@pytest.mark.parametrize("spacing", [(0.5, 0.5), (0.77, 0.63)])
def test_mirror_gives_mirrored_boxes_sides_swapped(spacing, cfg):
    # asymmetric: sac off-centre and tilted blob added on one side
    sac, disc = scene(spacing, sac_c=(91.3, 77.1), disc_c=(70.2, 81.9))
    sac = sac | ellipse(spacing, (93.0, 84.0), 3.0, 3.0)
    n = sac.shape[1]
    b = boxes_from_masks(sac, disc, spacing, cfg)
    m = boxes_from_masks(sac[:, ::-1], disc[:, ::-1], spacing, cfg)
    for kind in ("facet", "foramen"):
        assert m[f"{kind}_left"] == mirror_box(b[f"{kind}_right"], n)
        assert m[f"{kind}_right"] == mirror_box(b[f"{kind}_left"], n)


@pytest.mark.parametrize("cfg", [BoxRuleConfig(), BoxRuleConfig.paper(10.0)], ids=["fitted", "paper"])
def test_mirror_exact_for_symmetric_mask_with_ties(cfg):
    sp = (1.0, 1.0)
    sac = np.zeros((60, 61), bool)
    sac[20:30, 26:35] = True  # symmetric about column 30 (pixel centre): centroid edge 30.5
    disc = np.zeros_like(sac)
    disc[5:20, 15:46] = True
    b = boxes_from_masks(sac, disc, sp, cfg)
    assert b["facet_left"] == mirror_box(b["facet_right"], 61)
    assert b["foramen_left"] == mirror_box(b["foramen_right"], 61)


def test_clipping_and_empty():
    sp = (1.0, 1.0)
    sac, disc = scene(sp, sac_c=(150.0, 150.0), disc_c=(135.0, 150.0))
    rows, cols = sac.shape
    for cfg in (BoxRuleConfig(), BoxRuleConfig.paper()):
        for name, (r0, c0, r1, c1) in boxes_from_masks(sac, disc, sp, cfg).items():
            assert 0 <= r0 <= r1 <= rows and 0 <= c0 <= c1 <= cols, name
        unclipped = boxes_from_masks(*scene(sp), sp, cfg)
        clipped = boxes_from_masks(sac, disc, sp, cfg)
        assert clipped["facet_left"][3] == cols  # runs off the right edge
        assert clipped["facet_left"][3] - clipped["facet_left"][1] < (
            unclipped["facet_left"][3] - unclipped["facet_left"][1])
    b = boxes_from_masks(sac, disc, sp, BoxRuleConfig.paper())
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
    true_cfg = BoxRuleConfig(mode="paper", facet_size_mm=(36, 36), facet_top_offset_mm=4.0, facet_medial_offset_mm=6.0,
                             foramen_size_mm=(36, 36), foramen_center_offset_mm=-3.0,
                             foramen_medial_offset_mm=13.0)
    examples = []
    for k in range(12):
        sp = (float(rng.choice([0.6, 0.8, 1.0])),) * 2
        sac_c = (85 + rng.uniform(-5, 5), 80 + rng.uniform(-5, 5))
        sac = ellipse(sp, sac_c, rng.uniform(4, 7), rng.uniform(7, 10))
        disc = ellipse(sp, (sac_c[0] - 20, sac_c[1]), 16.0, 24.0) & ~sac
        truth = boxes_from_masks(sac, disc, sp, true_cfg)
        # annotation jitter of about one pixel
        truth = {n: [v + int(rng.integers(-1, 2)) for v in b] for n, b in truth.items()}
        examples.append(BoxExample(sac, disc, sp, truth))
    before = evaluate_box_rule(examples, BoxRuleConfig.paper())
    cfg = fit_box_rule(examples, base=BoxRuleConfig.paper())
    assert cfg.mode == "paper"
    after = evaluate_box_rule(examples, cfg)
    assert after["facet"] > 0.9 and after["foramen"] > 0.9
    assert after["facet"] > before["facet"] and after["foramen"] > before["foramen"]
    assert abs(cfg.facet_top_offset_mm - 4.0) <= 1.0 and abs(cfg.facet_medial_offset_mm - 6.0) <= 1.0
    assert abs(cfg.foramen_center_offset_mm + 3.0) <= 1.0 and abs(cfg.foramen_medial_offset_mm - 13.0) <= 1.0


def test_example_from_label_map_round_trip():
    sp = (0.8, 0.8)
    sac, disc = scene(sp)
    lm = np.zeros(sac.shape, np.uint8)
    rule = BoxRuleConfig(mode="paper", foramen_size_mm=(12, 10))
    b = boxes_from_masks(sac, disc, sp, rule)
    for name, v in (("facet_left", 3), ("facet_right", 4), ("foramen_left", 5), ("foramen_right", 6)):
        r0, c0, r1, c1 = b[name]
        lm[r0:r1, c0:c1] = v
    lm[disc] = 2
    lm[sac] = 1
    ex = example_from_label_map(lm, sp)
    assert ex.truth["foramen_left"] == b["foramen_left"]
    res = evaluate_box_rule([ex], rule)
    assert res["foramen"] == 1.0 and res["facet"] > 0.97


def _linear_rule(coefs):
    """A fitted-mode config whose four quantities per box kind are the given {quantity: {...}}."""
    return BoxRuleConfig(mode="fitted", coefficients={"facet": coefs, "foramen": coefs},
                         feature_means={k: 0.0 for k in FEATURES})


def test_fit_box_rule_recovers_known_linear_rule():
    rng = np.random.default_rng(1)
    sets = {"centre_ap": ("sac_bottom", "disc_post"), "centre_lat": ("sac_half_width", "disc_half_width"),
            "height": ("disc_post",), "width": ("disc_half_width",)}
    true = {"centre_ap": {"intercept": 3.0, "sac_bottom": 0.8, "disc_post": 0.5},
            "centre_lat": {"intercept": 4.0, "sac_half_width": 0.6, "disc_half_width": 0.3},
            "height": {"intercept": 12.0, "disc_post": 0.4},
            "width": {"intercept": 6.0, "disc_half_width": 0.25}}
    true_cfg = _linear_rule(true)
    examples = []
    for k in range(30):
        sp = (float(rng.choice([0.4, 0.5, 0.6])),) * 2
        sac_c = (95 + rng.uniform(-5, 5), 80 + rng.uniform(-4, 4))
        sac = ellipse(sp, sac_c, rng.uniform(4, 8), rng.uniform(6, 11))
        disc = ellipse(sp, (sac_c[0] - rng.uniform(22, 30), 80 + rng.uniform(-3, 3)), rng.uniform(12, 18),
                       rng.uniform(18, 28)) & ~sac
        examples.append(BoxExample(sac, disc, sp, boxes_from_masks(sac, disc, sp, true_cfg)))
    paper = evaluate_box_rule(examples, BoxRuleConfig.paper())
    cfg = fit_box_rule(examples, feature_sets=sets, ridge=1e-6)
    res = evaluate_box_rule(examples, cfg)
    assert res["facet"] > 0.95 and res["foramen"] > 0.95 and paper["facet"] < 0.6
    for q, terms in true.items():
        for f, v in terms.items():
            got = cfg.coefficients["facet"][q][f]
            tol = 1.0 if f == "intercept" else 0.06
            assert abs(got - v) <= tol, (q, f, got, v)
    assert set(cfg.coefficients["foramen"]["height"]) == {"intercept", "disc_post"}


def test_landmarks_in_mm_and_mirrored():
    sp = (0.5, 0.5)
    sac, disc = scene(sp)  # sac centroid (90, 80), 6 x 9 mm half-axes; disc centre (70, 80), 16 x 24
    lm = box_landmarks(sac, disc, sp)
    hi, lo = lm["high_col"], lm["low_col"]
    assert abs(hi["sac_top"] + 6) <= 0.6 and abs(hi["sac_bottom"] - 6) <= 0.6
    assert abs(hi["sac_half_width"] - 9) <= 0.6 and abs(hi["disc_half_width"] - 24) <= 0.6
    assert abs(hi["disc_post"] + 4) <= 0.6 and abs(hi["disc_ant"] + 36) <= 0.6
    assert hi["corner_lat"] > 9 and hi["corner_ap"] < -4
    # the sac ellipse's extreme along the posterolateral diagonal: (36, 81) / sqrt(117) = (3.33, 7.49) mm
    assert abs(hi["sac_corner_ap"] - 3.33) <= 1.0 and abs(hi["sac_corner_lat"] - 7.49) <= 1.0
    for k in FEATURES:
        assert abs(hi[k] - lo[k]) <= 0.6, k  # symmetric scene
    assert box_landmarks(np.zeros_like(sac), disc, sp)["high_col"] is None


def test_fitted_default_is_a_named_linear_rule_and_round_trips():
    cfg = BoxRuleConfig()
    assert cfg.mode == "fitted"
    assert BoxRuleConfig.from_dict(cfg.to_dict()) == cfg
    import json

    assert BoxRuleConfig.from_dict(json.loads(json.dumps(cfg.to_dict()))) == cfg
    text = cfg.describe()
    assert "facet.centre_ap" in text and "foramen.width" in text
    # an older box_rule.json holds only the offsets: the offset (paper-mode) rule
    old = BoxRuleConfig.from_dict({"facet_size_mm": [30, 30], "facet_top_offset_mm": 2.0})
    assert old.mode == "paper" and old.facet_size_mm == (30.0, 30.0)
    with pytest.raises(ValueError):
        BoxRuleConfig.from_dict({"bogus": 1})
    with pytest.raises(ValueError):
        BoxRuleConfig(mode="fitted", coefficients={"facet": {}})
    with pytest.raises(ValueError):
        BoxRuleConfig(mode="nope")


def test_empty_disc_uses_feature_means():
    from dataclasses import replace

    sp = (0.5, 0.5)
    sac, disc = scene(sp)
    cfg = BoxRuleConfig()
    moved = replace(cfg, feature_means={**cfg.feature_means, "disc_post": cfg.feature_means["disc_post"] + 10.0})
    b = boxes_from_masks(sac, None, sp, cfg)
    assert all(v is not None and v[2] > v[0] and v[3] > v[1] for v in b.values())
    assert boxes_from_masks(sac, None, sp, moved) != b  # the means stand in for the disc landmarks
    assert boxes_from_masks(sac, disc, sp, moved) == boxes_from_masks(sac, disc, sp, cfg)  # unused


def _write_manifest(tmp_path, rule, n=6, seed=0):
    from PIL import Image

    rng = np.random.default_rng(seed)
    rows = ["patient_id,split,level,axial_image,label_map,pixel_spacing_row_mm,pixel_spacing_col_mm"]
    for k in range(n):
        sp = (float(rng.choice([0.5, 0.6])),) * 2
        sac_c = (95 + rng.uniform(-4, 4), 80 + rng.uniform(-3, 3))
        sac = ellipse(sp, sac_c, rng.uniform(4, 7), rng.uniform(7, 10))
        disc = ellipse(sp, (sac_c[0] - 25, 80), 15.0, rng.uniform(20, 26)) & ~sac
        lm = np.zeros(sac.shape, np.uint8)
        for name, (r0, c0, r1, c1) in boxes_from_masks(sac, disc, sp, rule).items():
            lm[r0:r1, c0:c1] = {"facet_left": 3, "facet_right": 4, "foramen_left": 5, "foramen_right": 6}[name]
        lm[disc] = 2
        lm[sac] = 1
        (tmp_path / f"P{k}").mkdir()
        Image.fromarray(lm).save(tmp_path / f"P{k}" / "L4-L5.png")
        Image.fromarray((lm * 30).astype(np.uint8)).save(tmp_path / f"P{k}" / "axial.png")  # a stand-in image
        split = "train" if k < n - 2 else "test"
        rows.append(f"P{k},{split},L4/L5,P{k}/axial.png,P{k}/L4-L5.png,{sp[0]},{sp[1]}")
    (tmp_path / "manifest.csv").write_text("\n".join(rows) + "\n")
    return tmp_path / "manifest.csv"


def test_run_cli_writes_box_rule(tmp_path):
    import argparse
    import json

    from lumbargrade.boxes.training import fit_box_rule_from_manifest, run_cli
    from lumbargrade.errors import InputError

    # truth drawn as small paper-mode offset boxes; the label map's boxes are the truth here
    truth_rule = BoxRuleConfig(mode="paper", facet_size_mm=(14, 12), facet_top_offset_mm=8,
                               facet_medial_offset_mm=6, foramen_size_mm=(8, 10), foramen_medial_offset_mm=14)
    (tmp_path / "data").mkdir()
    man = _write_manifest(tmp_path / "data", truth_rule)
    rule, report = fit_box_rule_from_manifest(man)
    assert report["fitted_on"]["n_levels"] == 4
    assert set(report["mean_iou_truth_masks"]) == {"train", "test"}
    assert report["mean_iou_truth_masks"]["train"]["fitted"]["facet"] > 0.8
    out = tmp_path / "run"
    args = argparse.Namespace(data=str(man), out=str(out), overwrite=False)
    assert run_cli(args) == 0
    loaded = BoxRuleConfig.from_dict(json.loads((out / "box_rule.json").read_text()))
    assert loaded == rule
    assert json.loads((out / "metrics.json").read_text())["fitted_on"]["split"] == "train"
    assert (out / "config.json").is_file()
    with pytest.raises(InputError):
        run_cli(args)
    args.overwrite = True
    assert run_cli(args) == 0
    with pytest.raises(InputError):
        fit_box_rule_from_manifest(man, split="val")


def test_calibration_round_trip_and_fit():
    """Side-frame edges round-trip through pixels, and a calibration learnt from cases whose
    region boxes are shifted by a fixed amount undoes the shift."""
    from lumbargrade.boxes.calibration import (
        apply_calibration,
        box_to_edges,
        edges_to_box,
        fit_calibration,
    )

    sp = (0.5, 0.5)
    sac = np.zeros((200, 200), bool)
    sac[100:120, 90:110] = True
    cen = (109.5, 99.5)
    for left in (True, False):
        box = [90, 120, 110, 140] if left else [90, 60, 110, 80]
        e = box_to_edges(box, cen, sp, left)
        assert e[1] < e[3]  # inner edge nearer the midline than the outer one
        assert edges_to_box(e, cen, sp, left, sac.shape) == box
    rng = np.random.default_rng(0)
    cases = []
    for _ in range(40):
        d = int(rng.integers(-3, 4))
        truth = {"facet_left": [90 + d, 120, 110 + d, 140], "facet_right": [90 + d, 60, 110 + d, 80],
                 "foramen_left": [70, 125, 85, 140], "foramen_right": [70, 60, 85, 75]}
        # the region misses 6 px on the medial side; the rule is right on average but noisy
        img = {"facet_left": [90 + d, 126, 110 + d, 140], "facet_right": [90 + d, 60, 110 + d, 74],
               "foramen_left": [70, 125, 85, 140], "foramen_right": [70, 60, 85, 75]}
        j = int(rng.integers(-2, 3))
        rule = {k: [b[0] + j, b[1], b[2] + j, b[3]] for k, b in truth.items()}
        cases.append((truth, img, rule, sac, sp))
    for form in ("pair", "joint"):
        cal = fit_calibration(cases, ridge=1e-4, form=form)
        assert {"facet", "foramen"} <= set(cal)
        assert cal.get("form", "pair") == form
        truth, img, rule, _, _ = cases[0]
        out = apply_calibration(img, rule, sac, sp, cal)
        for k in truth:
            assert np.abs(np.array(out[k]) - np.array(truth[k])).max() <= 1, (form, k, out[k], truth[k])
        # a side without a region keeps the rule's box
        out2 = apply_calibration({**img, "facet_left": None}, rule, sac, sp, cal)
        assert out2["facet_left"] == rule["facet_left"]
        # the calibration travels with the rule's JSON
        cfg = BoxRuleConfig(image_calibration=cal)
        assert BoxRuleConfig.from_dict(cfg.to_dict()).image_calibration == cal
    with pytest.raises(ValueError, match="form"):
        fit_calibration(cases, form="quadratic")
    with pytest.raises(ValueError, match="form"):
        apply_calibration(img, rule, sac, sp, {**cal, "form": "quadratic"})


def test_joint_calibration_reads_one_box_from_the_other():
    """The facet region's outline says where the foramen ends: where the foramen region's lateral
    edge is noise but tied to the facet region's, only the joint form recovers it."""
    from lumbargrade.boxes.calibration import JOINT_FEATURES, apply_calibration, fit_calibration

    sp = (0.5, 0.5)
    sac = np.zeros((200, 200), bool)
    sac[100:120, 90:110] = True
    rng = np.random.default_rng(1)

    def case():
        w = int(rng.integers(-4, 5))  # how far out the facet joint (and the foramen behind it) reach
        truth = {"facet_left": [90, 120, 110, 140 + w], "facet_right": [90, 60 - w, 110, 80],
                 "foramen_left": [70, 125, 85, 140 + w], "foramen_right": [70, 60 - w, 85, 75]}
        n = int(rng.integers(-4, 5))  # the foramen region's lateral edge is unreliable
        img = {"facet_left": truth["facet_left"], "facet_right": truth["facet_right"],
               "foramen_left": [70, 125, 85, 140 + n], "foramen_right": [70, 60 - n, 85, 75]}
        rule = {"facet_left": [90, 120, 110, 140], "facet_right": [90, 60, 110, 80],
                "foramen_left": [70, 125, 85, 140], "foramen_right": [70, 60, 85, 75]}
        return truth, img, rule, sac, sp

    train = [case() for _ in range(60)]
    test = [case() for _ in range(30)]
    pair, joint = fit_calibration(train, ridge=1e-4, form="pair"), fit_calibration(train, ridge=1e-4, form="joint")
    assert joint["features"] == list(JOINT_FEATURES) and len(joint["foramen"]["ap_top"]["weights"]) == 16

    def err(cal):
        e = [abs(apply_calibration(img, rule, s, p, cal)[k][3 if k.endswith("left") else 1] - t[k][3 if k.endswith("left") else 1])
             for t, img, rule, s, p in test for k in ("foramen_left", "foramen_right")]
        return float(np.mean(e))

    assert err(joint) <= 0.6
    assert err(pair) >= 1.5


def test_a_damaged_calibration_is_a_clear_error(tmp_path, capsys, phantom_patient):
    """A hand-edited box_rule.json with a broken image calibration is refused when read, naming the
    entry, and `analyze` with such a pack says so in one line (no traceback)."""
    import json
    import shutil

    from lumbargrade.boxes.calibration import JOINT_FEATURES, check_calibration
    from lumbargrade.cli import main
    from lumbargrade.modelpack import default_pack_path

    edges = ("ap_top", "lateral_inner", "ap_bottom", "lateral_outer")
    good = {"form": "joint", "features": list(JOINT_FEATURES),
            "facet": {e: {"intercept": 0.0, "weights": [0.0] * 16} for e in edges}}
    check_calibration(good)
    check_calibration({})
    cases = [
        ({**good, "form": "cubic"}, "form"),
        ({**good, "facet": {e: {"intercept": 0.0, "weights": [0.0] * 15} for e in edges}}, "weights"),
        ({**good, "facet": {e: {"intercept": "x", "weights": [0.0] * 16} for e in edges}}, "intercept"),
        ({**good, "facet": {"ap_top": good["facet"]["ap_top"]}}, "lacks the edge"),
        ({"facet": {e: {"intercept": 0.0, "image": 1.0} for e in edges}}, "rule"),
        ({**good, "extra": 1}, "unknown"),
    ]
    for cal, words in cases:
        with pytest.raises(ValueError, match=words):
            check_calibration(cal)
        with pytest.raises(ValueError):
            BoxRuleConfig.from_dict({**BoxRuleConfig().to_dict(), "image_calibration": cal})

    pack = tmp_path / "pack"
    shutil.copytree(default_pack_path(), pack)
    rule = json.loads((pack / "box_rule.json").read_text())
    rule["image_calibration"]["foramen"]["ap_top"]["weights"] = rule["image_calibration"]["foramen"]["ap_top"]["weights"][:3]
    (pack / "box_rule.json").write_text(json.dumps(rule))
    capsys.readouterr()
    code = main(["analyze", str(phantom_patient / "dicom"), "--out", str(tmp_path / "out"), "--models", str(pack),
                 "--outputs", "none"])
    err = capsys.readouterr().err
    assert code != 0 and "Traceback" not in err
    assert "box_rule.json" in err and "weights" in err and len(err.strip().splitlines()) == 1, err
    assert not (tmp_path / "out" / "report.json").exists()


def test_box_rule_on_predicted_masks_carries_a_joint_calibration(phantom_cohort):
    """The rule fitted on the bundled segmenter's masks (what `train boxes --segmentation PACK`
    does) carries a joint image calibration that round-trips through the rule's JSON, and on the
    rows it was fitted on the calibrated boxes match the truth better than the regions' raw
    bounding boxes."""
    from lumbargrade.boxes.training import fit_box_rule_from_manifest
    from lumbargrade.modelpack import default_pack_path
    from lumbargrade.segmentation.inference import load_segmenter

    seg = load_segmenter(default_pack_path() / "segmentation")
    rule, report = fit_box_rule_from_manifest(phantom_cohort / "manifest.csv", split="test", segmenter=seg)
    cal = rule.image_calibration
    assert cal["form"] == "joint" and {"facet", "foramen"} <= set(cal)
    assert len(cal["foramen"]["lateral_outer"]["weights"]) == 16
    assert BoxRuleConfig.from_dict(rule.to_dict()).image_calibration == cal
    ious = report["mean_iou_predicted_masks"]["test"]
    assert ious["image_calibrated"]["foramen"] > ious["image_raw"]["foramen"]
    assert ious["image_calibrated"]["facet"] > ious["image_raw"]["facet"]
