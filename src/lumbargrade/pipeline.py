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

__all__ = ["AnalysisConfig", "LevelResult", "StudyResult", "analyze_study", "correct_fat_shift", "grade_levels",
           "measure_and_localize", "segment_levels"]


@dataclass
class AnalysisConfig:
    """Options of :func:`analyze_study` (saved as ``config.json`` beside every output)."""

    slice_choice: str = "landmarks"  # 'landmarks' (fallback 'block') or 'block'
    central_grade_source: str = "tree"  # which model's grade is the reported central canal grade
    mid_sagittal_index: int | None = None  # override the automatic mid-sagittal slice choice
    max_landmark_distance_mm: float = 6.0  # warn when the chosen slice is farther from the disc centre
    boxes: str = "auto"  # facet/foramen boxes: 'image' (the segmenter's regions), 'fitted' (rule on the
    # masks, the pack's box_rule.json), 'paper' (36 mm squares from the dural sac), 'auto' (the pack's choice)
    field_offset_mm: float = 20.0  # the segmenter's field is centred this far behind the disc-centre landmark
    fat_shift_correction: bool = True  # move the disc and facet/foramen outlines back by the fat-water shift
    # (size and axis from the header, direction read by the pack's fat_shift reader; see correct_fat_shift)

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
    regions: np.ndarray | None = None  # uint8 [rows, cols] facet/foramen regions 3-6 (image localiser) or None
    quality: dict[str, Any] = field(default_factory=dict)  # the segmenter's numbers (confidence, mirror Dice)
    review_reasons: list[str] = field(default_factory=list)  # why the level needs a radiologist's look
    boxes_source: str | None = None  # 'image', 'fitted' or 'paper'
    box_candidates: dict[str, dict[str, list[int]]] = field(default_factory=dict)  # every source's boxes
    view: Any = None  # lumbargrade.io.orientation.AxialView (canonical view of the slice)
    regions_source: str | None = None  # 'reader' when a reader drew the regions (lumbargrade.regrade)
    fat_shift: dict[str, Any] | None = None  # the fat-water shift correction (see correct_fat_shift)
    context_refs: tuple[Any, Any] | None = None  # SliceRefs of the slices below / above (grading.context)

    def __post_init__(self) -> None:
        if self.view is None:
            from .io.orientation import axial_view

            self.view = axial_view(self.geometry)

    @property
    def canonical_spacing(self) -> tuple[float, float]:
        """(row_mm, col_mm) of the canonical view."""
        return self.view.canonical_spacing(self.geometry.pixel_spacing)

    def canonical(self, arr: np.ndarray | None) -> np.ndarray | None:
        """A stored-grid array in the canonical view (anterior at the top, patient left on the right)."""
        return None if arr is None else self.view.to_canonical(arr)

    def canonical_geometry(self) -> SliceGeometry:
        """The geometry of the canonical view's pixel grid (the same slice stored as ``+x+y``)."""
        from .io.orientation import restore

        return restore(np.zeros(self.image.shape, np.uint8), self.geometry, "+x+y")[1]

    def canonical_context(self) -> tuple[np.ndarray | None, np.ndarray | None]:
        """The slices caudal and cranial to this one (:mod:`lumbargrade.grading.context`) in the
        canonical view, pixels read now; None where there is none."""
        from .errors import InputError

        out: list[np.ndarray | None] = []
        for side, r in zip(("below", "above"), self.context_refs or (None, None)):
            try:
                out.append(None if r is None else self.canonical(np.asarray(r.pixels(), np.float32)))
            except InputError as e:  # an unreadable neighbour: the graded slice stands in for it
                self.warnings.append(f"the slice {side} this one could not be read ({e}); the classifiers "
                                     "that look at neighbouring slices saw this slice in its place")
                out.append(None)
        return out[0], out[1]

    def canonical_boxes(self) -> dict[str, list[int]]:
        shape = self.image.shape
        return {k: self.view.box_to_canonical(b, shape) for k, b in (self.boxes or {}).items() if b}

    @property
    def needs_review(self) -> bool:
        return bool(self.review_reasons)

    def label_map(self) -> np.ndarray:
        """uint8 [rows, cols] (the stored grid): 1 dural sac, 2 disc, 3/4 facet left/right, 5/6
        foramen left/right (the image localiser's or a reader's regions; without them the boxes,
        filled), sac and disc drawn over them."""
        lab = np.zeros(self.image.shape, dtype=np.uint8)
        if self.regions is not None:
            lab[:] = np.where(np.isin(self.regions, (3, 4, 5, 6)), self.regions, 0)
        else:
            for name, value in (("facet_left", 3), ("facet_right", 4), ("foramen_left", 5), ("foramen_right", 6)):
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
        rec["boxes_source"] = self.boxes_source
        if self.box_candidates:
            rec["boxes_by_source"] = self.box_candidates
        rec["needs_review"] = self.needs_review
        rec["review_reasons"] = list(self.review_reasons)
        rec["orientation"] = self.view.to_dict()
        if self.quality:
            rec["segmentation_quality"] = dict(self.quality)
        header = getattr(self.source, "header", None)
        if header is not None:
            from .io.acquisition import fat_water_shift

            rec["fat_water_shift"] = fat_water_shift(header, self.geometry)
            if rec["fat_water_shift"] is not None and self.fat_shift is not None:
                rec["fat_water_shift"]["correction"] = dict(self.fat_shift)
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
    uid_seed: str | None = None  # set: the SEG/SR UIDs are derived from it (same seed, same UIDs)


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


