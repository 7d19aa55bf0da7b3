"""What a study page shows, built from a study folder and the study it was analyzed from.

The pixels are not in the output folder: they are re-read from the analyzed study recorded in
``config.json`` (``"input"``), or found by name in the ``--sources`` folder. Read studies and
loaded model packs are cached (a few studies, least recently used first out), so a page opens
quickly the second time and a save does not reload the models. When the study is not reachable
the page still shows the report, with the pictures ``analyze`` drew, and says why it cannot edit.
"""

from __future__ import annotations

import json
import threading
from collections import OrderedDict
from pathlib import Path
from typing import Any

import numpy as np

from .storage import NotFound, StudyRoot, needs_review, parse_level

__all__ = ["Sources", "study_detail"]


class Sources:
    """Read studies and loaded model packs, cached. ``sources``: a folder in which a study whose
    recorded path is gone is looked up by its folder name; ``models``: a model pack to use instead
    of the one each analysis recorded."""

    def __init__(self, sources: str | Path | None = None, models: str | Path | None = None,
                 max_studies: int = 4) -> None:
        self.sources = Path(sources) if sources else None
        self.models = Path(models) if models else None
        self.max_studies = max_studies
        self._studies: OrderedDict[str, Any] = OrderedDict()
        self._packs: dict[str, Any] = {}
        self._lock = threading.Lock()

    def locate(self, folder: Path) -> tuple[Path | None, str | None, dict[str, Any]]:
        """``(source path or None, why not, config)`` of the study analyzed into ``folder``."""
        from ...regrade import study_source

        config = json.loads((folder / "config.json").read_text())
        recorded = config.get("input")
        src = study_source(folder, config, self.sources)
        if src is None:
            hint = " (start the app with --sources FOLDER to find it by name)" if self.sources is None else ""
            return None, f"the analyzed study {recorded!r} is not reachable{hint}", config
        return src, None, config

    def study(self, src: Path) -> Any:
        from ...io import read_study

        key = str(src.resolve())
        with self._lock:
            if key in self._studies:
                self._studies.move_to_end(key)
                return self._studies[key]
        study = read_study(src)
        with self._lock:
            self._studies[key] = study
            while len(self._studies) > self.max_studies:
                self._studies.popitem(last=False)
        return study

    def forget(self, src: Path) -> None:
        with self._lock:
            self._studies.pop(str(src.resolve()), None)

    def pack(self, config: dict[str, Any]) -> Any:
        from ...modelpack import load_pack

        path = str(self.models or config.get("model_pack") or "")
        with self._lock:
            if path in self._packs:
                return self._packs[path]
        pack = load_pack(path or None)
        with self._lock:
            self._packs[path] = pack
        return pack


def _slice_by_uid(study: Any, sop: str) -> Any:
    for s in study.series:
        for ref in s.all_slices():
            if ref.sop_instance_uid == sop:
                return ref
    return None


def _sagittal_ref(study: Any, report: dict[str, Any]) -> Any:
    sag = report.get("sagittal") or {}
    uid, k = sag.get("series_instance_uid"), sag.get("slice_index")
    if uid is None or k is None:
        return None
    for s in study.series:
        if s.series_instance_uid == uid and s.blocks:
            block = max(s.blocks, key=len)
            if 0 <= int(k) < len(block.slices):
                return block.slices[int(k)]
    return None


def level_slice(sources: Sources, root: StudyRoot, sid: str, level: str) -> Any:
    """The SliceRef of ``level``'s axial slice (:class:`NotFound` when unreachable)."""
    folder = root.folder(sid)
    report = root.report(sid)
    rec = next((r for r in report.get("levels", []) if r.get("level") == parse_level(level)), None)
    if rec is None:
        raise NotFound("no such level in this study")
    src, why, _ = sources.locate(folder)
    if src is None:
        raise NotFound(why)
    ref = _slice_by_uid(sources.study(src), rec["axial_sop_instance_uid"])
    if ref is None:
        raise NotFound("the study no longer holds this level's axial slice")
    return ref


def axial_slice(sources: Sources, root: StudyRoot, sid: str, sop: str) -> Any:
    """Any slice of the study's axial series (a candidate while a landmark is dragged)."""
    folder = root.folder(sid)
    report = root.report(sid)
    series_uids = {r.get("axial_series_instance_uid") for r in report.get("levels", [])}
    src, why, _ = sources.locate(folder)
    if src is None:
        raise NotFound(why)
    for s in sources.study(src).series:
        if s.series_instance_uid in series_uids:
            for ref in s.all_slices():
                if ref.sop_instance_uid == sop:
                    return ref
    raise NotFound("no such axial slice in this study")


