"""DICOM Segmentation (highdicom) of each level's axial slice: dural sac, disc and the four
facet / foramen boxes, as BINARY segments referencing the axial source images.

One SEG instance holds the levels whose slices share one orientation, matrix and pixel spacing
(highdicom builds a SEG from source images of one orientation). When every chosen slice shares
one, the result is ``seg.dcm``; otherwise ``seg_1.dcm``, ``seg_2.dcm`` ... , all in ONE series
(same SeriesInstanceUID, InstanceNumber 1, 2, ...). Segments are numbered per instance, six per
level in the order :data:`SEGMENTS` (labels like ``"L4/L5 dural sac"``). See
``docs/dicom-outputs.md``.

The writer records what it wrote in ``report["dicom"]["seg"]`` (files, UIDs, segment numbers per
level) for the SR writer and the HTML page.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from ..errors import InputError

__all__ = ["SEGMENTS", "group_levels", "segment_masks", "write_seg"]

#: Segment kinds per level, in segment-number order.
SEGMENTS = ("dural_sac", "disc", "facet_left", "facet_right", "foramen_left", "foramen_right")

_LABELS = {
    "dural_sac": "dural sac",
    "disc": "disc",
    "facet_left": "facet left box",
    "facet_right": "facet right box",
    "foramen_left": "foramen left box",
    "foramen_right": "foramen right box",
}
_COLORS = {  # CIELab display colours (approximate sRGB in comments)
    "dural_sac": (80.0, -40.0, -20.0),  # cyan
    "disc": (90.0, -5.0, 80.0),  # yellow
    "facet_left": (55.0, 70.0, 50.0),  # red
    "facet_right": (55.0, 70.0, 50.0),
    "foramen_left": (60.0, -60.0, 55.0),  # green
    "foramen_right": (60.0, -60.0, 55.0),
}


_REGION_VALUES = {"facet_left": 3, "facet_right": 4, "foramen_left": 5, "foramen_right": 6}


def _has_regions(lv: Any) -> bool:
    return getattr(lv, "regions", None) is not None


def segment_masks(lv: Any) -> dict[str, np.ndarray]:
    """The six binary masks ``[rows, cols]`` of one :class:`~lumbargrade.pipeline.LevelResult`:
    dural sac, disc and, per side, the facet and foramen regions of the image localiser when the
    level has them, else the boxes filled (a missing box or mask is all False)."""
    shape = lv.image.shape
    out: dict[str, np.ndarray] = {}
    out["dural_sac"] = (
        np.zeros(shape, bool) if lv.sac_mask is None else np.asarray(lv.sac_mask, bool)
    )
    out["disc"] = np.zeros(shape, bool) if lv.disc_mask is None else np.asarray(lv.disc_mask, bool)
    for name in SEGMENTS[2:]:
        if _has_regions(lv):
            out[name] = np.asarray(lv.regions) == _REGION_VALUES[name]
            continue
        m = np.zeros(shape, bool)
        b = (lv.boxes or {}).get(name)
        if b:
            m[b[0] : b[2], b[1] : b[3]] = True
        out[name] = m
    return out


def segment_label(lv: Any, kind: str) -> str:
    """``"<level> dural sac"``, ``"<level> facet left region"`` (image localiser) or ``"<level>
    facet left box"`` (a rule's box)."""
    name = _LABELS[kind]
    if kind in _REGION_VALUES and _has_regions(lv):
        name = name.replace(" box", " region")
    return f"{lv.level} {name}"


def person_name(name: str) -> str:
    """A DICOM PN from a free-text name: kept when it has DICOM's ``^`` components, else the whole
    text as the family-name component (``"Jane Doe"`` -> ``"Jane Doe^"``); at most 64 characters."""
    name = " ".join(str(name).split())[:63]
    return name if "^" in name else name + "^"


def _group_key(lv: Any) -> tuple:
    g = lv.geometry
    return (
        lv.series_instance_uid,
        tuple(np.round(g.orientation, 4)),
        int(g.rows),
        int(g.columns),
        tuple(np.round(g.pixel_spacing, 5)),
    )


def group_levels(levels: list[Any]) -> list[list[Any]]:
    """Levels grouped so each group's slices share series, orientation, matrix and spacing and no
    slice appears twice (two levels on one slice go to different groups)."""
    groups: list[tuple[tuple, list[Any], set]] = []
    for lv in levels:
        key = _group_key(lv)
        for k, members, sops in groups:
            if k == key and lv.sop_instance_uid not in sops:
                members.append(lv)
                sops.add(lv.sop_instance_uid)
                break
        else:
            groups.append((key, [lv], {lv.sop_instance_uid}))
    return [members for _, members, _ in groups]


