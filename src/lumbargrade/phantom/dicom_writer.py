"""Write phantom slices as MR Image Storage DICOM files (pydicom), byte-for-byte reproducible.

No timestamps and no random UIDs: every UID is derived from the cohort seed and the patient and
series names (:func:`phantom_uid`), and the study date and time are fixed. Pixels are 16-bit
unsigned with 12 stored bits; the float image (CSF about 1) is multiplied by a per-patient CSF
value (1500-3000) and clipped to 0..4095.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ..geometry import SliceGeometry
from ..io.acquisition import PROTON_MHZ_PER_T

__all__ = ["SeriesInfo", "StudyInfo", "phantom_uid", "slice_dataset", "to_stored_pixels", "write_dataset"]

MR_IMAGE_STORAGE = "1.2.840.10008.5.1.4.1.1.4"
STUDY_DATE = "20230101"
STUDY_TIME = "120000"
_UID_NAMESPACE = uuid.UUID("6f1c2a4e-5b7d-4c3a-9e1f-2d8b7a6c5e40")


def phantom_uid(*parts) -> str:
    """Deterministic UID ``2.25.<uuid>`` (ISO/IEC 9834-8) from a name-based UUID (uuid5) of the
    given parts (seed, patient, series, ...). (pydicom's ``generate_uid(prefix=None)`` ignores its
    entropy sources and is random, so it is not used.)"""
    name = "|".join(["lumbargrade-phantom", *[str(p) for p in parts]])
    return f"2.25.{uuid.uuid5(_UID_NAMESPACE, name).int}"


@dataclass(frozen=True)
class StudyInfo:
    """Patient and study attributes shared by every series of one phantom study."""

    patient_id: str
    age_years: float
    sex: str  # 'M' or 'F'
    study_instance_uid: str
    frame_of_reference_uid: str
    field_strength_t: float
    repetition_time_ms: float
    echo_time_ms: float
    echo_train_length: int
    accession: str = ""
    pixel_bandwidth_hz: float | None = None  # Hz per pixel along the readout (fat-water shift = 3.5 ppm / this)
    readout_axis: int | None = None  # 0: readout down a column (the row index grows), 1: along a row


@dataclass(frozen=True)
class SeriesInfo:
    series_instance_uid: str
    series_number: int
    description: str  # e.g. 'SAG T2 FSE'
    spacing_between_slices_mm: float


def to_stored_pixels(image: np.ndarray, csf_value: float) -> np.ndarray:
    """Float image (CSF about 1) -> uint16 stored values, CSF ~ ``csf_value``, 12-bit range."""
    v = np.rint(np.asarray(image, dtype=np.float64) * csf_value)
    return np.clip(v, 0, 4095).astype(np.uint16)


def _ds_str(v: float, nd: int = 6) -> str:
    s = f"{v:.{nd}f}".rstrip("0").rstrip(".")
    return "0" if s in ("-0", "") else s


def slice_dataset(
    pixels: np.ndarray,
    geom: SliceGeometry,
    study: StudyInfo,
    series: SeriesInfo,
    sop_instance_uid: str,
    instance_number: int,
):
    """A complete pydicom FileDataset (file meta included) for one MR slice."""
    from pydicom.dataset import FileDataset, FileMetaDataset
    from pydicom.uid import ExplicitVRLittleEndian

    if pixels.dtype != np.uint16 or pixels.shape != (geom.rows, geom.columns):
        raise ValueError("pixels must be uint16 with the geometry's rows x columns")
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = MR_IMAGE_STORAGE
    meta.MediaStorageSOPInstanceUID = sop_instance_uid
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds = FileDataset("", {}, file_meta=meta, preamble=b"\0" * 128)
    ds.SpecificCharacterSet = "ISO_IR 100"
    ds.ImageType = ["ORIGINAL", "PRIMARY", "M", "NONE"]
    ds.SOPClassUID = MR_IMAGE_STORAGE
    ds.SOPInstanceUID = sop_instance_uid
    ds.StudyDate = ds.SeriesDate = ds.AcquisitionDate = ds.ContentDate = STUDY_DATE
    ds.StudyTime = ds.SeriesTime = ds.AcquisitionTime = ds.ContentTime = STUDY_TIME
    ds.AccessionNumber = study.accession
    ds.Modality = "MR"
    ds.Manufacturer = "lumbargrade phantom"
    ds.InstitutionName = "SYNTHETIC"
    ds.ReferringPhysicianName = ""
    ds.StudyDescription = "MR LUMBAR SPINE WO CONTRAST"
    ds.SeriesDescription = series.description
    ds.ProtocolName = series.description
    ds.BodyPartExamined = "LSPINE"
    ds.PatientName = f"PHANTOM^{study.patient_id}"
    ds.PatientID = study.patient_id
    ds.PatientBirthDate = ""
    ds.PatientSex = study.sex
    ds.PatientAge = f"{int(study.age_years):03d}Y"
    ds.PatientPosition = "HFS"
    ds.ScanningSequence = "SE"
    ds.SequenceVariant = ["SK", "OSP"]
    ds.ScanOptions = "FSE"
    ds.MRAcquisitionType = "2D"
    ds.SequenceName = "fse2d"
    ds.SliceThickness = _ds_str(float(geom.thickness or 0.0), 3)
    ds.SpacingBetweenSlices = _ds_str(series.spacing_between_slices_mm, 3)
    ds.RepetitionTime = _ds_str(study.repetition_time_ms, 2)
    ds.EchoTime = _ds_str(study.echo_time_ms, 2)
    ds.EchoTrainLength = int(study.echo_train_length)
    ds.NumberOfAverages = "2"
    ds.ImagingFrequency = _ds_str(PROTON_MHZ_PER_T * study.field_strength_t, 4)
    ds.ImagedNucleus = "1H"
    ds.MagneticFieldStrength = _ds_str(study.field_strength_t, 1)
    if study.pixel_bandwidth_hz:
        ds.PixelBandwidth = _ds_str(study.pixel_bandwidth_hz, 2)
    if study.readout_axis in (0, 1):
        # phase encoding runs across the readout: readout along a row (axis 1) -> phase down the columns
        ds.InPlanePhaseEncodingDirection = "COL" if study.readout_axis == 1 else "ROW"
    ds.FlipAngle = "90"
    ds.StudyInstanceUID = study.study_instance_uid
    ds.SeriesInstanceUID = series.series_instance_uid
    ds.StudyID = "1"
    ds.SeriesNumber = int(series.series_number)
    ds.AcquisitionNumber = 1
    ds.InstanceNumber = int(instance_number)
    ds.ImagePositionPatient = [_ds_str(float(v)) for v in geom.position]
    ds.ImageOrientationPatient = [_ds_str(float(v)) for v in geom.orientation]
    ds.FrameOfReferenceUID = study.frame_of_reference_uid
    ds.PositionReferenceIndicator = ""
    ds.SliceLocation = _ds_str(float(geom.position @ geom.normal), 4)
    ds.SamplesPerPixel = 1
    ds.PhotometricInterpretation = "MONOCHROME2"
    ds.Rows = int(geom.rows)
    ds.Columns = int(geom.columns)
    ds.PixelSpacing = [_ds_str(geom.pixel_spacing[0]), _ds_str(geom.pixel_spacing[1])]
    ds.BitsAllocated = 16
    ds.BitsStored = 12
    ds.HighBit = 11
    ds.PixelRepresentation = 0
    ds.RescaleIntercept = "0"
    ds.RescaleSlope = "1"
    ds.RescaleType = "US"
    ds.WindowCenter = "1200"
    ds.WindowWidth = "2400"
    ds.PixelData = np.ascontiguousarray(pixels).astype("<u2").tobytes()
    return ds


def write_dataset(ds, path: str | Path) -> None:
    """Save with preamble and file meta (Part 10), creating parent folders."""
    p = Path(path)
    p.parent.mkdir(parents=True, exist_ok=True)
    ds.save_as(p, enforce_file_format=True)
