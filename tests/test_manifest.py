"""lumbargrade.manifest: reading manifest.csv and the images its rows name."""

from __future__ import annotations

import csv

import numpy as np
import pytest
from PIL import Image

from lumbargrade.errors import InputError
from lumbargrade.manifest import (
    load_axial,
    load_label_map,
    read_manifest,
    resolve_manifest,
    rows_for_split,
)

COLS = [
    "patient_id",
    "split",
    "level",
    "axial_image",
    "pixel_spacing_row_mm",
    "pixel_spacing_col_mm",
    "label_map",
]


def _write(path, rows, cols=COLS):
    with open(path, "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=cols)
        w.writeheader()
        for r in rows:
            w.writerow(r)


@pytest.fixture
def cohort(tmp_path):
    img = (np.arange(20 * 30).reshape(20, 30) % 251).astype(np.uint8)
    Image.fromarray(img).save(tmp_path / "a.png")
    np.save(tmp_path / "b.npy", img.astype(np.float32) * 2)
    lab = np.zeros((20, 30), np.uint8)
    lab[5:10, 5:10] = 1
    lab[12:15, 3:20] = 2
    Image.fromarray(lab).save(tmp_path / "a_lab.png")
    _write(
        tmp_path / "manifest.csv",
        [
            dict(
                patient_id="p1",
                split="train",
                level="L4/L5",
                axial_image="a.png",
                pixel_spacing_row_mm="0.5",
                pixel_spacing_col_mm="0.6",
                label_map="a_lab.png",
            ),
            dict(
                patient_id="p2",
                split="val",
                level="L5-S1",
                axial_image="b.npy",
                pixel_spacing_row_mm="1",
                pixel_spacing_col_mm="1",
                label_map="",
            ),
        ],
    )
    return tmp_path, img, lab


def test_read_manifest_folder_and_file(cohort):
    d, img, lab = cohort
    assert resolve_manifest(d) == d / "manifest.csv"
    rows = read_manifest(d)
    assert [r["patient_id"] for r in rows] == ["p1", "p2"]
    assert rows[1]["level"] == "L5/S1"  # dash form accepted, normalised
    assert [r["patient_id"] for r in rows_for_split(rows, "val")] == ["p2"]
    assert read_manifest(d / "manifest.csv")[0]["_base_dir"] == str(d)


def test_load_axial_png_npy_and_labels(cohort):
    d, img, lab = cohort
    rows = read_manifest(d)
    a, sp = load_axial(rows[0])
    assert a.dtype == np.float32 and a.shape == (20, 30) and sp == (0.5, 0.6)
    np.testing.assert_array_equal(a, img.astype(np.float32))
    b, sp2 = load_axial(rows[1])
    np.testing.assert_array_equal(b, img.astype(np.float32) * 2)
    lm = load_label_map(rows[0])
    assert lm.dtype == np.uint8
    np.testing.assert_array_equal(lm, lab)
    with pytest.raises(InputError, match="label_map"):
        load_label_map(rows[1])  # empty cell


def test_bad_manifests(tmp_path):
    with pytest.raises(InputError, match="no manifest.csv"):
        read_manifest(tmp_path)
    _write(
        tmp_path / "manifest.csv",
        [dict(patient_id="p", split="train", level="L4/L5")],
        cols=["patient_id", "split", "level"],
    )
    with pytest.raises(InputError, match="axial_image"):
        read_manifest(tmp_path)
    _write(
        tmp_path / "manifest.csv",
        [dict(patient_id="p", split="dev", level="L4/L5", axial_image="x")],
        cols=["patient_id", "split", "level", "axial_image"],
    )
    with pytest.raises(InputError, match="split"):
        read_manifest(tmp_path)
    _write(
        tmp_path / "manifest.csv",
        [dict(patient_id="p", split="train", level="L4/L5", axial_image="x.png")],
        cols=["patient_id", "split", "level", "axial_image"],
    )
    rows = read_manifest(tmp_path)
    with pytest.raises(InputError, match="not found"):
        load_axial(rows[0])
    Image.fromarray(np.zeros((4, 4), np.uint8)).save(tmp_path / "x.png")
    with pytest.raises(InputError, match="pixel_spacing"):
        load_axial(rows[0])  # PNG without spacing columns


def test_load_axial_dicom_rescale(tmp_path):
    from pydicom.dataset import FileDataset, FileMetaDataset
    from pydicom.uid import ExplicitVRLittleEndian, MRImageStorage, generate_uid

    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = MRImageStorage
    meta.MediaStorageSOPInstanceUID = generate_uid()
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds = FileDataset(str(tmp_path / "s.dcm"), {}, file_meta=meta, preamble=b"\0" * 128)
    ds.SOPClassUID = MRImageStorage
    ds.SOPInstanceUID = meta.MediaStorageSOPInstanceUID
    ds.Modality = "MR"
    ds.Rows, ds.Columns = 6, 8
    ds.BitsAllocated, ds.BitsStored, ds.HighBit = 16, 16, 15
    ds.PixelRepresentation, ds.SamplesPerPixel = 0, 1
    ds.PhotometricInterpretation = "MONOCHROME2"
    ds.PixelSpacing = [0.7, 0.9]
    ds.RescaleSlope, ds.RescaleIntercept = 2, -5
    raw = np.arange(48, dtype=np.uint16).reshape(6, 8)
    ds.PixelData = raw.tobytes()
    ds.save_as(tmp_path / "s.dcm", enforce_file_format=True)
    img, sp = load_axial({"axial_image": "s.dcm"}, tmp_path)
    assert sp == (0.7, 0.9)
    np.testing.assert_allclose(img, raw * 2.0 - 5.0)
    (tmp_path / "bad.dcm").write_bytes(b"not dicom")
    with pytest.raises(InputError, match="DICOM"):
        load_axial({"axial_image": "bad.dcm"}, tmp_path)
