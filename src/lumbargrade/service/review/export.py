"""``lumbargrade review export ROOT --out DIR``: the levels readers corrected, as a training cohort
in the project's manifest format (docs/dataset-format.md), ready for ``lumbargrade train``.

A level is exported when a reader changed it: its mask edited (in the app or with ``regrade``), its
axial slice chosen by moving the landmark, or grades given. With ``include_signed`` every level of
a signed study is exported too (the reader accepted it as it is). Per level ``DIR`` gets:

* ``<study>/<L4-L5>.dcm``: the axial slice, the analyzed study's DICOM file as it is (``images=
  "npy"``: its pixels as float32 ``.npy`` with the spacing in the manifest, no DICOM header);
* ``<study>/<L4-L5>_labels.png``: the label map as the reader left it (1 dural sac, 2 disc, 3-6
  facet / foramen regions);
* a ``manifest.csv`` row: ``patient_id``, ``split``, ``level``, ``axial_image``, ``label_map``,
  spacing, UIDs, the grades (the reader's where given; the reported ones where the study is
  signed; empty = unknown), and, where the reader moved the landmark or signed the study, the
  sagittal slice (``<study>/sagittal.dcm``; DICOM images only) with ``landmark_row`` / ``landmark_col``.

Extra columns say where each row came from: ``study``, ``corrected``, ``signed``, ``changed_by``,
``signed_by``, ``grades_from``, ``regions``. ``split`` is by patient and stable: a patient keeps its
split when more studies are exported later (a hash of the patient id), with at least one ``val``
patient once there are two. ``export.json`` records what was exported and what was skipped.
"""

from __future__ import annotations

import csv
import datetime as _dt
import hashlib
import json
import os
import shutil
from pathlib import Path
from typing import Any

import numpy as np

from ...errors import InputError

__all__ = ["COLUMNS", "assign_splits", "export_cohort"]

COLUMNS = (
    "patient_id", "split", "level", "study_instance_uid", "axial_image", "axial_sop_instance_uid",
    "pixel_spacing_row_mm", "pixel_spacing_col_mm", "label_map",
    "central_canal", "foramen_left", "foramen_right", "facet_left", "facet_right",
    "sagittal_image", "landmark_row", "landmark_col",
    "study", "corrected", "signed", "changed_by", "signed_by", "grades_from", "regions",
)
_LATERAL = ("foramen_left", "foramen_right", "facet_left", "facet_right")


def _hash01(text: str, salt: str = "lumbargrade-review-export") -> float:
    h = hashlib.sha256(f"{salt}:{text}".encode()).digest()
    return int.from_bytes(h[:8], "big") / 2.0**64


def assign_splits(patients: list[str], val_fraction: float = 0.2, test_fraction: float = 0.0) -> dict[str, str]:
    """``{patient: "train" | "val" | "test"}`` by a hash of the patient id (stable as patients are
    added); there is always a ``train`` patient, and with two or more patients a ``val`` one."""
    if not (0 <= val_fraction < 1 and 0 <= test_fraction < 1 and val_fraction + test_fraction < 1):
        raise InputError("--val-fraction/--test-fraction", "fractions must be in [0, 1) and sum to < 1")
    u = {p: _hash01(p) for p in sorted(set(patients))}
    out = {p: "test" if x < test_fraction else "val" if x < test_fraction + val_fraction else "train"
           for p, x in u.items()}
    if len(u) >= 2 and val_fraction > 0 and "val" not in out.values():
        cand = sorted((x, p) for p, x in u.items() if out[p] == "train")
        if len(cand) >= 2:
            out[cand[0][1]] = "val"
    if u and "train" not in out.values():  # the trainers need train rows
        cand = sorted((x, p) for p, x in u.items())
        out[cand[-1][1]] = "train"
    return out


