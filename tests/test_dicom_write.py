"""The fast DICOM writer gives the same bytes as pydicom's ``save_as`` (SEG and SR from a real
analysis, a person-name and multi-valued data set, a file read back) and falls back to pydicom
for what it does not encode."""

from __future__ import annotations

import copy
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parent / "fixtures" / "report"))

import pydicom

from lumbargrade.io.dicom_write import encode_dataset, save_dataset


pytestmark = pytest.mark.core  # needs only the inference core


def _both(ds, tmp_path: Path) -> tuple[bytes, bytes]:
    a, b = tmp_path / "pydicom.dcm", tmp_path / "fast.dcm"
    a.unlink(missing_ok=True)
    b.unlink(missing_ok=True)
    save_dataset(copy.deepcopy(ds), b)
    copy.deepcopy(ds).save_as(a)  # (pydicom resolves ambiguous VRs in place)
    return a.read_bytes(), b.read_bytes()


@pytest.fixture(scope="module")
def written(tmp_path_factory):
    """Every dataset the SEG and SR writers save for the synthetic analysis (tilted blocks: one SEG
    instance per orientation)."""
    from synthetic_result import write_analysis

    import lumbargrade.io.dicom_write as dw

    captured = []
    original = pydicom.Dataset.save_as

    def capture_fast(ds, path):
        captured.append(ds)
        return original(ds, path)

    mp = pytest.MonkeyPatch()
    mp.setattr(dw, "save_dataset", capture_fast)
    try:
        write_analysis(tmp_path_factory.mktemp("w"), tilts=(0.0, 10.0, 30.0))
    finally:
        mp.undo()
    return captured


def test_seg_and_sr_bytes_equal_pydicom(written, tmp_path):
    kinds = [str(ds.Modality) for ds in written]
    assert kinds.count("SEG") == 3 and kinds.count("SR") == 1
    for ds in written:
        encode_dataset(ds)  # the fast path is taken (raises ValueError otherwise)
        a, b = _both(ds, tmp_path)
        assert a == b, ds.Modality
        if "PixelData" in ds:  # highdicom may leave the pixel data's VR ambiguous: resolved as pydicom does
            amb = copy.deepcopy(ds)
            amb["PixelData"].VR = "OB or OW"
            encode_dataset(amb)
            a2, b2 = _both(amb, tmp_path)
            assert a2 == b2 == a


def test_text_person_names_numbers_and_unicode_equal_pydicom(tmp_path):
    from pydicom.dataset import Dataset, FileMetaDataset
    from pydicom.sequence import Sequence
    from pydicom.uid import ExplicitVRLittleEndian, generate_uid

    ds = Dataset()
    ds.file_meta = FileMetaDataset()
    ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds.file_meta.MediaStorageSOPClassUID = "1.2.840.10008.5.1.4.1.1.88.34"
    ds.file_meta.MediaStorageSOPInstanceUID = generate_uid()
    ds.preamble = b"\0" * 128
    ds.SpecificCharacterSet = "ISO_IR 192"
    ds.SOPClassUID = ds.file_meta.MediaStorageSOPClassUID
    ds.SOPInstanceUID = ds.file_meta.MediaStorageSOPInstanceUID
    ds.PatientName = "Müller^Zoë"
    ds.ImageType = ["DERIVED", "PRIMARY"]
    ds.PixelSpacing = [0.7, 0.65]
    ds.InstanceNumber = 7
    ds.Rows = 3
    ds.StudyDescription = "Lendenwirbelsäule"
    ds.ContentDate = "20261127"
    ds.FrameIncrementPointer = [0x00181063, 0x00181065]
    item = Dataset()
    item.CodeMeaning = "Spinal stenosis – grade"
    item.NumericValue = 0.123456
    item.FloatingPointValue = 1.5
    ds.ContentSequence = Sequence([item, Dataset()])
    encode_dataset(ds)  # the fast path is taken
    a, b = _both(ds, tmp_path)
    assert a == b


def test_what_it_does_not_encode_goes_to_pydicom(tmp_path, written):
    from pydicom.uid import ImplicitVRLittleEndian

    # a file read back holds raw elements: encoded by pydicom, same bytes as save_as
    seg = written[0]
    src = tmp_path / "seg.dcm"
    seg.save_as(src)
    back = pydicom.dcmread(src)
    with pytest.raises(ValueError):
        encode_dataset(back)
    a, b = _both(back, tmp_path)
    assert a == b
    # another transfer syntax
    back.file_meta.TransferSyntaxUID = ImplicitVRLittleEndian
    a, b = _both(back, tmp_path)
    assert a == b
