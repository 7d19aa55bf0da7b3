"""Read a NIfTI file (``.nii`` / ``.nii.gz``) as a one-series, one-block :class:`Study`.

Slice axis rule: the NIfTI array axis with the largest voxel size (the through-plane direction
of a 2D acquisition); among axes of equal size (within 1 %), the one with the fewest voxels; then
the lowest axis. The other two axes become rows and columns, transposed and flipped so that the
slices read like the usual DICOM display for their plane (``row_cosine``, ``col_cosine``):
axial (+x, +y), sagittal (+y, -z), coronal (+x, -z). Slices are then ordered ascending along the
normal ``row_cosine x col_cosine``, as DICOM blocks are. Patient coordinates are LPS: NIfTI's RAS
with x and y negated (:func:`geometry.ras_to_lps`).
"""

from __future__ import annotations

import logging
import warnings
from pathlib import Path
from typing import Any

import numpy as np

from ..errors import InputError
from ..geometry import SliceGeometry, nifti_to_volume_affine, plane_of
from .model import Block, Series, SliceRef, Study

__all__ = ["MAX_VOXELS", "choose_slice_axis", "most_axial_axis", "read_nifti", "reorient_for_display"]

#: Largest volume accepted (voxels of the first 3D volume; 2**28 float32 voxels are 1 GiB).
MAX_VOXELS = 1 << 28

_DISPLAY = {  # plane -> (row_cosine, col_cosine): direction of growing column index, row index
    "axial": (np.array([1.0, 0, 0]), np.array([0, 1.0, 0])),
    "sagittal": (np.array([0, 1.0, 0]), np.array([0, 0, -1.0])),
    "coronal": (np.array([1.0, 0, 0]), np.array([0, 0, -1.0])),
}


def choose_slice_axis(affine: np.ndarray, shape: tuple[int, ...]) -> int:
    """The NIfTI array axis (0, 1, 2) taken as the slice axis (see the module doc)."""
    zooms = np.linalg.norm(np.asarray(affine, dtype=np.float64)[:3, :3], axis=0)
    zmax = float(zooms.max())
    cands = [a for a in range(3) if zooms[a] >= zmax * 0.99]
    return min(cands, key=lambda a: (shape[a], a))


def reorient_for_display(aff: np.ndarray) -> tuple[tuple[int, int, int], tuple[bool, bool, bool]]:
    """For a ``[slice, row, col]`` LPS affine, the axis order and flips that give rows and columns
    the display directions of the slice plane (module doc) and slices ascending along the normal.

    Returns ``(order, flips)``: apply ``np.transpose(a, order)`` then ``np.flip`` on each output
    axis whose flip is True.
    """
    d = aff[:3, :3] / np.linalg.norm(aff[:3, :3], axis=0)
    n = d[:, 0]
    axis = int(np.argmax(np.abs(n)))
    plane = {0: "sagittal", 1: "coronal", 2: "axial"}[axis]
    row_t, col_t = _DISPLAY[plane]
    # which in-plane axis (1 or 2) best follows col_t (the row index direction)?
    row_axis = 1 if abs(d[:, 1] @ col_t) >= abs(d[:, 2] @ col_t) else 2
    col_axis = 3 - row_axis
    order = (0, row_axis, col_axis)
    flip_r = bool(d[:, row_axis] @ col_t < 0)
    flip_c = bool(d[:, col_axis] @ row_t < 0)
    rdir = d[:, row_axis] * (-1 if flip_r else 1)
    cdir = d[:, col_axis] * (-1 if flip_c else 1)
    normal = np.cross(cdir, rdir)  # row_cosine x col_cosine
    flip_s = bool(n @ normal < 0)
    return order, (flip_s, flip_r, flip_c)


def _apply(aff: np.ndarray, shape: tuple[int, int, int], order, flips) -> np.ndarray:
    m = aff[:3, :3][:, list(order)]
    shp = [shape[a] for a in order]
    origin = aff[:3, 3].copy()
    out = np.eye(4)
    for ax in range(3):
        col = m[:, ax].copy()
        if flips[ax]:
            origin = origin + col * (shp[ax] - 1)
            col = -col
        out[:3, ax] = col
    out[:3, 3] = origin
    return out


def most_axial_axis(affine: np.ndarray) -> int:
    """The NIfTI array axis (0, 1, 2) whose direction is closest to the patient's z axis."""
    d = np.asarray(affine, dtype=np.float64)[:3, :3]
    d = d / np.linalg.norm(d, axis=0)
    return int(np.argmax(np.abs(d[2])))


