import json
from pathlib import Path

import numpy as np
import pytest
from sklearn.tree import DecisionTreeClassifier

from lumbargrade.grading.tree import (
    NORMALISED_SAC_AREA,
    PAPER_TREE,
    RatioTree,
    fit_normalised_tree,
    fit_tree,
    refit_thresholds_for_kappa,
    select_feature,
    tree_from_sklearn,
)

CUTS = (0.19, 0.23, 0.31)


def grade_of(r, cuts=CUTS):
    # > 0.31 normal (0), > 0.23 mild (1), > 0.19 moderate (2), else severe (3)
    return 3 - np.searchsorted(np.asarray(cuts), r, side="left")


def synthetic(n=400, noise=0.0, seed=0):
    rng = np.random.default_rng(seed)
    r = rng.uniform(0.1, 0.45, n)
    g = grade_of(r + rng.normal(0, noise, n) if noise else r)
    return r, g


def test_recovers_known_cuts():
    r, g = synthetic(600)
    tree = fit_tree(r, g, "ap_ratio")
    th = tree.thresholds()
    assert len(th) == 3
    np.testing.assert_allclose(th, CUTS, atol=0.005)
    assert (tree.predict(r) == g).mean() > 0.99
    rules = tree.rules_in_words()
    assert len(rules) == 4
    assert rules[0].startswith("ap_ratio > 0.3") and rules[0].endswith("-> normal")
    assert rules[-1].startswith("ap_ratio <= 0.19") and rules[-1].endswith("-> severe")
    assert " < ap_ratio <= " in rules[1] and rules[1].endswith("-> mild")


def test_matches_sklearn_predictions_and_probas():
    r, g = synthetic(300, noise=0.03, seed=1)
    clf = DecisionTreeClassifier(max_depth=3, max_leaf_nodes=4, random_state=0).fit(r[:, None], g)
    tree = tree_from_sklearn(clf, ["area_ratio"])
    x = np.random.default_rng(5).uniform(0, 0.6, 500)
    np.testing.assert_array_equal(tree.predict(x), clf.predict(x[:, None]))
    np.testing.assert_allclose(tree.predict_proba(x), clf.predict_proba(x[:, None]))


def test_json_round_trip_predicts_same(tmp_path):
    r, g = synthetic(300, noise=0.03, seed=2)
    tree = fit_tree(r, g, "sqrt_area_ratio")
    text = tree.to_json()
    assert "pickle" not in text
    back = RatioTree.from_json(text)
    x = np.linspace(0, 0.6, 301)
    np.testing.assert_array_equal(back.predict(x), tree.predict(x))
    np.testing.assert_array_equal(back.predict_proba(x), tree.predict_proba(x))
    assert back.rules_in_words() == tree.rules_in_words()
    assert json.loads(text)["feature_definitions"][0].startswith("square root")
    p = tmp_path / "tree.json"
    tree.save(p)
    np.testing.assert_array_equal(RatioTree.load(p).predict(x), tree.predict(x))


def test_load_bad_file_is_input_error(tmp_path):
    from lumbargrade.errors import InputError

    p = tmp_path / "bad.json"
    p.write_text("{not json")
    with pytest.raises(InputError):
        RatioTree.load(p)
    with pytest.raises(InputError):
        RatioTree.load(tmp_path / "missing.json")


def test_paper_tree_rules_and_predictions():
    assert PAPER_TREE.rules_in_words() == [
        "ratio > 0.31 -> normal",
        "0.23 < ratio <= 0.31 -> mild",
        "0.19 < ratio <= 0.23 -> moderate",
        "ratio <= 0.19 -> severe",
    ]
    np.testing.assert_array_equal(PAPER_TREE.predict([0.5, 0.31, 0.25, 0.2, 0.1]), [0, 1, 1, 2, 3])
    assert PAPER_TREE.rule_for(0.25) == "0.23 < ratio <= 0.31 -> mild"
    assert PAPER_TREE.rule_for(0.4, name="ap_ratio") == "ap_ratio > 0.31 -> normal"
    assert "area_ratio" not in PAPER_TREE.compatible_features
    assert set(PAPER_TREE.compatible_features) == {"ap_ratio", "sqrt_area_ratio"}
    np.testing.assert_array_equal(PAPER_TREE.predict_proba([0.1])[0], [0, 0, 0, 1])


