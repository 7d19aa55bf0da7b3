"""Read a folder of DICOM files (any names, any depth) into a :class:`Study`.

Headers are read without pixel data (``stop_before_pixels``); the pixel data element's declared
length and the bytes left in the file are checked against Rows x Columns x samples x bytes so that
a truncated file is reported without decoding it. Files that are not DICOM images become warnings;
a study with no usable series raises :class:`InputError`.

Damaged input is refused before it can cost much memory or time: every header element is decoded
inside the reader (an element pydicom cannot decode, such as one whose VR byte was damaged into
an unknown VR, is dropped with a warning), images larger than :data:`MAX_PIXELS` pixels or
:data:`MAX_FRAMES` frames are refused before any pixel is allocated, a deflated file that would
expand past :data:`MAX_INFLATED_BYTES` is refused, and geometry tags must be finite numbers.
"""

from __future__ import annotations

import math
import struct
import warnings as _warnings
from collections import Counter, defaultdict
from pathlib import Path
from typing import Any

import numpy as np

from ..errors import InputError
from ..geometry import SliceGeometry, split_into_blocks
from .model import Block, Series, SliceRef, Study

__all__ = ["load_pixels", "read_dicom_files", "read_dicom_folder", "read_header"]

_PIXEL_TAGS = {(0x7FE0, 0x0010), (0x7FE0, 0x0008), (0x7FE0, 0x0009)}
_LONG_VRS = {b"OB", b"OW", b"OF", b"OD", b"OL", b"OV", b"UN", b"UT", b"SQ", b"UC", b"UR"}
_SKIP_NAMES = {"DICOMDIR"}
_DEFLATED = "1.2.840.10008.1.2.1.99"

# elements without which a file cannot be read as an image (Rows, Columns, BitsAllocated, ...)
_REQUIRED_TAGS = {"(0028,0010)", "(0028,0011)", "(0028,0100)", "(0028,0002)", "(0028,0008)",
                  "(0020,0032)", "(0020,0037)", "(0028,0030)", "(0020,000E)", "(7FE0,0010)"}

#: Largest image accepted: rows x columns x samples x frames of one file (2**26: a 16-bit
#: 8192 x 8192 image, 128 MB stored, 256 MB as float32).
MAX_PIXELS = 1 << 26
#: Largest NumberOfFrames accepted in one file.
MAX_FRAMES = 10_000
#: Largest size a deflated (1.2.840.10008.1.2.1.99) file may expand to.
MAX_INFLATED_BYTES = 1 << 30


def _pixel_problem(fp: Any, ds: Any, size: int) -> str | None:
    """None when the pixel data element right after the header looks complete, else the problem.

    ``fp`` is positioned where ``dcmread(stop_before_pixels=True)`` stopped.
    """
    pos = fp.tell()
    head = fp.read(12)
    if len(head) < 8:
        return "no pixel data (not an image)"
    little = True
    tag = struct.unpack("<HH", head[:4])
    if tag not in _PIXEL_TAGS:
        tag_be = struct.unpack(">HH", head[:4])
        if tag_be not in _PIXEL_TAGS:
            return "no pixel data (not an image)"
        little = False
    e = "<" if little else ">"
    if head[4:6] in _LONG_VRS:  # explicit VR, 4-byte length after 2 reserved bytes
        if len(head) < 12:
            return "pixel data truncated (element header incomplete)"
        length, hdr = struct.unpack(e + "I", head[8:12])[0], 12
    else:  # implicit VR
        length, hdr = struct.unpack(e + "I", head[4:8])[0], 8
    left = size - pos - hdr
    if length == 0xFFFFFFFF:  # encapsulated (compressed): cannot size it without parsing
        return None if left > 8 else "pixel data truncated (encapsulated, no fragments)"
    try:
        bits = int(ds.BitsAllocated)
        n = int(ds.Rows) * int(ds.Columns) * int(ds.get("SamplesPerPixel", 1) or 1)
        n *= int(ds.get("NumberOfFrames", 1) or 1)
    except (AttributeError, TypeError, ValueError):
        return "missing or invalid BitsAllocated / Rows / Columns"
    expected = (n * bits + 7) // 8
    if str(ds.get("PhotometricInterpretation", "")).strip() == "YBR_FULL_422":
        expected = expected * 2 // 3  # chroma subsampled: 2 samples per pixel on average
    if length < expected:
        return f"pixel data too short: element holds {length} bytes, {expected} expected"
    if left < expected:
        return f"file truncated: {max(left, 0)} of {expected} pixel bytes present"
    return None


