"""Test helper: rewrite a DICOM study's axial slices in another in-plane storage layout."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np


def _fmt(v: float) -> str:
    s = f"{v:.6f}".rstrip("0").rstrip(".")
    return "0" if s in ("-0", "") else s


def restore_study(src: Path, dst: Path, layout: str) -> Path:
    """Copy the study folder ``src`` to ``dst`` with every axial slice re-stored in ``layout``
    (:data:`lumbargrade.io.orientation.LAYOUTS`): pixels rearranged exactly, Rows/Columns,
    PixelSpacing, ImageOrientationPatient, ImagePositionPatient and InPlanePhaseEncodingDirection to
    match. Other series unchanged."""
    import pydicom

    from lumbargrade.geometry import SliceGeometry
    from lumbargrade.io.orientation import restore

    shutil.copytree(src, dst)
    for p in sorted(dst.rglob("*.dcm")):
        ds = pydicom.dcmread(p)
        iop = [float(v) for v in ds.ImageOrientationPatient]
        n = np.cross(iop[:3], iop[3:])
        if abs(n[2]) < 0.6:  # not axial
            continue
        g = SliceGeometry(position=np.array([float(v) for v in ds.ImagePositionPatient]),
                          row_cosine=np.array(iop[:3]), col_cosine=np.array(iop[3:]),
                          pixel_spacing=(float(ds.PixelSpacing[0]), float(ds.PixelSpacing[1])),
                          rows=int(ds.Rows), columns=int(ds.Columns), thickness=float(ds.SliceThickness))
        arr, g2 = restore(ds.pixel_array, g, layout)
        arr = np.ascontiguousarray(arr.astype(ds.pixel_array.dtype))
        ds.Rows, ds.Columns = int(arr.shape[0]), int(arr.shape[1])
        ds.PixelSpacing = [_fmt(v) for v in g2.pixel_spacing]
        ds.ImageOrientationPatient = [_fmt(v) for v in (*g2.row_cosine, *g2.col_cosine)]
        ds.ImagePositionPatient = [_fmt(v) for v in g2.position]
        ds.PixelData = arr.tobytes()
        phase = str(getattr(ds, "InPlanePhaseEncodingDirection", "") or "")
        if phase in ("ROW", "COL") and abs(float(np.dot(g2.row_cosine, g.row_cosine))) < 0.5:
            ds.InPlanePhaseEncodingDirection = "COL" if phase == "ROW" else "ROW"  # rows and columns swapped
        ds.save_as(p)
    return dst
