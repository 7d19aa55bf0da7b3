"""DICOM Secondary Capture summary: per level, the axial slice with the dural sac and disc outlined,
the facet and foramen boxes, and the grades burned in, for viewers that do not display a SEG or an
SR. One RGB instance per level (``sc_<L4-L5>.dcm``), all in one series "lumbargrade summary",
in the study of the source images. The writer records what it wrote in ``report["dicom"]["sc"]``.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

__all__ = ["summary_lines", "write_sc"]


def summary_lines(rec: dict[str, Any]) -> tuple[str, str]:
    """Two text lines for one level's picture from its ``report.json`` record."""
    central = (rec.get("central_canal") or {}).get("grade") or "-"

    def side(finding: str) -> str:
        out = []
        for s in ("left", "right"):
            v = rec.get(f"{finding}_{s}") or {}
            label = v.get("label")
            out.append("-" if not label else ("mod/sev" if label == "moderate/severe" else "norm/mild"))
        return f"L {out[0]}, R {out[1]}"

    return (f"{rec.get('level', '?')}  central canal: {central}",
            f"foramen {side('foramen')};  facet {side('facet')}")


def _orientation(geom: Any) -> tuple[str, str]:
    """PatientOrientation of a picture drawn in the canonical axial view: columns run towards the
    patient's left, rows towards posterior (:mod:`lumbargrade.io.orientation`)."""
    return "L", "P"


def _write_sc(result: Any, folder: str | Path, report: dict[str, Any], pack: Any = None) -> list[Path]:
    import highdicom as hd
    from PIL import ImageDraw

    from ..io.dicom_write import save_dataset
    from ..levels.names import level_dirname
    from .dicom_seg import _source_dataset
    from .overlays import _text, axial_overlay
    from .uids import new_uid, result_seed

    folder = Path(folder)
    for old in folder.glob("sc_*.dcm"):
        old.unlink()
    seed = result_seed(result)
    dicom = report.setdefault("dicom", {})
    recs = {r["level"]: r for r in report.get("levels", [])}
    sw = report.get("software", {}) or {}
    series_uid = new_uid(seed, "sc-series")
    instances, written = [], []
    for lv in result.levels:
        src = _source_dataset(lv)
        if src is None:
            continue
        top, bottom = summary_lines(recs.get(lv.level, {"level": lv.level}))
        # drawn in the slice's canonical view (radiological display), whatever its stored layout
        pic = axial_overlay(lv.canonical(lv.image), lv.canonical(lv.sac_mask), lv.canonical(lv.disc_mask),
                            lv.canonical_boxes(), title=top, zoom=False, regions=lv.canonical(lv.regions))
        draw = ImageDraw.Draw(pic)
        fs = max(11, int(round(pic.width / 40)))
        _text(draw, (4, pic.height - 2 * fs - 8), bottom, (255, 255, 255), fs)
        _text(draw, (4, pic.height - fs - 4),
              f"lumbargrade {sw.get('version', '')} {sw.get('model_pack') or ''} - not for clinical use",
              (255, 200, 0), fs)
        rgb = np.ascontiguousarray(np.asarray(pic.convert("RGB"), dtype=np.uint8))
        sc = hd.sc.SCImage.from_ref_dataset(
            ref_dataset=src, pixel_array=rgb, photometric_interpretation="RGB", bits_allocated=8,
            coordinate_system="PATIENT", series_instance_uid=series_uid, series_number=9903,
            sop_instance_uid=new_uid(seed, "sc-instance", lv.level), instance_number=len(instances) + 1,
            manufacturer="lumbargrade", patient_orientation=_orientation(lv.geometry),
            transfer_syntax_uid="1.2.840.10008.1.2.1",
        )
        sc.SeriesDescription = "lumbargrade summary"
        sc.BurnedInAnnotation = "YES"
        if "Laterality" not in sc:  # Type 2C in General Series: the lumbar spine is not paired
            sc.Laterality = ""
        sc.ImageComments = f"{lv.level}: overlay and grades by lumbargrade (synthetic-data models, not for clinical use)"
        name = f"sc_{level_dirname(lv.level)}.dcm"
        save_dataset(sc, folder / name)
        written.append(folder / name)
        instances.append({"file": name, "sop_instance_uid": str(sc.SOPInstanceUID), "level": lv.level})
    if instances:
        dicom["sc"] = {"series_instance_uid": str(series_uid), "instances": instances}
    else:
        dicom.pop("sc", None)
    return written


def write_sc(result: Any, folder: str | Path, report: dict[str, Any], pack: Any = None):
    """Write the Secondary Capture summary; see :func:`_write_sc`. An unexpected failure does not
    stop the analysis: it is recorded in ``report["dicom"]["errors"]``."""
    try:
        return _write_sc(result, folder, report, pack)
    except Exception as e:  # a DICOM export problem must not lose the analysis
        report.setdefault("dicom", {}).setdefault("errors", []).append(f"write_sc: {type(e).__name__}: {e}")
        return []
