"""`lumbargrade regrade`: an edited mask changes the measurements and the grade, every output
follows, and the previous results are kept in the history."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np
import pytest

sys.path.insert(0, str(Path(__file__).parent / "fixtures" / "report"))

from synthetic_result import ellipse, make_tree_pack, write_analysis

pytestmark = pytest.mark.core  # needs only the inference core


LEVEL = "L4/L5"


@pytest.fixture()
def analysis(tmp_path):
    from lumbargrade.modelpack import load_pack

    # tree: area_ratio <= 0.3 -> moderate, else normal; L4/L5's drawn sac gives 0.16
    pack = load_pack(make_tree_pack(tmp_path / "pack", "area_ratio", 0.3))
    out, study, result, pack = write_analysis(tmp_path, pack=pack, grade_with_pack=True)
    return out, result, pack


def test_normalised_sac_area_tree_grades_from_the_levels_measurements(tmp_path):
    from lumbargrade.modelpack import load_pack

    pack = load_pack(make_tree_pack(tmp_path / "pack", "normalised_sac_area", 4.0, exponent=0.5))
    out, study, result, pack = write_analysis(tmp_path, pack=pack, grade_with_pack=True)
    graded = 0
    for lv in result.levels:
        m, tree = lv.measurements, lv.findings["central_canal"].get("tree")
        value = m["dural_sac_area_mm2"] / m["disc_area_mm2"] ** 0.5
        assert tree is not None and tree["ratio_name"] == "normalised_sac_area"
        assert tree["ratio"] == pytest.approx(value, abs=1e-4)
        assert tree["grade"] == ("moderate" if value <= 4.0 else "normal")
        graded += 1
    assert graded == len(result.levels) > 0


def _edited_png(out: Path, dest: Path, radii=(8, 11)) -> Path:
    from PIL import Image

    lab = np.asarray(Image.open(out / "levels" / "L4-L5" / "labels.png")).copy()
    lab[lab == 1] = 0
    lab[ellipse(lab.shape, (42, 32), radii)] = 1
    Image.fromarray(lab).save(dest)
    return dest


def test_enlarged_sac_raises_area_lowers_grade_and_keeps_history(analysis, tmp_path, capsys):
    import highdicom as hd

    from lumbargrade.cli import main

    out, result, pack = analysis
    before = json.loads((out / "report.json").read_text())
    old = next(r for r in before["levels"] if r["level"] == LEVEL)
    assert old["central_canal"]["grade"] == "moderate"
    edited = _edited_png(out, tmp_path / "edited.png")
    rc = main(
        [
            "regrade",
            str(out),
            "--level",
            "L4-L5",
            "--labels",
            str(edited),
            "--by",
            "Jane Doe",
            "--reason",
            "sac under-segmented",
        ]
    )
    assert rc == 0
    assert "regraded by Jane Doe" in capsys.readouterr().out
    after = json.loads((out / "report.json").read_text())
    new = next(r for r in after["levels"] if r["level"] == LEVEL)
    assert new["measurements"]["dural_sac_area_mm2"] > old["measurements"]["dural_sac_area_mm2"]
    assert new["measurements"]["disc_area_mm2"] == pytest.approx(
        old["measurements"]["disc_area_mm2"]
    )
    assert new["central_canal"]["grade"] == "normal" and new["central_canal"]["tree"]["ratio"] > 0.3
    assert new["boxes"] != old["boxes"]  # boxes follow the sac
    assert new["regraded"]["by"] == "Jane Doe"
    assert any("CNN findings not recomputed" in w for w in new["warnings"])  # this pack has no CNNs
    # other levels untouched
    for a, b in zip(before["levels"], after["levels"]):
        if a["level"] != LEVEL:
            assert (
                a["measurements"] == b["measurements"] and a["central_canal"] == b["central_canal"]
            )
    # history: the previous outputs, unchanged, and who/when
    (h,) = after["history"]
    assert (
        h["by"] == "Jane Doe"
        and h["level"] == LEVEL
        and h["reason"] == "sac under-segmented"
        and h["when"]
    )
    prev = out / h["previous"]
    assert json.loads((prev / "report.json").read_text()) == before
    assert (
        (prev / "seg.dcm").is_file()
        and (prev / "sr.dcm").is_file()
        and (prev / "report.html").is_file()
    )
    # SEG, SR and HTML follow the edit
    sac = np.asarray(__import__("PIL.Image", fromlist=["Image"]).open(edited)) == 1
    seg = hd.seg.segread(out / "seg.dcm")
    numbers = after["dicom"]["seg"]["instances"][0]["levels"][LEVEL]
    got = (
        np.asarray(
            seg.get_pixels_by_source_instance(
                [new["axial_sop_instance_uid"]], segment_numbers=[numbers["dural_sac"]]
            )
        )[0, ..., 0]
        > 0
    )
    np.testing.assert_array_equal(got, sac)
    assert seg.SegmentSequence[numbers["dural_sac"] - 1].SegmentAlgorithmType == "SEMIAUTOMATIC"
    groups = {
        str(g.tracking_identifier): g
        for g in hd.sr.srread(out / "sr.dcm").content.get_planar_roi_measurement_groups()
    }
    area = {m.name.value: m.value for m in groups[f"{LEVEL} dural sac"].get_measurements()}[
        "42798000"
    ]
    assert area == pytest.approx(new["measurements"]["dural_sac_area_mm2"])
    html = (out / "report.html").read_text()
    assert "Jane Doe" in html and "History" in html
    # a second regrade appends to the history
    _edited_png(out, tmp_path / "edited2.png", radii=(6, 9))
    assert (
        main(
            [
                "regrade",
                str(out),
                "--level",
                LEVEL,
                "--labels",
                str(tmp_path / "edited2.png"),
                "--by",
                "J Roe",
            ]
        )
        == 0
    )
    after2 = json.loads((out / "report.json").read_text())
    assert [x["by"] for x in after2["history"]] == ["Jane Doe", "J Roe"]
    assert len(list((out / "history").iterdir())) == 2
    assert (
        json.loads((out / after2["history"][1]["previous"] / "report.json").read_text())["history"]
        == after["history"]
    )


def test_regrade_from_an_edited_seg(analysis, tmp_path):
    from lumbargrade.regrade import regrade
    from lumbargrade.report.dicom_seg import write_seg

    out, result, pack = analysis
    lv = next(x for x in result.levels if x.level == LEVEL)
    lv.sac_mask = ellipse(lv.image.shape, (42, 32), (8, 11))
    edited = tmp_path / "editseg"
    edited.mkdir()
    rep = json.loads((out / "report.json").read_text())
    (seg_file,) = write_seg(result, edited, rep)
    new = regrade(out, LEVEL, seg=seg_file, by="Jane Doe")
    rec = next(r for r in new["levels"] if r["level"] == LEVEL)
    assert rec["measurements"]["dural_sac_area_mm2"] == pytest.approx(lv.sac_mask.sum() * 0.8 * 0.8)
    assert rec["regraded"]["source"].startswith("SEG")


def test_bad_input_is_one_line_exit_2(analysis, tmp_path, capsys):
    from PIL import Image

    from lumbargrade.cli import main

    out, result, pack = analysis
    small = tmp_path / "small.png"
    Image.fromarray(np.ones((10, 10), np.uint8)).save(small)
    cases = [
        ["regrade", str(out), "--level", LEVEL, "--labels", str(small), "--by", "X"],
        ["regrade", str(out), "--level", "L1/L2", "--labels", str(small), "--by", "X"],
        ["regrade", str(out), "--level", "L9/L10", "--labels", str(small), "--by", "X"],
        [
            "regrade",
            str(tmp_path / "nothing"),
            "--level",
            LEVEL,
            "--labels",
            str(small),
            "--by",
            "X",
        ],
        [
            "regrade",
            str(out),
            "--level",
            LEVEL,
            "--labels",
            str(tmp_path / "missing.png"),
            "--by",
            "X",
        ],
    ]
    for argv in cases:
        assert main(argv) == 2, argv
        err = capsys.readouterr().err.strip()
        assert err.startswith("lumbargrade: error:") and "\n" not in err
    assert not (out / "history").exists()  # nothing was changed


def _labels(out: Path, level: str = "L4-L5") -> np.ndarray:
    from PIL import Image

    return np.asarray(Image.open(out / "levels" / level / "labels.png")).copy()


def test_reader_regions_are_kept_and_the_boxes_follow_them(analysis):
    from lumbargrade.regrade import regrade

    out, result, pack = analysis
    lab = _labels(out)
    lab[lab >= 3] = 0
    lab[50:60, 48:62] = 3  # the reader's facet left region (under nothing)
    lab[50:58, 2:12] = 4
    lab[26:34, 44:56] = 5
    new = regrade(out, LEVEL, labels=lab, by="Jane Doe", regions="reader")
    rec = next(r for r in new["levels"] if r["level"] == LEVEL)
    assert rec["regions_source"] == "reader"
    assert rec["boxes"] == {"facet_left": [50, 48, 60, 62], "facet_right": [50, 2, 58, 12],
                            "foramen_left": [26, 44, 34, 56]}  # no foramen right drawn: no box
    saved = _labels(out)
    np.testing.assert_array_equal(saved == 3, lab == 3)
    np.testing.assert_array_equal(saved == 1, lab == 1)
    # a later sac edit keeps the reader's regions when asked to, and the rule's boxes otherwise
    lab2 = saved.copy()
    lab2[lab2 == 1] = 0
    lab2[ellipse(lab2.shape, (42, 32), (6, 9)) & (lab2 == 0)] = 1
    again = regrade(out, LEVEL, labels=lab2, by="Jane Doe", regions="reader")
    assert next(r for r in again["levels"] if r["level"] == LEVEL)["boxes"]["facet_left"] == [50, 48, 60, 62]
    rule = regrade(out, LEVEL, labels=lab2, by="Jane Doe")
    rec3 = next(r for r in rule["levels"] if r["level"] == LEVEL)
    assert "regions_source" not in rec3 and rec3["boxes"]["facet_left"] != [50, 48, 60, 62]


def test_reslice_moves_the_landmark_to_another_axial_slice(analysis):
    from lumbargrade.io import read_study
    from lumbargrade.modelpack import default_pack_path
    from lumbargrade.regrade import reslice

    out, result, pack = analysis
    report = json.loads((out / "report.json").read_text())
    rec = next(r for r in report["levels"] if r["level"] == LEVEL)
    config = json.loads((out / "config.json").read_text())
    study = read_study(config["input"])
    sag = next(s for s in study.series if s.plane == "sagittal")
    sag_geom = max(sag.blocks, key=len).slices[2].geometry
    axial = study.find("axial_t2")
    block = next(b for b in axial.blocks if any(s.sop_instance_uid == rec["axial_sop_instance_uid"] for s in b.slices))
    target = next(s for s in block.slices if s.sop_instance_uid != rec["axial_sop_instance_uid"])
    g = target.geometry
    centre = g.pixel_to_patient(np.array([(g.rows - 1) / 2, 32.0]))  # on the midline (x = 0)
    row, col, dist = sag_geom.patient_to_pixel(centre)
    assert abs(dist) < 1.0  # the sagittal plane is 0.4 mm off this pixel centre
    new = reslice(out, LEVEL, row=row, col=col, by="Jane Doe", models=default_pack_path())
    rec2 = next(r for r in new["levels"] if r["level"] == LEVEL)
    assert rec2["axial_sop_instance_uid"] == target.sop_instance_uid
    assert rec2["slice_choice"]["method"] == "reader" and abs(rec2["slice_choice"]["distance_mm"]) < 0.01
    assert rec2["regraded"]["by"] == "Jane Doe" and "landmark" in new["history"][-1]["reason"]
    assert new["sagittal"]["landmarks"][LEVEL]["moved_by"] == "Jane Doe"
    assert new["sagittal"]["landmarks"][LEVEL]["row"] == pytest.approx(row, abs=0.01)
    assert (out / new["history"][-1]["previous"] / "report.json").is_file()
    # the SEG now references the new slice
    import highdicom as hd

    inst = next(i for i in new["dicom"]["seg"]["instances"] if LEVEL in i["levels"])
    seg = hd.seg.segread(out / inst["file"])
    refs = {str(r.ReferencedSOPInstanceUID) for s in seg.ReferencedSeriesSequence for r in s.ReferencedInstanceSequence}
    assert target.sop_instance_uid in refs
    # the same slice again: nothing changes
    n = len(new["history"])
    assert len(reslice(out, LEVEL, row=row, col=col, by="Jane Doe", models=default_pack_path())["history"]) == n
    # outside the sagittal slice: refused with one line
    from lumbargrade.errors import InputError

    with pytest.raises(InputError, match="outside the sagittal slice"):
        reslice(out, LEVEL, row=-50, col=col, by="Jane Doe", models=default_pack_path())


def test_a_moved_study_is_found_with_sources(analysis, tmp_path):
    from lumbargrade.errors import InputError
    from lumbargrade.regrade import load_analysis, study_source

    out, result, pack = analysis
    config = json.loads((out / "config.json").read_text())
    src = Path(config["input"])
    moved = tmp_path / "elsewhere"
    moved.mkdir()
    src.rename(moved / src.name)
    try:
        assert study_source(out, config) is None
        assert study_source(out, config, sources=moved) == moved / src.name
        with pytest.raises(InputError, match="not there any more"):
            load_analysis(out, pack=pack)
        an = load_analysis(out, pack=pack, sources=moved)
        assert an.source == moved / src.name and len(an.result.levels) == 3
    finally:
        (moved / src.name).rename(src)