def _decode_all(ds: Any, depth: int = 0) -> list[str]:
    """Decode every raw element of ``ds`` (and of its sequence items) now, inside the reader's
    error handling; an element pydicom cannot decode is deleted. Returns the deleted tags."""
    bad: list[str] = []
    for tag in list(ds.keys()):
        try:
            elem = ds[tag]
            if elem.VR == "SQ":
                if depth > 16:
                    raise ValueError("sequences nested too deeply")
                for item in elem.value:
                    bad += _decode_all(item, depth + 1)
        except Exception as e:  # pydicom raises many types on damaged elements
            bad.append(f"{tag} ({type(e).__name__})")
            try:
                del ds[tag]
            except Exception:
                pass
    return bad


def _image_size_problem(ds: Any) -> str | None:
    """None when Rows, Columns, SamplesPerPixel and NumberOfFrames are sane integers within
    :data:`MAX_PIXELS` / :data:`MAX_FRAMES`, else the problem (checked before any pixel is read)."""
    try:
        rows, cols = int(ds.Rows), int(ds.Columns)
        spp = int(ds.get("SamplesPerPixel", 1) or 1)
        nf = int(_num(ds.get("NumberOfFrames")) or 1)
    except (AttributeError, TypeError, ValueError, OverflowError):
        return "invalid Rows / Columns / SamplesPerPixel / NumberOfFrames"
    if rows < 1 or cols < 1 or spp < 1 or nf < 1:
        return f"invalid image size (Rows {rows}, Columns {cols}, frames {nf}, samples {spp})"
    if nf > MAX_FRAMES:
        return f"{nf} frames; more than this reader accepts ({MAX_FRAMES})"
    if rows * cols * spp * nf > MAX_PIXELS:
        return (f"image of {rows} x {cols} pixels x {nf} frame(s) x {spp} sample(s) is larger than "
                f"this reader accepts ({MAX_PIXELS} pixels)")
    return None


def _inflated_problem(fp: Any) -> str | None:
    """For a deflated file: None when its dataset inflates to at most :data:`MAX_INFLATED_BYTES`
    (checked in chunks, never holding more than one), else the problem."""
    import zlib

    from pydicom.filereader import _read_file_meta_info, read_preamble

    fp.seek(0)
    try:
        read_preamble(fp, True)
        _read_file_meta_info(fp)
    except Exception:
        fp.seek(0)
        return None  # not Part 10 after all: pydicom decides
    d = zlib.decompressobj(-zlib.MAX_WBITS)
    total = 0
    try:
        while chunk := fp.read(1 << 20):
            while chunk:
                total += len(d.decompress(chunk, 1 << 24))
                chunk = d.unconsumed_tail
                if total > MAX_INFLATED_BYTES:
                    return f"deflated data expands past {MAX_INFLATED_BYTES >> 20} MB; refused"
            if d.eof:
                break
    except zlib.error as e:
        return f"corrupt deflated data ({e})"
    finally:
        fp.seek(0)
    return None


def _looks_like_dicom(head: bytes) -> bool:
    """A Part 10 file (``DICM`` at byte 128) or a bare dataset that starts with an element of
    group 0000-0010 (little or big endian); anything else is rejected without parsing."""
    if len(head) >= 132 and head[128:132] == b"DICM":
        return True
    if len(head) < 8:
        return False
    return struct.unpack("<H", head[:2])[0] <= 0x0010 or struct.unpack(">H", head[:2])[0] <= 0x0010


