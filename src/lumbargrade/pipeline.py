"""The analysis of one study: study in -> levels -> masks -> measurements -> boxes -> grades.

:func:`analyze_study` works on in-memory objects (a :class:`lumbargrade.io.Study` and a loaded
:class:`lumbargrade.modelpack.ModelPack`) and returns a :class:`StudyResult`; writing files is
:mod:`lumbargrade.report`'s job.
"""

from __future__ import annotations

import time
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np

from .errors import InputError
from .geometry import SliceGeometry
from .levels.names import LEVELS

__all__ = ["AnalysisConfig", "LevelResult", "StudyResult", "analyze_study", "grade_levels", "left_is_higher_col", "anterior_is_low_row",
           "measure_and_localize"]


@dataclass
class AnalysisConfig:
    """Options of :func:`analyze_study` (saved as ``config.json`` beside every output)."""

    slice_choice: str = "landmarks"  # 'landmarks' (fallback 'block') or 'block'
    central_grade_source: str = "tree"  # which model's grade is the reported central canal grade
    mid_sagittal_index: int | None = None  # override the automatic mid-sagittal slice choice
    max_landmark_distance_mm: float = 6.0  # warn when the chosen slice is farther from the disc centre

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass
class LevelResult:
    """Everything computed for one disc level. Arrays stay in memory; :meth:`to_record` gives
    the JSON record of ``report.json``."""

    level: str
    series_instance_uid: str
    sop_instance_uid: str
    geometry: SliceGeometry
    image: np.ndarray
    slice_choice: dict[str, Any]
    sac_mask: np.ndarray | None = None
    disc_mask: np.ndarray | None = None
    measurements: dict[str, Any] = field(default_factory=dict)
    boxes: dict[str, list[int]] = field(default_factory=dict)
    findings: dict[str, Any] = field(default_factory=dict)
    warnings: list[str] = field(default_factory=list)
    source: Any = None  # the lumbargrade.io SliceRef of the axial slice (its DICOM header for SEG/SR)

    def label_map(self) -> np.ndarray:
        """uint8 [rows, cols]: 1 dural sac, 2 disc, 3/4 facet left/right, 5/6 foramen left/right
        (boxes filled, or the regions a reader drew (``reader_regions``, set by
        :func:`lumbargrade.regrade.recompute_level`), under the masks)."""
        lab = np.zeros(self.image.shape, dtype=np.uint8)
        regions = getattr(self, "reader_regions", None)
        for name, value in (("facet_left", 3), ("facet_right", 4), ("foramen_left", 5), ("foramen_right", 6)):
            if regions:
                lab[np.asarray(regions[name], bool)] = value
                continue
            b = self.boxes.get(name)
            if b:
                lab[b[0]:b[2], b[1]:b[3]] = value
        if self.disc_mask is not None:
            lab[self.disc_mask] = 2
        if self.sac_mask is not None:
            lab[self.sac_mask] = 1
        return lab

    def to_record(self, label_map_path: str) -> dict[str, Any]:
        rec: dict[str, Any] = {
            "level": self.level,
            "axial_series_instance_uid": self.series_instance_uid,
            "axial_sop_instance_uid": self.sop_instance_uid,
            "slice_choice": self.slice_choice,
            "pixel_spacing_mm": list(self.geometry.pixel_spacing),
            "label_map": label_map_path,
            "boxes": self.boxes,
            "measurements": self.measurements,
        }
        rec.update(self.findings)
        if self.warnings:
            rec["warnings"] = list(self.warnings)
        return rec


@dataclass
class StudyResult:
    study_instance_uid: str | None
    levels: list[LevelResult]
    warnings: list[str]
    sagittal: dict[str, Any] | None = None
    sagittal_slice: Any = None  # lumbargrade.io SliceRef of the mid-sagittal slice, when landmarks were used
    timings_s: dict[str, float] = field(default_factory=dict)


def left_is_higher_col(geom: SliceGeometry) -> bool:
    """True when the column index grows towards the patient's left (+x), as in the standard
    radiological display of axial images."""
    return bool(geom.row_cosine[0] >= 0)


def anterior_is_low_row(geom: SliceGeometry) -> bool:
    """True when the row index grows towards the patient's back (+y), i.e. anterior is at the top."""
    return bool(geom.col_cosine[1] >= 0)


