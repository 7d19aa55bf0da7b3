"""Truth and reports in, paired per (patient, level): the data every evaluation stage reads.

:func:`load_truth` (a manifest and, beside it, the phantom's ``truth.json`` files),
:func:`load_reports` (``analyze`` outputs), :func:`make_pairs` (one :class:`LevelPair` per annotated
level) and the small readers of grades and labels they share. I/O lives here; the metric modules
are pure functions of the pairs.
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from ..errors import InputError
from ..grading.names import CENTRAL_GRADES as GRADE_NAMES
from ..grading.names import LATERAL_FINDINGS as BINARY_FINDINGS
from ..numbers import is_finite_number as finite  # evaluation.grading imports it from here

__all__ = ["BINARY_FINDINGS", "FINDINGS", "GRADE_NAMES", "LevelPair", "finite", "grade_index", "binary_label",
           "load_reports", "load_truth", "make_pairs", "pack_labels", "reader_grade", "slice_matches"]

FINDINGS = ("central_canal",) + BINARY_FINDINGS


@dataclass
class LevelPair:
    """One annotated (patient, level) and what the report says about it.

    ``truth``: the truth level record (truth.json schema: ``axial_sop_instance_uid``, ``boxes``,
    ``landmark_patient_mm``, ``grades: {finding: {"truth", "readers": [r1, r2, r3]}}``; any part may
    be missing). ``pred``: the report's level record, or None when the report has no such level.
    ``truth_label_map`` / ``pred_label_map``: uint8 label maps (or None). ``truth_landmarks``: every
    truth disc centre of the patient, ``{level: [x, y, z]}`` LPS mm (for level identification).
    ``pred_landmark_mm``: the report's landmark for this level (LPS mm) or None.
    """

    patient_id: str
    level: str
    truth: dict
    pred: dict | None = None
    truth_label_map: np.ndarray | None = None
    pred_label_map: np.ndarray | None = None
    truth_landmarks: dict[str, Sequence[float]] = field(default_factory=dict)
    pred_landmark_mm: Sequence[float] | None = None


def grade_index(g: Any) -> int | None:
    """A grade as 0..3 from a name ('normal'..'severe') or a number; None when missing."""
    if g is None or g == "":
        return None
    if isinstance(g, str):
        s = g.strip().lower()
        if s in GRADE_NAMES:
            return GRADE_NAMES.index(s)
        try:
            return int(float(s))
        except ValueError:
            return None
    try:
        v = float(g)
    except (TypeError, ValueError):
        return None
    return int(v) if math.isfinite(v) else None


def binary_label(v: Any) -> int | None:
    if v is None or v == "":
        return None
    if isinstance(v, str):
        s = v.strip().lower()
        if s in ("moderate/severe", "1", "true"):
            return 1
        if s in ("normal/mild", "0", "false"):
            return 0
        return None
    return int(bool(v))


def reader_grade(truth: Mapping, finding: str, k: int) -> int | None:
    """Reader ``k`` (0-based; 0 = reader 1) of a finding, or the true grade for ``k = 'truth'``."""
    g = (truth.get("grades") or {}).get(finding) or {}
    if k == "truth":
        return grade_index(g.get("truth"))
    r = g.get("readers") or []
    return grade_index(r[k]) if k < len(r) else None


def slice_matches(pair: LevelPair) -> bool:
    t = pair.truth.get("axial_sop_instance_uid")
    p = (pair.pred or {}).get("axial_sop_instance_uid")
    return bool(t) and bool(p) and str(t) == str(p)


# --------------------------------------------------------------------------- reading truth / reports
def _load_png(path: Path) -> np.ndarray | None:
    if not path.is_file():
        return None
    from ..manifest import load_image_file

    return load_image_file(path).astype(np.uint8)


def load_truth(data: str | Path, split: str | None = "test") -> list[dict]:
    """Truth per patient from a manifest (or a folder holding ``manifest.csv``), ``split`` only
    (None: all). Returns ``[{"patient_id", "study_instance_uid", "study_dir" (absolute or None),
    "levels": [truth level records]}]``. A patient folder with the phantom's ``truth.json`` next
    to the manifest (``<manifest dir>/<patient_id>/truth.json``) gives the full record (boxes,
    landmark_patient_mm, readers, true grade); otherwise the record is built from the manifest's
    columns (reader 1 = ``<finding>``, readers 2/3 = ``<finding>_r2/_r3``, ``<finding>_truth``)."""
    from ..manifest import read_manifest, resolve_manifest

    mpath = resolve_manifest(data)
    base = mpath.parent
    rows = read_manifest(mpath, required=("patient_id", "split", "level"))
    if split:
        rows = [r for r in rows if r["split"] == split]
        if not rows:
            raise InputError(mpath, f"no rows in split {split!r}")
    patients: dict[str, dict] = {}
    for r in rows:
        pid = r["patient_id"]
        pt = patients.setdefault(pid, {"patient_id": pid, "study_instance_uid": r.get("study_instance_uid") or None,
                                        "study_dir": str(base / r["study_dir"]) if r.get("study_dir") else None,
                                        "levels": {}, "_truth_json": None})
        if pt["_truth_json"] is None:
            tj = base / pid / "truth.json"
            pt["_truth_json"] = json.loads(tj.read_text()) if tj.is_file() else {}
        rec: dict[str, Any] = {"level": r["level"]}
        full = next((lv for lv in (pt["_truth_json"].get("levels") or []) if lv.get("level") == r["level"]), None)
        if full is not None:
            rec.update(full)
            if full.get("label_map"):
                rec["label_map_path"] = str(base / pid / full["label_map"])
        else:
            if r.get("axial_sop_instance_uid"):
                rec["axial_sop_instance_uid"] = r["axial_sop_instance_uid"]
            grades = {}
            for f in FINDINGS:
                readers = [grade_index(r.get(f)), grade_index(r.get(f"{f}_r2")), grade_index(r.get(f"{f}_r3"))]
                if any(x is not None for x in readers):
                    grades[f] = {"truth": grade_index(r.get(f"{f}_truth")), "readers": readers}
            rec["grades"] = grades
        if "label_map_path" not in rec and r.get("label_map"):
            rec["label_map_path"] = str(base / r["label_map"])
        pt["levels"][r["level"]] = rec
    out = []
    for pt in patients.values():
        tj = pt.pop("_truth_json")
        pt["study_instance_uid"] = pt["study_instance_uid"] or tj.get("study_instance_uid")
        pt["levels"] = list(pt["levels"].values())
        out.append(pt)
    return out


def load_reports(folder: str | Path) -> dict[str, tuple[dict, Path]]:
    """Every ``report.json`` under ``folder`` (recursively): ``{key: (report, its folder)}`` keyed
    by StudyInstanceUID and by the report folder's name (e.g. a patient id)."""
    root = Path(folder)
    if not root.is_dir():
        raise InputError(root, "predictions folder not found")
    out: dict[str, tuple[dict, Path]] = {}
    for f in sorted(root.rglob("report.json")):
        try:
            rep = json.loads(f.read_text())
        except json.JSONDecodeError as e:
            raise InputError(f, f"not valid JSON ({e.msg} at line {e.lineno})") from e
        if rep.get("study_instance_uid"):
            out[str(rep["study_instance_uid"])] = (rep, f.parent)
        out.setdefault(f.parent.name, (rep, f.parent))
    return out