def _grade_columns(rec: dict[str, Any], signed: bool) -> tuple[dict[str, str], str]:
    """The grade columns of one level and where they came from."""
    from ...grading.names import CENTRAL_GRADES

    reader = {k: v for k, v in ((rec.get("reader") or {}).get("grades") or {}).items() if v}
    cols: dict[str, str] = {}
    central = reader.get("central_canal") or ((rec.get("central_canal") or {}).get("grade") if signed else None)
    cols["central_canal"] = str(CENTRAL_GRADES.index(central)) if central in CENTRAL_GRADES else ""
    for k in _LATERAL:
        label = reader.get(k) or ((rec.get(k) or {}).get("label") if signed else None)
        cols[k] = {"normal/mild": "0", "moderate/severe": "1"}.get(label or "", "")
    source = "reader" if reader and not signed else "reader+signed" if reader else "signed" if signed else ""
    return cols, source


def _is_plain_dicom(ref: Any) -> bool:
    if ref.path is None or ref.header is None or ref.frame is not None:
        return False
    p = Path(ref.path)
    return p.is_file()


def _write_image(ref: Any, dest_stem: Path, images: str) -> tuple[Path, dict[str, str]]:
    """The slice as a DICOM copy (``images="dicom"``, when it is a single-frame DICOM file) or NPY;
    returns the file and the spacing columns."""
    g = ref.geometry
    if images == "dicom" and _is_plain_dicom(ref):
        dest = dest_stem.with_suffix(".dcm")
        shutil.copyfile(ref.path, dest)
        return dest, {"pixel_spacing_row_mm": "", "pixel_spacing_col_mm": ""}
    dest = dest_stem.with_suffix(".npy")
    np.save(dest, np.asarray(ref.pixels(), np.float32), allow_pickle=False)
    return dest, {"pixel_spacing_row_mm": f"{g.pixel_spacing[0]:.6g}", "pixel_spacing_col_mm": f"{g.pixel_spacing[1]:.6g}"}


def _selected(report: dict[str, Any], include_signed: bool) -> list[tuple[dict[str, Any], bool]]:
    """``(record, corrected)`` of the levels to export."""
    signed = bool(report.get("signed"))
    out = []
    for rec in report.get("levels", []):
        corrected = bool(rec.get("regraded")) or bool((rec.get("reader") or {}).get("grades"))
        if corrected or (include_signed and signed):
            out.append((rec, corrected))
    return out


