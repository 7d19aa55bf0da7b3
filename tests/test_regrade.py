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