def _level_on_slice(level: str, axial: Any, b: int, k: int, rec: dict[str, Any],
                    warnings: list[str]) -> LevelResult | None:
    """A :class:`LevelResult` on slice ``k`` of block ``b`` (its pixels read now); None, with a
    warning, when the slice is too oblique to grade."""
    from .io.orientation import axial_view

    ref = axial.blocks[b].slices[k]
    try:
        view = axial_view(ref.geometry)
    except ValueError as e:
        warnings.append(f"{level}: not graded: {ref.display or ref.sop_instance_uid}: {e}")
        return None
    return LevelResult(
        level=level,
        series_instance_uid=axial.series_instance_uid,
        sop_instance_uid=ref.sop_instance_uid,
        geometry=ref.geometry,
        image=np.asarray(ref.pixels(), dtype=np.float32),
        slice_choice=rec,
        source=ref,
        view=view,
        context_refs=context_refs(axial, ref),
    )


def context_refs(series: Any, ref: Any) -> tuple[Any, Any]:
    """The SliceRefs caudal and cranial to ``ref`` among every slice of ``series`` (parallel, on the
    same pixel grid, within :data:`lumbargrade.grading.context.DEFAULT_MAX_GAP_MM`); None where
    there is none."""
    from .grading.context import neighbour_indices

    others = [s for s in series.all_slices() if s is not ref]
    lo, hi = neighbour_indices(ref.geometry, [s.geometry for s in others])
    return (None if lo is None else others[lo], None if hi is None else others[hi])


def _next_slice_where_no_disc(levels: list[LevelResult], where: dict[str, tuple[int, int]], axial: Any,
                              segmenter: Any, cfg: AnalysisConfig) -> None:
    """Levels chosen by landmark whose slice shows no disc (a thin or collapsed disc falling
    between two slices, or a landmark a little off): the other slices of the block within
    ``cfg.max_landmark_distance_mm`` of the disc-centre landmark (the two nearest, nearest first)
    are segmented, and the first that passes the plausibility gate with a disc replaces the slice
    (in place; ``slice_choice["moved_from"]`` and a warning say so). Without one the level keeps
    its slice and its review reasons; a neighbour that cannot be read is skipped."""
    for i, lv in enumerate(levels):
        rec = lv.slice_choice or {}
        if lv.disc_mask is None or lv.disc_mask.any() or rec.get("method") != "landmarks" or lv.level not in where:
            continue
        b, k = where[lv.level]
        point = np.asarray(rec["landmark_patient_mm"], dtype=np.float64)
        block = axial.blocks[b].slices
        dist = {j: float(s.geometry.signed_distance(point)) for j, s in enumerate(block) if j != k}
        near = sorted((j for j, d in dist.items() if abs(d) <= cfg.max_landmark_distance_mm), key=lambda j: abs(dist[j]))
        trials = []
        for j in near[:2]:
            try:  # a neighbour that cannot be read is no candidate (the chosen slice was read)
                t = _level_on_slice(lv.level, axial, b, j, {**rec, "distance_mm": round(dist[j], 3)}, [])
            except InputError:
                continue
            if t is not None:
                trials.append(t)
        if not trials:
            continue
        segment_levels(trials, segmenter, cfg)
        for t in trials:
            if t.disc_mask.any() and not t.review_reasons:
                t.slice_choice["moved_from"] = {"sop_instance_uid": lv.sop_instance_uid,
                                                "distance_mm": rec.get("distance_mm"),
                                                "reason": "no disc found on the slice nearest the disc centre"}
                t.warnings.append(
                    f"no disc found on the slice nearest the disc centre ({abs(rec.get('distance_mm') or 0.0):.1f} mm); "
                    f"the next one ({abs(t.slice_choice['distance_mm']):.1f} mm) shows it and was used")
                levels[i] = t
                break


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
    where: dict[str, tuple[int, int]] = {}
    for level in LEVELS:
        if level not in chosen:
            continue
        b, k, rec = chosen[level]
        lv = _level_on_slice(level, axial, b, k, rec, warnings)
        if lv is not None:
            levels.append(lv)
            where[level] = (b, k)
    timings["reading"] = time.perf_counter() - t0

    t0 = time.perf_counter()
    segment_levels(levels, segmenter, cfg)
    _next_slice_where_no_disc(levels, where, axial, segmenter, cfg)
    timings["segmentation"] = time.perf_counter() - t0
    t0 = time.perf_counter()
    correct_fat_shift(levels, pack.get("fat_shift") if cfg.fat_shift_correction else None)
    timings["fat_shift"] = time.perf_counter() - t0

    t0 = time.perf_counter()
    for lv in levels:
        measure_and_localize(lv, pack, cfg.boxes)
    timings["measurements"] = time.perf_counter() - t0
    flagged = bool((sag_record or {}).get("flagged")) if isinstance(sag_record, dict) else False
    for lv in levels:
        if flagged:
            why = "; ".join((sag_record or {}).get("flag_reasons") or (sag_record or {}).get("warnings") or [])
            lv.review_reasons.append("level identification flagged" + (f" ({why})" if why else ""))

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
    from .boxes.rule import BoxRuleConfig

    tree = pack.get("tree") if pack is not None else None
    method = (getattr(tree, "training", None) or {}).get("diameter_method", "chord")
    box_rule = BoxRuleConfig()
    path = getattr(pack, "path", None)
    if path is not None and (path / "box_rule.json").is_file():
        import json

        f = path / "box_rule.json"
        try:
            box_rule = BoxRuleConfig.from_dict(json.loads(f.read_text()))
        except (json.JSONDecodeError, UnicodeDecodeError, ValueError, TypeError, AttributeError) as e:
            raise InputError(f, f"not a valid box rule ({e})") from None
    return method, box_rule


