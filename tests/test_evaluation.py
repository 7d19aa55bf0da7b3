"""lumbargrade.evaluation and `lumbargrade evaluate --predictions`: metrics from report.json files and
truth agree with an independent computation (scikit-learn, plain numpy)."""

from __future__ import annotations

import csv
import json
import math
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from lumbargrade.evaluation import LevelPair, compute_metrics, evaluate_predictions, format_tables

LEVELS = ("L1/L2", "L2/L3", "L3/L4", "L4/L5", "L5/S1")
GRADES = ("normal", "mild", "moderate", "severe")
BOXES = ("facet_left", "facet_right", "foramen_left", "foramen_right")
SHAPE = (40, 48)


def _label_map(rng, shift=0):
    lm = np.zeros(SHAPE, np.uint8)
    lm[20 + shift:30, 10:38] = 2  # disc
    r0 = int(rng.integers(8, 12))
    lm[r0:r0 + 8, 18:28 + shift] = 1  # sac
    return lm


def _box(rng, r0, c0):
    a, b = int(rng.integers(-2, 3)), int(rng.integers(-2, 3))
    return [r0 + a, c0 + b, r0 + 10 + a, c0 + 12 + b]


def make_cohort(root: Path, n_patients=8, seed=0):
    """A phantom-like cohort (manifest, truth.json, label maps) and a folder of report.json files
    with known, noisy predictions. Some levels get a different slice, one level is missing."""
    rng = np.random.default_rng(seed)
    cohort, preds = root / "cohort", root / "preds"
    rows = []
    for i in range(n_patients):
        pid = f"P{i:04d}"
        suid = f"1.2.3.{i}"
        (cohort / pid / "labels").mkdir(parents=True)
        rdir = preds / pid
        (rdir / "levels").mkdir(parents=True)
        tlevels, plevels, landmarks = [], [], {}
        for k, lv in enumerate(LEVELS):
            sop = f"{suid}.{k}"
            tlm = _label_map(rng)
            name = lv.replace("/", "-")
            Image.fromarray(tlm).save(cohort / pid / "labels" / f"{name}.png")
            truth_grade = int(rng.choice(4, p=[0.45, 0.3, 0.13, 0.12]))
            readers = [int(np.clip(truth_grade + rng.choice([-1, 0, 0, 0, 1]), 0, 3)) for _ in range(3)]
            grades = {"central_canal": {"truth": truth_grade, "readers": readers}}
            for f in BOXES:
                t = int(rng.random() < 0.3)
                grades[f] = {"truth": t, "readers": [t if rng.random() < 0.9 else 1 - t for _ in range(3)]}
            tboxes = {f: _box(rng, 5 + 15 * (f.startswith("foramen")), 4 + 28 * f.endswith("left")) for f in BOXES}
            lmk = [0.0, 10.0, 100.0 - 35.0 * k]
            landmarks[lv] = lmk
            tlevels.append({"level": lv, "axial_sop_instance_uid": sop, "label_map": f"labels/{name}.png",
                            "boxes": tboxes, "landmark_patient_mm": lmk, "grades": grades})
            rows.append({"patient_id": pid, "split": "test" if i < n_patients - 1 else "train", "level": lv,
                         "study_dir": f"{pid}/dicom", "study_instance_uid": suid,
                         "axial_image": f"{pid}/x.dcm", "axial_sop_instance_uid": sop,
                         "label_map": f"{pid}/labels/{name}.png", "central_canal": readers[0]})
            if i == 0 and k == 4:
                continue  # the report lacks this level
            # prediction
            same_slice = not (k == 2 and i % 3 == 0)
            plm = _label_map(rng, shift=int(rng.integers(0, 3))) if same_slice else _label_map(rng, 1)
            Image.fromarray(plm).save(rdir / "levels" / f"{name}.png")
            r1 = readers[0]
            ratio = float(0.4 - 0.07 * r1 + rng.normal(0, 0.04))
            tree_grade = int(np.clip(np.digitize(-ratio, [-0.31, -0.23, -0.19]), 0, 3))
            cnn_p = rng.dirichlet(np.ones(4)) * 0.7
            cnn_p[r1] += 0.3  # right most of the time, not always
            cnn_p /= cnn_p.sum()
            rec = {"level": lv, "axial_sop_instance_uid": sop if same_slice else sop + ".9",
                   "label_map": f"levels/{name}.png",
                   "boxes": {f: [v + int(rng.integers(-2, 3)) for v in tboxes[f]] for f in BOXES},
                   "slice_choice": {"method": "landmarks", "distance_mm": 0.5,
                                    "landmark_patient_mm": [float(v + rng.normal(0, 2)) for v in lmk]},
                   "central_canal": {"grade": GRADES[tree_grade],
                                     "tree": {"grade": GRADES[tree_grade], "ratio_name": "area_ratio",
                                              "ratio": ratio, "rule": "x"},
                                     "cnn": {"grade": GRADES[int(np.argmax(cnn_p))],
                                             "probabilities": cnn_p.tolist(),
                                             "binary_probability": float(cnn_p[2:].sum())}}}
            for f in BOXES:
                y = grades[f]["readers"][0]
                pr = float(np.clip(0.3 + 0.4 * y + rng.normal(0, 0.2), 0, 1))
                rec[f] = {"probability": pr, "label": "moderate/severe" if pr >= 0.5 else "normal/mild"}
            plevels.append(rec)
        (cohort / pid / "truth.json").write_text(json.dumps(
            {"patient_id": pid, "study_instance_uid": suid, "levels": tlevels}))
        (rdir / "report.json").write_text(json.dumps(
            {"study_instance_uid": suid, "levels": plevels, "sagittal": None, "warnings": []}))
    with open(cohort / "manifest.csv", "w", newline="") as fh:
        w = csv.DictWriter(fh, fieldnames=list(rows[0]))
        w.writeheader()
        w.writerows(rows)
    return cohort, preds