def test_multi_feature_rules():
    rng = np.random.default_rng(0)
    X = rng.uniform(0, 1, (300, 2))
    y = (X[:, 0] > 0.5).astype(int) + (X[:, 1] > 0.5).astype(int)
    tree = fit_tree(X, y, ["a", "b"])
    rules = tree.rules_in_words()
    assert all(" -> " in s for s in rules) and any(" and " in s for s in rules)
    rule = tree.rule_for([0.9, 0.9])
    assert rule.endswith("-> moderate") and "a > " in rule and "b > " in rule
    assert (tree.predict(X) == y).mean() > 0.95


def test_nan_values_rejected_and_dropped_in_fit():
    r, g = synthetic(100)
    r2 = r.copy()
    r2[:5] = np.nan
    tree = fit_tree(r2, g, "ap_ratio")
    assert tree.training["n_dropped_nonfinite"] == 5
    with pytest.raises(ValueError):
        tree.predict([np.nan])


def test_select_feature_picks_informative_one():
    rng = np.random.default_rng(3)

    def make(n):
        r = rng.uniform(0.1, 0.45, n)
        g = grade_of(r)
        feats = {"ap_ratio": r, "area_ratio": rng.uniform(0, 0.2, n),
                 "sqrt_area_ratio": r + rng.normal(0, 0.05, n), "dural_sac_area_mm2": rng.uniform(50, 200, n),
                 "disc_area_mm2": rng.uniform(1000, 2000, n)}
        return feats, g

    best, scores = select_feature(make(300), make(100))
    assert best.feature_name == "ap_ratio"
    assert scores["ap_ratio"]["kappa"] > 0.95
    assert scores["ap_ratio"]["kappa"] > scores["sqrt_area_ratio"]["kappa"] > scores["area_ratio"]["kappa"]
    assert scores["ap_ratio"]["kappa"] > scores[NORMALISED_SAC_AREA]["kappa"]
    assert best.training["validation"]["kappa"] == scores["ap_ratio"]["kappa"]


def _size_normalised(n, exponent, seed):
    """Sac and disc areas (mm²) whose grade is set by sac / disc ** exponent (cuts at quantiles)."""
    rng = np.random.default_rng(seed)
    disc = rng.uniform(900, 2200, n)
    sac = rng.uniform(30, 260, n)
    v = sac / disc ** exponent
    cuts = np.quantile(v, [0.15, 0.3, 0.55])
    return sac, disc, 3 - np.searchsorted(cuts, v, side="left")


def test_normalised_sac_area_tree_learns_the_exponent_and_beats_ratio_and_absolute_area():
    sac, disc, g = _size_normalised(600, 0.5, seed=4)
    tree = fit_normalised_tree(sac, disc, g)
    assert tree.feature_name == NORMALISED_SAC_AREA and tree.exponent == pytest.approx(0.5)
    assert tree.training["exponents"]["0.5"] > 0.97
    assert tree.training["exponents"]["0.5"] > tree.training["exponents"]["1"]  # the area ratio
    assert tree.training["exponents"]["0.5"] > tree.training["exponents"]["0"]  # the absolute area
    assert "disc area^0.5" in tree.feature_definitions[0]
    # the value the pipeline feeds it comes from the level's measurements
    assert tree.value_of({"dural_sac_area_mm2": 150.0, "disc_area_mm2": 1600.0}) == pytest.approx(150.0 / 40.0)
    assert tree.value_of({"dural_sac_area_mm2": float("nan"), "disc_area_mm2": 1600.0}) is None
    assert tree.value_of({"dural_sac_area_mm2": 150.0}) is None
    # held-out rows drawn the same way are graded well; a plain area-ratio tree does worse
    from lumbargrade.metrics import linear_weighted_kappa

    sac2, disc2, g2 = _size_normalised(400, 0.5, seed=5)
    pred = [int(tree.predict([tree.value_of({"dural_sac_area_mm2": s, "disc_area_mm2": d})])[0])
            for s, d in zip(sac2, disc2)]
    ratio_tree = fit_tree(sac / disc, g, "area_ratio")
    k_norm = linear_weighted_kappa(g2, np.array(pred), n_classes=4)
    k_ratio = linear_weighted_kappa(g2, ratio_tree.predict(sac2 / disc2), n_classes=4)
    assert k_norm > 0.9 and k_norm > k_ratio + 0.05


