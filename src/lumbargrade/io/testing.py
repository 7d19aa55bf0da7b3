"""Synthetic MR DICOM series with known geometry, for tests (ours and other modules').

Pixel values encode patient position: by default ``value = 2000 + x + 2 y + 3 z`` (LPS mm,
rounded; before rescale), so a test can check that a voxel's patient coordinates and its
intensity agree (:func:`pattern_value`).

Example::

    geoms = axial_block(centre=(0, 0, 0), n=5, spacing=4.0, tilt_deg=10)
    paths = write_series(tmp_path / "ax", geoms, description="AX T2 TSE")
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np

from ..geometry import SliceGeometry

__all__ = [
    "axial_block",
    "make_dataset",
    "new_uid",
    "pattern_value",
    "sagittal_stack",
    "slice_through",
    "write_dataset",
    "write_example_study",
    "write_series",
]


def new_uid() -> str:
    from pydicom.uid import generate_uid

    return generate_uid()


def pattern_value(xyz: np.ndarray) -> np.ndarray:
    """Default synthetic intensity at LPS point(s) (..., 3): ``2000 + x + 2 y + 3 z``."""
    xyz = np.asarray(xyz, dtype=np.float64)
    return 2000.0 + xyz[..., 0] + 2.0 * xyz[..., 1] + 3.0 * xyz[..., 2]


def slice_through(
    centre: Sequence[float],
    row_cosine: Sequence[float],
    col_cosine: Sequence[float],
    rows: int = 32,
    columns: int = 32,
    pixel_spacing: tuple[float, float] = (1.0, 1.0),
    thickness: float | None = 4.0,
) -> SliceGeometry:
    """A slice whose central pixel (``(rows-1)/2, (columns-1)/2``) is at ``centre`` (LPS mm)."""
    r = np.asarray(row_cosine, float) / np.linalg.norm(row_cosine)
    c = np.asarray(col_cosine, float) / np.linalg.norm(col_cosine)
    pos = (
        np.asarray(centre, float)
        - (rows - 1) / 2 * pixel_spacing[0] * c
        - (columns - 1) / 2 * pixel_spacing[1] * r
    )
    return SliceGeometry(
        position=pos,
        row_cosine=r,
        col_cosine=c,
        pixel_spacing=tuple(pixel_spacing),
        rows=rows,
        columns=columns,
        thickness=thickness,
    )


def axial_block(
    centre: Sequence[float] = (0.0, 0.0, 0.0),
    n: int = 5,
    spacing: float = 4.0,
    tilt_deg: float = 0.0,
    rows: int = 32,
    columns: int = 32,
    pixel_spacing: tuple[float, float] = (1.0, 1.0),
    thickness: float | None = 4.0,
) -> list[SliceGeometry]:
    """``n`` parallel axial slices centred on ``centre`` (LPS mm), ``spacing`` mm apart, tilted by
    ``tilt_deg`` about the patient x axis (positive tilt lifts the posterior edge). Row cosine is
    +x; column cosine is +y rotated; ordered inferior to superior along the normal."""
    t = np.radians(tilt_deg)
    row_c = np.array([1.0, 0.0, 0.0])
    col_c = np.array([0.0, np.cos(t), np.sin(t)])
    return _stack(centre, row_c, col_c, n, spacing, rows, columns, pixel_spacing, thickness)


def _stack(centre, row_c, col_c, n, spacing, rows, columns, pixel_spacing, thickness) -> list[SliceGeometry]:
    """``n`` parallel slices ``spacing`` mm apart along ``row_c x col_c``, centred on ``centre``."""
    normal = np.cross(row_c, col_c)
    ctr = np.asarray(centre, float)
    return [
        slice_through(ctr + (k - (n - 1) / 2) * spacing * normal, row_c, col_c, rows, columns,
                      pixel_spacing, thickness)
        for k in range(n)
    ]


def sagittal_stack(
    centre: Sequence[float] = (0.0, 0.0, 0.0),
    n: int = 9,
    spacing: float = 3.5,
    rows: int = 48,
    columns: int = 40,
    pixel_spacing: tuple[float, float] = (0.8, 0.8),
    thickness: float | None = 3.0,
) -> list[SliceGeometry]:
    """``n`` sagittal slices (IOP ``[0,1,0, 0,0,-1]``), ``spacing`` mm apart along x."""
    row_c = np.array([0.0, 1.0, 0.0])
    col_c = np.array([0.0, 0.0, -1.0])
    return _stack(centre, row_c, col_c, n, spacing, rows, columns, pixel_spacing, thickness)


def make_dataset(
    geometry: SliceGeometry,
    *,
    study_uid: str,
    series_uid: str,
    sop_uid: str | None = None,
    description: str = "T2 TSE",
    series_number: int = 1,
    instance_number: int = 1,
    modality: str = "MR",
    image_type: Sequence[str] = ("ORIGINAL", "PRIMARY", "M", "ND"),
    echo_time: float | None = None,
    repetition_time: float | None = None,
    scanning_sequence: str | None = None,
    rescale: tuple[float, float] | None = None,
    pixels: np.ndarray | None = None,
    value_fn: Callable[[np.ndarray], np.ndarray] = pattern_value,
    omit: Sequence[str] = (),
    frame_of_reference_uid: str | None = None,
):
    """A pydicom Dataset for one MR slice (16-bit unsigned) with the given geometry (and a
    FrameOfReferenceUID when one is given).

    ``pixels`` (stored values) defaults to ``value_fn`` at every pixel centre, inverted through
    ``rescale = (slope, intercept)`` when given. ``omit`` lists keywords to delete (e.g.
    ``"ImageOrientationPatient"``) to build bad input.
    """
    from pydicom.dataset import Dataset, FileMetaDataset
    from pydicom.uid import ExplicitVRLittleEndian, MRImageStorage

    g = geometry
    sop_uid = sop_uid or new_uid()
    if pixels is None:
        vals = value_fn(g.pixel_grid_lps())
        if rescale is not None:
            vals = (vals - rescale[1]) / rescale[0]
        pixels = np.clip(np.rint(vals), 0, 65535).astype(np.uint16)
    pixels = np.asarray(pixels, dtype=np.uint16)
    ds = Dataset()
    ds.file_meta = FileMetaDataset()
    ds.file_meta.MediaStorageSOPClassUID = MRImageStorage
    ds.file_meta.MediaStorageSOPInstanceUID = sop_uid
    ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds.SOPClassUID = MRImageStorage
    ds.SOPInstanceUID = sop_uid
    ds.StudyInstanceUID = study_uid
    ds.SeriesInstanceUID = series_uid
    ds.Modality = modality
    ds.ImageType = list(image_type)
    ds.SeriesDescription = description
    ds.SeriesNumber = series_number
    ds.InstanceNumber = instance_number
    ds.PatientID = "SYNTH"
    if frame_of_reference_uid:
        ds.FrameOfReferenceUID = frame_of_reference_uid
    ds.ImagePositionPatient = [f"{v:.6f}" for v in g.position]
    ds.ImageOrientationPatient = [f"{v:.8f}" for v in g.orientation]
    ds.PixelSpacing = [f"{v:.6f}" for v in g.pixel_spacing]
    if g.thickness is not None:
        ds.SliceThickness = f"{g.thickness:.4f}"
    if echo_time is not None:
        ds.EchoTime = echo_time
    if repetition_time is not None:
        ds.RepetitionTime = repetition_time
    if scanning_sequence is not None:
        ds.ScanningSequence = scanning_sequence
    if rescale is not None:
        ds.RescaleSlope = rescale[0]
        ds.RescaleIntercept = rescale[1]
    ds.Rows, ds.Columns = int(pixels.shape[0]), int(pixels.shape[1])
    ds.SamplesPerPixel = 1
    ds.PhotometricInterpretation = "MONOCHROME2"
    ds.BitsAllocated = 16
    ds.BitsStored = 16
    ds.HighBit = 15
    ds.PixelRepresentation = 0
    ds.PixelData = pixels.tobytes()
    for kw in omit:
        if kw in ds:
            delattr(ds, kw)
    return ds


def write_dataset(ds, path: str | Path, preamble: bool = True) -> Path:
    """Write ``ds``: a standard Part 10 file (preamble + DICM + meta) or, with ``preamble=False``,
    the bare dataset in implicit VR little endian (no preamble, no meta), as old archives do."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    if preamble:
        ds.save_as(path, enforce_file_format=True)
    else:
        from pydicom.filebase import DicomBytesIO
        from pydicom.filewriter import write_dataset as _write

        bio = DicomBytesIO()
        bio.is_little_endian = True
        bio.is_implicit_VR = True
        _write(bio, ds)
        path.write_bytes(bio.getvalue())
    return path