def _independent(cohort: Path, preds: Path, split="test"):
    """The same figures computed another way: straight from the JSON/PNG files with sklearn."""
    from sklearn.metrics import accuracy_score, cohen_kappa_score, roc_auc_score

    with open(cohort / "manifest.csv", newline="") as fh:
        pids = sorted({r["patient_id"] for r in csv.DictReader(fh) if r["split"] == split})
    acc = {k: [] for k in ("sc", "ds", "dd", "if", "io", "lm", "t_y", "t_g", "t_r", "c_g", "c_p", "c_b",
                           "fo_y", "fo_t", "fo_p", "fa_y", "fa_t", "fa_p", "r2", "r1", "r3")}
    for pid in pids:
        t = json.loads((cohort / pid / "truth.json").read_text())
        r = json.loads((preds / pid / "report.json").read_text())
        by = {x["level"]: x for x in r["levels"]}
        for tl in t["levels"]:
            cg = tl["grades"]["central_canal"]["readers"]
            acc["r1"].append(cg[0])
            acc["r2"].append(cg[1])
            acc["r3"].append(cg[2])
            pl = by.get(tl["level"])
            acc["sc"].append(pl is not None and pl["axial_sop_instance_uid"] == tl["axial_sop_instance_uid"])
            if pl is None:
                continue
            if acc["sc"][-1]:
                a = np.array(Image.open(cohort / pid / tl["label_map"]))
                b = np.array(Image.open(preds / pid / pl["label_map"]))
                for lab, key in ((1, "ds"), (2, "dd")):
                    x, y = a == lab, b == lab
                    acc[key].append(2 * (x & y).sum() / (x.sum() + y.sum()))
                for f in BOXES:
                    p, q = tl["boxes"][f], pl["boxes"][f]
                    inter = max(0, min(p[2], q[2]) - max(p[0], q[0])) * max(0, min(p[3], q[3]) - max(p[1], q[1]))
                    union = (p[2] - p[0]) * (p[3] - p[1]) + (q[2] - q[0]) * (q[3] - q[1]) - inter
                    acc["if" if f.startswith("facet") else "io"].append(inter / union)
            acc["lm"].append(math.dist(tl["landmark_patient_mm"], pl["slice_choice"]["landmark_patient_mm"]))
            cc = pl["central_canal"]
            acc["t_y"].append(cg[0])
            acc["t_g"].append(GRADES.index(cc["tree"]["grade"]))
            acc["t_r"].append(cc["tree"]["ratio"])
            acc["c_g"].append(GRADES.index(cc["cnn"]["grade"]))
            acc["c_p"].append(cc["cnn"]["probabilities"])
            acc["c_b"].append(cc["cnn"]["binary_probability"])
            for f in BOXES:
                k = "fo" if f.startswith("foramen") else "fa"
                acc[f"{k}_y"].append(tl["grades"][f]["readers"][0])
                acc[f"{k}_t"].append(tl["grades"][f]["truth"])
                acc[f"{k}_p"].append(pl[f]["probability"])
    y = np.array(acc["t_y"])
    yb = (y >= 2).astype(int)
    kap = lambda a, b: cohen_kappa_score(a, b, weights="linear", labels=[0, 1, 2, 3])
    return {
        "slice": np.mean(acc["sc"]), "dice_sac": np.mean(acc["ds"]), "dice_disc": np.mean(acc["dd"]),
        "iou_facet": np.mean(acc["if"]), "iou_foramen": np.mean(acc["io"]), "lm": np.mean(acc["lm"]),
        "tree_acc": accuracy_score(y, acc["t_g"]), "tree_kappa": kap(y, acc["t_g"]),
        "cnn_acc": accuracy_score(y, acc["c_g"]), "cnn_kappa": kap(y, acc["c_g"]),
        "cnn_ovo": roc_auc_score(y, np.array(acc["c_p"]), multi_class="ovo", labels=[0, 1, 2, 3]),
        "tree_ovo": roc_auc_score(y, np.eye(4)[acc["t_g"]], multi_class="ovo", labels=[0, 1, 2, 3]),
        "auc_tree": roc_auc_score(yb, -np.array(acc["t_r"])), "auc_cnn": roc_auc_score(yb, acc["c_b"]),
        "auc_foramen": roc_auc_score(acc["fo_y"], acc["fo_p"]), "auc_facet": roc_auc_score(acc["fa_y"], acc["fa_p"]),
        "auc_foramen_truth": roc_auc_score(acc["fo_t"], acc["fo_p"]),
        "auc_facet_truth": roc_auc_score(acc["fa_t"], acc["fa_p"]),
        "r2": kap(acc["r1"], acc["r2"]), "r3": kap(acc["r1"], acc["r3"]), "r23": kap(acc["r2"], acc["r3"]),
        "n_test_levels": len(acc["r1"]),
    }


