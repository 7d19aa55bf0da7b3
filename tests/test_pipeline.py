"""End to end: a phantom study through `lumbargrade analyze` with the bundled model pack."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from lumbargrade.cli import main
from lumbargrade.levels.names import LEVELS, level_dirname
from lumbargrade.modelpack import COMPONENTS, default_pack_path, load_pack

pytestmark = pytest.mark.core  # needs only the inference core


GRADES = {"normal", "mild", "moderate", "severe"}
FINDINGS = ("foramen_left", "foramen_right", "facet_left", "facet_right")


@pytest.fixture(scope="module")
def phantom_study(tmp_path_factory) -> Path:
    from lumbargrade.phantom.cohort import generate_cohort

    root = tmp_path_factory.mktemp("phantom")
    generate_cohort(root, 1, seed=77, split=(0, 0, 1), progress=False)
    return root


@pytest.fixture(scope="module")
def analysis(phantom_study, tmp_path_factory) -> tuple[Path, dict, dict]:
    out = tmp_path_factory.mktemp("analysis") / "out"
    patient = next(p for p in phantom_study.iterdir() if p.is_dir())
    assert main(["analyze", str(patient / "dicom"), "--out", str(out)]) == 0
    report = json.loads((out / "report.json").read_text())
    truth = json.loads((patient / "truth.json").read_text())
    return out, report, truth


def test_bundled_pack_is_complete():
    pack = load_pack(default_pack_path())
    for comp in COMPONENTS:
        assert pack.has(comp), f"bundled pack lacks {comp}"
        info = pack.info(comp)
        assert info.get("training_command"), f"{comp}: no training command recorded"
        assert info.get("metrics"), f"{comp}: no metrics recorded"
    assert (default_pack_path() / "box_rule.json").is_file()
    assert "phantom" in pack.manifest["trained_on"].lower()


def test_pack_fingerprint_tells_apart_packs_of_the_same_name_and_version(tmp_path):
    """A byte changed in one file of a pack changes its fingerprint; an identical copy keeps it."""
    import shutil

    src = default_pack_path()
    copy = tmp_path / "copy"
    shutil.copytree(src, copy, ignore=shutil.ignore_patterns("*.onnx", "*.safetensors"))
    changed = tmp_path / "changed"
    shutil.copytree(copy, changed)
    rule = changed / "box_rule.json"
    rule.write_text(rule.read_text() + " ")
    fps = [load_pack(p).fingerprint for p in (copy, copy, changed)]
    assert fps[0] == fps[1] != fps[2] and all(len(f) == 16 for f in fps)
    (copy / "README.md").write_text("documentation only\n")  # a README edit is not a new pack
    assert load_pack(copy).fingerprint == fps[0]
    assert load_pack(changed).label == load_pack(copy).label


def test_analyze_reports_every_level_with_grades(analysis):
    out, report, truth = analysis
    assert report["study_instance_uid"] == truth["study_instance_uid"]
    assert [lv["level"] for lv in report["levels"]] == list(LEVELS)
    for lv in report["levels"]:
        assert lv["central_canal"]["grade"] in GRADES
        assert lv["central_canal"]["tree"]["rule"]
        assert len(lv["central_canal"]["cnn"]["probabilities"]) == 4
        for f in FINDINGS:
            assert 0.0 <= lv[f]["probability"] <= 1.0
            assert lv[f]["label"] in {"normal/mild", "moderate/severe"}
        m = lv["measurements"]
        for key in ("dural_sac_area_mm2", "disc_area_mm2", "dural_sac_ap_mm", "disc_ap_mm", "area_ratio", "ap_ratio"):
            assert m[key] is not None and m[key] > 0


def test_label_maps_have_the_slice_shape_and_match_truth(analysis):
    out, report, truth = analysis
    truth_by_level = {lv["level"]: lv for lv in truth["levels"]}
    patient = Path(truth["patient_id"])
    n_same = 0
    for lv in report["levels"]:
        lab = np.asarray(Image.open(out / "levels" / level_dirname(lv["level"]) / "labels.png"))
        t = truth_by_level[lv["level"]]
        assert lab.dtype == np.uint8 and set(np.unique(lab)) <= set(range(7))
        if lv["axial_sop_instance_uid"] == t["axial_sop_instance_uid"]:
            n_same += 1
            sp = t["pixel_spacing_mm"]
            sac_area = float((lab == 1).sum() * sp[0] * sp[1])
            # the predicted sac area is close to the truth (a loose check: a broken model fails it)
            assert abs(sac_area - t["measurements"]["dural_sac_area_mm2"]) < 0.35 * t["measurements"]["dural_sac_area_mm2"] + 15
    assert n_same >= 3, f"only {n_same} of 5 levels analysed on the truth's slice"
    assert patient


def test_outputs_beside_the_report(analysis):
    out, report, _ = analysis
    assert (out / "report.html").is_file()
    assert (out / "sr.dcm").is_file()
    assert list(out.glob("seg*.dcm"))
    cfg = json.loads((out / "config.json").read_text())
    assert cfg["analysis"]["slice_choice"] == "landmarks"
    assert all(lv["slice_choice"]["method"] == "landmarks" for lv in report["levels"])


def test_analyze_refuses_to_overwrite(analysis, capsys):
    out, _, truth = analysis
    before = (out / "report.json").read_bytes()
    rc = main(["analyze", str(out), "--out", str(out)])
    assert rc == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "error" in err[0]
    assert (out / "report.json").read_bytes() == before


def test_a_slice_without_a_disc_is_replaced_by_the_next_one_that_shows_it(phantom_study):
    """A thin or collapsed disc can fall between two slices: when the slice nearest the disc-centre
    landmark shows no disc, the next slice of the block that passes the plausibility gate with a
    disc is used, and the report says so."""
    from lumbargrade.io import read_study
    from lumbargrade.pipeline import analyze_study

    pack = load_pack(None)
    seg = pack.get("segmentation")
    patient = next(p for p in phantom_study.iterdir() if p.is_dir())
    study = read_study(patient / "dicom")
    base = analyze_study(study, pack)
    assert not any("moved_from" in lv.slice_choice for lv in base.levels)
    target = next(lv for lv in base.levels if lv.level == "L5/S1")
    blank = target.canonical(target.image)

    class NoDiscOnTarget:  # the segmenter misses the disc on that one slice only
        def __getattr__(self, name):
            return getattr(seg, name)

        def predict(self, items, centres=None):
            outs = seg.predict(items, centres)
            for (img, _), o in zip(items, outs):
                if img.shape == blank.shape and np.array_equal(img, blank):
                    o.labels[o.labels == 2] = 0
                    o.quality["disc_confidence"] = None
            return outs

    class Pack:
        def __getattr__(self, name):
            return getattr(pack, name)

        def get(self, name):
            return NoDiscOnTarget() if name == "segmentation" else pack.get(name)

    res = analyze_study(study, Pack())
    lv = next(x for x in res.levels if x.level == "L5/S1")
    assert lv.sop_instance_uid != target.sop_instance_uid and lv.disc_mask.any()
    moved = lv.slice_choice["moved_from"]
    assert moved["sop_instance_uid"] == target.sop_instance_uid
    assert abs(lv.slice_choice["distance_mm"]) <= 6.0
    assert any("no disc found on the slice nearest" in w for w in lv.warnings)
    assert "no disc found on a disc-level slice" not in lv.review_reasons
    # the other levels keep their slices
    for a, b in zip(base.levels, res.levels):
        if a.level != "L5/S1":
            assert a.sop_instance_uid == b.sop_instance_uid
    # neighbours that cannot be read are no candidates: the level keeps its slice, flagged
    from lumbargrade.errors import InputError

    def unreadable():
        raise InputError("neighbour.dcm", "pixel data cannot be decoded")

    block = next(b for b in study.find("axial_t2").blocks
                 if any(s.sop_instance_uid == target.sop_instance_uid for s in b.slices))
    for s in block.slices:
        if s.sop_instance_uid != target.sop_instance_uid:
            s._pixels, s._loader = None, unreadable
    res = analyze_study(study, Pack())
    lv = next(x for x in res.levels if x.level == "L5/S1")
    assert lv.sop_instance_uid == target.sop_instance_uid and "moved_from" not in lv.slice_choice
    assert "no disc found on a disc-level slice" in lv.review_reasons
    # the foramen classifier's neighbouring slices were those unreadable ones: said, not fatal
    assert any("could not be read" in w and "neighbour.dcm" in w for w in lv.warnings)
    assert lv.findings["foramen_left"]["probability"] is not None
