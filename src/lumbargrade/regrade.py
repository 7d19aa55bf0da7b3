"""Corrections: recompute one level of an ``analyze`` output from edited masks.

``regrade(out, level, labels=EDITED.png | seg=EDITED_SEG.dcm, by=NAME)`` reads the edited dural
sac (label 1) and disc (label 2) of the level's axial slice, recomputes the measurements, the
facet / foramen boxes, the tree grade and the CNN findings (their inputs are the image, the sac
mask and the boxes), and rewrites ``report.json``, ``report.html``, the overlays, the label map,
the DICOM SEG and SR. The previous outputs are moved, unchanged, to ``OUT/history/<timestamp>/``
and ``report.json`` gains a ``"history"`` entry ``{"when", "by", "level", "reason", "previous",
"source"}``; the regraded level's record gets ``"regraded": {"when", "by", "source", "model_pack"}``.

The image is re-read from the study recorded in ``OUT/config.json`` (``"input"``), the slice found
by its SOPInstanceUID; the other levels keep their results (masks from their label maps).
"""

from __future__ import annotations

import copy
import datetime as _dt
import json
import shutil
from dataclasses import fields
from pathlib import Path
from typing import Any

import numpy as np

from .errors import InputError

__all__ = ["read_label_png", "read_seg_masks", "rebuild_result", "recompute_level", "regrade"]

_FINDING_KEYS = ("central_canal", "foramen_left", "foramen_right", "facet_left", "facet_right")


def read_label_png(path: str | Path, shape: tuple[int, int]) -> tuple[np.ndarray, np.ndarray]:
    """(dural sac, disc) boolean masks from a label-map PNG (1 = dural sac, 2 = disc; other values
    ignored) that must be ``shape`` (rows, cols) of the slice."""
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
    if arr.shape != tuple(shape):
        raise InputError(
            p,
            f"label map is {arr.shape[0]}x{arr.shape[1]}, the axial slice is {shape[0]}x{shape[1]}",
        )
    sac, disc = arr == 1, arr == 2
    if not sac.any() and not disc.any():
        raise InputError(p, "no dural sac (label 1) and no disc (label 2) in the label map")
    return sac, disc


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
            )
        )
    res = StudyResult(
        study_instance_uid=report.get("study_instance_uid"),
        levels=levels,
        warnings=list(report.get("warnings") or []),
        sagittal=report.get("sagittal"),
        timings_s=dict(report.get("timings_s") or {}),
    )
    return res


def recompute_level(lv: Any, sac: np.ndarray, disc: np.ndarray, pack: Any, config: Any) -> None:
    """Replace ``lv``'s masks and recompute its measurements, boxes and grades (as the pipeline
    does: :func:`lumbargrade.measurements.measure_level`, :func:`lumbargrade.localization.boxes_from_masks`,
    the pack's tree and CNN classifiers)."""
    from .pipeline import grade_levels, measure_and_localize

    lv.sac_mask, lv.disc_mask = np.asarray(sac, bool), np.asarray(disc, bool)
    lv.warnings = []
    measure_and_localize(lv, pack)
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


def _timestamp(now: _dt.datetime, hist_root: Path) -> str:
    base = now.strftime("%Y%m%dT%H%M%S%fZ")
    name, i = base, 1
    while (hist_root / name).exists():
        i += 1
        name = f"{base}-{i}"
    return name


