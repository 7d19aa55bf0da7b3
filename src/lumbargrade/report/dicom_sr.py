"""DICOM Comprehensive 3D SR: a TID 1500 Measurement Report (highdicom) of every level.

Per level, six TID 1411 planar-ROI measurement groups, each referencing its segment of the SEG
written by :mod:`lumbargrade.report.dicom_seg` (Referenced Segmentation Frame):

* ``"<level> dural sac"``: dural sac area (mm2), AP diameter (mm), the ratios (unitless) and the
  central canal grade (qualitative evaluation);
* ``"<level> disc"``: disc area (mm2) and AP diameter (mm);
* ``"<level> foramen left/right region"`` (``... box`` when the boxes come from a rule): foraminal
  stenosis (qualitative) and its CNN probability;
* ``"<level> facet left/right region"`` (or ``... box``): facet arthropathy (qualitative) and its
  CNN probability.

A segment without a frame (an empty mask) gives a TID 1501 group with no image reference. Codes
are listed in :mod:`lumbargrade.report.codes` and ``docs/dicom-outputs.md``.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from ..numbers import is_finite_number

__all__ = ["MEASUREMENT_CODES", "reader_grades", "segment_frames", "write_sr"]

#: report.json measurement key -> (code name, UCUM unit name).
MEASUREMENT_CODES: dict[str, tuple[str, str]] = {
    "dural_sac_area_mm2": ("SCT.Area", "UCUM.SquareMillimeter"),
    "dural_sac_ap_mm": ("LG013", "UCUM.Millimeter"),
    "area_ratio": ("LG010", "UCUM.NoUnits"),
    "ap_ratio": ("LG011", "UCUM.NoUnits"),
    "sqrt_area_ratio": ("LG012", "UCUM.NoUnits"),
    "disc_area_mm2": ("SCT.Area", "UCUM.SquareMillimeter"),
    "disc_ap_mm": ("LG014", "UCUM.Millimeter"),
}
_SAC_KEYS = ("dural_sac_area_mm2", "dural_sac_ap_mm", "area_ratio", "ap_ratio", "sqrt_area_ratio")
_DISC_KEYS = ("disc_area_mm2", "disc_ap_mm")


def segment_frames(seg_ds: Any) -> dict[tuple[int, str], int]:
    """``(segment number, source SOPInstanceUID) -> frame number`` (1-based) of a SEG dataset."""
    out = {}
    for i, item in enumerate(
        getattr(seg_ds, "PerFrameFunctionalGroupsSequence", []) or [], start=1
    ):
        seg_no = int(item.SegmentIdentificationSequence[0].ReferencedSegmentNumber)
        src = item.DerivationImageSequence[0].SourceImageSequence[0].ReferencedSOPInstanceUID
        out[(seg_no, str(src))] = i
    return out


def _drop_segment_number_with_frames(seq: Any) -> None:
    """Remove Referenced Segment Number from image references that give Referenced Frame Number.

    PS3.3 (Image SOP Instance Reference Macro): Referenced Segment Number is required when a
    segmentation is referenced by segment and *shall not be present* when frames are referenced;
    highdicom 0.28 writes both for a Referenced Segmentation Frame, which dciodvfy reports as an
    error. The frame identifies the segment (the SEG's Segment Identification Sequence)."""
    for item in seq or []:
        for ref in getattr(item, "ReferencedSOPSequence", []) or []:
            if "ReferencedFrameNumber" in ref and "ReferencedSegmentNumber" in ref:
                del ref.ReferencedSegmentNumber
        if "ContentSequence" in item:
            _drop_segment_number_with_frames(item.ContentSequence)


def _write_sr(
    result: Any, folder: str | Path, report: dict[str, Any], pack: Any = None,
    lean: bool = True, uids: dict[str, str] | None = None,
) -> Path | None:
    """Write ``sr.dcm`` (Comprehensive 3D SR, TID 1500) into ``folder``; returns its path, or None
    when no level has a DICOM source image. Run after :func:`lumbargrade.report.dicom_seg.write_seg`
    (it reads the SEG files named in ``report["dicom"]["seg"]``); without a SEG the groups carry no
    segment reference. Signature ``writer(result, folder, report)``. ``uids`` (``{"series",
    "sop"}``) fixes the new UIDs (tests); ``lean``: see the note where the document is built."""
    import highdicom as hd
    import pydicom
    from pydicom.sr.codedict import codes
    from pydicom.uid import generate_uid

    from .. import __version__
    from ..io.dicom_write import save_dataset
    from . import codes as lc
    from .dicom_seg import _source_dataset, person_name, segment_label
    from .uids import new_uid, result_seed

    folder = Path(folder)
    seed = result_seed(result)
    uids = uids or {}
    dicom = report.setdefault("dicom", {})
    warnings = dicom.setdefault("warnings", [])
    previous = []  # the SR this one replaces (a regrade or sign-off writes over a copy of it)
    if (folder / "sr.dcm").is_file():
        try:
            previous = [pydicom.dcmread(folder / "sr.dcm", stop_before_pixels=True)]
        except Exception:  # an unreadable old SR is not referenced, and not a reason to stop
            previous = []
    (folder / "sr.dcm").unlink(missing_ok=True)
    sw = report.get("software", {}) or {}
    pack_label = str(getattr(pack, "label", None) or sw.get("model_pack") or "none")
    version = str(sw.get("version", __version__))
    levels = [lv for lv in result.levels if _source_dataset(lv) is not None]
    if not levels:
        dicom.pop("sr", None)
        warnings.append("no DICOM source images: no SR written")
        return None
    sources = {lv.level: _source_dataset(lv) for lv in levels}

    # where each level's segments are
    seg_info: dict[str, tuple[Any, dict[str, int], dict]] = {}
    seg_datasets = []
    written = getattr(result, "_seg_datasets", None) or {}  # kept by write_seg: no re-reading
    for inst in (dicom.get("seg") or {}).get("instances", []):
        ds = written.get(inst["file"])
        if ds is None or str(ds.SOPInstanceUID) != inst["sop_instance_uid"]:
            ds = pydicom.dcmread(folder / inst["file"], stop_before_pixels=True)
        seg_datasets.append(ds)
        frames = segment_frames(ds)
        for level, numbers in inst["levels"].items():
            seg_info[level] = (ds, numbers, frames)

    algo = hd.sr.AlgorithmIdentification(
        name="lumbargrade", version=version, parameters=[pack_label]
    )
    rec_by_level = {r["level"]: r for r in report.get("levels", [])}

    def tracking(text: str) -> Any:
        return hd.sr.TrackingIdentifier(uid=new_uid(seed, "sr-tracking", text), identifier=text)

    def measurement(key: str, value: float) -> Any:
        name, unit = MEASUREMENT_CODES[key]
        # the algorithm is identified once per measurement group (TID 1501), not per measurement
        return hd.sr.Measurement(name=lc.code(name), value=float(value), unit=lc.code(unit))

    def group(
        lv: Any,
        kind: str,
        ident: str,
        finding: Any,
        sites: list,
        measurements: list,
        evaluations: list,
    ) -> Any:
        ref = None
        if lv.level in seg_info:
            ds, numbers, frames = seg_info[lv.level]
            seg_no = numbers[kind]
            frame = frames.get((seg_no, lv.sop_instance_uid))
            if frame is not None:
                src = sources[lv.level]
                ref = hd.sr.ReferencedSegmentationFrame(
                    sop_class_uid=ds.SOPClassUID,
                    sop_instance_uid=ds.SOPInstanceUID,
                    frame_number=frame,
                    segment_number=seg_no,
                    source_image=hd.sr.SourceImageForSegmentation(
                        src.SOPClassUID, src.SOPInstanceUID
                    ),
                )
        common = dict(
            tracking_identifier=tracking(ident),
            finding_type=finding,
            algorithm_id=algo,
            finding_sites=sites,
            measurements=measurements or None,
            qualitative_evaluations=evaluations or None,
        )
        if ref is not None:
            return hd.sr.PlanarROIMeasurementsAndQualitativeEvaluations(
                referenced_segment=ref, **common
            )
        return hd.sr.MeasurementsAndQualitativeEvaluations(
            source_images=[
                hd.sr.SourceImageForMeasurementGroup(
                    sources[lv.level].SOPClassUID, sources[lv.level].SOPInstanceUID
                )
            ],
            **common,
        )

    groups = []
    for lv in levels:
        m = lv.measurements or {}
        level_site = hd.sr.FindingSite(lc.level_disc_site(lv.level))
        central = (lv.findings or {}).get("central_canal") or {}
        reader = reader_grades(rec_by_level.get(lv.level) or {})
        evals = []
        central_grade = reader.get("central_canal") or central.get("grade")
        if central_grade:
            evals.append(
                hd.sr.QualitativeEvaluation(
                    lc.code("LG020"), lc.central_grade_code(central_grade)
                )
            )
        # the plausibility gate's verdict (the reasons are in report.json and report.html)
        evals.append(
            hd.sr.QualitativeEvaluation(
                lc.code("LG040"), lc.code("SCT.Yes" if getattr(lv, "review_reasons", None) else "SCT.No")
            )
        )
        groups.append(
            group(
                lv,
                "dural_sac",
                f"{lv.level} dural sac",
                lc.code("LG001"),
                [hd.sr.FindingSite(codes.SCT.SpinalCanalStructure), level_site],
                [measurement(k, m[k]) for k in _SAC_KEYS if is_finite_number(m.get(k))],
                evals,
            )
        )
        groups.append(
            group(
                lv,
                "disc",
                f"{lv.level} disc",
                lc.level_disc_structure(lv.level),
                [level_site],
                [measurement(k, m[k]) for k in _DISC_KEYS if is_finite_number(m.get(k))],
                [],
            )
        )
        for key, (eval_code, box, side) in lc.FINDINGS.items():
            f = (lv.findings or {}).get(key) or {}
            meas, evals = [], []
            if is_finite_number(f.get("probability")):
                meas.append(
                    hd.sr.Measurement(
                        name=codes.DCM.Probability,
                        value=float(f["probability"]),
                        unit=codes.UCUM.NoUnits,
                    )
                )
            label = reader.get(key) or f.get("label")
            if label:
                evals.append(
                    hd.sr.QualitativeEvaluation(lc.code(eval_code), lc.binary_label_code(label))
                )
            site = lc.code("LG023" if box == "foramen" else "LG024")
            lat = codes.SCT.Left if side == "left" else codes.SCT.Right
            groups.append(
                group(
                    lv,
                    key,
                    segment_label(lv, key),
                    (lc.code("LG023" if box == "foramen" else "LG024") if getattr(lv, "regions", None) is not None
                     else lc.code("LG002" if box == "foramen" else "LG003")),
                    [hd.sr.FindingSite(site, laterality=lat), level_site],
                    meas,
                    evals,
                )
            )

    device = hd.sr.ObserverContext(
        observer_type=codes.DCM.Device,
        observer_identifying_attributes=hd.sr.DeviceObserverIdentifyingAttributes(
            uid=generate_uid(entropy_srcs=["lumbargrade", version]),
            name="lumbargrade",
            manufacturer_name="lumbargrade",
            model_name=pack_label[:64],
        ),
    )
    signed = report.get("signed") or None
    editors = sorted(
        ({r["regraded"].get("by", "") for r in rec_by_level.values() if r.get("regraded")}
         | {(r.get("reader") or {}).get("by", "") for r in rec_by_level.values()})
        - {""}
    )
    if signed:  # the person observer is the reader who signed
        editors = [e for e in editors if e != signed["by"]] + [signed["by"]]
    person = None
    if editors:
        person = hd.sr.ObserverContext(
            observer_type=codes.DCM.Person,
            observer_identifying_attributes=hd.sr.PersonObserverIdentifyingAttributes(
                name=person_name(editors[-1])
            ),
        )
    context = hd.sr.ObservationContext(
        observer_person_context=person, observer_device_context=device
    )
    content = hd.sr.MeasurementReport(
        observation_context=context,
        procedure_reported=codes.SCT.ImagingProcedure,
        imaging_measurements=groups,
        title=codes.DCM.ImagingMeasurementReport,
    )
    evidence = [sources[lv.level] for lv in levels] + seg_datasets
    # highdicom's SR constructor deep-copies the content tree, rebuilds it as content items and
    # walks it three times (about half of the SR's time for 30 measurement groups). It records
    # every evidence dataset whatever the content references, and then copies the content's
    # attributes onto the document; so ``lean`` builds the document around a one-group report and
    # copies the full content's attributes in the same way (tests check the two agree).
    shell = content
    if lean and len(groups) > 1:
        shell = hd.sr.MeasurementReport(
            observation_context=context,
            procedure_reported=codes.SCT.ImagingProcedure,
            imaging_measurements=groups[:1],
            title=codes.DCM.ImagingMeasurementReport,
        )
    sr = hd.sr.Comprehensive3DSR(
        evidence=evidence,
        content=shell,
        series_instance_uid=uids.get("series") or new_uid(seed, "sr-series"),
        series_number=9902,
        sop_instance_uid=uids.get("sop") or new_uid(seed, "sr-instance"),
        instance_number=1,
        manufacturer="lumbargrade",
        is_complete=True,
        is_final=bool(signed),
        is_verified=bool(signed),
        verifying_observer_name=person_name(signed["by"]) if signed else None,
        verifying_organization=(signed.get("organization") or "") if signed else None,
        previous_versions=previous or None,
        series_description="lumbargrade measurement report",
    )
    if signed and signed.get("when"):
        sr.VerifyingObserverSequence[0].VerificationDateTime = _dicom_datetime(signed["when"])
    if shell is not content:
        for tag, value in content[0].items():
            sr[tag] = value
    lc.add_scheme_identification(sr)
    _drop_segment_number_with_frames(sr.ContentSequence)
    path = folder / "sr.dcm"
    save_dataset(sr, path)
    dicom["sr"] = {
        "file": "sr.dcm",
        "sop_instance_uid": str(sr.SOPInstanceUID),
        "series_instance_uid": str(sr.SeriesInstanceUID),
        "verification": "VERIFIED" if signed else "UNVERIFIED",
    }
    if previous:
        dicom["sr"]["replaces_sop_instance_uid"] = str(previous[0].SOPInstanceUID)
    return path


def reader_grades(rec: dict[str, Any]) -> dict[str, str]:
    """The grades a reader gave for one level's record (``rec["reader"]["grades"]``), without the
    findings the reader left to the models."""
    grades = (rec.get("reader") or {}).get("grades") or {}
    return {k: v for k, v in grades.items() if v}


def _dicom_datetime(iso: str) -> str:
    """An ISO 8601 time (``2026-01-02T03:04:05+00:00``) as a DICOM DT (``20260102030405+0000``)."""
    import datetime as _dt

    t = _dt.datetime.fromisoformat(iso)
    text = t.strftime("%Y%m%d%H%M%S")
    if t.utcoffset() is not None:
        text += t.strftime("%z")
    return text


def write_sr(result: Any, folder: str | Path, report: dict[str, Any], pack: Any = None):
    """Write sr.dcm; see :func:`_write_sr`. A failure propagates:
    :func:`lumbargrade.report.json_report.write_outputs` turns it into a one-line
    :class:`lumbargrade.errors.OutputError` naming ``sr.dcm`` (and no result is kept)."""
    return _write_sr(result, folder, report, pack)


write_sr.output = "sr.dcm"
write_sr.what = "DICOM SR"
