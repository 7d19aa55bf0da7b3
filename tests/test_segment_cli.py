"""``lumbargrade segment``: every axial slice of a DICOM series, a NIfTI volume or one image."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from lumbargrade.cli import main

FIXTURES = Path(__file__).parent / "fixtures"


@pytest.fixture(scope="module")
def small_nifti(tmp_path_factory) -> Path:
    """Five axial planes (k = 100..104) of the real lumbar T2 fixture, geometry kept."""
    import nibabel as nib

    img = nib.load(str(FIXTURES / "nifti" / "t2_lumbar.nii.gz"))
    sub = img.slicer[:, :, 100:105]
    p = tmp_path_factory.mktemp("nii") / "five.nii.gz"
    nib.save(sub, str(p))
    return p


@pytest.fixture(scope="module")
def phantom_study(tmp_path_factory) -> Path:
    from lumbargrade.phantom.cohort import generate_cohort
    from lumbargrade.phantom.config import PhantomConfig

    root = tmp_path_factory.mktemp("segph")
    generate_cohort(root, 1, seed=9, split=(0, 0, 1), progress=False, config=PhantomConfig(slice_bank=False))
    return root / "P0000" / "dicom"


def _check_doc(out: Path, n: int) -> dict:
    doc = json.loads((out / "segment.json").read_text())
    assert len(doc["slices"]) == n
    assert doc["segmentation"]["sac_refiner_weight"] == 0.5  # the bundled pack blends the two looks
    for s in doc["slices"]:
        assert set(s) >= {"sop_instance_uid", "index", "label_map", "dural_sac_area_mm2", "disc_area_mm2",
                          "plausible", "warnings"}
        assert isinstance(s["plausible"], bool) and isinstance(s["warnings"], list)
        assert s["plausible"] == (not s["warnings"])
        lab = np.asarray(Image.open(out / s["label_map"]))
        assert set(np.unique(lab)) <= set(range(7))
    return doc


def test_nifti_slices_along_the_most_axial_axis(small_nifti, tmp_path):
    out = tmp_path / "out"
    assert main(["segment", str(small_nifti), "--out", str(out), "--quiet"]) == 0
    doc = _check_doc(out, 5)
    for s in doc["slices"]:
        assert np.asarray(Image.open(out / s["label_map"])).shape == (257, 38)
        assert s["sop_instance_uid"] is None


def test_dicom_study_every_axial_slice(phantom_study, tmp_path):
    import pydicom

    out = tmp_path / "out"
    assert main(["segment", str(phantom_study), "--out", str(out), "--quiet"]) == 0
    axial = sorted((phantom_study / "ax_t2").glob("*.dcm"))
    doc = _check_doc(out, len(axial))
    uids = {pydicom.dcmread(p, stop_before_pixels=True).SOPInstanceUID: p for p in axial}
    for s in doc["slices"]:
        ds = pydicom.dcmread(uids[s["sop_instance_uid"]], stop_before_pixels=True)
        assert np.asarray(Image.open(out / s["label_map"])).shape == (ds.Rows, ds.Columns)
        # the header's fat-water shift (the phantom writes PixelBandwidth and the phase direction)
        shift = 3.5 * 42.576 * float(ds.MagneticFieldStrength) / float(ds.PixelBandwidth)
        assert s["fat_water_shift"]["pixels"] == pytest.approx(shift, abs=1e-3)
        assert s["fat_water_shift"]["readout_axis"] in ("left-right", "anterior-posterior")
        # the disc and regions moved back as analyze moves them, the direction read once per series
        fix = s["fat_water_shift"]["correction"]
        assert fix["applied"] and fix["moved_back_px"] == pytest.approx(fix["alpha"] * shift, abs=2e-3)
    assert len({(s["fat_water_shift"]["correction"]["fat_displaced_towards"]) for s in doc["slices"]}) == 1
    # the series can be picked; a wrong UID is a one-line error
    series = pydicom.dcmread(axial[0], stop_before_pixels=True).SeriesInstanceUID
    assert main(["segment", str(phantom_study), "--out", str(tmp_path / "o2"), "--series", series, "--quiet"]) == 0
    assert main(["segment", str(phantom_study), "--out", str(tmp_path / "o3"), "--series", "1.2.3", "--quiet"]) == 2


def test_png_needs_spacing_and_outputs_are_not_overwritten(tmp_path, capsys):
    rng = np.random.default_rng(0)
    png = tmp_path / "slice.png"
    Image.fromarray((rng.uniform(0, 255, (120, 100))).astype(np.uint8)).save(png)
    assert main(["segment", str(png), "--out", str(tmp_path / "a"), "--quiet"]) == 2
    err = capsys.readouterr().err
    assert "slice.png" in err and "--spacing" in err and len(err.strip().splitlines()) == 1
    assert main(["segment", str(png), "--out", str(tmp_path / "a"), "--spacing", "0.7,0.7", "--quiet"]) == 0
    doc = _check_doc(tmp_path / "a", 1)
    assert doc["slices"][0]["index"] == 0
    assert main(["segment", str(png), "--out", str(tmp_path / "a"), "--spacing", "0.7,0.7", "--quiet"]) == 2
    assert "already holds results" in capsys.readouterr().err
    assert main(["segment", str(png), "--out", str(tmp_path / "b"), "--spacing", "0.7,x", "--quiet"]) == 2


def test_input_without_axial_series_is_refused(tmp_path, phantom_study, capsys):
    import shutil

    sag = tmp_path / "sag"
    shutil.copytree(phantom_study / "sag_t2", sag)
    assert main(["segment", str(sag), "--out", str(tmp_path / "o"), "--quiet"]) == 2
    assert "no axial series" in capsys.readouterr().err
    assert main(["segment", str(tmp_path / "missing"), "--out", str(tmp_path / "o"), "--quiet"]) == 2
