"""Corrections: recompute one level of an ``analyze`` output.

* :func:`regrade`: from an edited mask (a label-map PNG or array, or a DICOM SEG): the dural sac
  (label 1) and disc (label 2) of the level's axial slice give new measurements, facet / foramen
  boxes, tree grade and CNN findings. With ``regions="reader"`` the facet and foramen regions the
  reader drew (labels 3-6) are kept, and the boxes and CNN findings follow them.
* :func:`reslice`: the level's disc landmark moved on the sagittal slice: the axial slice whose
  plane is nearest the new point is segmented and graded instead.

Both rewrite ``report.json``, ``report.html``, the overlays, the label map, the DICOM SEG and SR.
The previous outputs are moved, unchanged, to ``OUT/history/<timestamp>/`` (crash-safe, see
:mod:`lumbargrade.report.history`) and ``report.json`` gains a ``"history"`` entry ``{"when", "by",
"level", "reason", "previous", "source"}``; the changed level's record gets ``"regraded": {"when",
"by", "source", "model_pack"}``. A signed report (:mod:`lumbargrade.signoff`) loses its signature
when it changes (the history entry keeps it).

The images are re-read from the study recorded in ``OUT/config.json`` (``"input"``; or a folder
given with ``sources``), each slice found by its SOPInstanceUID; the other levels keep their
results (masks from their label maps).
"""

from __future__ import annotations

import copy
import datetime as _dt
import json
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any

import numpy as np

from .errors import InputError

__all__ = [
    "REGION_LABELS",
    "Analysis",
    "check_label_map",
    "history_entry",
    "level_label_map",
    "load_analysis",
    "read_label_map",
    "read_label_png",
    "read_output_folder",
    "read_seg_masks",
    "rebuild_result",
    "recompute_level",
    "regrade",
    "reslice",
    "study_source",
    "write_version",
]

_FINDING_KEYS = ("central_canal", "foramen_left", "foramen_right", "facet_left", "facet_right")

#: Label values of the facet and foramen regions in a label map (docs/architecture.md).
REGION_LABELS = {"facet_left": 3, "facet_right": 4, "foramen_left": 5, "foramen_right": 6}

#: Record keys a level keeps when its masks or slice change (the reader's own statements).
_KEPT_KEYS = ("reader",)


def read_label_png(path: str | Path, shape: tuple[int, int]) -> tuple[np.ndarray, np.ndarray]:
    """(dural sac, disc) boolean masks from a label-map PNG (1 = dural sac, 2 = disc; other values
    ignored) that must be ``shape`` (rows, cols) of the slice."""
    lab = read_label_map(path, shape)
    return lab == 1, lab == 2


def read_label_map(path: str | Path, shape: tuple[int, int]) -> np.ndarray:
    """A label-map PNG as uint8 ``[rows, cols]`` (must be ``shape``, the slice's; must hold a dural
    sac (1) or a disc (2))."""
    from PIL import Image, UnidentifiedImageError

    p = Path(path)
    if not p.is_file():
        raise InputError(p, "labels file not found")
    try:
        with Image.open(p) as im:
            if im.mode not in ("L", "P", "I", "I;16", "I;16B", "1"):
                raise InputError(
                    p, f"not a label map: expected a single-channel 8-bit PNG, got mode {im.mode}"
                )
            arr = np.asarray(im)
    except (UnidentifiedImageError, OSError) as e:
        raise InputError(p, f"not a readable image ({e})") from None
    return check_label_map(arr, shape, p)


def check_label_map(arr: np.ndarray, shape: tuple[int, int], where: Any) -> np.ndarray:
    """``arr`` as uint8 after checking its shape against the slice's and that it holds a dural sac
    or a disc."""
    arr = np.asarray(arr)
    if arr.ndim != 2 or arr.shape != tuple(shape):
        got = "x".join(str(v) for v in arr.shape)
        raise InputError(where, f"label map is {got}, the axial slice is {shape[0]}x{shape[1]}")
    if arr.dtype.kind not in "iub" or (arr.size and (arr.min() < 0 or arr.max() > 255)):
        raise InputError(where, "label map must hold integer values 0-255")
    arr = arr.astype(np.uint8)
    if not (arr == 1).any() and not (arr == 2).any():
        raise InputError(where, "no dural sac (label 1) and no disc (label 2) in the label map")
    return arr