def read_header(path: Path) -> tuple[Any | None, str | None]:
    """``(dataset without pixels, None)`` for a DICOM image file, else ``(None, problem)``."""
    import pydicom

    try:
        size = path.stat().st_size
        if size == 0:
            return None, "empty file"
        with open(path, "rb") as fp, _warnings.catch_warnings():
            _warnings.simplefilter("ignore")
            if not _looks_like_dicom(fp.read(132)):
                return None, "not a DICOM file"
            fp.seek(0)
            if _DEFLATED.encode() in fp.read(2048):
                problem = _inflated_problem(fp)
                if problem:
                    return None, problem
            fp.seek(0)
            try:
                ds = pydicom.dcmread(fp, stop_before_pixels=True, force=True)
                dropped = _decode_all(ds) + _decode_all(getattr(ds, "file_meta", None) or {})
            except Exception as e:  # pydicom raises many types on garbage
                return (
                    None,
                    f"not a DICOM file ({type(e).__name__}: {' '.join(str(e).split())[:120]})",
                )
            lost = [t for t in dropped if t.split(" ")[0] in _REQUIRED_TAGS]
            if lost:
                return None, f"undecodable element {lost[0]} (damaged header)"
            if "Rows" not in ds or "Columns" not in ds:
                kind = ds.get("Modality") or ds.get("SOPClassUID") or ds.get("SOPInstanceUID")
                has_meta = len(getattr(ds, "file_meta", None) or []) > 0
                if kind is None and not has_meta:
                    return None, "not a DICOM file"
                return None, f"DICOM file without an image (Modality {ds.get('Modality', '?')})"
            ts = str(getattr(ds, "file_meta", {}).get("TransferSyntaxUID", "") or "")
            # deflated files are parsed from a decompressed copy: fp's offsets mean nothing
            problem = _image_size_problem(ds)
            if problem is None and ts != _DEFLATED:
                problem = _pixel_problem(fp, ds, size)
    except OSError as e:
        return None, f"cannot read file ({e.strerror or e})"
    except RecursionError:
        return None, "not a DICOM file (elements nested too deeply)"
    if problem:
        return None, problem
    if dropped:
        # read_dicom_files turns these into one warning for the file
        ds.__dict__["_lumbargrade_dropped"] = dropped
    return ds, None


def _num(v: Any) -> float | None:
    try:
        return None if v is None or v == "" else float(v)
    except (TypeError, ValueError):
        return None


def _series_number(ds: Any) -> int | None:
    """SeriesNumber as an int; None when missing, not a number or not finite (NaN, inf)."""
    v = _num(ds.get("SeriesNumber"))
    return int(v) if v is not None and math.isfinite(v) and abs(v) < 2**31 else None


def _values(v: Any) -> list:
    """A tag's value as a list (one value, several, or none)."""
    if v is None or v == "":
        return []
    if isinstance(v, (list, tuple)) or type(v).__name__ == "MultiValue":
        return list(v)
    return [v]


def _text(v: Any) -> str:
    if v is None:
        return ""
    if isinstance(v, (list, tuple)) or type(v).__name__ == "MultiValue":
        return "\\".join(str(x) for x in v)
    return str(v)


def _frame_value(ds: Any, frame: int | None, group_kw: str, kw: str) -> Any:
    """A tag of one frame: from the per-frame then the shared functional group ``group_kw``
    (enhanced multi-frame), else the top-level tag ``kw``; None when absent."""
    for seq_kw, idx in (
        ("PerFrameFunctionalGroupsSequence", frame),
        ("SharedFunctionalGroupsSequence", 0),
    ):
        if idx is None or seq_kw not in ds:
            continue
        seq = ds[seq_kw].value
        if idx >= len(seq) or group_kw not in seq[idx] or not seq[idx][group_kw].value:
            continue
        item = seq[idx][group_kw].value[0]
        if kw in item and item[kw].value not in (None, ""):
            return item[kw].value
    v = ds.get(kw)
    return None if v in (None, "") else v


def _frame_loader(
    path: Path, disp: str, frame: int, cache: dict, slope: float | None, inter: float | None
):
    """Loader of one frame of a multi-frame file; the file is decoded once per series read."""

    def load() -> np.ndarray:
        if "a" not in cache:
            ref = SliceRef(geometry=None, sop_instance_uid=None, path=path, display=disp)  # type: ignore[arg-type]
            cache["a"] = load_pixels(ref, allow_frames=True)
        a = cache["a"][frame]
        if slope is not None or inter is not None:
            a = a * np.float32(slope if slope is not None else 1.0) + np.float32(inter or 0.0)
        return a

    return load


#: Largest |coordinate| (mm) and pixel spacing / thickness (mm) taken as plausible.
_MAX_MM = 1e6


