"""``read_study(path)``: a DICOM folder, a .zip of one, a single DICOM file or a NIfTI file."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from ..errors import InputError
from .model import Study

__all__ = ["read_study"]


def _is_nifti(p: Path) -> bool:
    n = p.name.lower()
    return n.endswith(".nii") or n.endswith(".nii.gz")


def _read_zip(path: Path, rules: Any) -> Study:
    import tempfile
    import zipfile

    from .dicom import read_dicom_files

    where = str(path)
    try:
        zf = zipfile.ZipFile(path)
    except (zipfile.BadZipFile, OSError, EOFError) as e:
        raise InputError(where, f"not a readable zip archive ({e})") from None
    tmp = tempfile.TemporaryDirectory(prefix="lumbargrade-zip-")
    root = Path(tmp.name)
    pairs = []
    warns = []
    try:
        with zf:
            members = [m for m in zf.infolist() if not m.is_dir()]
            if not members:
                raise InputError(where, "empty zip archive: no files")
            for i, m in enumerate(members):
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
                ) as e:
                    warns.append(f"{disp}: cannot extract ({type(e).__name__}: {e})")
                    continue
                pairs.append((target, disp))
        if not pairs and warns:
            raise InputError(where, f"no file could be extracted ({warns[0]})")
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
    if not p.exists():
        raise InputError(p, "no such file or folder")
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
