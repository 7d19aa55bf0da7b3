"""``read_study(path)``: a DICOM folder, a .zip of one, a single DICOM file or a NIfTI file.

A .zip is extracted to flat, numbered names in a temporary folder (a member's own path is never
used on disk); members whose names leave the archive (``../``, absolute paths, drive letters) are
refused with a warning; an archive whose members would expand past :data:`MAX_ZIP_BYTES` in all,
with more than :data:`MAX_ZIP_MEMBERS` members, or with a large member compressed more than
:data:`MAX_ZIP_RATIO` : 1 (a compression bomb) is refused before anything is extracted.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from ..errors import InputError
from .model import Study

__all__ = ["MAX_ZIP_BYTES", "MAX_ZIP_MEMBERS", "MAX_ZIP_RATIO", "read_study"]

#: Most bytes a .zip study may expand to (all members together).
MAX_ZIP_BYTES = 8 << 30
#: Most members (files) in a .zip study.
MAX_ZIP_MEMBERS = 100_000
#: Highest compression ratio of a member larger than 64 MiB (DICOM images compress 2-10 : 1;
#: deflate reaches about 1030 : 1 on zeros, what a compression bomb is made of).
MAX_ZIP_RATIO = 500


def _unsafe_member(name: str) -> bool:
    """A member name that would leave the extraction folder if used as a path."""
    n = name.replace("\\", "/")
    return n.startswith("/") or (len(n) > 1 and n[1] == ":") or ".." in n.split("/")


def _zip_bomb_problem(members: list) -> str | None:
    if len(members) > MAX_ZIP_MEMBERS:
        return f"{len(members)} members; more than this reader accepts ({MAX_ZIP_MEMBERS})"
    total = sum(m.file_size for m in members)
    if total > MAX_ZIP_BYTES:
        return (f"members would expand to {total / 2**30:.1f} GiB (limit "
                f"{MAX_ZIP_BYTES / 2**30:.0f} GiB); refused as a possible compression bomb")
    for m in members:
        if m.file_size > 64 << 20 and m.file_size > MAX_ZIP_RATIO * max(m.compress_size, 1):
            return (f"member {m.filename!r} is compressed {m.file_size / max(m.compress_size, 1):.0f}"
                    f" : 1; refused as a possible compression bomb")
    return None


def _is_nifti(p: Path) -> bool:
    n = p.name.lower()
    return n.endswith(".nii") or n.endswith(".nii.gz")


def _read_zip(path: Path, rules: Any) -> Study:
    import tempfile
    import zipfile
    import zlib

    from .dicom import read_dicom_files

    where = str(path)
    try:
        zf = zipfile.ZipFile(path)
    except (zipfile.BadZipFile, OSError, EOFError, ValueError, NotImplementedError) as e:
        raise InputError(where, f"not a readable zip archive ({type(e).__name__}: {e})") from None
    tmp = tempfile.TemporaryDirectory(prefix="lumbargrade-zip-")
    root = Path(tmp.name)
    pairs = []
    warns = []
    try:
        with zf:
            # ZipInfo.is_dir() fails on an empty member name (a damaged central directory)
            unnamed = sum(1 for m in zf.infolist() if not m.filename)
            if unnamed:
                warns.append(f"{where}: {unnamed} member(s) without a name; skipped")
            members = [m for m in zf.infolist() if m.filename and not m.filename.endswith("/")]
            if not members:
                raise InputError(where, "empty zip archive: no files")
            problem = _zip_bomb_problem(members)
            if problem:
                raise InputError(where, problem)
            for i, m in enumerate(members):
                if _unsafe_member(m.filename):
                    warns.append(f"{where}:{m.filename}: member path leaves the archive "
                                 "(path traversal); refused")
                    continue
                base = m.filename.rsplit("/", 1)[-1]
                if (
                    base.startswith(".")
                    or base.upper() == "DICOMDIR"
                    or m.filename.startswith("__MACOSX/")
                ):
                    continue
                disp = f"{where}:{m.filename}"
                target = root / f"{i:06d}"  # flat names: no path traversal, no name clashes
                try:
                    with zf.open(m) as src, open(target, "wb") as dst:
                        while chunk := src.read(1 << 20):
                            dst.write(chunk)
                except (
                    zipfile.BadZipFile,
                    OSError,
                    EOFError,
                    NotImplementedError,
                    RuntimeError,
                    ValueError,
                    zlib.error,
                ) as e:
                    warns.append(f"{disp}: cannot extract ({type(e).__name__}: {e})")
                    continue
                pairs.append((target, disp))
        if not pairs and warns:
            raise InputError(where, f"no file could be extracted ({warns[0]})")
        if not pairs:
            raise InputError(where, "zip archive holds no files to read")
        study = read_dicom_files(pairs, where, rules)
    except BaseException:
        tmp.cleanup()
        raise
    study.warnings[:0] = warns
    study._tmpdir = tmp
    return study


def read_study(path: str | Path, rules: str | Path | dict | None = None) -> Study:
    """Read a study from ``path``.

    Parameters
    ----------
    path: a folder of DICOM files (recursive, any names, with or without the DICM preamble), a
        ``.zip`` of such a folder, one DICOM file, or a NIfTI file (``.nii`` / ``.nii.gz``).
    rules: role rules: None for the packaged ``role_rules.json``, a JSON file path, or a dict;
        either overrides the defaults (see :mod:`lumbargrade.io.roles`).

    Raises :class:`InputError` (one line naming the file or series) when nothing usable is found;
    files skipped for a reason are listed in ``Study.warnings``.
    """
    from .dicom import read_dicom_files, read_dicom_folder
    from .roles import load_rules

    p = Path(path)
    try:
        if not p.exists():
            problem = "no such file or folder"
            if p.is_symlink():
                problem = "symbolic link to nothing (broken or a loop)"
            raise InputError(p, problem)
    except OSError as e:
        raise InputError(p, f"cannot read ({e.strerror or e})") from None
    rules_d = load_rules(rules)
    if p.is_dir():
        return read_dicom_folder(p, rules_d)
    if _is_nifti(p):
        from .nifti import read_nifti

        return read_nifti(p, rules_d)
    if p.suffix.lower() == ".zip":
        return _read_zip(p, rules_d)
    # a single file: must be a DICOM image
    from .dicom import read_header

    _, problem = read_header(p)
    if problem:
        raise InputError(p, problem)
    return read_dicom_files([(p, str(p))], str(p), rules_d)