def _check_geometry(g: SliceGeometry) -> None:
    """Raise ValueError unless the geometry is finite, orthogonal and has positive spacing."""
    vals = np.concatenate([g.position, g.row_cosine, g.col_cosine, g.pixel_spacing])
    if not np.all(np.isfinite(vals)) or np.max(np.abs(g.position)) > _MAX_MM:
        raise ValueError("values not finite or out of range")
    if abs(float(g.row_cosine @ g.col_cosine)) > 1e-3 or np.linalg.norm(np.cross(g.row_cosine, g.col_cosine)) < 0.5:
        raise ValueError("ImageOrientationPatient not orthogonal")
    if min(g.pixel_spacing) <= 0 or max(g.pixel_spacing) > _MAX_MM:
        raise ValueError("PixelSpacing <= 0 or out of range")
    if g.thickness is not None and not (np.isfinite(g.thickness) and abs(g.thickness) < _MAX_MM):
        raise ValueError("SliceThickness not finite or out of range")


def _series_name(desc: str, uid: str) -> str:
    return f"series '{desc}' ({uid})" if desc else f"series {uid}"


def read_dicom_files(files: list[tuple[Path, str]], source: str, rules: Any = None) -> Study:
    """Read ``(path, display name)`` pairs into a :class:`Study` (see module doc)."""
    from .roles import assign_roles, load_rules

    rules = rules if isinstance(rules, dict) else load_rules(rules)
    warns: list[str] = []
    by_series: dict[str, list[tuple[Any, Path, str]]] = defaultdict(list)
    for path, disp in files:
        ds, problem = read_header(path)
        if problem:
            warns.append(f"{disp}: {problem}")
            continue
        dropped = ds.__dict__.get("_lumbargrade_dropped")
        if dropped:
            warns.append(f"{disp}: undecodable element(s) {', '.join(dropped[:5])} ignored")
        uid = str(ds.get("SeriesInstanceUID", "") or "") or "(no SeriesInstanceUID)"
        by_series[uid].append((ds, path, disp))

    series_out: list[Series] = []
    series_problems: list[str] = []
    for uid, items in by_series.items():
        s, problem, sw = _build_series(uid, items)
        warns.extend(sw)
        if problem:
            series_problems.append(problem)
            warns.append(problem)
        elif s is not None:
            series_out.append(s)

    if not series_out:
        if series_problems:
            raise InputError(None, series_problems[0])
        if not files:
            raise InputError(source, "no files found")
        first = f" ({warns[0]})" if warns else ""
        if any(p.name.lower().endswith((".nii", ".nii.gz")) for p, _ in files):
            first += "; NIfTI files are read one at a time: pass the .nii/.nii.gz file itself"
        raise InputError(source, f"no readable DICOM images among {len(files)} file(s){first}")

    series_out.sort(
        key=lambda s: (
            s.series_number if s.series_number is not None else 1 << 30,
            s.series_instance_uid,
        )
    )
    study_uids = Counter(
        str(s.all_slices()[0].header.get("StudyInstanceUID", "") or "") for s in series_out
    )
    study_uids.pop("", None)
    study_uid = study_uids.most_common(1)[0][0] if study_uids else None
    if len(study_uids) > 1:
        warns.append(
            f"{source}: files from {len(study_uids)} studies "
            f"({', '.join(study_uids)}); all series kept, study UID {study_uid} reported"
        )
    warns.extend(assign_roles(series_out, rules))
    return Study(study_instance_uid=study_uid, series=series_out, warnings=warns, source=source)