@pytest.fixture(scope="module")
def evaluated(tmp_path_factory):
    root = tmp_path_factory.mktemp("ev")
    cohort, preds = make_cohort(root)
    out = root / "out"
    from lumbargrade.cli import main

    assert main(["evaluate", "--data", str(cohort), "--predictions", str(preds), "--out", str(out),
                 "--n-boot", "200"]) == 0
    return cohort, preds, out, json.loads((out / "metrics.json").read_text())


def test_evaluate_matches_independent_computation(evaluated):
    cohort, preds, _, m = evaluated
    ref = _independent(cohort, preds)
    v = lambda e: e["value"]
    assert m["n_levels"] == ref["n_test_levels"] == 35
    checks = {
        "slice": v(m["slice_choice_accuracy"]),
        "dice_sac": v(m["segmentation"]["dice_dural_sac"]), "dice_disc": v(m["segmentation"]["dice_disc"]),
        "iou_facet": v(m["localization"]["iou_facet"]), "iou_foramen": v(m["localization"]["iou_foramen"]),
        "lm": v(m["landmarks"]["landmark_error_mm"]),
        "tree_acc": v(m["central_canal"]["tree"]["accuracy"]), "tree_kappa": v(m["central_canal"]["tree"]["kappa"]),
        "cnn_acc": v(m["central_canal"]["cnn"]["accuracy"]), "cnn_kappa": v(m["central_canal"]["cnn"]["kappa"]),
        "cnn_ovo": v(m["central_canal"]["cnn"]["ovo_auroc"]), "tree_ovo": v(m["central_canal"]["tree"]["ovo_auroc"]),
        "auc_tree": v(m["binary_auroc"]["central_tree"]), "auc_cnn": v(m["binary_auroc"]["central_cnn"]),
        "auc_foramen": v(m["binary_auroc"]["foramen"]), "auc_facet": v(m["binary_auroc"]["facet"]),
        "auc_foramen_truth": v(m["binary_auroc_vs_truth"]["foramen"]),
        "auc_facet_truth": v(m["binary_auroc_vs_truth"]["facet"]),
        "r2": v(m["agreement"]["reader2_vs_reader1"]), "r3": v(m["agreement"]["reader3_vs_reader1"]),
        "r23": v(m["agreement"]["reader2_vs_reader3"]),
    }
    for k, got in checks.items():
        assert got == pytest.approx(ref[k], abs=1e-9), k
    assert 0.2 < checks["cnn_acc"] < 0.95 and 0.2 < checks["tree_acc"] < 0.95  # not a trivial case
    # the setup has slice mismatches, so Dice/IoU use fewer levels than grading does
    assert m["segmentation"]["dice_dural_sac"]["n"] < m["central_canal"]["tree"]["accuracy"]["n"] == 34
    assert m["notes"]["tree_ovo_scores"].endswith("one_hot")
    assert m["delong_central_tree_vs_cnn"]["auroc_tree"] == pytest.approx(ref["auc_tree"])
    assert 0 <= m["delong_central_tree_vs_cnn"]["p"] <= 1