def regrade(
    out: str | Path,
    level: str,
    *,
    labels: str | Path | None = None,
    seg: str | Path | None = None,
    by: str,
    models: str | Path | None = None,
    reason: str | None = None,
    now: _dt.datetime | None = None,
) -> dict[str, Any]:
    """Regrade ``level`` of the analysis in ``out`` from an edited label map (``labels``) or SEG
    (``seg``); returns the new report. See the module docstring."""
    from PIL import Image

    from .io import read_study
    from .levels.names import level_dirname, level_from_dirname
    from .modelpack import load_pack
    from .report.dicom_seg import write_seg
    from .report.json_report import call_writer
    from .report.dicom_sr import write_sr
    from .report.html_report import write_html
    from .report.json_report import _json_default

    out = Path(out)
    rp, cp = out / "report.json", out / "config.json"
    if not rp.is_file() or not cp.is_file():
        raise InputError(out, "not an analyze output folder (report.json and config.json needed)")
    if (labels is None) == (seg is None):
        raise InputError(None, "give exactly one of --labels EDITED.png or --seg EDITED_SEG.dcm")
    by = (by or "").strip()
    if not by:
        raise InputError(None, "--by NAME is required (who edited the mask)")
    try:
        level = level_from_dirname(level)
    except ValueError as e:
        raise InputError(level, str(e)) from None
    try:
        report = json.loads(rp.read_text())
        config = json.loads(cp.read_text())
    except json.JSONDecodeError as e:
        raise InputError(out, f"report.json or config.json is not valid JSON ({e.msg})") from None
    idx = next((i for i, r in enumerate(report.get("levels", [])) if r.get("level") == level), None)
    if idx is None:
        have = ", ".join(r.get("level", "?") for r in report.get("levels", [])) or "none"
        raise InputError(out, f"no level {level} in report.json (levels: {have})")
    input_path = config.get("input")
    if not input_path or not Path(input_path).exists():
        raise InputError(
            cp,
            f"the analyzed study {input_path!r} is not there any more; the image is needed to regrade",
        )
    pack = load_pack(models if models is not None else config.get("model_pack"))

    study = read_study(input_path)
    result = rebuild_result(out, study, report)
    lv = result.levels[idx]
    shape = lv.image.shape
    if labels is not None:
        sac, disc = read_label_png(labels, shape)
        source = f"labels {Path(labels).name}"
    else:
        sac, disc = read_seg_masks(seg, level, lv.sop_instance_uid, shape)
        source = f"SEG {Path(seg).name}"
    recompute_level(lv, sac, disc, pack, _analysis_config(config))
    _attach_sagittal(result, study, report)

    now = now or _dt.datetime.now(_dt.UTC)
    when = now.isoformat(timespec="seconds")
    hist_root = out / "history"
    ts = _timestamp(now, hist_root)
    lab_rel = f"levels/{level_dirname(level)}/labels.png"
    new = copy.deepcopy(report)
    rec = lv.to_record(lab_rel)
    rec["regraded"] = {"when": when, "by": by, "source": source, "model_pack": pack.label}
    new["levels"][idx] = rec
    new.pop("dicom", None)
    new["history"] = list(report.get("history") or []) + [
        {
            "when": when,
            "by": by,
            "level": level,
            "reason": reason or f"mask edited ({source})",
            "previous": f"history/{ts}",
            "source": source,
            "model_pack": pack.label,
        }
    ]

    staging = out / f".regrade-tmp-{ts}"
    staging.mkdir()
    try:
        for entry in out.iterdir():
            if entry.name in ("history", staging.name) or entry.name.startswith(".regrade-tmp-"):
                continue
            dest = staging / entry.name
            if entry.is_dir():
                shutil.copytree(entry, dest)
            else:
                shutil.copy2(entry, dest)
        (staging / lab_rel).parent.mkdir(parents=True, exist_ok=True)
        Image.fromarray(lv.label_map().astype(np.uint8), mode="L").save(staging / lab_rel)
        for writer in (write_seg, write_sr, write_html):
            call_writer(writer, out, result, staging, new)
        (staging / "report.json").write_text(
            json.dumps(new, indent=2, default=_json_default) + "\n"
        )
        hist = hist_root / ts
        hist.mkdir(parents=True)
        for entry in list(out.iterdir()):
            if entry.name in ("history", staging.name) or entry.name.startswith(".regrade-tmp-"):
                continue
            entry.rename(hist / entry.name)
        for entry in list(staging.iterdir()):
            entry.rename(out / entry.name)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return new