def _build_series(
    uid: str, items: list[tuple[Any, Path, str]]
) -> tuple[Series | None, str | None, list[str]]:
    """One series from headers: ``(series, None, warnings)`` or ``(None, problem, warnings)``."""
    warns: list[str] = []
    ds0 = items[0][0]
    desc = _text(ds0.get("SeriesDescription", "")).strip()
    name = _series_name(desc, uid)

    # identical SOP instances twice (copied files): keep the first
    seen: dict[str, str] = {}
    uniq = []
    for ds, path, disp in items:
        sop = str(ds.get("SOPInstanceUID", "") or "")
        if sop and sop in seen:
            warns.append(f"{disp}: duplicate of {seen[sop]} (same SOPInstanceUID); skipped")
            continue
        if sop:
            seen[sop] = disp
        uniq.append((ds, path, disp))
    items = uniq

    missing = Counter()
    refs: list[SliceRef] = []
    bad_geom: list[str] = []
    for ds, path, disp in items:
        nf = int(_num(ds.get("NumberOfFrames")) or 1)
        frames: list[int | None] = list(range(nf)) if nf > 1 else [None]
        mf_cache: dict[str, np.ndarray] = {}
        for f in frames:
            fdisp = disp if f is None else f"{disp}[frame {f}]"
            iop = _frame_value(ds, f, "PlaneOrientationSequence", "ImageOrientationPatient")
            ipp = _frame_value(ds, f, "PlanePositionSequence", "ImagePositionPatient")
            ps = _frame_value(ds, f, "PixelMeasuresSequence", "PixelSpacing")
            lacks = [
                t
                for t, v in (
                    ("ImageOrientationPatient", iop),
                    ("ImagePositionPatient", ipp),
                    ("PixelSpacing", ps),
                )
                if v is None or v == ""
            ]
            if lacks:
                missing.update(lacks)
                bad_geom.append(f"{fdisp}: missing {', '.join(lacks)}")
                continue
            try:
                if len(iop) != 6 or len(ipp) != 3 or len(ps) != 2:
                    raise ValueError("wrong number of values")
                thick = _num(_frame_value(ds, f, "PixelMeasuresSequence", "SliceThickness"))
                g = SliceGeometry.from_dicom_values(
                    ipp, iop, ps, int(ds.Rows), int(ds.Columns), thick
                )
                _check_geometry(g)
            except (ValueError, TypeError, OverflowError) as e:
                bad_geom.append(
                    f"{fdisp}: invalid ImageOrientationPatient / ImagePositionPatient / "
                    f"PixelSpacing ({e})"
                )
                continue
            inst = ds.get("InstanceNumber")
            loader = None
            if f is not None:
                slope = _num(
                    _frame_value(ds, f, "PixelValueTransformationSequence", "RescaleSlope")
                )
                inter = _num(
                    _frame_value(ds, f, "PixelValueTransformationSequence", "RescaleIntercept")
                )
                loader = _frame_loader(path, disp, f, mf_cache, slope, inter)
            refs.append(
                SliceRef(
                    geometry=g,
                    sop_instance_uid=str(ds.get("SOPInstanceUID", "") or "") or None,
                    path=path,
                    header=ds,
                    display=fdisp,
                    instance_number=int(inst) if _num(inst) is not None else None,
                    frame=f,
                    _loader=loader,
                )
            )
    if not refs:
        if missing:
            tags = ", ".join(sorted(missing))
            first = bad_geom[0].split(": ", 1)[0] if bad_geom else ""
            return None, f"{name}: missing {tags} in all {len(items)} file(s) (e.g. {first})", warns
        return None, f"{name}: no valid geometry in any of {len(items)} file(s) (e.g. {bad_geom[0]})", warns
    warns.extend(bad_geom)

    sizes = Counter((r.geometry.rows, r.geometry.columns) for r in refs)
    if len(sizes) > 1:
        detail = ", ".join(f"{r}x{c} in {n} file(s)" for (r, c), n in sizes.most_common())
        return None, f"{name}: slices have different sizes ({detail})", warns

    idx_blocks = split_into_blocks([r.geometry for r in refs])
    blocks = [Block(slices=[refs[i] for i in b]) for b in idx_blocks]
    for bi, b in enumerate(blocks):
        pos = np.array([s.geometry.position @ b.normal for s in b.slices])
        if len(pos) > 1 and np.any(np.diff(pos) < 1e-3):
            warns.append(
                f"{name}: block {bi} has {int(np.sum(np.diff(pos) < 1e-3)) + 1} slices at the "
                f"same position (multi-echo or repeated?); all kept"
            )
        elif len(pos) > 2 and np.ptp(np.diff(pos)) > 0.1 * float(np.median(np.diff(pos))):
            warns.append(
                f"{name}: block {bi} has uneven slice spacing ({np.diff(pos).min():.2f}-"
                f"{np.diff(pos).max():.2f} mm); Volume.affine uses the mean step, "
                f"Volume.slices holds each slice's exact geometry"
            )
        spacings = Counter(tuple(round(v, 4) for v in s.geometry.pixel_spacing) for s in b.slices)
        if len(spacings) > 1:
            warns.append(f"{name}: block {bi} mixes pixel spacings {sorted(spacings)}")
    # A steeply tilted block (an L5/S1 block can pass 40 degrees) reads 'oblique'; beside blocks of
    # one cardinal plane it belongs to that plane's series. Two cardinal planes make a 'mixed' series.
    planes = {b.plane for b in blocks}
    cardinal = planes - {"oblique"}
    plane = cardinal.pop() if len(cardinal) == 1 else ("oblique" if not cardinal else "mixed")
    g0 = refs[0].geometry
    thick = Counter(r.geometry.thickness for r in refs if r.geometry.thickness is not None)
    ps = Counter(r.geometry.pixel_spacing for r in refs).most_common(1)[0][0]
    image_type = tuple(str(v).upper() for v in _values(ds0.get("ImageType")))
    s = Series(
        series_instance_uid=uid,
        description=desc,
        modality=str(ds0.get("Modality", "") or ""),
        plane=plane,
        blocks=blocks,
        rows=g0.rows,
        columns=g0.columns,
        pixel_spacing=ps,
        slice_thickness=thick.most_common(1)[0][0] if thick else None,
        series_number=_series_number(ds0),
        image_type=image_type,
        sequence_name=_text(ds0.get("SequenceName", "")),
        scanning_sequence=_text(ds0.get("ScanningSequence", "")),
        protocol_name=_text(ds0.get("ProtocolName", "")),
        echo_time_ms=_num(
            _frame_value(ds0, 0, "MREchoSequence", "EffectiveEchoTime")
            if "EchoTime" not in ds0
            else ds0.get("EchoTime")
        ),
        repetition_time_ms=_num(
            _frame_value(ds0, 0, "MRTimingAndRelatedParametersSequence", "RepetitionTime")
        ),
        files=[r.display for b in blocks for r in b.slices],
    )
    return s, None, warns