def _all_entries(m):
    yield "slice_choice_accuracy", m["slice_choice_accuracy"]
    for sect in ("segmentation", "localization", "binary_auroc", "binary_auroc_vs_truth", "agreement"):
        for k, e in m[sect].items():
            if sect == "segmentation" and k.endswith("_region") and e is None:
                continue  # this cohort's label maps hold no facet/foramen regions
            if sect == "localization" and not k.startswith("iou_"):
                continue  # by_source / reported_source: see test_box_sources_side_by_side
            yield f"{sect}.{k}", e
    for model in ("tree", "cnn"):
        for k, e in m["central_canal"][model].items():
            yield f"central.{model}.{k}", e
    yield "landmark_error_mm", m["landmarks"]["landmark_error_mm"]


def test_every_metric_has_a_bootstrap_ci(evaluated):
    _, _, _, m = evaluated
    for name, e in _all_entries(m):
        if name.endswith("_vs_truth") and e is None:
            continue
        assert e is not None, name
        assert e["ci_low"] is not None and e["ci_high"] is not None, name
        assert e["ci_low"] <= e["ci_high"], name
        assert e["n_boot"] == 200 and e["n_patients"] == 7, name


def test_outputs_tables_and_figures(evaluated):
    _, _, out, m = evaluated
    for f in ("metrics.json", "tables.md", "levels.csv", "roc_central.png", "roc_foramen.png", "roc_facet.png",
              "confusion_central_tree.png", "confusion_central_cnn.png", "confusion_foramen.png",
              "confusion_facet.png"):
        assert (out / f).is_file() and (out / f).stat().st_size > 0, f
    t = (out / "tables.md").read_text()
    for row in ("Table 2", "Table 3", "| BiT CNN / CNN |", "| Decision tree |", "| ours |", "| paper |",
                "Dice, dural sac", "Dice, disc", "IoU, foramen", "IoU, facet", "Landmark error (mm)",
                "Level identification", "slice choice", "AUROC central canal binary, CNN",
                "AUROC central canal binary, decision tree", "AUROC foramen", "AUROC facet", "DeLong p",
                "reader 2 vs reader 3", "72.7 [67.8, 76.3]", "0.54 [0.51, 0.60]", "0.86"):
        assert row in t, row
    # our figures appear in the table as computed
    assert f"{m['central_canal']['tree']['kappa']['value']:.2f}" in t
    cm = np.array(m["confusion"]["central_tree"])
    assert cm.shape == (4, 4) and cm.sum() == m["central_canal"]["tree"]["accuracy"]["n"]


def test_metrics_json_records_no_machine_path(evaluated):
    """The results travel (docs, papers): paths are relative to OUT or placeholders."""
    cohort, preds, out, m = evaluated
    assert m["data"] == "COHORT" and m["model_pack"] is None
    assert m["predictions"] == "PREDICTIONS"  # outside OUT and outside the current folder
    assert str(cohort.parent) not in (out / "metrics.json").read_text()


def test_report_missing_for_a_patient_and_truth_only_from_manifest(tmp_path):
    cohort, preds = make_cohort(tmp_path, n_patients=4, seed=1)
    import shutil

    shutil.rmtree(preds / "P0001")
    for pid in ("P0000", "P0001", "P0002"):
        (cohort / pid / "truth.json").unlink()  # user data: no truth.json, manifest columns only
    m = evaluate_predictions(cohort, preds, tmp_path / "o", n_boot=20)
    assert m["patients_without_report"] == ["P0001"]
    assert m["n_levels"] == 15 and m["n_levels_reported"] == 9
    # labels from the manifest: reader 1 only; no reader 2/3 -> agreement undefined, not invented
    assert m["agreement"]["reader2_vs_reader1"] is None
    assert m["central_canal"]["tree"]["accuracy"]["n"] == 9
    assert m["landmarks"]["landmark_error_mm"] is None


