"""`lumbargrade analyze` against the truth of phantom studies (fixed seed, bundled model pack).

The tolerances are about the task, not fitted to one pack's outputs: the axial slice must be the
one the truth names (the slice nearest the disc centre); dural sac areas within 15% where the
canal is normal (a stenotic sac is small, so there the bound is 15 mm², about 23 pixels of
0.8 mm); disc areas within 10%; AP diameters within 2 mm (sac) and 3 mm (disc; the truth's is the
phantom's own chord, ours is measured on the mask); grades equal to the truth on the easy levels,
those whose latent severity lies far from every cut between grades (central canal: normal at
severity <= 0.15, severe at >= 0.85, cuts at 0.25 / 0.5 / 0.75; foramina and facets: negative at
<= 0.25, positive at >= 0.75, cut at 0.5).
"""

from __future__ import annotations

import json

import pytest

from lumbargrade.cli import main
from lumbargrade.levels.names import LEVELS

pytestmark = pytest.mark.core

BILATERAL = ("foramen_left", "foramen_right", "facet_left", "facet_right")


@pytest.fixture(scope="module")
def results(phantom_cohort, tmp_path_factory) -> list[tuple[str, dict, dict]]:
    """(patient id, truth level, reported level) for every level of every patient."""
    out_root = tmp_path_factory.mktemp("e2e")
    rows = []
    for patient in sorted(p for p in phantom_cohort.iterdir() if p.is_dir()):
        out = out_root / patient.name
        assert main(["analyze", str(patient / "dicom"), "--out", str(out), "--outputs", "none"]) == 0
        truth = json.loads((patient / "truth.json").read_text())
        report = json.loads((out / "report.json").read_text())
        assert [lv["level"] for lv in report["levels"]] == list(LEVELS), patient.name
        got = {lv["level"]: lv for lv in report["levels"]}
        rows += [(patient.name, t, got[t["level"]]) for t in truth["levels"]]
    return rows


def _where(pid: str, t: dict) -> str:
    return f"{pid} {t['level']}"


def test_every_level_is_read_on_the_truths_slice(results):
    wrong = [_where(p, t) for p, t, r in results if r["axial_sop_instance_uid"] != t["axial_sop_instance_uid"]]
    assert not wrong, f"axial slice is not the truth's disc-centre slice at {wrong}"


def test_areas_are_within_tolerance_of_the_truth(results):
    bad = []
    for p, t, r in results:
        tm, m = t["measurements"], r["measurements"]
        sac, sac_t = m["dural_sac_area_mm2"], tm["dural_sac_area_mm2"]
        normal = t["grades"]["central_canal"]["truth"] == 0
        if (normal and abs(sac - sac_t) > 0.15 * sac_t) or abs(sac - sac_t) > max(15.0, 0.15 * sac_t):
            bad.append(f"{_where(p, t)} sac {sac:.0f} vs {sac_t:.0f} mm²")
        if abs(m["disc_area_mm2"] - tm["disc_area_mm2"]) > 0.10 * tm["disc_area_mm2"]:
            bad.append(f"{_where(p, t)} disc {m['disc_area_mm2']:.0f} vs {tm['disc_area_mm2']:.0f} mm²")
    assert not bad, bad


def test_ap_diameters_are_within_tolerance_of_the_truth(results):
    bad = []
    for p, t, r in results:
        tm, m = t["measurements"], r["measurements"]
        if abs(m["dural_sac_ap_mm"] - tm["dural_sac_ap_mm"]) > 2.0:
            bad.append(f"{_where(p, t)} sac AP {m['dural_sac_ap_mm']:.1f} vs {tm['dural_sac_ap_mm']:.1f} mm")
        if abs(m["disc_ap_mm"] - tm["disc_ap_mm"]) > 3.0:
            bad.append(f"{_where(p, t)} disc AP {m['disc_ap_mm']:.1f} vs {tm['disc_ap_mm']:.1f} mm")
    assert not bad, bad


def test_central_canal_grade_is_the_truth_on_clearly_normal_and_severe_levels(results):
    easy = [(p, t, r) for p, t, r in results if t["severities"]["central"] <= 0.15 or t["severities"]["central"] >= 0.85]
    kinds = {t["grades"]["central_canal"]["truth"] for _, t, _ in easy}
    assert {0, 3} <= kinds, "the cohort must hold clearly normal and clearly severe levels"
    names = ("normal", "mild", "moderate", "severe")
    wrong = [f"{_where(p, t)}: {r['central_canal']['grade']} (truth {names[t['grades']['central_canal']['truth']]})"
             for p, t, r in easy if r["central_canal"]["grade"] != names[t["grades"]["central_canal"]["truth"]]]
    assert not wrong, wrong
    for p, t, r in easy:  # both models agree with the truth where it is clear
        assert r["central_canal"]["cnn"]["grade"] == names[t["grades"]["central_canal"]["truth"]], _where(p, t)


def test_foramen_and_facet_findings_are_the_truth_on_clear_cases(results):
    checked = {0: 0, 1: 0}
    wrong = []
    for p, t, r in results:
        for f in BILATERAL:
            sev = t["severities"][f]
            if 0.25 < sev < 0.75:
                continue
            positive = sev >= 0.75
            checked[int(positive)] += 1
            if (r[f]["label"] == "moderate/severe") != positive:
                wrong.append(f"{_where(p, t)} {f}: {r[f]['label']} (p={r[f]['probability']:.2f}), severity {sev:.2f}")
    assert checked[0] >= 10 and checked[1] >= 3, checked
    assert not wrong, wrong


def test_fat_water_shift_is_the_one_the_phantom_rendered(results, phantom_cohort):
    """report.json's fat_water_shift (from the header) equals the shift the phantom rendered, along
    the patient axis of the stored readout direction; the disc and regions were moved back against
    the direction the phantom displaced the fat."""
    import numpy as np
    import pydicom

    axes = ("left-right", "anterior-posterior", "superior-inferior")
    for pid, t, got in results:
        mr = json.loads((phantom_cohort / pid / "truth.json").read_text())["mr"]
        shift = got["fat_water_shift"]
        assert shift["pixels"] == pytest.approx(mr["chemical_shift_px"], rel=2e-3), _where(pid, t)
        iop = [float(v) for v in pydicom.dcmread(phantom_cohort / pid / t["axial_image"],
                                                 stop_before_pixels=True).ImageOrientationPatient]
        readout = iop[:3] if mr["readout_axis"] == 1 else iop[3:6]
        assert shift["readout_axis"] == axes[int(np.argmax(np.abs(readout)))], _where(pid, t)
        # the pack's reader read the direction the phantom rendered (towards higher stored indices)
        fix = shift["correction"]
        assert fix["applied"], _where(pid, t)
        k = int(np.argmax(np.abs(readout)))
        towards = (("left", "right"), ("posterior", "anterior"), ("superior", "inferior"))[k]
        sign = np.sign(readout[k]) * np.sign(mr["chemical_shift_px"])
        assert fix["fat_displaced_towards"] == towards[0 if sign > 0 else 1], _where(pid, t)
        assert fix["moved_back_px"] == pytest.approx(fix["alpha"] * shift["pixels"], abs=2e-3), _where(pid, t)