def write_series(
    folder: str | Path,
    geometries: Sequence[SliceGeometry],
    *,
    study_uid: str | None = None,
    series_uid: str | None = None,
    description: str = "T2 TSE",
    series_number: int = 1,
    rng: np.random.Generator | None = None,
    preamble: bool = True,
    **kwargs,
) -> list[Path]:
    """Write one series: one file per geometry, with random file names and shuffled
    InstanceNumbers when ``rng`` is given (else ``IM0001...`` in order). Returns the paths in the
    order of ``geometries``. Extra keyword arguments go to :func:`make_dataset`."""
    folder = Path(folder)
    study_uid = study_uid or new_uid()
    series_uid = series_uid or new_uid()
    n = len(geometries)
    inst = list(range(1, n + 1))
    names = [f"IM{i:04d}" for i in inst]
    if rng is not None:
        inst = [int(v) for v in rng.permutation(inst)]
        names = [
            f"{rng.integers(1 << 30):08x}" + (".dcm" if rng.random() < 0.5 else "")
            for _ in range(n)
        ]
    out = []
    for g, i, name in zip(geometries, inst, names):
        ds = make_dataset(
            g,
            study_uid=study_uid,
            series_uid=series_uid,
            description=description,
            series_number=series_number,
            instance_number=i,
            **kwargs,
        )
        out.append(write_dataset(ds, folder / name, preamble=preamble))
    return out