def _pairs(n_pat, per, rng, **kw):
    out = []
    for i in range(n_pat):
        for k in range(per):
            out.append(LevelPair(f"P{i}", LEVELS[k], {"grades": {}}, **kw))
    return out


def test_constant_dice_gives_degenerate_ci_and_level_identification():
    lm = np.zeros((10, 10), np.uint8)
    lm[2:5, 2:5] = 1
    lm[6:9, 1:9] = 2
    pred = lm.copy()
    pred[2, 2] = 0  # dice sac 2*8/(9+8)
    pairs = []
    for i in range(5):
        lms = {lv: [0.0, 0.0, -30.0 * k] for k, lv in enumerate(LEVELS)}
        for k, lv in enumerate(LEVELS):
            q = [0.0, 3.0, -30.0 * k + (20.0 if (i == 0 and k == 1) else 0.0)]  # 1 level nearer its neighbour
            pairs.append(LevelPair(f"P{i}", lv, {"axial_sop_instance_uid": "a", "landmark_patient_mm": lms[lv]},
                                   {"axial_sop_instance_uid": "a", "boxes": {}}, lm, pred, lms, q))
    m = compute_metrics(pairs, n_boot=50)
    d = m["segmentation"]["dice_dural_sac"]
    assert d["value"] == pytest.approx(16 / 17) and d["ci_low"] == pytest.approx(16 / 17) == d["ci_high"]
    assert m["segmentation"]["dice_disc"]["value"] == 1.0
    assert m["landmarks"]["level_identification_accuracy"]["value"] == pytest.approx(24 / 25)
    assert m["landmarks"]["landmark_error_mm"]["value"] == pytest.approx((24 * 3 + math.hypot(3, 20)) / 25)
    assert "Table 2" in format_tables(m)


def test_tree_direction_and_leaf_probabilities():
    """A tree whose ratio grows with severity is scored +ratio; leaf frequencies of a tree model are
    used for the one-vs-one AUROC when given."""
    from sklearn.metrics import roc_auc_score

    rng = np.random.default_rng(3)
    pairs = []
    ys, rs, ps = [], [], []

    class Tree:
        def predict_proba(self, v):
            g = min(3, int(v[0] * 4))
            f = np.full(4, 1.0)
            f[g] = 6.0
            return f[None, :]  # unnormalised counts: the evaluation normalises them

    for i in range(12):
        for k, lv in enumerate(LEVELS):
            y = int(rng.integers(0, 4))
            r = float(np.clip(y / 4 + rng.normal(0, 0.1), 0, 0.999))
            g = min(3, int(r * 4))
            pairs.append(LevelPair(f"P{i}", lv, {"grades": {"central_canal": {"truth": y, "readers": [y, y, y]}}},
                                   {"central_canal": {"tree": {"grade": GRADES[g], "ratio": r}}}))
            ys.append(y)
            rs.append(r)
            ps.append(Tree().predict_proba([r])[0] / 9.0)
    m = compute_metrics(pairs, n_boot=20, tree_model=Tree())
    yb = (np.array(ys) >= 2).astype(int)
    assert m["binary_auroc"]["central_tree"]["value"] == pytest.approx(roc_auc_score(yb, rs))
    assert m["notes"]["tree_binary_score"].startswith("+ratio")
    assert m["central_canal"]["tree"]["ovo_auroc"]["value"] == pytest.approx(
        roc_auc_score(ys, np.array(ps), multi_class="ovo", labels=[0, 1, 2, 3]))
    assert m["central_canal"]["cnn"]["accuracy"] is None