def _source_dataset(lv: Any) -> Any:
    """The axial slice's header (read without pixels) as a Dataset highdicom accepts as a source
    image: a copy, with missing type-2 patient / study attributes added empty (their DICOM value
    for "unknown"); nothing else is invented."""
    import copy

    hdr = getattr(lv.source, "header", None)
    if hdr is None:
        return None
    cached = getattr(lv, "_source_dataset", None)  # one copy per level, shared by SEG and SR
    if cached is not None and cached[0] is hdr:
        return cached[1]
    ds = copy.deepcopy(hdr)
    geom = getattr(lv.source, "geometry", None)
    _check_and_clean_source(ds, getattr(lv.source, "display", "") or str(getattr(lv.source, "path", "")),
                            thickness=getattr(geom, "thickness", None))
    for kw in _TYPE2:
        if kw not in ds:
            setattr(ds, kw, None)
    try:
        lv._source_dataset = (hdr, ds)
    except AttributeError:  # a result object that takes no new attributes
        pass
    return ds


def _check_and_clean_source(ds: Any, where: str, thickness: float | None = None) -> None:
    """Make a copied source header safe for the DICOM writers, in place: a missing identifying UID
    is the input's error (:class:`InputError` naming the file: the SEG and SR must reference it);
    attributes the writers copy but cannot read are replaced or emptied, as a damaged value is
    unknown: a SliceThickness that is not a finite number becomes ``thickness`` (mm, the reader's
    value for the slice; without one the input's error), a damaged SpacingBetweenSlices is dropped, a PatientSex
    outside M/F/O or a date or time that is not one is emptied."""
    import math
    import re

    for kw in ("StudyInstanceUID", "SeriesInstanceUID", "SOPInstanceUID", "SOPClassUID"):
        try:
            v = str(ds.get(kw, "") or "").strip()
        except Exception:  # an undecodable value
            v = ""
        if not v:
            raise InputError(where, f"{kw} is missing: the DICOM SEG and SR must reference it")
    for kw in ("SliceThickness", "SpacingBetweenSlices"):
        if kw in ds:
            try:
                raw = ds[kw].value
                ok = raw in (None, "") or all(math.isfinite(float(x)) for x in _as_list(raw))
            except Exception:
                ok = False
            if ok:
                continue
            del ds[kw]
            if kw == "SliceThickness":
                if thickness is None or not math.isfinite(thickness) or thickness <= 0:
                    raise InputError(where, "SliceThickness is not a number: the DICOM SEG needs it")
                ds.SliceThickness = round(float(thickness), 6)
    checks = {"PatientSex": r"[MFO]?", "PatientBirthDate": r"(\d{8})?", "StudyDate": r"(\d{8})?",
              "StudyTime": r"(\d{2,6}(\.\d{1,6})?)?"}
    for kw, pattern in checks.items():
        if kw in ds:
            try:
                v = str(ds[kw].value or "").strip()
            except Exception:
                v = None
            if v is None or not re.fullmatch(pattern, v):
                setattr(ds, kw, None)


def _as_list(v: Any) -> list:
    return list(v) if isinstance(v, (list, tuple)) or type(v).__name__ == "MultiValue" else [v]


_TYPE2 = (
    "PatientName",
    "PatientID",
    "PatientBirthDate",
    "PatientSex",
    "StudyDate",
    "StudyTime",
    "ReferringPhysicianName",
    "StudyID",
    "AccessionNumber",
)


def _algorithm(report: dict[str, Any], pack_label: str | None) -> Any:
    import highdicom as hd
    from pydicom.sr.codedict import codes

    sw = report.get("software", {}) or {}
    params = {"model_pack": str(pack_label or sw.get("model_pack") or "none")}
    return hd.AlgorithmIdentificationSequence(
        name="lumbargrade",
        family=codes.DCM.ArtificialIntelligence,
        version=str(sw.get("version", "0")),
        source=str(pack_label or sw.get("model_pack") or "lumbargrade"),
        parameters=params,
    )


def _descriptions(
    group: list[Any], algo: Any, regraded: dict[str, Any], seed: str | None = None
) -> tuple[list[Any], dict[str, dict[str, int]]]:
    import highdicom as hd
    from pydicom.sr.codedict import codes

    from . import codes as lc
    from .uids import new_uid

    descs, numbers = [], {}
    n = 0
    for lv in group:
        numbers[lv.level] = {}
        edited = lv.level in regraded
        for kind in SEGMENTS:
            n += 1
            numbers[lv.level][kind] = n
            if kind == "dural_sac":
                cat, typ = codes.SCT.AnatomicalStructure, lc.code("LG001")
            elif kind == "disc":
                cat, typ = codes.SCT.AnatomicalStructure, lc.level_disc_structure(lv.level)
            elif _has_regions(lv):  # the image localiser's anatomical regions
                cat = codes.SCT.AnatomicalStructure
                typ = lc.code("LG024" if kind.startswith("facet") else "LG023")
            else:
                cat = codes.SCT.SpatialAndRelationalConcept
                typ = lc.code("LG003" if kind.startswith("facet") else "LG002")
            atype = (
                hd.seg.SegmentAlgorithmTypeValues.SEMIAUTOMATIC
                if edited
                else hd.seg.SegmentAlgorithmTypeValues.AUTOMATIC
            )
            descs.append(
                hd.seg.SegmentDescription(
                    segment_number=n,
                    segment_label=segment_label(lv, kind),
                    segmented_property_category=cat,
                    segmented_property_type=typ,
                    algorithm_type=atype,
                    algorithm_identification=algo,
                    tracking_id=segment_label(lv, kind),
                    tracking_uid=new_uid(seed, "seg-tracking", lv.level, kind),
                    anatomic_regions=[lc.level_disc_site(lv.level)],
                    display_color=hd.color.CIELabColor(*_COLORS[kind]),
                )
            )
    return descs, numbers