def export_cohort(
    root: str | Path,
    out: str | Path,
    *,
    include_signed: bool = False,
    images: str = "dicom",
    overwrite: bool = False,
    sources: str | Path | None = None,
    studies: Any = None,
    val_fraction: float = 0.2,
    test_fraction: float = 0.0,
) -> dict[str, Any]:
    """Export the corrected levels of the study folders in ``root`` into ``out`` (see the module
    docstring); returns the summary also written to ``out/export.json``. ``studies``: a
    :class:`~lumbargrade.service.review.studies.Sources` to read the analyzed studies through (its
    cache), else one is made with ``sources``."""
    from ...levels.names import level_dirname
    from ...regrade import read_output_folder
    from ...report.json_report import check_output_folder
    from .storage import StudyRoot
    from .studies import Sources, _sagittal_ref, _slice_by_uid

    if images not in ("dicom", "npy"):
        raise InputError("--images", f"must be dicom or npy, got {images!r}")
    assign_splits([], val_fraction, test_fraction)  # checks the fractions before any work
    studies_root = StudyRoot(root)
    out = Path(out)
    if out.resolve() == studies_root.root or studies_root.root in out.resolve().parents:
        raise InputError(out, "the export must not be written inside the review folder")
    check_output_folder(out, overwrite)
    src_cache = studies or Sources(sources)
    tmp = out.parent / f".{out.name}.tmp-{os.getpid()}"
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    rows: list[dict[str, str]] = []
    skipped: list[dict[str, str]] = []
    exported_studies = 0
    try:
        for sid in studies_root.ids():
            folder = studies_root.folder(sid)
            report, _config = read_output_folder(folder)
            chosen = _selected(report, include_signed)
            if not chosen:
                continue
            src, why, _ = src_cache.locate(folder)
            if src is None:
                skipped.append({"study": sid, "why": why})
                continue
            study = src_cache.study(src)
            signed = report.get("signed") or {}
            sdir = tmp / sid
            sdir.mkdir()
            sag_rel = None
            sag_ref = _sagittal_ref(study, report)
            lms = (report.get("sagittal") or {}).get("landmarks") or {}
            n_before = len(rows)
            for rec, corrected in chosen:
                level = rec["level"]
                name = level_dirname(level)
                ref = _slice_by_uid(study, rec["axial_sop_instance_uid"])
                lab = folder / rec.get("label_map", f"levels/{name}/labels.png")
                if ref is None or not lab.is_file():
                    skipped.append({"study": sid, "level": level,
                                    "why": "axial slice not in the study" if ref is None else "no label map"})
                    continue
                img, spacing = _write_image(ref, sdir / name, images)
                shutil.copyfile(lab, sdir / f"{name}_labels.png")
                grades, grades_from = _grade_columns(rec, bool(signed))
                pid = str(getattr(ref.header, "PatientID", "") or "") if ref.header is not None else ""
                row = {
                    "patient_id": pid or sid,
                    "level": level,
                    "study_instance_uid": report.get("study_instance_uid") or "",
                    "axial_image": img.relative_to(tmp).as_posix(),
                    "axial_sop_instance_uid": rec["axial_sop_instance_uid"],
                    **spacing,
                    "label_map": f"{sid}/{name}_labels.png",
                    **grades,
                    "study": sid,
                    "corrected": "1" if corrected else "0",
                    "signed": "1" if signed else "0",
                    "changed_by": (rec.get("regraded") or {}).get("by") or (rec.get("reader") or {}).get("by") or "",
                    "signed_by": signed.get("by", ""),
                    "grades_from": grades_from,
                    "regions": "reader" if rec.get("regions_source") == "reader" else "rule",
                }
                lm = lms.get(level) if isinstance(lms.get(level), dict) else None
                if (sag_ref is not None and lm and (lm.get("moved_by") or signed) and images == "dicom"
                        and _is_plain_dicom(sag_ref)):
                    if sag_rel is None:
                        shutil.copyfile(sag_ref.path, sdir / "sagittal.dcm")
                        sag_rel = f"{sid}/sagittal.dcm"
                    row.update(sagittal_image=sag_rel, landmark_row=f"{float(lm['row']):.2f}",
                               landmark_col=f"{float(lm['col']):.2f}")
                rows.append(row)
            if len(rows) > n_before:
                exported_studies += 1
            else:
                shutil.rmtree(sdir, ignore_errors=True)
        splits = assign_splits([r["patient_id"] for r in rows], val_fraction, test_fraction)
        for r in rows:
            r["split"] = splits[r["patient_id"]]
        with open(tmp / "manifest.csv", "w", newline="", encoding="utf-8") as f:
            w = csv.DictWriter(f, fieldnames=COLUMNS, extrasaction="ignore")
            w.writeheader()
            for r in rows:
                w.writerow({c: r.get(c, "") for c in COLUMNS})
        summary = {
            "written": _dt.datetime.now(_dt.UTC).isoformat(timespec="seconds"),
            "root": str(studies_root.root),
            "studies": exported_studies,
            "levels": len(rows),
            "patients": len(splits),
            "splits": {s: sum(1 for r in rows if r["split"] == s) for s in ("train", "val", "test")},
            "include_signed": include_signed,
            "images": images,
            "skipped": skipped,
        }
        (tmp / "export.json").write_text(json.dumps(summary, indent=2) + "\n")
        from ...report.json_report import move_into_place

        move_into_place(tmp, out)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)
    summary["manifest"] = str(out / "manifest.csv")
    return summary
