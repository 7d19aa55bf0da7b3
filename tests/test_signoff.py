"""The reader's grades and sign-off: a new, verified SR with the previous one as predecessor (kept
in the history); a later change withdraws the signature."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parent / "fixtures" / "report"))

from synthetic_result import make_tree_pack, write_analysis

LEVEL = "L4/L5"


@pytest.fixture()
def analysis(tmp_path):
    from lumbargrade.modelpack import load_pack

    pack = load_pack(make_tree_pack(tmp_path / "pack", "area_ratio", 0.3))
    out, study, result, pack = write_analysis(tmp_path, pack=pack, grade_with_pack=True)
    return out, pack


def _central_evaluation(sr_path: Path, level: str) -> str:
    import highdicom as hd

    sr = hd.sr.srread(sr_path)
    groups = {str(g.tracking_identifier): g for g in sr.content.get_planar_roi_measurement_groups()}
    evs = groups[f"{level} dural sac"].get_qualitative_evaluations()
    (ev,) = [e for e in evs if e.name.value == "LG020"]  # the grade (LG040 is the review flag)
    return ev.value.meaning


def test_reader_grades_go_into_the_report_sr_and_html(analysis):
    from lumbargrade.errors import InputError
    from lumbargrade.signoff import set_reader_grades, study_status

    out, pack = analysis
    before = json.loads((out / "report.json").read_text())
    assert study_status(before) == "new"
    model = next(r for r in before["levels"] if r["level"] == LEVEL)["central_canal"]["grade"]
    assert model == "moderate"
    new = set_reader_grades(out, LEVEL, {"central_canal": "severe", "foramen_left": "normal/mild"}, by="Dr Roe")
    rec = next(r for r in new["levels"] if r["level"] == LEVEL)
    assert rec["reader"]["grades"] == {"central_canal": "severe", "foramen_left": "normal/mild"}
    assert rec["central_canal"]["grade"] == "moderate"  # the model's grade is kept beside it
    assert study_status(new) == "in review"
    assert "severe" in _central_evaluation(out / "sr.dcm", LEVEL).lower()
    assert "reader (model: moderate)" in (out / "report.html").read_text()
    # None gives a finding back to the models
    new = set_reader_grades(out, LEVEL, {"central_canal": None}, by="Dr Roe")
    assert next(r for r in new["levels"] if r["level"] == LEVEL)["reader"]["grades"] == {"foramen_left": "normal/mild"}
    assert "moderate" in _central_evaluation(out / "sr.dcm", LEVEL).lower()
    for bad in ({"central_canal": "awful"}, {"spleen": "normal"}, {}):
        with pytest.raises(InputError):
            set_reader_grades(out, LEVEL, bad, by="Dr Roe")


def test_sign_off_writes_a_new_verified_sr_and_keeps_the_old(analysis):
    import pydicom

    from lumbargrade.errors import InputError
    from lumbargrade.regrade import regrade
    from lumbargrade.signoff import sign_off, study_status

    out, pack = analysis
    old_sr = pydicom.dcmread(out / "sr.dcm")
    old_bytes = (out / "sr.dcm").read_bytes()
    assert old_sr.VerificationFlag == "UNVERIFIED" and old_sr.PreliminaryFlag == "PRELIMINARY"
    new = sign_off(out, by="Jane Doe", organization="Example Hospital")
    assert study_status(new) == "signed"
    assert new["signed"]["by"] == "Jane Doe" and new["signed"]["organization"] == "Example Hospital"
    sr = pydicom.dcmread(out / "sr.dcm")
    assert sr.SOPInstanceUID != old_sr.SOPInstanceUID
    assert sr.VerificationFlag == "VERIFIED" and sr.PreliminaryFlag == "FINAL" and sr.CompletionFlag == "COMPLETE"
    obs = sr.VerifyingObserverSequence[0]
    assert str(obs.VerifyingObserverName) == "Jane Doe^" and obs.VerifyingOrganization == "Example Hospital"
    assert obs.VerificationDateTime.startswith(new["signed"]["when"][:10].replace("-", ""))
    pred = sr.PredecessorDocumentsSequence[0].ReferencedSeriesSequence[0].ReferencedSOPSequence[0]
    assert pred.ReferencedSOPInstanceUID == old_sr.SOPInstanceUID
    assert new["dicom"]["sr"]["replaces_sop_instance_uid"] == old_sr.SOPInstanceUID
    assert (out / new["history"][-1]["previous"] / "sr.dcm").read_bytes() == old_bytes
    assert "Signed by <b>Jane Doe</b>" in (out / "report.html").read_text()
    if shutil.which("dciodvfy"):
        res = subprocess.run(["dciodvfy", str(out / "sr.dcm")], capture_output=True, text=True)
        errors = [ln for ln in (res.stdout + res.stderr).splitlines() if ln.startswith("Error")]
        assert not errors, errors
    with pytest.raises(InputError, match="already signed"):
        sign_off(out, by="Someone Else")
    # a change after signing withdraws the signature; the history keeps it
    import numpy as np
    from PIL import Image

    lab = np.asarray(Image.open(out / "levels" / "L4-L5" / "labels.png")).copy()
    lab[40:44, 30:34] = 1
    after = regrade(out, LEVEL, labels=lab, by="Jane Doe")
    assert "signed" not in after and after["history"][-1]["signature_withdrawn"]["by"] == "Jane Doe"
    assert pydicom.dcmread(out / "sr.dcm").VerificationFlag == "UNVERIFIED"
    assert study_status(after) == "in review"
