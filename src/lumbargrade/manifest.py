"""Reading ``manifest.csv`` (see docs/architecture.md) and the images its rows point to.

One row per (patient, level); paths in a row are relative to the folder holding the manifest.
Everything here is I/O at the edge: it returns plain arrays plus spacing in mm, and raises
:class:`lumbargrade.errors.InputError` (naming the file) for a user's mistake.
"""

from __future__ import annotations

import csv
import json
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from .errors import InputError

__all__ = [
    "REQUIRED_COLUMNS",
    "axial_view_of",
    "load_axial_geometry",
    "SPLITS",
    "load_axial",
    "axial_context_paths",
    "load_axial_context",
    "load_image_file",
    "load_label_map",
    "data_paths",
    "phantom_truth",
    "read_manifest",
    "read_manifests",
    "resolve_manifest",
    "rows_for_split",
]

REQUIRED_COLUMNS = ("patient_id", "split", "level", "axial_image")
SPLITS = ("train", "val", "test")
_IMAGE_SUFFIXES = {".png", ".npy", ".tif", ".tiff", ".jpg", ".jpeg", ".bmp"}


def resolve_manifest(path: str | Path) -> Path:
    """The manifest file for ``path``: the file itself, or ``path/manifest.csv`` for a folder."""
    p = Path(path)
    if p.is_dir():
        p = p / "manifest.csv"
    if not p.is_file():
        raise InputError(path, "no manifest.csv here (give a manifest.csv or a folder holding one)")
    return p


def read_manifest(path: str | Path, required: tuple[str, ...] = REQUIRED_COLUMNS,
                  any_level: bool = False) -> list[dict]:
    """Rows of a manifest as dicts of strings (empty cells are ``""``).

    ``any_level``: accept any level name (a slice bank's T11/T12, vertebra names...), not only
    the graded ``L1/L2``..``L5/S1``.

    ``path`` is a ``manifest.csv`` or a folder holding one. Each row also gets ``_base_dir``
    (the manifest's folder, a string) and ``_line`` (its line number, for messages).
    Raises InputError on a missing file, missing required columns, or a bad ``split``/``level``.
    """
    from .levels.names import LEVELS

    p = resolve_manifest(path)
    try:
        with open(p, newline="", encoding="utf-8-sig") as f:
            reader = csv.DictReader(f)
            fields = [c.strip() for c in (reader.fieldnames or [])]
            missing = [c for c in required if c not in fields]
            if missing:
                raise InputError(p, f"missing required column(s): {', '.join(missing)}")
            rows = []
            for i, raw in enumerate(reader, start=2):
                row = {
                    (k or "").strip(): (v or "").strip() for k, v in raw.items() if k is not None
                }
                if not any(row.values()):
                    continue
                if row.get("split") not in SPLITS:
                    raise InputError(
                        f"{p}:{i}", f"split {row.get('split')!r} is not one of {', '.join(SPLITS)}"
                    )
                lvl = row.get("level", "").replace("-", "/")
                if lvl not in LEVELS and not (any_level and lvl):
                    raise InputError(
                        f"{p}:{i}", f"level {row.get('level')!r} is not one of {', '.join(LEVELS)}"
                    )
                row["level"] = lvl
                row["_base_dir"] = str(p.parent)
                row["_line"] = i
                rows.append(row)
    except UnicodeDecodeError as e:
        raise InputError(p, f"not a UTF-8 CSV file ({e.reason})") from e
    except csv.Error as e:
        raise InputError(p, f"not a valid CSV file ({e})") from e
    if not rows:
        raise InputError(p, "the manifest has no rows")
    return rows


def data_paths(data: str | Path | Sequence[str | Path]) -> list[str]:
    """``--data`` as a list: one manifest (or cohort folder), or several to pool."""
    return [str(d) for d in data] if isinstance(data, (list, tuple)) else [str(data)]


def read_manifests(data: str | Path | Sequence[str | Path], **kwargs) -> list[dict]:
    """:func:`read_manifest` of each of ``data`` (see :func:`data_paths`; ``kwargs`` go to it),
    rows pooled in order; each row keeps its own manifest's folder (``_base_dir``) and split."""
    return [r for d in data_paths(data) for r in read_manifest(d, **kwargs)]


def rows_for_split(rows: list[dict], split: str) -> list[dict]:
    """The rows whose ``split`` is ``split``."""
    return [r for r in rows if r.get("split") == split]


def _where(row: dict, column: str) -> str:
    line = row.get("_line")
    return f"manifest line {line}, column {column}" if line else f"manifest column {column}"


def _path(row: dict, column: str, base_dir: str | Path | None) -> Path:
    value = row.get(column, "")
    if not value:
        raise InputError(_where(row, column), "empty")
    base = Path(base_dir if base_dir is not None else row.get("_base_dir", "."))
    p = Path(value)
    if not p.is_absolute():
        p = base / p
    if not p.is_file():
        raise InputError(p, f"file not found ({_where(row, column)})")
    return p