def _landmark_centre(lv: LevelResult, offset_mm: float) -> tuple[float, float] | None:
    """The segmenter's field centre on the level's canonical view: the disc-centre landmark
    projected onto the slice, ``offset_mm`` towards the patient's back; None without a landmark."""
    p = (lv.slice_choice or {}).get("landmark_patient_mm")
    if p is None:
        return None
    rc = lv.geometry.patient_to_pixel(np.asarray(p, dtype=np.float64))
    c = lv.view.point_to_canonical(np.asarray(rc[:2], dtype=np.float64), lv.image.shape)
    row_mm = lv.canonical_spacing[0]
    return float(c[0] + offset_mm / row_mm), float(c[1])


def segment_levels(levels: list[LevelResult], segmenter: Any, cfg: AnalysisConfig | None = None) -> None:
    """Segment each level's slice in its canonical view (in place): dural sac and disc masks, the
    facet/foramen regions split by side (networks with regions), the segmenter's quality numbers
    and the plausibility gate's reasons (:mod:`lumbargrade.quality`)."""
    from .boxes.image import side_regions
    from .quality import check_slice

    cfg = cfg or AnalysisConfig()
    if not levels:
        return
    items = [(lv.canonical(lv.image), lv.canonical_spacing) for lv in levels]
    centres = [_landmark_centre(lv, cfg.field_offset_mm) for lv in levels]
    outs = segmenter.predict(items, centres)
    for lv, out, (_, sp) in zip(levels, outs, items):
        lab = out.labels
        sac_c, disc_c = lab == 1, lab == 2
        lv.sac_mask = lv.view.from_canonical(sac_c)
        lv.disc_mask = lv.view.from_canonical(disc_c)
        lv.regions = None
        if int(lab.max(initial=0)) > 2 or len(getattr(segmenter, "classes", ())) > 3:
            lv.regions = lv.view.from_canonical(side_regions(lab == 3, lab == 4, sac_c))
        lv.quality = dict(out.quality)
        lv.review_reasons = check_slice(sac_c, disc_c, sp, out.quality, disc_expected=True)
        if lv.view.residual_deg > 20.0:
            lv.review_reasons.append(f"slice rotated {lv.view.residual_deg:.0f} degrees in-plane from the patient's axes")