def read_nifti(path: Path, rules: Any = None, slice_axis: int | str | None = None) -> Study:
    """One NIfTI file -> :class:`Study` with one series and one block (pixels loaded lazily).

    ``slice_axis``: the array axis the slices are taken along (0, 1, 2), ``"axial"`` for the axis
    closest to the patient's z axis, or None for the rule of the module doc (the acquisition's
    through-plane axis)."""
    import nibabel as nib

    from .roles import assign_roles, load_rules

    rules = rules if isinstance(rules, dict) else load_rules(rules)
    where = str(path)
    nib_log = logging.getLogger("nibabel")
    level = nib_log.level
    nib_log.setLevel(logging.CRITICAL)  # its notes on damaged headers: the error below says it
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            img = nib.load(str(path))
            shape = tuple(int(v) for v in img.shape)
            aff_ras = np.asarray(img.affine, dtype=np.float64)
    except Exception as e:
        raise InputError(
            where,
            f"not a readable NIfTI file ({type(e).__name__}: {' '.join(str(e).split())[:160]})",
        ) from None
    finally:
        nib_log.setLevel(level)
    warns: list[str] = []
    if len(shape) == 4 and shape[3] > 1:
        warns.append(f"{where}: 4D image with {shape[3]} volumes; the first is used")
    elif len(shape) not in (3, 4):
        raise InputError(where, f"expected a 3D image, got shape {shape}")
    shape3 = shape[:3]
    if min(shape3) < 1:
        raise InputError(where, f"image has no voxels (shape {shape})")
    if shape3[0] * shape3[1] * shape3[2] > MAX_VOXELS:
        raise InputError(where, f"image of {' x '.join(map(str, shape3))} voxels is larger than this "
                         f"reader accepts ({MAX_VOXELS} voxels)")
    try:
        declared = img.dataobj.offset + img.header.get_data_dtype().itemsize * int(np.prod(shape, dtype=np.int64))
    except Exception:
        declared = None
    if declared is not None and not where.lower().endswith(".gz"):
        size = Path(path).stat().st_size
        if size < declared:
            raise InputError(where, f"file truncated: {size} of {declared} bytes present")
    if (not np.all(np.isfinite(aff_ras)) or abs(np.linalg.det(aff_ras[:3, :3])) < 1e-9
            or np.max(np.abs(aff_ras)) > 1e6):
        raise InputError(where, "affine is singular, not finite or out of range")
    d = aff_ras[:3, :3] / np.linalg.norm(aff_ras[:3, :3], axis=0)
    if np.max(np.abs(d.T @ d - np.eye(3))) > 1e-3:
        warns.append(f"{where}: affine has shear; slice geometry assumes orthogonal axes")

    if slice_axis is None:
        sax = choose_slice_axis(aff_ras, shape3)
    elif slice_axis == "axial":
        sax = most_axial_axis(aff_ras)
    else:
        sax = int(slice_axis)
    aff0, order0 = nifti_to_volume_affine(aff_ras, sax)
    shape0 = tuple(shape3[a] for a in order0)
    order1, flips = reorient_for_display(aff0)
    aff = _apply(aff0, shape0, order1, flips)
    full_order = tuple(order0[a] for a in order1)
    vshape = tuple(shape3[a] for a in full_order)

    cache: dict[str, np.ndarray] = {}

    def volume_array() -> np.ndarray:
        if "a" not in cache:
            try:
                data = img.dataobj[..., 0] if len(shape) == 4 else img.dataobj
                a = np.asarray(data, dtype=np.float32)
            except Exception as e:
                raise InputError(
                    where, f"cannot read image data ({type(e).__name__}: {e})"
                ) from None
            a = np.transpose(a, full_order)
            for ax, f in enumerate(flips):
                if f:
                    a = np.flip(a, axis=ax)
            cache["a"] = np.ascontiguousarray(a)
        return cache["a"]

    ss = float(np.linalg.norm(aff[:3, 0]))
    rs = float(np.linalg.norm(aff[:3, 1]))
    cs = float(np.linalg.norm(aff[:3, 2]))
    refs = []
    for k in range(vshape[0]):
        g = SliceGeometry(
            position=aff[:3, :3] @ np.array([k, 0.0, 0.0]) + aff[:3, 3],
            row_cosine=aff[:3, 2] / cs,
            col_cosine=aff[:3, 1] / rs,
            pixel_spacing=(rs, cs),
            rows=int(vshape[1]),
            columns=int(vshape[2]),
            thickness=ss,
        )
        refs.append(
            SliceRef(
                geometry=g,
                sop_instance_uid=None,
                path=Path(path),
                header=None,
                display=f"{where}[slice {k}]",
                _loader=(lambda k=k: volume_array()[k]),
            )
        )
    name = Path(path).name
    stem = name[:-7] if name.endswith(".nii.gz") else name.rsplit(".", 1)[0]
    try:
        descrip = img.header.get("descrip")
        descrip = descrip.item().decode("ascii", "ignore").strip() if descrip is not None else ""
    except Exception:
        descrip = ""
    series = Series(
        series_instance_uid=f"nifti:{name}",
        description=stem,
        modality="MR",
        plane=plane_of(refs[0].geometry.orientation),
        blocks=[Block(slices=refs)],
        rows=int(vshape[1]),
        columns=int(vshape[2]),
        pixel_spacing=(rs, cs),
        slice_thickness=ss,
        protocol_name=descrip,
        files=[where],
    )
    warns.extend(assign_roles([series], rules))
    return Study(study_instance_uid=None, series=[series], warnings=warns, source=where)
