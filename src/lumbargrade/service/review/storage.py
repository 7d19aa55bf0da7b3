"""The studies under a review ROOT: which folders are studies, checks that every name a request
gives stays inside ROOT, one-line summaries for the worklist, and checks of uploaded label maps.

A study is a sub-folder of ROOT holding ``report.json`` and ``config.json`` (one ``analyze`` output
folder, as ``analyze --batch`` writes them); its id is the folder's name. Nothing here trusts a
name from a request: ids must be plain folder names, levels one of ``L1-L2`` .. ``L5-S1``, and files
one of a fixed list.
"""

from __future__ import annotations

import io
import json
import re
import threading
from pathlib import Path
from typing import Any

import numpy as np

from ...errors import InputError

__all__ = [
    "MAX_LABEL",
    "NotFound",
    "StudyRoot",
    "UploadError",
    "check_label_upload",
    "needs_review",
    "parse_level",
]

#: Label values a reader may paint (docs/architecture.md: 1 sac, 2 disc, 3-6 facet / foramen).
MAX_LABEL = 6

#: Files of a study folder the app serves (report, DICOM outputs).
SERVED_FILES = {
    "report.html": "text/html; charset=utf-8",
    "report.json": "application/json",
    "sr.dcm": "application/dicom",
}
_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,199}")
_SEG_FILE = re.compile(r"seg(_[0-9]{1,3})?\.dcm")


class NotFound(LookupError):
    """A study, level or file that is not there (or not allowed): HTTP 404."""