def test_normalised_sac_area_tree_json_round_trip_and_validation(tmp_path):
    sac, disc, g = _size_normalised(300, 0.7, seed=6)
    tree = fit_normalised_tree(sac, disc, g)
    tree.save(tmp_path / "tree.json")
    back = RatioTree.load(tmp_path / "tree.json")
    assert back.exponent == tree.exponent and back.thresholds() == tree.thresholds()
    m = {"dural_sac_area_mm2": 120.0, "disc_area_mm2": 1500.0}
    assert back.value_of(m) == tree.value_of(m)
    d = json.loads((tmp_path / "tree.json").read_text())
    d.pop("exponent")
    with pytest.raises(ValueError, match="exponent"):
        RatioTree.from_dict(d)
    # an ordinary one-feature tree reads its feature straight from the measurements
    ratio_tree = fit_tree(sac / disc, g, "area_ratio")
    assert ratio_tree.value_of({"area_ratio": 0.08}) == 0.08
    assert ratio_tree.value_of({"area_ratio": float("nan")}) is None


# --------------------------------------------------------------------------- kappa thresholds
def _skewed(n=1500, seed=3):
    """A ratio whose grade boundaries are blurred by measurement noise that grows with severity,
    with few severe rows: the greedy (Gini) splits are not the ones kappa prefers."""
    rng = np.random.default_rng(seed)
    true = rng.uniform(0.12, 0.45, n) ** 1.0
    g = grade_of(true)
    x = true * np.exp(rng.normal(0, 0.02 + 0.25 * (0.45 - true), n))
    return x, g


def test_kappa_thresholds_keep_the_shape_and_do_not_lower_training_kappa():
    from lumbargrade.metrics import linear_weighted_kappa

    x, g = _skewed()
    gini = fit_tree(x, g, "area_ratio")
    kap = fit_tree(x, g, "area_ratio", thresholds="kappa")
    k_gini = linear_weighted_kappa(g, gini.predict(x))
    k_kap = linear_weighted_kappa(g, kap.predict(x))
    assert k_kap >= k_gini - 1e-9
    assert kap.training["thresholds"] == "kappa" and gini.training["thresholds"] == "gini"
    assert kap.training["training_kappa"] == pytest.approx(k_kap, abs=1e-4)
    assert kap.training["training_kappa_gini_thresholds"] == pytest.approx(k_gini, abs=1e-4)
    # same nodes, children and features; only thresholds, frequencies and counts change
    assert len(kap.nodes) == len(gini.nodes)
    for a, b in zip(kap.nodes, gini.nodes):
        assert (a["feature"], a["left"], a["right"]) == (b["feature"], b["left"], b["right"])
    assert kap.nodes[0]["n_samples"] == len(x)
    leaves = [n for n in kap.nodes if n["feature"] == -1]
    assert sum(n["n_samples"] for n in leaves) == len(x)
    assert all(n["n_samples"] > 0 for n in leaves)
    for n in kap.nodes:
        assert sum(n["frequencies"]) == pytest.approx(1.0)
    # still one interval per grade, in order, and it round-trips through JSON
    assert [r.rsplit("-> ", 1)[1] for r in kap.rules_in_words()] == ["normal", "mild", "moderate", "severe"]
    again = RatioTree.from_json(kap.to_json())
    np.testing.assert_array_equal(again.predict(x), kap.predict(x))


def test_kappa_thresholds_beat_gini_where_greedy_splits_are_off():
    """With measurement noise the greedy splits cost kappa; the refit recovers it on held-out rows."""
    from lumbargrade.metrics import linear_weighted_kappa

    x, g = _skewed(seed=4)
    xv, gv = _skewed(seed=5)
    gini = fit_tree(x, g, "area_ratio")
    kap = fit_tree(x, g, "area_ratio", thresholds="kappa")
    assert linear_weighted_kappa(g, kap.predict(x)) > linear_weighted_kappa(g, gini.predict(x)) + 0.005
    assert linear_weighted_kappa(gv, kap.predict(xv)) > linear_weighted_kappa(gv, gini.predict(xv))