def write_example_study(
    root: str | Path,
    seed: int = 0,
    tilts: Sequence[float] = (0.0, 10.0, 30.0),
    junk: bool = True,
    frame_of_reference_uid: str | None = None,
) -> dict:
    """A small study under ``root``: an axial T2 series of one angled block per tilt (4 slices,
    4 mm apart, block centres 40 mm apart along z, superior block first in ``tilts``), a sagittal
    T2 series (9 slices, no preamble), a one-slice scout with ImageType LOCALIZER, and (``junk``)
    a text file. File names are random and InstanceNumbers shuffled. Every slice carries
    ``frame_of_reference_uid`` when one is given (the DICOM SEG writer needs it).

    Returns a dict with the UIDs, the per-block geometries (superior block first) and paths.
    """
    root = Path(root)
    rng = np.random.default_rng(seed)
    study_uid = new_uid()
    blocks = [
        axial_block((0.0, 10.0, 40.0 - 40.0 * i), n=4, spacing=4.0, tilt_deg=t)
        for i, t in enumerate(tilts)
    ]
    ax_geoms = [g for b in blocks for g in b]
    perm = rng.permutation(len(ax_geoms))
    ax_uid, sag_uid, scout_uid = new_uid(), new_uid(), new_uid()
    write_series(
        root / "series_a",
        [ax_geoms[i] for i in perm],
        study_uid=study_uid,
        series_uid=ax_uid,
        description="AX T2 TSE",
        series_number=3,
        rng=rng,
        echo_time=100.0,
        repetition_time=4000.0,
        scanning_sequence="SE",
        frame_of_reference_uid=frame_of_reference_uid,
    )
    sag = sagittal_stack(centre=(0.0, 10.0, 0.0))
    write_series(
        root / "series_b",
        sag,
        study_uid=study_uid,
        series_uid=sag_uid,
        description="SAG T2 TSE",
        series_number=2,
        rng=rng,
        preamble=False,
        frame_of_reference_uid=frame_of_reference_uid,
    )
    write_series(
        root / "series_c",
        [sagittal_stack(n=1)[0]],
        study_uid=study_uid,
        series_uid=scout_uid,
        description="3-plane loc",
        series_number=1,
        image_type=("ORIGINAL", "PRIMARY", "LOCALIZER"),
        frame_of_reference_uid=frame_of_reference_uid,
    )
    if junk:
        (root / "notes.txt").write_text("not an image\n")
    return {
        "study_uid": study_uid,
        "axial_uid": ax_uid,
        "sagittal_uid": sag_uid,
        "scout_uid": scout_uid,
        "axial_blocks": blocks,
        "sagittal": sag,
        "root": root,
    }