def _choose_slices(study: Any, pack: Any, cfg: AnalysisConfig, warnings: list[str], timings: dict[str, float]):
    """Per level: (block index, slice index, choice record). Landmarks when possible, else the
    per-block rule."""
    from .levels import slice_choice

    axial = study.find("axial_t2")
    blocks = [[s.geometry for s in b.slices] for b in axial.blocks]
    sagittal = study.find("sagittal_t2")
    sag_record = None
    sag_ref = None
    chosen: dict[str, tuple[int, int, dict[str, Any]]] = {}
    t0 = time.perf_counter()
    if cfg.slice_choice == "landmarks":
        model = pack.get("landmarks") if pack is not None else None
        if sagittal is None:
            warnings.append("no sagittal T2 series: axial slices chosen per block (disc profile), not by landmarks")
        elif model is None:
            warnings.append("model pack has no landmark model: axial slices chosen per block, not by landmarks")
        else:
            from .levels.landmarks import landmarks_for_series

            lm = landmarks_for_series(model, sagittal, slice_index=cfg.mid_sagittal_index)
            sag_record = lm.to_dict() if hasattr(lm, "to_dict") else lm
            k_sag = getattr(lm, "slice_index", None)
            if k_sag is not None:  # the slice the landmarks were found on (the HTML writer draws it)
                sag_ref = max(sagittal.blocks, key=len).slices[int(k_sag)]
            warnings.extend(getattr(lm, "warnings", []) or [])
            for level in LEVELS:
                p = lm.patient_mm(level) if hasattr(lm, "patient_mm") else None
                if p is None:
                    continue
                found = slice_choice.slice_for_point(np.asarray(p), blocks)
                if found is None:
                    warnings.append(f"{level}: the landmark lies outside every axial slice's field of view")
                    continue
                b, k, d = found
                rec = {"method": "landmarks", "distance_mm": round(float(d), 3),
                       "landmark_patient_mm": [round(float(v), 3) for v in p]}
                if abs(d) > cfg.max_landmark_distance_mm:
                    warnings.append(f"{level}: nearest axial slice is {abs(d):.1f} mm from the disc centre")
                chosen[level] = (b, k, rec)
    timings["levels"] = time.perf_counter() - t0
    missing = [lv for lv in LEVELS if lv not in chosen]
    if missing:
        fallback = slice_choice.choose_slices_by_block(axial)
        for level in missing:
            if level in fallback:
                b, k = fallback[level]
                chosen[level] = (b, k, {"method": "block_centre", "distance_mm": None})
            else:
                warnings.append(f"{level}: no axial slice found for this level")
    return axial, chosen, sag_record, sag_ref


def analyze_study(study: Any, pack: Any, config: AnalysisConfig | None = None) -> StudyResult:
    """Run the whole pipeline on one study.

    Parameters
    ----------
    study: a :class:`lumbargrade.io.Study` (with an ``axial_t2`` series).
    pack: a loaded :class:`lumbargrade.modelpack.ModelPack`.
    """
    cfg = config or AnalysisConfig()
    warnings: list[str] = list(getattr(study, "warnings", []) or [])
    timings: dict[str, float] = {}
    if study.find("axial_t2") is None:
        raise InputError(getattr(study, "source", "study"), "no axial T2 series found (see `lumbargrade inspect`)")

    axial, chosen, sag_record, sag_ref = _choose_slices(study, pack, cfg, warnings, timings)
    segmenter = pack.get("segmentation")
    if segmenter is None:
        raise InputError(pack.path, "model pack has no segmentation model")

    t0 = time.perf_counter()
    levels: list[LevelResult] = []
    for level in LEVELS:
        if level not in chosen:
            continue
        b, k, rec = chosen[level]
        ref = axial.blocks[b].slices[k]  # only the chosen slice's pixels are read
        levels.append(LevelResult(
            level=level,
            series_instance_uid=axial.series_instance_uid,
            sop_instance_uid=ref.sop_instance_uid,
            geometry=ref.geometry,
            image=np.asarray(ref.pixels(), dtype=np.float32),
            slice_choice=rec,
            source=ref,
        ))
    timings["reading"] = time.perf_counter() - t0

    t0 = time.perf_counter()
    masks = segmenter.segment_batch([(lv.image, lv.geometry.pixel_spacing) for lv in levels]) if levels else []
    for lv, (sac, disc) in zip(levels, masks):
        lv.sac_mask, lv.disc_mask = np.asarray(sac, bool), np.asarray(disc, bool)
    timings["segmentation"] = time.perf_counter() - t0

    t0 = time.perf_counter()
    for lv in levels:
        measure_and_localize(lv, pack)
    timings["measurements"] = time.perf_counter() - t0

    t0 = time.perf_counter()
    grade_levels(levels, pack, cfg)
    timings["classifiers"] = time.perf_counter() - t0
    return StudyResult(
        study_instance_uid=getattr(study, "study_instance_uid", None),
        levels=levels, warnings=warnings, sagittal=sag_record, sagittal_slice=sag_ref, timings_s=timings,
    )