def _pick_segment(seg: Any, level: str, what: str) -> int | None:
    """Number of the segment holding ``what`` ('dural sac' / 'disc') for ``level``: the label
    ``"<level> <what>"`` (as lumbargrade writes it) first, else a label that is just ``what``."""
    labels = {
        int(d.SegmentNumber): str(d.SegmentLabel).strip().lower() for d in seg.SegmentSequence
    }
    for n, lab in labels.items():
        if lab == f"{level.lower()} {what}":
            return n
    plain = [n for n, lab in labels.items() if lab == what]
    return plain[0] if len(plain) == 1 else None


def read_seg_masks(
    path: str | Path, level: str, sop_instance_uid: str, shape: tuple[int, int]
) -> tuple[np.ndarray, np.ndarray]:
    """(dural sac, disc) masks of one slice from an edited DICOM SEG: segments labelled
    ``"<level> dural sac"`` / ``"<level> disc"`` (or just ``"dural sac"`` / ``"disc"``), on the frame
    derived from the slice ``sop_instance_uid``."""
    import highdicom as hd

    p = Path(path)
    if not p.is_file():
        raise InputError(p, "SEG file not found")
    try:
        seg = hd.seg.segread(p)
    except Exception as e:  # pydicom / highdicom raise many kinds
        raise InputError(
            p, f"not a readable DICOM Segmentation ({type(e).__name__}: {e})"
        ) from None
    nums = {w: _pick_segment(seg, level, w) for w in ("dural sac", "disc")}
    if all(v is None for v in nums.values()):
        raise InputError(p, f"no segment labelled '{level} dural sac' or '{level} disc'")
    out = []
    for what in ("dural sac", "disc"):
        n = nums[what]
        if n is None:
            out.append(np.zeros(shape, bool))
            continue
        try:
            arr = seg.get_pixels_by_source_instance([sop_instance_uid], segment_numbers=[n])
        except (KeyError, ValueError, IndexError) as e:
            raise InputError(
                p,
                f"the SEG has no frame of segment {n} on the {level} slice "
                f"(SOPInstanceUID {sop_instance_uid}): {e}",
            ) from None
        m = np.asarray(arr)[0, ..., 0] > 0
        if m.shape != tuple(shape):
            raise InputError(p, f"segment frame is {m.shape}, the axial slice is {shape}")
        out.append(m)
    return out[0], out[1]


def _find_slice(study: Any, series_uid: str, sop_uid: str, where: str) -> Any:
    for s in study.series:
        if s.series_instance_uid != series_uid:
            continue
        for ref in s.all_slices():
            if ref.sop_instance_uid == sop_uid:
                return ref
    for s in study.series:  # the series UID may differ (e.g. split series); the SOP UID is unique
        for ref in s.all_slices():
            if ref.sop_instance_uid == sop_uid:
                return ref
    raise InputError(where, f"the study no longer holds the axial slice SOPInstanceUID {sop_uid}")


def _context_of(study: Any, ref: Any) -> tuple[Any, Any] | None:
    """The slices below and above ``ref`` in its series (:func:`lumbargrade.pipeline.context_refs`)."""
    from .pipeline import context_refs

    for s in study.series:
        if any(r is ref for r in s.all_slices()):
            return context_refs(s, ref)
    return None