def load_image_file(path: str | Path) -> np.ndarray:
    """A 2D image from .npy or an image file (PNG...), as float32 ``[rows, cols]``."""
    p = Path(path)
    try:
        if p.suffix.lower() == ".npy":
            arr = np.load(p, allow_pickle=False)
        else:
            from PIL import Image

            with Image.open(p) as im:
                if im.mode in ("RGB", "RGBA", "P", "LA"):
                    im = im.convert("L")
                arr = np.asarray(im)
    except InputError:
        raise
    except Exception as e:
        raise InputError(p, f"cannot read image ({e.__class__.__name__}: {e})") from e
    arr = np.squeeze(np.asarray(arr))
    if arr.ndim != 2:
        raise InputError(p, f"expected a 2D image, got shape {arr.shape}")
    return arr.astype(np.float32)


def _load_dicom(p: Path) -> tuple[np.ndarray, tuple[float, float]]:
    import pydicom

    try:
        ds = pydicom.dcmread(p)
    except Exception as e:
        raise InputError(p, f"not a readable DICOM file ({e.__class__.__name__}: {e})") from e
    if "PixelData" not in ds:
        raise InputError(p, "DICOM file has no pixel data")
    try:
        arr = ds.pixel_array.astype(np.float32)
    except Exception as e:
        raise InputError(p, f"cannot decode DICOM pixel data ({e.__class__.__name__}: {e})") from e
    if arr.ndim != 2:
        raise InputError(p, f"expected a single-frame 2D image, got shape {arr.shape}")
    slope = float(getattr(ds, "RescaleSlope", 1.0) or 1.0)
    intercept = float(getattr(ds, "RescaleIntercept", 0.0) or 0.0)
    arr = arr * np.float32(slope) + np.float32(intercept)
    ps = getattr(ds, "PixelSpacing", None)
    if ps is None or len(ps) != 2:
        raise InputError(p, "DICOM file has no PixelSpacing")
    spacing = (float(ps[0]), float(ps[1]))
    if not (spacing[0] > 0 and spacing[1] > 0):
        raise InputError(p, f"PixelSpacing {spacing} is not positive")
    return arr, spacing


def _is_dicom(p: Path) -> bool:
    if p.suffix.lower() in (".dcm", ".dicom", ".ima"):
        return True
    if p.suffix.lower() in _IMAGE_SUFFIXES:
        return False
    try:
        with open(p, "rb") as f:
            head = f.read(132)
        return head[128:132] == b"DICM"
    except OSError:
        return False


def phantom_truth(row: dict, cache: dict | None = None) -> dict | None:
    """The phantom's ``truth.json`` of a manifest row's patient (parsed), or None when there is
    none: beside the row's ``study_dir`` first, else ``<manifest folder>/<patient_id>/``.
    ``cache``: path -> parsed file, shared across rows. An unreadable file raises
    :class:`InputError` naming it."""
    base = Path(row.get("_base_dir", "."))
    cands = []
    if row.get("study_dir"):
        cands.append((base / row["study_dir"]).parent / "truth.json")
    cands.append(base / str(row.get("patient_id")) / "truth.json")
    cache = {} if cache is None else cache
    for p in cands:
        if p in cache:
            return cache[p]
        if p.is_file():
            try:
                cache[p] = json.loads(p.read_text())
            except (OSError, ValueError) as e:
                raise InputError(p, f"cannot read truth.json: {e}") from None
            return cache[p]
    return None


def load_axial(
    row: dict, base_dir: str | Path | None = None
) -> tuple[np.ndarray, tuple[float, float]]:
    """The row's axial slice: ``(image float32 [rows, cols], (row_mm, col_mm))``.

    DICOM files give their pixels with RescaleSlope/RescaleIntercept applied and PixelSpacing;
    PNG/NPY files need the ``pixel_spacing_row_mm`` and ``pixel_spacing_col_mm`` columns.
    ``base_dir`` defaults to the manifest's folder recorded by :func:`read_manifest`.
    """
    p = _path(row, "axial_image", base_dir)
    if _is_dicom(p):
        return _load_dicom(p)
    arr = load_image_file(p)
    try:
        spacing = (float(row["pixel_spacing_row_mm"]), float(row["pixel_spacing_col_mm"]))
    except (KeyError, ValueError) as e:
        raise InputError(
            _where(row, "pixel_spacing_row_mm"),
            f"{p.name} is not DICOM, so pixel_spacing_row_mm and pixel_spacing_col_mm "
            "must hold the spacing in mm",
        ) from e
    if not (spacing[0] > 0 and spacing[1] > 0):
        raise InputError(_where(row, "pixel_spacing_row_mm"), f"spacing {spacing} is not positive")
    return arr, spacing


def load_label_map(row: dict, base_dir: str | Path | None = None) -> np.ndarray:
    """The row's ``label_map`` as uint8 ``[rows, cols]`` (values 0-6, see docs/architecture.md)."""
    p = _path(row, "label_map", base_dir)
    arr = load_image_file(p)
    if arr.min() < 0 or arr.max() > 255 or not np.all(arr == np.round(arr)):
        raise InputError(p, "label map must hold integer values 0-255")
    return arr.astype(np.uint8)