from .grading.names import CENTRAL_GRADES as _GRADES


def measurement_options(pack: Any) -> tuple[str, Any]:
    """(AP diameter method the pack's tree was fitted with, the pack's box rule config)."""
    from .localization import BoxRuleConfig

    tree = pack.get("tree") if pack is not None else None
    method = (getattr(tree, "training", None) or {}).get("diameter_method", "chord")
    box_rule = BoxRuleConfig()
    path = getattr(pack, "path", None)
    if path is not None and (path / "box_rule.json").is_file():
        import json

        box_rule = BoxRuleConfig.from_dict(json.loads((path / "box_rule.json").read_text()))
    return method, box_rule


def measure_and_localize(lv: LevelResult, pack: Any) -> None:
    """Measurements and facet/foramen boxes of one level from its masks (in place)."""
    from .localization import boxes_from_masks
    from .measurements import measure_level

    method, box_rule = measurement_options(pack)
    spacing = lv.geometry.pixel_spacing
    lv.measurements = measure_level(lv.sac_mask, lv.disc_mask, spacing, diameter_method=method).to_dict()
    lv.boxes = {}
    if not lv.sac_mask.any():
        lv.warnings.append("no dural sac found on this slice")
    if not lv.disc_mask.any():
        lv.warnings.append("no disc found on this slice")
    if lv.sac_mask.any():
        boxes = boxes_from_masks(lv.sac_mask, lv.disc_mask, spacing, config=box_rule,
                                 left_is_higher_col=left_is_higher_col(lv.geometry),
                                 anterior_is_low_row=anterior_is_low_row(lv.geometry))
        lv.boxes = {k: [int(v) for v in box] for k, box in boxes.items() if box is not None}


def grade_levels(levels: list[LevelResult], pack: Any, cfg: AnalysisConfig) -> None:
    """Tree grade from the measured ratio, and the CNN findings, added to each level."""
    tree = pack.get("tree")
    classifiers = {task: pack.get(f"classifier_{task}") for task in ("central", "central_binary", "foramen", "facet")}
    have_cnn = any(c is not None for c in classifiers.values())
    if have_cnn:
        from .grading.classifier_inference import grade_levels
    for lv in levels:
        central: dict[str, Any] = {}
        if tree is not None:
            value = lv.measurements.get(tree.feature)
            if value is None or not np.isfinite(value):
                lv.warnings.append(f"tree: {tree.feature} unavailable (empty mask)")
            else:
                g = int(tree.predict([value])[0])
                central["tree"] = {"grade": _GRADES[g], "ratio_name": tree.feature,
                                   "ratio": round(float(value), 4), "rule": tree.rule_for(value)}
        lv.findings["central_canal"] = central
    if have_cnn:
        cnn = grade_levels([(lv.image, lv.geometry.pixel_spacing, lv.sac_mask, lv.boxes,
                             left_is_higher_col(lv.geometry), anterior_is_low_row(lv.geometry)) for lv in levels],
                           classifiers)
        for lv, out in zip(levels, cnn):
            central = lv.findings["central_canal"]
            if "central_canal_cnn" in out:
                central["cnn"] = out.pop("central_canal_cnn")
            lv.findings.update(out)
    for lv in levels:
        central = lv.findings["central_canal"]
        source = cfg.central_grade_source if cfg.central_grade_source in central else (
            "tree" if "tree" in central else "cnn" if "cnn" in central else None)
        central["grade"] = central[source]["grade"] if source else None
        central["grade_source"] = source