def _list_files(root: Path) -> list[Path]:
    out = []
    for p in sorted(root.rglob("*")):
        if p.name.startswith(".") or p.name.upper() in _SKIP_NAMES:
            continue
        try:
            if p.is_file():
                out.append(p)
        except OSError:
            continue
    return out


def read_dicom_folder(root: Path, rules: Any = None, display_root: str | None = None) -> Study:
    """Every file under ``root`` (recursively; hidden files and DICOMDIR skipped).

    ``display_root`` replaces ``root`` in messages (used for the temporary copy of a .zip).
    """
    files = _list_files(root)
    if not files:
        raise InputError(display_root or root, "empty folder: no files found")
    if display_root is None:
        pairs = [(p, str(p)) for p in files]
    else:
        pairs = [(p, f"{display_root}:{p.relative_to(root).as_posix()}") for p in files]
    return read_dicom_files(pairs, display_root or str(root), rules)


def load_pixels(ref: SliceRef, allow_frames: bool = False) -> np.ndarray:
    """Decode one slice's pixels: float32 ``[row, col]`` with RescaleSlope / Intercept applied
    (``allow_frames``: a multi-frame file's ``[frame, row, col]``, not rescaled: per-frame
    rescale is applied by the frame loader)."""
    import pydicom
    from pydicom.uid import ExplicitVRBigEndian, ExplicitVRLittleEndian, ImplicitVRLittleEndian

    where = ref.display or ref.path
    try:
        with _warnings.catch_warnings():
            _warnings.simplefilter("ignore")
            ds = pydicom.dcmread(ref.path, force=True)
            _decode_all(ds)  # damaged elements (e.g. an unknown VR) dropped, as in read_header
            if "TransferSyntaxUID" not in ds.file_meta:
                implicit, little = ds.original_encoding
                ds.file_meta.TransferSyntaxUID = (
                    ImplicitVRLittleEndian
                    if implicit
                    else ExplicitVRLittleEndian
                    if little
                    else ExplicitVRBigEndian
                )
            arr = ds.pixel_array
    except OSError as e:
        raise InputError(where, f"cannot read file ({e.strerror or e})") from None
    except Exception as e:
        ts = ds.file_meta.get("TransferSyntaxUID", "?") if "ds" in locals() else "?"
        raise InputError(
            where,
            f"cannot decode pixel data (transfer syntax {ts}): "
            f"{type(e).__name__}: {' '.join(str(e).split())[:160]}",
        ) from None
    if allow_frames:
        if arr.ndim == 2:
            arr = arr[None]
        if arr.ndim != 3:
            raise InputError(where, f"pixel data has shape {arr.shape}; grey frames expected")
        return arr.astype(np.float32)
    if arr.ndim != 2:
        raise InputError(
            where, f"pixel data has {arr.ndim} dimensions; single-frame grey images expected"
        )
    slope = _num(ds.get("RescaleSlope")) or 1.0
    inter = _num(ds.get("RescaleIntercept")) or 0.0
    out = arr.astype(np.float32)
    if slope != 1.0 or inter != 0.0:
        out = out * np.float32(slope) + np.float32(inter)
    return out