def _slice_geometry(ds):
    """The :class:`~lumbargrade.geometry.SliceGeometry` of a DICOM header (raises AttributeError,
    ValueError, TypeError or IndexError when a tag is missing or malformed)."""
    from .geometry import SliceGeometry

    iop = [float(v) for v in ds.ImageOrientationPatient]
    ipp = [float(v) for v in ds.ImagePositionPatient]
    ps = [float(v) for v in ds.PixelSpacing]
    return SliceGeometry(position=np.array(ipp), row_cosine=np.array(iop[:3]), col_cosine=np.array(iop[3:]),
                         pixel_spacing=(ps[0], ps[1]), rows=int(ds.Rows), columns=int(ds.Columns),
                         thickness=float(getattr(ds, "SliceThickness", 0) or 0) or None)


def load_axial_geometry(row: dict, base_dir: str | Path | None = None):
    """The :class:`~lumbargrade.geometry.SliceGeometry` of the row's axial slice when it is a DICOM
    file (from ImageOrientationPatient, ImagePositionPatient, PixelSpacing); None for PNG/NPY."""
    p = _path(row, "axial_image", base_dir)
    if not _is_dicom(p):
        return None
    import pydicom

    try:
        return _slice_geometry(pydicom.dcmread(p, stop_before_pixels=True))
    except (AttributeError, ValueError, TypeError, IndexError) as e:
        raise InputError(p, f"no usable slice geometry ({type(e).__name__}: {e})") from None
    except Exception as e:  # noqa: BLE001 - pydicom raises many kinds for damaged files
        raise InputError(p, f"not a readable DICOM file ({type(e).__name__}: {e})") from None


def axial_view_of(row: dict, base_dir: str | Path | None = None):
    """The canonical view (:mod:`lumbargrade.io.orientation`) of the row's axial slice: from the
    DICOM header, or the identity for PNG/NPY images (taken as stored in the radiological display)."""
    from .io.orientation import axial_view

    g = load_axial_geometry(row, base_dir)
    try:
        return axial_view(g)
    except ValueError as e:
        raise InputError(_path(row, "axial_image", base_dir), str(e)) from None


_FOLDER_GEOMETRY: dict[str, list] = {}


def _folder_geometries(folder: Path) -> list:
    """``[(resolved path, SeriesInstanceUID, SliceGeometry)]`` of the DICOM slices in ``folder``
    (headers only; cached per folder for the life of the process; unreadable files are skipped)."""
    key = str(folder.resolve())
    if key in _FOLDER_GEOMETRY:
        return _FOLDER_GEOMETRY[key]
    import pydicom

    found = []
    for f in sorted(folder.iterdir()):
        if not f.is_file() or not _is_dicom(f):
            continue
        try:
            ds = pydicom.dcmread(f, stop_before_pixels=True)
            found.append((f.resolve(), str(ds.SeriesInstanceUID), _slice_geometry(ds)))
        except Exception:  # noqa: BLE001, S112 - not a usable slice: not a neighbour either
            continue
    _FOLDER_GEOMETRY[key] = found
    return found


def axial_context_paths(row: dict, base_dir: str | Path | None = None,
                        max_gap_mm: float | None = None) -> tuple[Path | None, Path | None]:
    """The files of the slices caudal and cranial to the row's axial slice (resolved paths), found
    by geometry among the DICOM files of the same series in the slice's folder
    (:func:`lumbargrade.grading.context.neighbour_indices`); None where there is none, and both
    None for a PNG/NPY slice."""
    from .grading.context import DEFAULT_MAX_GAP_MM, neighbour_indices

    p = _path(row, "axial_image", base_dir)
    if not _is_dicom(p):
        return None, None
    entries = _folder_geometries(p.parent)
    me = p.resolve()
    found = [(u, g) for f, u, g in entries if f == me]
    if not found:  # the slice itself has no usable header: no neighbours either
        return None, None
    uid, centre = found[0]
    same = [(f, g) for f, u, g in entries if u == uid and f != me]
    lo, hi = neighbour_indices(centre, [g for _, g in same],
                               DEFAULT_MAX_GAP_MM if max_gap_mm is None else float(max_gap_mm))
    return tuple(None if i is None else same[i][0] for i in (lo, hi))  # type: ignore[return-value]


def load_axial_context(row: dict, base_dir: str | Path | None = None, max_gap_mm: float | None = None,
                       paths: Sequence[Path | None] | None = None) -> tuple[np.ndarray | None, np.ndarray | None]:
    """The slices caudal and cranial to the row's axial slice, as stored (``[rows, cols]`` float32,
    rescaled like :func:`load_axial`); None where there is none, and both None for a PNG/NPY
    slice. ``paths``: their files when already found (:func:`axial_context_paths`)."""
    if paths is None:
        paths = axial_context_paths(row, base_dir, max_gap_mm)
    return tuple(None if f is None else _load_dicom(Path(f))[0] for f in paths)  # type: ignore[return-value]