def test_refit_on_a_clean_problem_keeps_the_true_cuts():
    r, g = synthetic(600)
    tree = refit_thresholds_for_kappa(fit_tree(r, g, "ap_ratio"), r, g)
    np.testing.assert_allclose(tree.thresholds(), CUTS, atol=0.005)
    assert (tree.predict(r) == g).mean() > 0.99
    with pytest.raises(ValueError, match="thresholds"):
        fit_tree(r, g, "ap_ratio", thresholds="entropy")


# --------------------------------------------------------------------------- CLI (train tree)
def _write_cohort(folder, n_train=40, n_val=16, seed=0):
    """Tiny manifest: label maps with a disc and a sac whose AP size sets the grade."""
    import csv

    from PIL import Image

    rng = np.random.default_rng(seed)
    folder.mkdir(parents=True, exist_ok=True)
    rows = []
    sp = 0.8
    rr, cc = np.meshgrid((np.arange(100) + 0.5) * sp, (np.arange(100) + 0.5) * sp, indexing="ij")
    for i in range(n_train + n_val):
        split = "train" if i < n_train else "val"
        ap_ratio = rng.uniform(0.12, 0.45)
        disc_ap = 32.0
        sac_a = ap_ratio * disc_ap / 2
        lm = np.zeros((100, 100), np.uint8)
        lm[((rr - 30) / 16) ** 2 + ((cc - 40) / 24) ** 2 <= 1] = 2
        lm[((rr - 55) / sac_a) ** 2 + ((cc - 40) / 8) ** 2 <= 1] = 1
        name = f"p{i:03d}_lm.png"
        Image.fromarray(lm).save(folder / name)
        np.save(folder / f"p{i:03d}_ax.npy", np.zeros((100, 100), np.float32))
        rows.append({"patient_id": f"p{i:03d}", "split": split, "level": "L4/L5",
                     "axial_image": f"p{i:03d}_ax.npy", "label_map": name,
                     "pixel_spacing_row_mm": sp, "pixel_spacing_col_mm": sp,
                     "central_canal": int(grade_of(ap_ratio))})
    with open(folder / "manifest.csv", "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=list(rows[0]))
        w.writeheader()
        w.writerows(rows)
    return folder / "manifest.csv"


def test_train_tree_cli_on_truth_masks(tmp_path, capsys):
    from lumbargrade.cli import main

    manifest = _write_cohort(tmp_path / "cohort")
    out = tmp_path / "run"
    assert main(["train", "tree", "--data", str(manifest.parent), "--out", str(out), "--truth-masks"]) == 0
    for f in ("tree.json", "config.json", "metrics.json", "train.log", "measurements.csv"):
        assert (out / f).is_file(), f
    tree = RatioTree.load(out / "tree.json")
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["selected_feature"] in ("ap_ratio", "sqrt_area_ratio")
    assert metrics["val_kappa"] > 0.8
    assert set(metrics["candidates"]) == {"area_ratio", "ap_ratio", "sqrt_area_ratio", "dural_sac_area_mm2",
                                          NORMALISED_SAC_AREA}
    printed = capsys.readouterr().out
    assert tree.rules_in_words()[0] in printed
    cfg = json.loads((out / "config.json").read_text())
    assert cfg["masks"] == "truth" and cfg["max_depth"] == 3 and cfg["thresholds"] == "auto"
    # both threshold methods were fitted and scored on val; the kept one is the better (ties: gini)
    methods = metrics["threshold_methods"]
    assert set(methods) == {"gini", "kappa"}
    kept = metrics["thresholds"]
    assert tree.training["thresholds"] == kept
    assert methods[kept]["val_kappa"] == pytest.approx(metrics["val_kappa"])
    other = "kappa" if kept == "gini" else "gini"
    assert methods[kept]["val_kappa"] > methods[other]["val_kappa"] or kept == "gini"
    # refuses to overwrite, and --overwrite with --set works
    assert main(["train", "tree", "--data", str(manifest), "--out", str(out), "--truth-masks"]) == 2
    assert main(["train", "tree", "--data", str(manifest), "--out", str(out), "--truth-masks",
                 "--overwrite", "--set", "feature=area_ratio"]) == 0
    assert RatioTree.load(out / "tree.json").feature_name == "area_ratio"


def test_train_tree_cli_pools_several_cohorts(tmp_path):
    from lumbargrade.cli import main

    a = _write_cohort(tmp_path / "a", n_train=20, n_val=8, seed=0)
    b = _write_cohort(tmp_path / "b", n_train=12, n_val=6, seed=1)  # the same patient ids, other sacs
    out = tmp_path / "run"
    assert main(["train", "tree", "--data", str(a), "--data", str(b.parent), "--out", str(out), "--truth-masks"]) == 0
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["n_train"] == 32 and metrics["n_val"] == 14
    cfg = json.loads((out / "config.json").read_text())
    assert Path(cfg["data"][0]).parent.name == "a" and Path(cfg["data"][1]).name == "b"  # as given
    with open(out / "measurements.csv") as f:
        assert sum(1 for _ in f) == 1 + 32 + 14
    # a missing second cohort is one clear error
    assert main(["train", "tree", "--data", str(a), "--data", str(tmp_path / "nowhere"), "--out",
                 str(tmp_path / "run2"), "--truth-masks"]) == 2


def test_train_tree_cli_input_errors(tmp_path, capsys):
    from lumbargrade.cli import main

    manifest = _write_cohort(tmp_path / "cohort", n_train=4, n_val=2)
    out = tmp_path / "run"
    assert main(["train", "tree", "--data", str(manifest), "--out", str(out)]) == 2  # no mask source
    assert main(["train", "tree", "--data", str(manifest), "--out", str(out), "--truth-masks",
                 "--set", "bogus=1"]) == 2
    assert main(["train", "tree", "--data", str(manifest), "--out", str(out), "--truth-masks",
                 "--set", "thresholds=entropy"]) == 2
    assert main(["train", "tree", "--data", str(tmp_path / "nowhere"), "--out", str(out), "--truth-masks"]) == 2
    assert main(["train", "tree", "--data", str(manifest), "--out", str(out),
                 "--segmentation", str(tmp_path / "no_such_run")]) == 2
    err = capsys.readouterr().err
    assert "Traceback" not in err and err.count("lumbargrade: error:") == 5
    assert "config thresholds" in err


def test_train_tree_cli_on_predicted_masks(tmp_path, monkeypatch):
    """--segmentation runs the segmenter on each axial image (a stand-in segmenter here)."""
    import shutil

    from PIL import Image

    from lumbargrade.cli import main
    from lumbargrade.segmentation import inference

    manifest = _write_cohort(tmp_path / "cohort", n_train=20, n_val=8)
    for lm in (tmp_path / "cohort").glob("*_lm.png"):  # the "image" is the label map itself
        np.save(str(lm).replace("_lm.png", "_ax.npy"), np.asarray(Image.open(lm), np.float32))
    calls = []

    class FakeSegmenter:
        def predict(self, items, centres=None):
            from lumbargrade.segmentation.inference import SegOutput

            out = []
            for image, spacing in items:
                calls.append(spacing)
                out.append(SegOutput(np.where(np.isin(image, (1, 2)), image, 0).astype(np.uint8), None, {}))
            return out

    seg_dir = tmp_path / "segrun"
    seg_dir.mkdir()
    monkeypatch.setattr(inference, "load_segmenter", lambda path, **kw: FakeSegmenter())
    out_p, out_t = tmp_path / "pred", tmp_path / "truth"
    assert main(["train", "tree", "--data", str(manifest), "--out", str(out_p), "--segmentation", str(seg_dir)]) == 0
    assert main(["train", "tree", "--data", str(manifest), "--out", str(out_t), "--truth-masks"]) == 0
    assert len(calls) == 28 and calls[0] == (0.8, 0.8)
    tp, tt = RatioTree.load(out_p / "tree.json"), RatioTree.load(out_t / "tree.json")
    assert tp.training["masks"] == "predicted" and tt.training["masks"] == "truth"
    assert tp.feature_name == tt.feature_name and tp.thresholds() == tt.thresholds()
    shutil.rmtree(seg_dir)