class UploadError(ValueError):
    """An upload that is refused: ``status`` 413 (too large), 415 (wrong type) or 422."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.message = message


def parse_level(text: str) -> str:
    """``"L4-L5"`` (or ``"L4/L5"``) -> ``"L4/L5"``; anything else -> :class:`NotFound`."""
    from ...levels.names import LEVELS

    level = str(text).replace("-", "/")
    if level not in LEVELS:
        raise NotFound(f"no level {text!r}")
    return level


def needs_review(report: dict[str, Any]) -> dict[str, list[str]]:
    """``{level or "study": [reasons]}`` for every result flagged ``needs_review`` (a level record,
    one of its findings) or ``flagged`` (the landmarks)."""
    out: dict[str, list[str]] = {}

    def reasons(d: dict[str, Any]) -> list[str]:
        r = d.get("needs_review_reasons") or d.get("needs_review_reason") or d.get("reason") or []
        return [str(x) for x in (r if isinstance(r, list) else [r])] or ["flagged"]

    for rec in report.get("levels", []) or []:
        found: list[str] = []
        if rec.get("needs_review"):
            found += reasons(rec)
        for key in ("central_canal", "foramen_left", "foramen_right", "facet_left", "facet_right"):
            f = rec.get(key)
            if isinstance(f, dict) and f.get("needs_review"):
                found += [f"{key}: {x}" for x in reasons(f)]
        if found:
            out[rec.get("level", "?")] = found
    sag = report.get("sagittal") or {}
    if sag.get("flagged"):
        out.setdefault("study", []).extend(
            ["landmarks flagged: " + "; ".join(sag.get("warnings") or ["implausible levels"])])
    return out


def check_label_upload(body: bytes, content_type: str | None, shape: tuple[int, int],
                       max_bytes: int) -> np.ndarray:
    """An uploaded label map -> uint8 ``[rows, cols]``. It must be a PNG (``image/png``, PNG
    signature), single channel (8-bit grey or palette), the slice's ``shape``, with values 0-6
    only, at most ``max_bytes``; else :class:`UploadError`. The image size is read from the header
    before any pixel is decoded (no decompression bombs)."""
    from PIL import Image, UnidentifiedImageError

    if len(body) > max_bytes:
        raise UploadError(413, f"upload of {len(body)} bytes is over the limit of {max_bytes}")
    ctype = (content_type or "").split(";")[0].strip().lower()
    if ctype != "image/png":
        raise UploadError(415, f"a label map must be sent as image/png, not {ctype or 'no type'}")
    if not body.startswith(b"\x89PNG\r\n\x1a\n"):
        raise UploadError(415, "the upload is not a PNG file")
    try:
        with Image.open(io.BytesIO(body)) as im:
            if (im.height, im.width) != tuple(shape):
                raise UploadError(422, f"label map is {im.height}x{im.width}, the axial slice is "
                                       f"{shape[0]}x{shape[1]}")
            if im.mode not in ("L", "P"):
                raise UploadError(415, f"a label map is a single-channel 8-bit PNG, not mode {im.mode}")
            arr = np.asarray(im)
    except UploadError:
        raise
    except (UnidentifiedImageError, OSError, ValueError, Image.DecompressionBombError) as e:
        raise UploadError(415, f"not a readable PNG ({e})") from None
    if arr.ndim != 2 or arr.shape != tuple(shape):
        raise UploadError(422, "label map does not have the slice's shape")
    if arr.size and int(arr.max()) > MAX_LABEL:
        raise UploadError(422, f"label values must be 0-{MAX_LABEL}, found {int(arr.max())}")
    return arr.astype(np.uint8)


class StudyRoot:
    """The study folders under ``root`` and their worklist summaries (cached by the time
    report.json was changed)."""

    def __init__(self, root: str | Path) -> None:
        root = Path(root)
        if not root.is_dir():
            raise InputError(root, "not a folder")
        if (root / "report.json").is_file():
            raise InputError(root, "this is one study's output folder; give the folder that holds "
                                   "the study folders (its parent)")
        self.root = root.resolve()
        self._summaries: dict[str, tuple[float, dict[str, Any]]] = {}
        self._lock = threading.Lock()

    def ids(self) -> list[str]:
        """Names of the study folders (holding report.json and config.json), sorted."""
        out = []
        for p in sorted(self.root.iterdir()):
            if _ID.fullmatch(p.name) and (p / "report.json").is_file() and (p / "config.json").is_file():
                out.append(p.name)
        return out

    def folder(self, sid: str) -> Path:
        """The folder of study ``sid``: a plain folder name directly inside ROOT (after resolving
        links) that holds report.json; else :class:`NotFound`."""
        if not isinstance(sid, str) or not _ID.fullmatch(sid):
            raise NotFound("no such study")
        p = self.root / sid
        try:
            real = p.resolve(strict=True)
        except (OSError, RuntimeError):
            raise NotFound("no such study") from None
        if real.parent != self.root or not (real / "report.json").is_file():
            raise NotFound("no such study")
        return real

    def served_file(self, sid: str, name: str) -> tuple[Path, str]:
        """``(path, media type)`` of a file of the study the app may serve (:data:`SERVED_FILES`,
        ``seg*.dcm``); else :class:`NotFound`."""
        folder = self.folder(sid)
        if name in SERVED_FILES:
            media = SERVED_FILES[name]
        elif _SEG_FILE.fullmatch(name):
            media = "application/dicom"
        else:
            raise NotFound("no such file")
        p = folder / name
        if not p.is_file() or p.resolve().parent != folder:
            raise NotFound("no such file")
        return p, media

    def report(self, sid: str) -> dict[str, Any]:
        from ...report.history import recover

        folder = self.folder(sid)
        recover(folder)
        try:
            return json.loads((folder / "report.json").read_text())
        except (OSError, json.JSONDecodeError) as e:
            raise NotFound(f"report.json of {sid} is not readable ({e})") from None

    def summary(self, sid: str) -> dict[str, Any]:
        """One worklist row (see :func:`summarize`)."""
        folder = self.folder(sid)
        mtime = (folder / "report.json").stat().st_mtime
        with self._lock:
            hit = self._summaries.get(sid)
        if hit and hit[0] == mtime:
            return hit[1]
        row = summarize(sid, folder, self.report(sid))
        with self._lock:
            self._summaries[sid] = (mtime, row)
        return row


def _patient(folder: Path) -> dict[str, str]:
    """Patient and study identification from the SR (copied from the source images)."""
    try:
        import pydicom

        ds = pydicom.dcmread(folder / "sr.dcm", stop_before_pixels=True, specific_tags=[
            "PatientName", "PatientID", "StudyDate", "AccessionNumber", "StudyDescription"])
    except Exception:  # no SR (analysis without DICOM outputs) or unreadable: no names
        return {}
    return {k: str(getattr(ds, k, "") or "") for k in
            ("PatientName", "PatientID", "StudyDate", "AccessionNumber", "StudyDescription")}


def summarize(sid: str, folder: Path, report: dict[str, Any]) -> dict[str, Any]:
    """The worklist row of one study: status, grades per level, warnings and flags, who changed
    or signed it."""
    from ...signoff import study_status

    levels = []
    n_warn = len(report.get("warnings") or [])
    for rec in report.get("levels", []) or []:
        c = rec.get("central_canal") or {}
        reader = ((rec.get("reader") or {}).get("grades") or {})
        lateral = {k: (reader.get(k) or (rec.get(k) or {}).get("label")) for k in
                   ("foramen_left", "foramen_right", "facet_left", "facet_right")}
        levels.append({
            "level": rec.get("level"),
            "central_canal": reader.get("central_canal") or c.get("grade"),
            "by_reader": bool(reader),
            "lateral_moderate_severe": sorted(k for k, v in lateral.items() if v == "moderate/severe"),
            "changed": bool(rec.get("regraded")),
        })
        n_warn += len(rec.get("warnings") or [])
    flags = needs_review(report)
    history = report.get("history") or []
    last = history[-1] if history else None
    return {
        "id": sid,
        "study_instance_uid": report.get("study_instance_uid"),
        "status": study_status(report),
        "levels": levels,
        "warnings": n_warn,
        "needs_review": sum(len(v) for v in flags.values()),
        "needs_review_reasons": flags,
        "last_change": {"when": last.get("when"), "by": last.get("by"), "reason": last.get("reason")} if last else None,
        "signed": report.get("signed"),
        "patient": _patient(folder),
    }