def sagittal_pixels(sources: Sources, root: StudyRoot, sid: str) -> np.ndarray:
    """The sagittal slice as displayed (head up, anterior left), float32."""
    from ...levels.mid_sagittal import display_transform, to_display

    folder = root.folder(sid)
    src, why, _ = sources.locate(folder)
    if src is None:
        raise NotFound(why)
    ref = _sagittal_ref(sources.study(src), root.report(sid))
    if ref is None:
        raise NotFound("no sagittal slice in this analysis")
    g = ref.geometry
    return to_display(np.asarray(ref.pixels(), np.float32), display_transform(g.row_cosine, g.col_cosine))


def study_detail(sources: Sources, root: StudyRoot, sid: str) -> dict[str, Any]:
    """Everything the study page shows but the pixels (which it fetches by the URLs given)."""
    from ...levels.names import level_dirname
    from ...measurements import MEASUREMENT_DEFINITIONS
    from ...report.views import edge_letters, sagittal_view
    from ...signoff import FINDING_CHOICES, study_status

    folder = root.folder(sid)
    report = root.report(sid)
    src, why, config = sources.locate(folder)
    study = None
    if src is not None:
        try:
            study = sources.study(src)
        except Exception as e:  # an unreadable study: the page says so
            why = f"the analyzed study {str(src)!r} cannot be read ({type(e).__name__}: {e})"
    base = f"/api/studies/{sid}"
    flags = needs_review(report)
    levels = []
    axial_geoms = {}
    for rec in report.get("levels", []):
        level = rec["level"]
        name = level_dirname(level)
        ref = _slice_by_uid(study, rec["axial_sop_instance_uid"]) if study is not None else None
        info: dict[str, Any] = {
            "level": level,
            "id": name,
            "labels_url": f"{base}/levels/{name}/labels",
            "picture_url": f"{base}/levels/{name}/picture" if (folder / "overlays" / f"{name}.png").is_file() else None,
            "image_url": None,
            "needs_review": flags.get(level, []),
            "sop_instance_uid": rec.get("axial_sop_instance_uid"),
        }
        if ref is not None:
            g = ref.geometry
            axial_geoms[level] = g
            info.update(image_url=f"{base}/levels/{name}/image", shape=[g.rows, g.columns],
                        spacing=[float(v) for v in g.pixel_spacing], edges=edge_letters(g))
        levels.append(info)
    sag = None
    if study is not None:
        ref = _sagittal_ref(study, report)
        if ref is not None:
            lms = {lv: (v["row"], v["col"]) for lv, v in ((report.get("sagittal") or {}).get("landmarks") or {}).items()
                   if isinstance(v, dict) and v.get("row") is not None}
            series_uids = {r.get("axial_series_instance_uid") for r in report.get("levels", [])}
            cands = [(r.sop_instance_uid, r.geometry) for s in study.series if s.series_instance_uid in series_uids
                     for r in s.all_slices()]
            sag = sagittal_view(None, ref.geometry, lms, axial_geoms, cands)
            sag["image_url"] = f"{base}/sagittal"
            g = ref.geometry
            sag["geometry"] = {"position": [float(v) for v in g.position],
                               "row_cosine": [float(v) for v in g.row_cosine],
                               "col_cosine": [float(v) for v in g.col_cosine],
                               "pixel_spacing": [float(v) for v in g.pixel_spacing]}
    if sag is None and (report.get("sagittal") or {}).get("landmarks") and study is None:
        sag_note = "the sagittal slice needs the analyzed study"
    elif sag is None:
        sag_note = "no landmarks on a sagittal series in this analysis (axial slices chosen per block)"
    else:
        sag_note = None
    definitions = {**MEASUREMENT_DEFINITIONS, **(report.get("definitions") or {})}
    from .storage import _patient

    return {
        "id": sid,
        "patient": _patient(folder),
        "status": study_status(report),
        "report": report,
        "definitions": definitions,
        "source": {"path": str(src) if src else config.get("input"), "reachable": study is not None,
                   "message": None if study is not None else why},
        "editable": study is not None,
        "levels": levels,
        "sagittal": sag,
        "sagittal_note": sag_note,
        "needs_review": flags,
        "choices": {k: list(v) for k, v in FINDING_CHOICES.items()},
        "files": {"html": f"{base}/files/report.html", "json": f"{base}/files/report.json",
                  "sr": f"{base}/files/sr.dcm" if (folder / "sr.dcm").is_file() else None},
    }