def rebuild_result(out: Path, study: Any, report: dict[str, Any]) -> Any:
    """A :class:`~lumbargrade.pipeline.StudyResult` from an output folder: images re-read from
    ``study``, masks from the label maps (1 dural sac, 2 disc), the rest from ``report``."""
    from PIL import Image

    from .levels.names import level_dirname
    from .pipeline import LevelResult, StudyResult

    levels = []
    for rec in report.get("levels", []):
        ref = _find_slice(
            study, rec["axial_series_instance_uid"], rec["axial_sop_instance_uid"], str(out)
        )
        image = np.asarray(ref.pixels(), dtype=np.float32)
        lab_path = out / rec.get("label_map", f"levels/{level_dirname(rec['level'])}/labels.png")
        if lab_path.is_file():
            lab = np.asarray(Image.open(lab_path))
        else:
            lab = np.zeros(image.shape, np.uint8)
        levels.append(
            LevelResult(
                level=rec["level"],
                series_instance_uid=rec["axial_series_instance_uid"],
                sop_instance_uid=rec["axial_sop_instance_uid"],
                geometry=ref.geometry,
                image=image,
                slice_choice=rec.get("slice_choice") or {},
                sac_mask=lab == 1,
                disc_mask=lab == 2,
                measurements=dict(rec.get("measurements") or {}),
                boxes=dict(rec.get("boxes") or {}),
                findings={k: copy.deepcopy(rec[k]) for k in _FINDING_KEYS if k in rec},
                warnings=list(rec.get("warnings") or []),
                source=ref,
                # the facet/foramen regions are in the label map (values 3-6) when the image
                # localiser or a reader drew them (with a rule's boxes they are filled boxes)
                regions=(np.where(np.isin(lab, (3, 4, 5, 6)), lab, 0).astype(np.uint8)
                         if rec.get("boxes_source") == "image" or rec.get("regions_source") == "reader" else None),
                review_reasons=list(rec.get("review_reasons") or []),
                boxes_source=rec.get("boxes_source"),
                context_refs=_context_of(study, ref),
            )
        )
        if rec.get("regions_source") == "reader":
            levels[-1].regions_source = "reader"
    res = StudyResult(
        study_instance_uid=report.get("study_instance_uid"),
        levels=levels,
        warnings=list(report.get("warnings") or []),
        sagittal=report.get("sagittal"),
        timings_s=dict(report.get("timings_s") or {}),
    )
    return res


def _bbox(mask: np.ndarray) -> list[int] | None:
    """``[row0, col0, row1, col1]`` (end-exclusive) of a mask's pixels, or None when empty."""
    rows, cols = np.nonzero(mask)
    if not len(rows):
        return None
    return [int(rows.min()), int(cols.min()), int(rows.max()) + 1, int(cols.max()) + 1]


def recompute_level(
    lv: Any,
    sac: np.ndarray,
    disc: np.ndarray,
    pack: Any,
    config: Any,
    regions: dict[str, np.ndarray] | None = None,
) -> None:
    """Replace ``lv``'s masks and recompute its measurements, boxes and grades (as the pipeline
    does: :func:`lumbargrade.measurements.measure_level`, :mod:`lumbargrade.boxes`, the pack's
    tree and CNN classifiers). ``regions`` (``{"facet_left": mask, ...}`` on the stored grid, the
    reader's facet / foramen regions) replace the level's regions; the boxes are then their
    bounding boxes (box source ``image``). A reader's masks are not put through the plausibility
    gate (``review_reasons`` cleared)."""
    from .pipeline import grade_levels, measure_and_localize

    lv.sac_mask, lv.disc_mask = np.asarray(sac, bool), np.asarray(disc, bool)
    lv.warnings = []
    lv.review_reasons = []
    boxes = getattr(config, "boxes", "auto")
    if regions is not None:
        reg = np.zeros(lv.image.shape, np.uint8)
        for k, v in REGION_LABELS.items():
            m = regions.get(k)
            if m is not None:
                reg[np.asarray(m, bool) & (reg == 0)] = v
        lv.regions = reg
        lv.regions_source = "reader"
        boxes = "image"
    elif getattr(lv, "regions_source", None) == "reader":  # the reader's regions not kept: the pack's placement
        lv.regions, lv.regions_source = None, None
    # a reader's regions stand as drawn: a side without one gets no box
    measure_and_localize(lv, pack, boxes, fill_missing=regions is None)
    has_cnn = any(
        pack.get(f"classifier_{t}") is not None
        for t in ("central", "central_binary", "foramen", "facet")
    )
    old = {k: v for k, v in lv.findings.items() if k != "central_canal"}
    lv.findings = dict(old)
    grade_levels([lv], pack, config)
    if not has_cnn and old:
        lv.warnings.append(
            "CNN findings not recomputed (the model pack has no classifiers): foramen/facet "
            "results are from before the edit"
        )


