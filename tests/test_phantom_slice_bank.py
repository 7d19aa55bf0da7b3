"""The phantom's slice bank (tissue and structure maps of every axial slice) and storage layouts."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from lumbargrade.phantom.tissues import Tissue


@pytest.fixture(scope="module")
def cohort(tmp_path_factory) -> Path:
    from lumbargrade.phantom.cohort import generate_cohort

    root = tmp_path_factory.mktemp("bank")
    generate_cohort(root, 1, seed=31, split=(1, 0, 0), progress=False)
    return root


def _rows(root: Path) -> list[dict]:
    with open(root / "slices.csv", newline="") as f:
        return list(csv.DictReader(f))


def _png(root: Path, rel: str) -> np.ndarray:
    return np.asarray(Image.open(root / rel))


def test_bank_lists_every_axial_slice_and_the_extra_ones(cohort):
    rows = _rows(cohort)
    kinds = [r["kind"] for r in rows]
    truth = json.loads((cohort / "P0000" / "truth.json").read_text())
    n_axial = truth["acquisition"]["ax_t2"]["n_slices"]
    assert kinds.count("disc_centre") == 5
    assert kinds.count("disc_centre") + kinds.count("disc_block") == n_axial
    assert sorted(r["level"] for r in rows if r["kind"] == "disc_extra") == ["T11/T12", "T12/L1"]
    assert sorted(r["level"] for r in rows if r["kind"] == "vertebra") == ["L1", "L2", "L3", "L4", "L5", "T12"]
    from lumbargrade.manifest import load_axial

    for r in rows:
        img, sp = load_axial(dict(r, _base_dir=str(cohort)))
        lab, tis = _png(cohort, r["label_map"]), _png(cohort, r["tissue_map"])
        assert lab.shape == img.shape == tis.shape
        assert (lab == 1).any(), r["label_map"]  # the dural sac is on every slice
        assert set(np.unique(tis)) <= {int(t) for t in Tissue}
        if r["kind"] == "vertebra":
            assert not (lab == 2).any()  # mid vertebral body: no disc
        if r["kind"] in ("disc_centre", "disc_extra"):
            assert (lab == 2).any()
            assert abs(float(r["offset_mm"])) <= float(r["slice_thickness_mm"])


def test_truth_slices_of_the_bank_match_the_manifest(cohort):
    rows = {r["axial_image"]: r for r in _rows(cohort) if r["kind"] == "disc_centre"}
    with open(cohort / "manifest.csv", newline="") as f:
        man = list(csv.DictReader(f))
    for m in man:
        b = rows[m["axial_image"]]
        assert b["level"] == m["level"] and b["tissue_map"] == m["tissue_map"]
        np.testing.assert_array_equal(_png(cohort, b["label_map"]), _png(cohort, m["label_map"]))


def test_sac_tissues_are_csf_cord_and_roots(cohort):
    for r in _rows(cohort):
        lab, tis = _png(cohort, r["label_map"]), _png(cohort, r["tissue_map"])
        inside = set(np.unique(tis[lab == 1]))
        assert inside <= {int(Tissue.CSF), int(Tissue.ROOTLET), int(Tissue.CORD), int(Tissue.INTERSPINOUS)}, inside


def test_storage_layout_changes_only_the_pixel_grid(tmp_path):
    """The same patient stored '+y-x' (transposed and flipped): its label maps in the canonical view
    equal the standard layout's, pixel for pixel."""
    from lumbargrade.geometry import SliceGeometry
    from lumbargrade.io.orientation import axial_view
    from lumbargrade.phantom.cohort import generate_cohort
    from lumbargrade.phantom.config import AcquisitionConfig, PhantomConfig

    std, rot = tmp_path / "std", tmp_path / "rot"
    generate_cohort(std, 1, seed=8, split=(1, 0, 0), progress=False, config=PhantomConfig(slice_bank=False))
    generate_cohort(rot, 1, seed=8, split=(1, 0, 0), progress=False,
                    config=PhantomConfig(slice_bank=False, acquisition=AcquisitionConfig(ax_inplane="+y-x")))
    ts = json.loads((std / "P0000" / "truth.json").read_text())
    tr = json.loads((rot / "P0000" / "truth.json").read_text())
    assert ts["axial_inplane"] == "+x+y" and tr["axial_inplane"] == "+y-x"
    import pydicom

    for a, b in zip(ts["levels"], tr["levels"]):
        ds = pydicom.dcmread(rot / "P0000" / b["axial_image"], stop_before_pixels=True)
        iop = [float(v) for v in ds.ImageOrientationPatient]
        g = SliceGeometry(position=np.array([float(v) for v in ds.ImagePositionPatient]),
                          row_cosine=np.array(iop[:3]), col_cosine=np.array(iop[3:]),
                          pixel_spacing=tuple(float(v) for v in ds.PixelSpacing), rows=int(ds.Rows),
                          columns=int(ds.Columns), thickness=float(ds.SliceThickness))
        v = axial_view(g)
        assert v.transpose
        la, lb = _png(std / "P0000", a["label_map"]), _png(rot / "P0000", b["label_map"])
        np.testing.assert_array_equal(v.to_canonical(lb), la)