def _write_seg(
    result: Any, folder: str | Path, report: dict[str, Any], pack: Any = None
) -> list[Path]:
    """Write the DICOM SEG instance(s) of ``result`` into ``folder``; returns the files written.

    Signature ``writer(result, folder, report)`` as :func:`lumbargrade.report.write_outputs`
    expects; the model pack's label comes from ``pack.label`` when given, else
    ``report["software"]["model_pack"]``. Levels without a DICOM source header (NIfTI input) are
    skipped and listed in ``report["dicom"]["warnings"]``.
    """
    import highdicom as hd

    from .. import __version__
    from ..io.dicom_write import save_dataset
    from . import codes as lc
    from .uids import new_uid, result_seed

    folder = Path(folder)
    seed = result_seed(result)
    dicom = report.setdefault("dicom", {})
    seg_datasets: dict[str, Any] = {}  # file name -> the dataset written (the SR reads them here)
    try:
        result._seg_datasets = seg_datasets
    except AttributeError:
        pass
    warnings = dicom.setdefault("warnings", [])
    pack_label = getattr(pack, "label", None)
    levels = []
    for lv in result.levels:
        if _source_dataset(lv) is None:
            warnings.append(
                f"{lv.level}: no DICOM source image (NIfTI input?): left out of the SEG"
            )
        else:
            levels.append(lv)
    for old in [folder / "seg.dcm", *folder.glob("seg_*.dcm")]:
        old.unlink(missing_ok=True)
    if not levels:
        dicom.pop("seg", None)
        return []
    groups = group_levels(levels)
    regraded = {r["level"]: r["regraded"] for r in report.get("levels", []) if r.get("regraded")}
    algo = _algorithm(report, pack_label)
    series_uid = new_uid(seed, "seg-series")
    written: list[Path] = []
    instances = []
    i = 0
    for group in groups:
        srcs = [_source_dataset(lv) for lv in group]
        if any("FrameOfReferenceUID" not in ds for ds in srcs):
            warnings.append(
                f"{', '.join(lv.level for lv in group)}: source images have no FrameOfReferenceUID: "
                "no DICOM SEG written for them"
            )
            continue
        i += 1
        descs, numbers = _descriptions(group, algo, regraded, seed)
        n_seg = len(descs)
        arr = np.zeros(
            (len(group), group[0].image.shape[0], group[0].image.shape[1], n_seg), dtype=bool
        )
        for j, lv in enumerate(group):
            masks = segment_masks(lv)
            for kind in SEGMENTS:
                arr[j, :, :, numbers[lv.level][kind] - 1] = masks[kind]
        creators = sorted(
            {regraded[lv.level].get("by", "") for lv in group if lv.level in regraded} - {""}
        )
        seg = hd.seg.Segmentation(
            source_images=srcs,
            pixel_array=arr,
            segmentation_type=hd.seg.SegmentationTypeValues.BINARY,
            segment_descriptions=descs,
            series_instance_uid=series_uid,
            series_number=9901,
            sop_instance_uid=new_uid(seed, "seg-instance", i),
            instance_number=i,
            manufacturer="lumbargrade",
            manufacturer_model_name="lumbargrade",
            software_versions=str(__version__),
            device_serial_number="0",
            content_description=f"lumbargrade dural sac, disc and facet/foramen boxes ({', '.join(lv.level for lv in group)})"[
                :64
            ],
            content_label="LUMBARGRADE",
            content_creator_name=person_name(creators[0]) if creators else None,
            series_description="lumbargrade segmentation",
            omit_empty_frames=bool(arr.any()),  # all empty: highdicom would warn and keep every frame anyway
        )
        lc.add_scheme_identification(seg)
        name = "seg.dcm" if len(groups) == 1 else f"seg_{i}.dcm"
        instances.append(
            {"file": name, "sop_instance_uid": str(seg.SOPInstanceUID), "levels": numbers}
        )
        path = folder / name
        save_dataset(seg, path)
        seg_datasets[name] = seg
        written.append(path)
    if not instances:
        dicom.pop("seg", None)
        return written
    dicom["seg"] = {"series_instance_uid": str(series_uid), "instances": instances}
    return written


def write_seg(result: Any, folder: str | Path, report: dict[str, Any], pack: Any = None):
    """Write the DICOM SEG instance(s); see :func:`_write_seg`. A failure propagates:
    :func:`lumbargrade.report.json_report.write_outputs` turns it into a one-line
    :class:`lumbargrade.errors.OutputError` naming ``seg.dcm`` (and no result is kept)."""
    return _write_seg(result, folder, report, pack)


write_seg.output = "seg.dcm"
write_seg.what = "DICOM SEG"