def level_label_map(lv: Any) -> np.ndarray:
    """uint8 label map of a level (:meth:`LevelResult.label_map`: the reader's facet / foramen
    regions when it has them, see :func:`recompute_level`)."""
    return lv.label_map().astype(np.uint8)


def _analysis_config(cfg: dict[str, Any]) -> Any:
    from .pipeline import AnalysisConfig

    known = {f.name for f in fields(AnalysisConfig)}
    return AnalysisConfig(**{k: v for k, v in (cfg.get("analysis") or {}).items() if k in known})


def _attach_sagittal(result: Any, study: Any, report: dict[str, Any]) -> None:
    """Give the HTML writer the sagittal slice without re-reading the study."""
    sag = report.get("sagittal") or {}
    uid, k = sag.get("series_instance_uid"), sag.get("slice_index")
    if uid is None or k is None:
        return
    for s in study.series:
        if s.series_instance_uid == uid and s.blocks:
            block = max(s.blocks, key=len)
            if 0 <= int(k) < len(block.slices):
                result.sagittal_slice = block.slices[int(k)]
            return


def study_source(out: Path, config: dict[str, Any], sources: str | Path | None = None) -> Path | None:
    """The analyzed study recorded in ``config.json`` (``"input"``), if it is still there; else,
    with ``sources`` (a folder), the entry of that name in it; else None."""
    recorded = config.get("input")
    if not recorded:
        return None
    p = Path(recorded)
    candidates = [p]
    if sources is not None:
        candidates += [Path(sources) / p.name]
        if not p.is_absolute():
            candidates.append(Path(sources) / p)
    return next((c for c in candidates if c.exists()), None)


@dataclass
class Analysis:
    """An ``analyze`` output folder loaded for a change: its report and resolved config, the study
    it came from (re-read), the model pack, and the :class:`~lumbargrade.pipeline.StudyResult`
    rebuilt from them."""

    out: Path
    report: dict[str, Any]
    config: dict[str, Any]
    source: Path
    study: Any
    pack: Any
    result: Any

    def level_index(self, level: str) -> int:
        idx = next(
            (i for i, r in enumerate(self.report.get("levels", [])) if r.get("level") == level), None
        )
        if idx is None:
            have = ", ".join(r.get("level", "?") for r in self.report.get("levels", [])) or "none"
            raise InputError(self.out, f"no level {level} in report.json (levels: {have})")
        return idx


def read_output_folder(out: str | Path) -> tuple[dict[str, Any], dict[str, Any]]:
    """``(report, config)`` of an ``analyze`` output folder (an interrupted change is finished
    first, see :func:`lumbargrade.report.history.recover`)."""
    from .report.history import recover

    out = Path(out)
    rp, cp = out / "report.json", out / "config.json"
    if not out.is_dir() or not rp.is_file() or not cp.is_file():
        raise InputError(out, "not an analyze output folder (report.json and config.json needed)")
    recover(out)
    try:
        return json.loads(rp.read_text()), json.loads(cp.read_text())
    except json.JSONDecodeError as e:
        raise InputError(out, f"report.json or config.json is not valid JSON ({e.msg})") from None