def test_box_sources_side_by_side_and_region_dice():
    from lumbargrade.evaluation import LevelPair, compute_metrics, format_tables

    truth_boxes = {"facet_left": [10, 30, 20, 40], "facet_right": [10, 0, 20, 10],
                   "foramen_left": [0, 30, 10, 40], "foramen_right": [0, 0, 10, 10]}
    shifted = {k: [b[0] + 5, b[1], b[2] + 5, b[3]] for k, b in truth_boxes.items()}  # IoU 5/15 = 1/3
    lab = np.zeros((40, 40), np.uint8)
    for k, v in (("facet_left", 3), ("facet_right", 4), ("foramen_left", 5), ("foramen_right", 6)):
        r0, c0, r1, c1 = truth_boxes[k]
        lab[r0:r1, c0:c1] = v
    pred_lab = lab.copy()
    pred_lab[10:20, 30:35] = 0  # half of the left facet region missed: Dice 2/3 on that side
    pairs = []
    for i in range(4):
        truth = {"axial_sop_instance_uid": "s", "boxes": truth_boxes, "grades": {}}
        pred = {"axial_sop_instance_uid": "s", "boxes": truth_boxes, "boxes_source": "image",
                "boxes_by_source": {"image": truth_boxes, "fitted": shifted}}
        pairs.append(LevelPair(f"p{i}", "L4/L5", truth, pred, lab, pred_lab))
    m = compute_metrics(pairs, n_boot=20)
    loc = m["localization"]
    assert loc["iou_facet"]["value"] == 1.0 and loc["reported_source"] == "image"
    assert loc["by_source"]["image"]["iou_foramen"]["value"] == 1.0
    assert loc["by_source"]["fitted"]["iou_facet"]["value"] == pytest.approx(1 / 3)
    assert m["segmentation"]["dice_facet_region"]["value"] == pytest.approx((2 / 3 + 1) / 2)
    assert m["segmentation"]["dice_foramen_region"]["value"] == 1.0
    md = format_tables(m)
    assert "fitted rule on the masks" in md and "0.333" in md


def test_pack_labels_lists_the_packs_that_made_the_reports(tmp_path):
    from lumbargrade.evaluation import load_reports, pack_labels

    for name, text in (("p1", json.dumps({"software": {"model_pack": "pack-b 1.0"}})),
                       ("p2", json.dumps({"software": {"model_pack": "pack-a 2.0"}})),
                       ("p3", json.dumps({"software": {"model_pack": "pack-b 1.0"}})),
                       ("p4", json.dumps({"levels": []})),  # no software block: left out
                       # the same name and version, told apart by the pack's fingerprint
                       ("p5", json.dumps({"software": {"model_pack": "pack-a 2.0", "model_pack_sha256": "0123abcd"}})),
                       ("p6", json.dumps({"software": {"model_pack": "pack-a 2.0", "model_pack_sha256": "4567ef01"}}))):
        (tmp_path / name).mkdir()
        (tmp_path / name / "report.json").write_text(text)
    assert pack_labels(load_reports(tmp_path)) == ["pack-a 2.0", "pack-a 2.0 (sha256 0123abcd)",
                                                   "pack-a 2.0 (sha256 4567ef01)", "pack-b 1.0"]
    assert pack_labels({}) == []


def _baseline_reports(preds: Path, dest: Path, seed: int) -> Path:
    """A copy of ``preds`` graded by "another pack": some CNN grades moved by one, foramen and
    facet probabilities re-drawn noisier; the software block names it."""
    import shutil

    rng = np.random.default_rng(seed)
    shutil.copytree(preds, dest)
    for f in sorted(dest.rglob("report.json")):
        rep = json.loads(f.read_text())
        rep["software"] = {"model_pack": "old-pack 0.1"}
        for lv in rep["levels"]:
            cnn = lv["central_canal"]["cnn"]
            if rng.random() < 0.4:
                cnn["grade"] = GRADES[int(np.clip(GRADES.index(cnn["grade"]) + rng.choice([-1, 1]), 0, 3))]
            for b in BOXES:
                lv[b]["probability"] = float(np.clip(lv[b]["probability"] + rng.normal(0, 0.3), 0, 1))
        f.write_text(json.dumps(rep))
    return dest


def _paired_sklearn(cohorts):
    """Pooled, paired figures straight from the files (sklearn): CNN kappa and foramen AUROC of
    the reports and of the baseline, over the levels (sides) both graded."""
    from sklearn.metrics import cohen_kappa_score, roc_auc_score

    y_k, a_k, b_k, y_f, a_f, b_f = [], [], [], [], [], []
    for cohort, preds, base in cohorts:
        with open(cohort / "manifest.csv", newline="") as fh:
            pids = sorted({r["patient_id"] for r in csv.DictReader(fh) if r["split"] == "test"})
        for pid in pids:
            t = json.loads((cohort / pid / "truth.json").read_text())
            a = {x["level"]: x for x in json.loads((preds / pid / "report.json").read_text())["levels"]}
            b = {x["level"]: x for x in json.loads((base / pid / "report.json").read_text())["levels"]}
            for tl in t["levels"]:
                if tl["level"] not in a or tl["level"] not in b:
                    continue
                pa, pb = a[tl["level"]], b[tl["level"]]
                y_k.append(tl["grades"]["central_canal"]["readers"][0])
                a_k.append(GRADES.index(pa["central_canal"]["cnn"]["grade"]))
                b_k.append(GRADES.index(pb["central_canal"]["cnn"]["grade"]))
                for side in ("foramen_left", "foramen_right"):
                    y_f.append(tl["grades"][side]["readers"][0])
                    a_f.append(pa[side]["probability"])
                    b_f.append(pb[side]["probability"])
    def kap(y, g):
        return cohen_kappa_score(y, g, weights="linear", labels=[0, 1, 2, 3])

    return {"kappa": (kap(y_k, a_k), kap(y_k, b_k), len(y_k)),
            "auroc": (roc_auc_score(y_f, a_f), roc_auc_score(y_f, b_f), len(y_f))}


