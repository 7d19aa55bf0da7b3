"""DICOM SEG and SR written for a synthetic study read back with highdicom and match report.json."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

sys.path.insert(0, str(Path(__file__).parent / "fixtures" / "report"))

from synthetic_result import LEVELS, write_analysis

import highdicom as hd


pytestmark = pytest.mark.core  # needs only the inference core


@pytest.fixture(scope="module")
def analysis(tmp_path_factory):
    out, study, result, pack = write_analysis(tmp_path_factory.mktemp("dicom"))
    return out, result, json.loads((out / "report.json").read_text())


@pytest.fixture(scope="module")
def tilted(tmp_path_factory):
    out, study, result, pack = write_analysis(
        tmp_path_factory.mktemp("tilted"), tilts=(0.0, 10.0, 30.0), with_sagittal=False
    )
    return out, result, json.loads((out / "report.json").read_text())


def test_seg_reads_back_with_masks_boxes_and_provenance(analysis):
    out, result, report = analysis
    assert not report["dicom"].get("errors")
    inst = report["dicom"]["seg"]["instances"]
    assert [i["file"] for i in inst] == ["seg.dcm"]
    seg = hd.seg.segread(out / "seg.dcm")
    assert seg.number_of_segments == 6 * len(LEVELS)
    labels = {int(d.SegmentNumber): str(d.SegmentLabel) for d in seg.SegmentSequence}
    algo = seg.SegmentSequence[0].SegmentationAlgorithmIdentificationSequence[0]
    assert algo.AlgorithmName == "lumbargrade"
    assert algo.AlgorithmVersion == report["software"]["version"]
    assert report["software"]["model_pack"] in str(algo.AlgorithmSource)
    assert {
        r.ReferencedSOPInstanceUID
        for s in seg.ReferencedSeriesSequence
        for r in s.ReferencedInstanceSequence
    } == {lv.sop_instance_uid for lv in result.levels}
    for lv in result.levels:
        numbers = inst[0]["levels"][lv.level]
        assert labels[numbers["dural_sac"]] == f"{lv.level} dural sac"
        arr = seg.get_pixels_by_source_instance(
            [lv.sop_instance_uid], segment_numbers=list(numbers.values())
        )
        got = np.asarray(arr)[0] > 0
        np.testing.assert_array_equal(got[..., 0], lv.sac_mask)
        np.testing.assert_array_equal(got[..., 1], lv.disc_mask)
        seg_mask = got[..., list(numbers).index("foramen_left")]
        if lv.regions is not None:  # the image localiser: the segment is the region itself
            np.testing.assert_array_equal(seg_mask, lv.regions == 5)
            assert lv.boxes_source == "image"
        else:  # a rule's box, filled
            r0, c0, r1, c1 = lv.boxes["foramen_left"]
            assert seg_mask.sum() == (r1 - r0) * (c1 - c0) and seg_mask[r0:r1, c0:c1].all()


def _sr_groups(path):
    sr = hd.sr.srread(path)
    return {str(g.tracking_identifier): g for g in sr.content.get_planar_roi_measurement_groups()}


def _what(rec: dict) -> str:
    """'region' when the image localiser placed the level's boxes (its regions are the segments),
    else 'box'."""
    return "region" if rec.get("boxes_source") == "image" else "box"


def test_sr_measurements_and_grades_equal_report(analysis):
    from lumbargrade.report.dicom_sr import segment_frames

    out, result, report = analysis
    groups = _sr_groups(out / "sr.dcm")
    assert len(groups) == 6 * len(LEVELS)
    seg_ds = __import__("pydicom").dcmread(out / "seg.dcm")
    frames = {v: k for k, v in segment_frames(seg_ds).items()}  # frame -> (segment, sop)
    numbers = report["dicom"]["seg"]["instances"][0]["levels"]
    for rec in report["levels"]:
        level, m = rec["level"], rec["measurements"]
        sac = groups[f"{level} dural sac"]
        got = {(x.name.value, x.unit.value): x.value for x in sac.get_measurements()}
        assert got[("42798000", "mm2")] == pytest.approx(m["dural_sac_area_mm2"], rel=1e-9)
        assert got[("LG010", "1")] == pytest.approx(m["area_ratio"], rel=1e-9)
        assert got[("LG011", "1")] == pytest.approx(m["ap_ratio"], rel=1e-9)
        disc = {
            (x.name.value, x.unit.value): x.value
            for x in groups[f"{level} disc"].get_measurements()
        }
        assert disc[("42798000", "mm2")] == pytest.approx(m["disc_area_mm2"], rel=1e-9)
        q, review = sac.get_qualitative_evaluations()
        assert q.value.meaning.lower() == rec["central_canal"]["grade"]
        assert review.name.value == "LG040"
        assert review.value.meaning == ("Yes" if rec["needs_review"] else "No")
        # each group references its own segment's frame on this level's slice
        for kind in ("dural_sac", "foramen_left", "facet_right"):
            ident = (
                f"{level} dural sac"
                if kind == "dural_sac"
                else f"{level} {kind.replace('_', ' ')} {_what(rec)}"
            )
            ref = groups[ident].referenced_segmentation_frame
            assert ref.referenced_sop_instance_uid == seg_ds.SOPInstanceUID
            (frame,) = ref.referenced_frame_numbers
            assert frames[int(frame)] == (numbers[level][kind], rec["axial_sop_instance_uid"])
        for key in ("foramen_left", "facet_right"):
            g = groups[f"{level} {key.replace('_', ' ')} {_what(rec)}"]
            (q,) = g.get_qualitative_evaluations()
            expected = (
                "Moderate to Severe" if rec[key]["label"] == "moderate/severe" else "Normal or mild"
            )
            assert q.value.meaning == expected
            (p,) = g.get_measurements()
            assert p.value == pytest.approx(rec[key]["probability"])


def test_tilted_blocks_give_one_seg_per_orientation_in_one_series(tilted):
    import pydicom

    out, result, report = tilted
    inst = report["dicom"]["seg"]["instances"]
    assert len(inst) == 3 and not (out / "seg.dcm").exists()
    dss = [pydicom.dcmread(out / i["file"]) for i in inst]
    assert len({d.SeriesInstanceUID for d in dss}) == 1
    assert sorted(int(d.InstanceNumber) for d in dss) == [1, 2, 3]
    groups = _sr_groups(out / "sr.dcm")
    by_level = {lvl: i["sop_instance_uid"] for i in inst for lvl in i["levels"]}
    for level in LEVELS:
        ref = groups[f"{level} dural sac"].referenced_segmentation_frame
        assert ref.referenced_sop_instance_uid == by_level[level]


def test_levels_without_dicom_source_are_left_out(tmp_path, analysis):
    from lumbargrade.report.dicom_seg import write_seg
    from lumbargrade.report.dicom_sr import write_sr

    out, result, report = analysis
    lv = result.levels[0]

    class NoHeader:
        header = None

    import copy

    res = copy.copy(result)
    res.levels = [copy.copy(lv)]
    res.levels[0].source = NoHeader()
    rep = {"software": report["software"], "levels": report["levels"][:1]}
    assert write_seg(res, tmp_path, rep) == []
    assert write_sr(res, tmp_path, rep) is None
    assert any("no DICOM source" in w for w in rep["dicom"]["warnings"])
    assert not list(tmp_path.glob("*.dcm"))


def test_every_private_code_is_documented():
    from lumbargrade.report.codes import PRIVATE_CODES, PRIVATE_SCHEME

    doc = (Path(__file__).resolve().parents[1] / "docs" / "dicom-outputs.md").read_text()
    assert PRIVATE_SCHEME in doc
    for value, meaning in PRIVATE_CODES.items():
        assert re.search(rf"\|\s*`?{value}`?\s*\|\s*{re.escape(meaning)}\s*\|", doc), value


@pytest.mark.skipif(
    shutil.which("dciodvfy") is None, reason="dciodvfy (Debian dicom3tools) not installed"
)
def test_dciodvfy_reports_no_errors(analysis, tilted):
    for out in (analysis[0], tilted[0]):
        for f in sorted(out.glob("*.dcm")):
            res = subprocess.run(["dciodvfy", str(f)], capture_output=True, text=True, timeout=60)
            errors = [ln for ln in (res.stdout + res.stderr).splitlines() if ln.startswith("Error")]
            assert not errors, f"{f.name}: {errors[:5]}"


def test_lean_sr_equals_highdicom_full_construction(analysis, tmp_path):
    """The fast path (document built around a one-group report, full content copied in) writes
    the same dataset as handing highdicom the whole content, apart from creation times."""
    import pydicom

    from lumbargrade.report.dicom_sr import _write_sr

    out, result, report = analysis
    files = {}
    for lean in (True, False):
        folder = tmp_path / f"lean{lean}"
        shutil.copytree(out, folder)
        rep = json.loads((folder / "report.json").read_text())
        path = _write_sr(result, folder, rep, lean=lean, uids={"series": "1.2.3.4", "sop": "1.2.3.5"})
        files[lean] = pydicom.dcmread(path)
    a, b = files[True], files[False]
    assert len(a.ContentSequence) == len(b.ContentSequence) > 1
    skip = {"ContentDate", "ContentTime", "InstanceCreationDate", "InstanceCreationTime", "SeriesDate",
            "SeriesTime"}
    tags = {e.keyword for e in a} | {e.keyword for e in b}

    def no_tracking_uids(x):  # tracking UIDs (0040,A124), contribution times: new in every build
        if isinstance(x, dict):
            return {k: no_tracking_uids(v) for k, v in x.items() if k not in ("0040A124", "0018A002")}
        if isinstance(x, list):
            return [no_tracking_uids(v) for v in x]
        return x

    for kw in sorted(tags - skip):
        if kw in ("ContentSequence", "ContributingEquipmentSequence"):
            ja = [no_tracking_uids(i.to_json_dict()) for i in a.get(kw)]
            jb = [no_tracking_uids(i.to_json_dict()) for i in b.get(kw)]
            assert ja == jb
        else:
            assert a.get(kw) == b.get(kw), kw