def load_analysis(
    out: str | Path,
    *,
    models: str | Path | None = None,
    pack: Any = None,
    study: Any = None,
    source: str | Path | None = None,
    sources: str | Path | None = None,
) -> Analysis:
    """Load ``out`` for a change. ``pack`` / ``study`` (already loaded) are used as given; else
    the pack is ``models`` or the one the analysis used, and the study is ``source`` or the one
    recorded in ``config.json`` (see :func:`study_source`)."""
    from .io import read_study
    from .modelpack import load_pack

    out = Path(out)
    report, config = read_output_folder(out)
    src = Path(source) if source is not None else study_source(out, config, sources)
    if src is None or not src.exists():
        raise InputError(
            out / "config.json",
            f"the analyzed study {str(source or config.get('input'))!r} is not there any more; "
            "its images are needed for this change",
        )
    if pack is None:
        pack = load_pack(models if models is not None else config.get("model_pack"))
    if study is None:
        study = read_study(src)
    result = rebuild_result(out, study, report)
    _attach_sagittal(result, study, report)
    return Analysis(out=out, report=report, config=config, source=src, study=study, pack=pack,
                    result=result)


def _check_by(by: str | None) -> str:
    by = " ".join((by or "").split())
    if not by:
        raise InputError(None, "--by NAME is required (who made the change)")
    return by


def _check_level(level: str) -> str:
    from .levels.names import level_from_dirname

    try:
        return level_from_dirname(level)
    except ValueError as e:
        raise InputError(level, str(e)) from None


def history_entry(new: dict[str, Any], entry: dict[str, Any]) -> dict[str, Any]:
    """Append ``entry`` to ``new["history"]``; a signature the report carried is withdrawn by the
    change and kept in the entry."""
    signed = new.pop("signed", None)
    if signed and entry.get("reason") != "signed off":
        entry["signature_withdrawn"] = signed
    new["history"] = list(new.get("history") or []) + [entry]
    return entry


def write_version(
    an: Analysis,
    new: dict[str, Any],
    stamp: str,
    changed_levels: list[Any] = (),
    writers: tuple[str, ...] = ("seg", "sr", "html"),
) -> dict[str, Any]:
    """Write ``new`` (the new report.json) and what follows from it as a new version of
    ``an.out`` (the old one kept in ``history/<stamp>/``): the label maps of ``changed_levels``,
    then the ``writers`` (``seg``, ``sr``, ``html``) from ``an.result``."""
    from PIL import Image

    from .levels.names import level_dirname
    from .report.dicom_seg import write_seg
    from .report.dicom_sr import write_sr
    from .report.history import commit_version
    from .report.html_report import write_html
    from .report.json_report import _json_default, _run_writers

    if "seg" in writers:
        new.pop("dicom", None)  # the SEG writer starts it again
    elif new.get("dicom"):  # keep what the SEG writer recorded; the SR is written again
        new["dicom"] = {k: v for k, v in new["dicom"].items() if k == "seg"}
    chosen = [w for k, w in (("seg", write_seg), ("sr", write_sr), ("html", write_html)) if k in writers]

    def build(staging: Path) -> None:
        for lv in changed_levels:
            rel = f"levels/{level_dirname(lv.level)}/labels.png"
            (staging / rel).parent.mkdir(parents=True, exist_ok=True)
            Image.fromarray(level_label_map(lv), mode="L").save(staging / rel)
        _run_writers(chosen, an.result, staging, new, final=an.out)
        (staging / "report.json").write_text(json.dumps(new, indent=2, default=_json_default) + "\n")

    commit_version(an.out, build, stamp=stamp)
    an.report = new
    return new


def _new_level_record(an: Analysis, idx: int, lv: Any, regraded: dict[str, Any]) -> dict[str, Any]:
    from .levels.names import level_dirname

    old = an.report["levels"][idx]
    rec = lv.to_record(f"levels/{level_dirname(lv.level)}/labels.png")
    for k in _KEPT_KEYS:
        if k in old:
            rec[k] = copy.deepcopy(old[k])
    if getattr(lv, "regions_source", None) == "reader":
        rec["regions_source"] = "reader"
    rec["regraded"] = regraded
    return rec