def pack_labels(reports: Mapping[str, tuple[dict, Path]]) -> list[str]:
    """The model packs that made the reports of :func:`load_reports`, sorted: name and version as
    each report records them (``software.model_pack``), with the pack's fingerprint where the
    report has one (``"name version (sha256 0123456789abcdef)"``, ``software.model_pack_sha256``:
    two packs of the same name and version are told apart); reports without a pack are left out."""
    labels = set()
    for rep, _ in reports.values():
        sw = (rep.get("software") or {}) if isinstance(rep, Mapping) else {}
        label, sha = sw.get("model_pack"), sw.get("model_pack_sha256")
        if isinstance(label, str) and label:
            labels.add(f"{label} (sha256 {sha})" if isinstance(sha, str) and sha else label)
    return sorted(labels)


def _report_landmark(rec: Mapping, report: Mapping) -> list[float] | None:
    p = (rec.get("slice_choice") or {}).get("landmark_patient_mm")
    if p is None:
        lm = ((report.get("sagittal") or {}).get("landmarks") or {}).get(rec.get("level"), {})
        p = lm.get("patient_mm") if isinstance(lm, Mapping) else None
    return None if p is None else [float(v) for v in p]


def make_pairs(truth: Sequence[dict], reports: Mapping[str, tuple[dict, Path]],
               load_label_maps: bool = True) -> tuple[list[LevelPair], list[str]]:
    """Pair each truth level with its report level (report found by StudyInstanceUID, else by the
    patient id as folder name). Returns ``(pairs, patients_without_report)``."""
    pairs: list[LevelPair] = []
    missing: list[str] = []
    for pt in truth:
        hit = reports.get(str(pt.get("study_instance_uid"))) or reports.get(pt["patient_id"])
        if hit is None:
            missing.append(pt["patient_id"])
        report, rdir = hit if hit is not None else ({}, None)
        by_level = {lv.get("level"): lv for lv in report.get("levels", [])}
        lms = {lv["level"]: lv["landmark_patient_mm"] for lv in pt["levels"] if lv.get("landmark_patient_mm") is not None}
        for t in pt["levels"]:
            pred = by_level.get(t["level"])
            tl = pl = None
            if load_label_maps:
                if t.get("label_map_path"):
                    tl = _load_png(Path(t["label_map_path"]))
                if pred is not None and pred.get("label_map") and rdir is not None:
                    pl = _load_png(rdir / pred["label_map"])
            pairs.append(LevelPair(
                patient_id=pt["patient_id"], level=t["level"], truth=t, pred=pred,
                truth_label_map=tl, pred_label_map=pl, truth_landmarks=lms,
                pred_landmark_mm=_report_landmark(pred, report) if pred is not None else None,
            ))
    return pairs, missing