def correct_fat_shift(levels: list[LevelResult], reader: Any) -> None:
    """Move each level's disc mask and facet/foramen regions back by the fat-water shift (in place;
    :mod:`lumbargrade.segmentation.fat_shift`): its size and stored axis from the slice's header
    (``MagneticFieldStrength``, ``PixelBandwidth``, ``InPlanePhaseEncodingDirection``), its
    direction read by ``reader`` from all the levels' slices of the same series. ``lv.fat_shift``
    records what was done (also where nothing was: no reader, no header, no agreed direction)."""
    from .io.acquisition import fat_water_shift_px, readout_index_axis
    from .segmentation.fat_shift import correct_masks, correction_record, readout_rows

    series: dict[str, list[tuple[LevelResult, float, int]]] = {}
    for lv in levels:
        header = getattr(lv.source, "header", None)
        size = fat_water_shift_px(header) if header is not None else None
        axis = readout_index_axis(header) if header is not None else None
        if size is None or axis is None:
            lv.fat_shift = None  # nothing to correct with: the report's fat_water_shift says what the header lacks
            continue
        if reader is None:
            lv.fat_shift = {"applied": False, "reason": "the model pack has no fat-shift reader"}
            continue
        series.setdefault(lv.series_instance_uid, []).append((lv, size, axis))
    for items in series.values():
        d = reader.direction([readout_rows(lv.image, axis) for lv, _, axis in items])
        for lv, size, axis in items:
            lv.fat_shift = correction_record(d, size, axis, lv.geometry, reader)
            if d["sign"] != 0:
                lv.disc_mask, lv.regions = correct_masks(lv.disc_mask, lv.regions, d["sign"] * size, axis, reader.alpha)


def resolve_box_source(requested: str, lv: LevelResult, pack: Any) -> str:
    """'image', 'fitted' or 'paper' for a level: 'auto' is the pack's choice (``box_source`` in
    pack.json; else 'image' when the level has regions, else 'fitted')."""
    if requested in ("image", "fitted", "paper"):
        return requested
    if requested != "auto":
        raise InputError("--boxes", f"{requested!r} is not image, fitted, paper or auto")
    manifest = getattr(pack, "manifest", None) or {}
    choice = manifest.get("box_source")
    if choice in ("image", "fitted", "paper"):
        return choice
    return "image" if lv.regions is not None else "fitted"


def measure_and_localize(lv: LevelResult, pack: Any, boxes: str = "auto", fill_missing: bool = True) -> None:
    """Measurements and facet/foramen boxes of one level from its masks (in place), computed in
    the canonical view; boxes are stored on the slice's own pixel grid. Besides the boxes of the
    chosen source, ``lv.box_candidates`` holds those of every source (for evaluation)."""
    from .boxes.placement import BOX_SOURCES, place_boxes
    from .measurements import measure_level

    method, box_rule = measurement_options(pack)
    sac, disc = lv.canonical(lv.sac_mask), lv.canonical(lv.disc_mask)
    spacing = lv.canonical_spacing
    cshape = sac.shape
    regions = lv.canonical(lv.regions)
    lv.measurements = measure_level(sac, disc, spacing, diameter_method=method).to_dict()
    if not sac.any():
        lv.warnings.append("no dural sac found on this slice")
    if not disc.any():
        lv.warnings.append("no disc found on this slice")
    to_stored = lambda bx: {k: [int(v) for v in lv.view.box_from_canonical(b, cshape)] for k, b in bx.items()}  # noqa: E731
    source = resolve_box_source(boxes, lv, pack)
    found, used, notes = place_boxes(source, sac, disc, spacing, regions, box_rule, fill_missing=fill_missing)
    lv.boxes, lv.boxes_source = to_stored(found), used
    lv.warnings.extend(notes)
    lv.box_candidates = {used: lv.boxes}
    for other in BOX_SOURCES:
        if other not in lv.box_candidates and not (other == "image" and regions is None):
            lv.box_candidates[other] = to_stored(place_boxes(other, sac, disc, spacing, regions, box_rule)[0])


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
            value = tree.value_of(lv.measurements) if tree.n_features == 1 else None
            if value is None:
                lv.warnings.append(f"tree: {tree.feature} unavailable (empty mask)")
            else:
                g = int(tree.predict([value])[0])
                central["tree"] = {"grade": _GRADES[g], "ratio_name": tree.feature,
                                   "ratio": round(float(value), 4), "rule": tree.rule_for(value)}
        lv.findings["central_canal"] = central
    if have_cnn:
        context = any(int(getattr(c, "context_slices", 0) or 0) for c in classifiers.values() if c is not None)
        cnn = grade_levels([(lv.canonical(lv.image), lv.canonical_spacing, lv.canonical(lv.sac_mask),
                             lv.canonical_boxes(), lv.canonical_context() if context else None)
                            for lv in levels], classifiers)
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