def regrade(
    out: str | Path,
    level: str,
    *,
    labels: str | Path | np.ndarray | None = None,
    seg: str | Path | None = None,
    by: str,
    models: str | Path | None = None,
    reason: str | None = None,
    now: _dt.datetime | None = None,
    regions: str = "recompute",
    via: str | None = None,
    pack: Any = None,
    study: Any = None,
    source: str | Path | None = None,
    sources: str | Path | None = None,
) -> dict[str, Any]:
    """Regrade ``level`` of the analysis in ``out`` from an edited label map (``labels``: a PNG
    path or a uint8 ``[rows, cols]`` array) or SEG (``seg``); returns the new report.

    ``regions``: ``"recompute"`` (the facet / foramen boxes follow the edited masks by the pack's
    rule) or ``"reader"`` (the regions drawn with labels 3-6 are kept). ``via`` names where an
    array came from (history). ``pack``, ``study``, ``source``, ``sources``: see
    :func:`load_analysis`. See the module docstring."""
    from .report.history import new_timestamp

    out = Path(out)
    read_output_folder(out)
    if (labels is None) == (seg is None):
        raise InputError(None, "give exactly one of --labels EDITED.png or --seg EDITED_SEG.dcm")
    if regions not in ("recompute", "reader"):
        raise InputError("regions", f"must be 'recompute' or 'reader', got {regions!r}")
    if regions == "reader" and seg is not None:
        raise InputError(seg, "the reader's facet / foramen regions come from a label map, not a SEG")
    by = _check_by(by)
    level = _check_level(level)
    if isinstance(labels, (str, Path)) and not Path(labels).is_file():
        raise InputError(labels, "labels file not found")
    an = load_analysis(out, models=models, pack=pack, study=study, source=source, sources=sources)
    idx = an.level_index(level)
    lv = an.result.levels[idx]
    shape = lv.image.shape
    lab = None
    if isinstance(labels, np.ndarray):
        lab = check_label_map(labels, shape, via or "label map")
        source_text = f"{via or 'label map'}"
    elif labels is not None:
        lab = read_label_map(labels, shape)
        source_text = f"labels {Path(labels).name}"
    if lab is not None:
        sac, disc = lab == 1, lab == 2
    else:
        sac, disc = read_seg_masks(seg, level, lv.sop_instance_uid, shape)
        source_text = f"SEG {Path(seg).name}"
    reader_regions = None
    if regions == "reader":
        reader_regions = {k: lab == v for k, v in REGION_LABELS.items()}
    recompute_level(lv, sac, disc, an.pack, _analysis_config(an.config), regions=reader_regions)

    now = now or _dt.datetime.now(_dt.UTC)
    when = now.isoformat(timespec="seconds")
    ts = new_timestamp(out, now)
    new = copy.deepcopy(an.report)
    new["levels"][idx] = _new_level_record(
        an, idx, lv, {"when": when, "by": by, "source": source_text, "model_pack": an.pack.label}
    )
    history_entry(new, {
        "when": when,
        "by": by,
        "level": level,
        "reason": reason or f"mask edited ({source_text})",
        "previous": f"history/{ts}",
        "source": source_text,
        "model_pack": an.pack.label,
    })
    return write_version(an, new, ts, [lv])