def make_multiframe_dataset(
    geometries: Sequence[SliceGeometry],
    *,
    study_uid: str,
    series_uid: str,
    description: str = "T2 TSE",
    series_number: int = 1,
    rescale: tuple[float, float] | None = None,
    value_fn: Callable[[np.ndarray], np.ndarray] = pattern_value,
):
    """An enhanced-MR-like multi-frame Dataset: one frame per geometry (same rows, columns and
    spacing), position and orientation in PerFrameFunctionalGroupsSequence, pixel measures and
    rescale in SharedFunctionalGroupsSequence."""
    from pydicom.dataset import Dataset, FileMetaDataset
    from pydicom.sequence import Sequence as Seq
    from pydicom.uid import EnhancedMRImageStorage, ExplicitVRLittleEndian

    g0 = geometries[0]
    frames = []
    for g in geometries:
        vals = value_fn(g.pixel_grid_lps())
        if rescale is not None:
            vals = (vals - rescale[1]) / rescale[0]
        frames.append(np.clip(np.rint(vals), 0, 65535).astype(np.uint16))
    sop = new_uid()
    ds = Dataset()
    ds.file_meta = FileMetaDataset()
    ds.file_meta.MediaStorageSOPClassUID = EnhancedMRImageStorage
    ds.file_meta.MediaStorageSOPInstanceUID = sop
    ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds.SOPClassUID = EnhancedMRImageStorage
    ds.SOPInstanceUID = sop
    ds.StudyInstanceUID, ds.SeriesInstanceUID = study_uid, series_uid
    ds.Modality = "MR"
    ds.ImageType = ["ORIGINAL", "PRIMARY", "M", "NONE"]
    ds.SeriesDescription = description
    ds.SeriesNumber = series_number
    ds.InstanceNumber = 1
    ds.NumberOfFrames = len(frames)
    shared = Dataset()
    pm = Dataset()
    pm.PixelSpacing = [f"{v:.6f}" for v in g0.pixel_spacing]
    if g0.thickness is not None:
        pm.SliceThickness = f"{g0.thickness:.4f}"
    shared.PixelMeasuresSequence = Seq([pm])
    if rescale is not None:
        pv = Dataset()
        pv.RescaleSlope, pv.RescaleIntercept, pv.RescaleType = rescale[0], rescale[1], "US"
        shared.PixelValueTransformationSequence = Seq([pv])
    ds.SharedFunctionalGroupsSequence = Seq([shared])
    per = []
    for g in geometries:
        item, pp = Dataset(), Dataset()
        pp.ImagePositionPatient = [f"{v:.6f}" for v in g.position]
        item.PlanePositionSequence = Seq([pp])
        po = Dataset()
        po.ImageOrientationPatient = [f"{v:.8f}" for v in g.orientation]
        item.PlaneOrientationSequence = Seq([po])
        per.append(item)
    ds.PerFrameFunctionalGroupsSequence = Seq(per)
    ds.Rows, ds.Columns = g0.rows, g0.columns
    ds.SamplesPerPixel = 1
    ds.PhotometricInterpretation = "MONOCHROME2"
    ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 16, 16, 15, 0
    ds.PixelData = np.stack(frames).tobytes()
    return ds