def test_cohorts_pooled_and_compared_with_a_baseline(tmp_path):
    """--data twice pools two cohorts whose patient ids repeat; --baseline adds the paired
    differences, which match sklearn on the same items, with a CI around them."""
    from lumbargrade.cli import main

    c1, p1 = make_cohort(tmp_path / "site1", n_patients=8, seed=3)
    c2, p2 = make_cohort(tmp_path / "site2", n_patients=6, seed=4)  # the same ids P0000..
    b1, b2 = _baseline_reports(p1, tmp_path / "b1", 0), _baseline_reports(p2, tmp_path / "b2", 1)
    out = tmp_path / "pooled"
    assert main(["evaluate", "--data", str(c1), "--data", str(c2 / "manifest.csv"), "--predictions", str(p1),
                 "--predictions", str(p2), "--baseline", str(b1), "--baseline", str(b2), "--out", str(out),
                 "--n-boot", "200", "--no-figures"]) == 0
    m = json.loads((out / "metrics.json").read_text())
    assert m["n_patients"] == 7 + 5 and m["n_levels"] == 35 + 25
    assert [(c["name"], c["n_patients"]) for c in m["cohorts"]] == [("cohort", 7), ("cohort-2", 5)]
    assert m["patients_without_report"] == [] and m["baseline_pack_labels"] == ["old-pack 0.1"]
    assert m["data"] == ["COHORT", "COHORT_2/manifest.csv"] and m["baseline"] == ["BASELINE", "BASELINE_2"]
    with open(out / "levels.csv", newline="") as fh:
        ids = {r["patient_id"] for r in csv.DictReader(fh)}
    assert "cohort/P0000" in ids and "cohort-2/P0000" in ids and len(ids) == 12
    ref = _paired_sklearn([(c1, p1, b1), (c2, p2, b2)])
    vb = m["versus_baseline"]
    for key, name in (("central_cnn_kappa", "kappa"), ("foramen_auroc", "auroc")):
        e, (a, b, n) = vb[key], ref[name]
        assert (e["value"], e["baseline"], e["n"]) == (pytest.approx(a), pytest.approx(b), n), key
        d = e["difference"]
        assert d["value"] == pytest.approx(a - b) and d["ci_low"] <= d["value"] <= d["ci_high"], key
        assert d["ci_high"] - d["ci_low"] > 0.01, key  # the baseline differs: a real interval
    assert abs(ref["auroc"][0] - ref["auroc"][1]) > 0.02  # the noisier baseline is worse, not a tie
    assert 0 <= vb["foramen_auroc"]["delong_p"] < 1
    assert vb["central_tree_kappa"]["difference"]["value"] == 0  # the tree grades were left as they were
    assert vb["dice_dural_sac"]["n"] == m["segmentation"]["dice_dural_sac"]["n"]
    md = (out / "tables.md").read_text()
    assert "2 cohorts pooled" in md and "Against the baseline" in md and "old-pack 0.1" in md


def test_a_baseline_equal_to_the_reports_differs_by_zero(tmp_path):
    from lumbargrade.evaluation import Cohort, evaluate_cohorts

    cohort, preds = make_cohort(tmp_path, n_patients=5, seed=2)
    m = evaluate_cohorts([Cohort("a", cohort, preds, baseline=preds)], tmp_path / "o", n_boot=50, figures=False)
    for key, e in m["versus_baseline"].items():
        assert e["value"] == e["baseline"], key
        assert (e["difference"]["value"], e["difference"]["ci_low"], e["difference"]["ci_high"]) == (0, 0, 0), key
    assert m["versus_baseline"]["facet_auroc"]["delong_p"] == 1.0
    assert "cohorts" not in m  # one cohort: patient ids as they are