def reslice(
    out: str | Path,
    level: str,
    *,
    row: float,
    col: float,
    by: str,
    models: str | Path | None = None,
    reason: str | None = None,
    now: _dt.datetime | None = None,
    pack: Any = None,
    study: Any = None,
    source: str | Path | None = None,
    sources: str | Path | None = None,
) -> dict[str, Any]:
    """Move ``level``'s disc landmark to ``(row, col)`` (pixels of the sagittal slice the
    landmarks were found on, as stored) and analyze the axial slice nearest the new point
    instead (segmentation, measurements, boxes, grades); returns the new report. When that slice
    is the one already chosen, nothing changes and the report is returned as it is."""
    from .levels.slice_choice import slice_for_point
    from .pipeline import LevelResult
    from .report.history import new_timestamp

    out = Path(out)
    read_output_folder(out)
    by = _check_by(by)
    level = _check_level(level)
    try:
        row, col = float(row), float(col)
    except (TypeError, ValueError):
        raise InputError("landmark", f"row and column must be numbers, got {row!r}, {col!r}") from None
    if not (np.isfinite(row) and np.isfinite(col)):
        raise InputError("landmark", "row and column must be finite numbers")
    an = load_analysis(out, models=models, pack=pack, study=study, source=source, sources=sources)
    idx = an.level_index(level)
    old = an.result.levels[idx]
    sag_ref = getattr(an.result, "sagittal_slice", None)
    if sag_ref is None:
        raise InputError(out, "the analysis has no sagittal slice with landmarks: the axial slice "
                              "cannot be chosen by moving a landmark")
    g = sag_ref.geometry
    if not (-0.5 <= row <= g.rows - 0.5 and -0.5 <= col <= g.columns - 0.5):
        raise InputError("landmark", f"({row:.1f}, {col:.1f}) lies outside the sagittal slice "
                                     f"({g.rows} x {g.columns} pixels)")
    point = g.pixel_to_patient(np.array([row, col]))
    series = next((s for s in an.study.series if s.series_instance_uid == old.series_instance_uid),
                  None) or an.study.find("axial_t2")
    if series is None:
        raise InputError(an.source, "no axial series found in the study")
    hit = slice_for_point(point, series.block_geometries())
    if hit is None:
        raise InputError(level, f"no axial slice's field of view contains the point "
                                f"({row:.1f}, {col:.1f}) of the sagittal slice")
    b, k, d = hit
    ref = series.blocks[b].slices[k]
    if ref.sop_instance_uid == old.sop_instance_uid:
        return an.report
    segmenter = an.pack.get("segmentation")
    if segmenter is None:
        raise InputError(an.pack.path, "model pack has no segmentation model")
    cfg = _analysis_config(an.config)
    rec_choice = {"method": "reader", "distance_mm": round(float(d), 3),
                  "landmark_patient_mm": [round(float(v), 3) for v in point], "by": by}
    lv = LevelResult(level=level, series_instance_uid=series.series_instance_uid,
                     sop_instance_uid=ref.sop_instance_uid, geometry=ref.geometry,
                     image=np.asarray(ref.pixels(), dtype=np.float32), slice_choice=rec_choice,
                     findings={k2: v for k2, v in old.findings.items() if k2 != "central_canal"},
                     source=ref)
    from .pipeline import (
        context_refs,
        correct_fat_shift,
        grade_levels,
        measure_and_localize,
        segment_levels,
    )

    lv.context_refs = context_refs(series, ref)

    segment_levels([lv], segmenter, cfg)  # canonical view, regions, plausibility gate, as analyze does
    correct_fat_shift([lv], an.pack.get("fat_shift") if cfg.fat_shift_correction else None)
    measure_and_localize(lv, an.pack, cfg.boxes)
    grade_levels([lv], an.pack, cfg)
    if abs(d) > cfg.max_landmark_distance_mm:
        lv.warnings.append(f"nearest axial slice is {abs(d):.1f} mm from the disc centre")
    an.result.levels[idx] = lv

    now = now or _dt.datetime.now(_dt.UTC)
    when = now.isoformat(timespec="seconds")
    ts = new_timestamp(out, now)
    text = f"axial slice chosen by moving the landmark ({old.sop_instance_uid} -> {ref.sop_instance_uid})"
    new = copy.deepcopy(an.report)
    new["levels"][idx] = _new_level_record(
        an, idx, lv, {"when": when, "by": by, "source": text, "model_pack": an.pack.label}
    )
    sag = new.setdefault("sagittal", {}) or {}
    lms = sag.setdefault("landmarks", {})
    lms[level] = {"row": round(row, 2), "col": round(col, 2),
                  "patient_mm": [round(float(v), 3) for v in point], "moved_by": by}
    an.result.sagittal = sag
    history_entry(new, {
        "when": when,
        "by": by,
        "level": level,
        "reason": reason or "landmark moved: another axial slice",
        "previous": f"history/{ts}",
        "source": text,
        "model_pack": an.pack.label,
    })
    return write_version(an, new, ts, [lv])