def test_evaluate_rejects_unpaired_options(tmp_path, capsys):
    from lumbargrade.cli import main

    c1, p1 = make_cohort(tmp_path / "s1", n_patients=3, seed=0)
    assert main(["evaluate", "--data", str(c1), "--data", str(c1), "--predictions", str(p1), "--out",
                 str(tmp_path / "o"), "--no-figures"]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "--predictions" in err and "one per --data" in err
    assert main(["evaluate", "--data", str(c1), "--predictions", str(p1), "--baseline", str(p1), "--baseline",
                 str(p1), "--out", str(tmp_path / "o"), "--no-figures"]) == 2
    assert "--baseline" in capsys.readouterr().err
    assert not (tmp_path / "o").exists()


def test_the_ceiling_is_the_latent_severity_scored_against_reader_1():
    """benchmarks/reference_noise.py: the AUROC a model scoring the phantom's latent severity would
    get against reader 1 (sides pooled; a level without severities or reader grade left out)."""
    import sys

    from sklearn.metrics import roc_auc_score

    bench = str(Path(__file__).resolve().parents[1] / "benchmarks")
    sys.path.insert(0, bench)
    try:
        from reference_noise import severity_ceiling
    finally:
        sys.path.remove(bench)

    rng = np.random.default_rng(0)
    truth, y, s = [], [], []
    for i in range(12):
        levels = []
        for k in range(5):
            sev = {f"{f}_{side}": float(rng.random()) for f in ("foramen", "facet") for side in ("left", "right")}
            grades = {f: {"truth": int(v >= 0.5), "readers": [int(v + rng.normal(0, 0.1) >= 0.5), 0, 0]}
                      for f, v in sev.items()}
            levels.append({"level": LEVELS[k], "grades": grades, "severities": sev})
            y += [grades[f"foramen_{side}"]["readers"][0] for side in ("left", "right")]
            s += [sev[f"foramen_{side}"] for side in ("left", "right")]
        truth.append({"patient_id": f"P{i}", "levels": levels})
    truth.append({"patient_id": "X", "levels": [{"level": "L1/L2", "grades": {}}]})  # nothing to score
    got = severity_ceiling(truth, "foramen")
    assert got == pytest.approx(roc_auc_score(y, s), abs=1e-4) and 0.8 < got < 1.0  # noisy reader: below 1
    assert severity_ceiling([{"levels": [{"grades": {}}]}], "facet") is None


def test_pooled_evaluation_analyzes_each_cohort_into_its_own_folder(tmp_path, monkeypatch):
    """Without --predictions each cohort's studies go to OUT/predictions/<cohort>/ (patient ids
    repeat across cohorts), and a failed study is named with its cohort."""
    import shutil

    from lumbargrade.cli import main
    from lumbargrade.commands import evaluate as evaluate_command

    made = {}
    for site, seed in (("s1", 0), ("s2", 1)):
        made[site] = make_cohort(tmp_path / site, n_patients=3, seed=seed)

    def fake_pipeline(truth, pack, pred_dir, slice_choice="landmarks", overwrite=False):
        site = Path(truth[0]["study_dir"]).parts[-4]  # .../<site>/cohort/<patient>/dicom
        for pt in truth[1:]:
            shutil.copytree(made[site][1] / pt["patient_id"], Path(pred_dir) / pt["patient_id"])
        return [{"patient_id": truth[0]["patient_id"], "error": "not DICOM"}]

    monkeypatch.setattr(evaluate_command, "run_pipeline", fake_pipeline)
    out = tmp_path / "out"
    assert main(["evaluate", "--data", str(made["s1"][0]), "--data", str(made["s2"][0]), "--out", str(out),
                 "--no-figures", "--n-boot", "20"]) == 0
    m = json.loads((out / "metrics.json").read_text())
    assert (out / "predictions" / "cohort" / "P0001" / "report.json").is_file()
    assert (out / "predictions" / "cohort-2" / "P0001" / "report.json").is_file()
    assert m["predictions"] == ["predictions/cohort", "predictions/cohort-2"]
    assert m["pipeline_failures"] == [{"patient_id": "cohort/P0000", "error": "not DICOM"},
                                      {"patient_id": "cohort-2/P0000", "error": "not DICOM"}]
    assert m["patients_without_report"] == ["cohort/P0000", "cohort-2/P0000"] and m["n_patients"] == 4
