"""Fitting the facet/foramen box rule on a manifest (``lumbargrade train boxes``).

I/O around :func:`lumbargrade.boxes.rule.fit_box_rule`: reads a manifest's truth label maps
(masks: 1 dural sac, 2 disc) and ground-truth boxes, fits the rule on one split, evaluates it and
the paper's 36 mm rule on every split (truth masks: the best each rule can do), and writes
``RUN_DIR/box_rule.json`` (what a model pack holds; ``BoxRuleConfig.from_dict``),
``RUN_DIR/metrics.json`` and ``RUN_DIR/config.json``.

Truth boxes: the phantom's ``<patient>/truth.json`` ``levels[i].boxes`` when present (the
anatomy's boxes), else the bounding boxes of labels 3-6 of the label map (which the sac and disc
labels may partly hide). Every slice is put into its canonical view first
(:func:`lumbargrade.manifest.axial_view_of`: from the DICOM header; PNG/NPY taken as canonical).
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

__all__ = ["examples_from_manifest", "fit_box_rule_from_manifest", "run_cli"]


def _truth_boxes(row: dict, cache: dict) -> dict | None:
    """The truth boxes of a manifest row's level from the phantom's truth.json (None without one)."""
    from ..manifest import phantom_truth

    truth = phantom_truth(row, cache)
    sop = row.get("axial_sop_instance_uid")
    for lv in (truth or {}).get("levels", []):
        if lv.get("level") == row["level"] and (not sop or lv.get("axial_sop_instance_uid", sop) == sop):
            return lv.get("boxes")
    return None


def _examples_and_rows(manifest_path, split: str | None) -> tuple[list, list[str], list[dict]]:
    from ..errors import InputError
    from ..manifest import axial_view_of, load_label_map, read_manifest
    from .rule import example_from_label_map

    rows = read_manifest(manifest_path)
    cache: dict = {}
    ex, pids, used = [], [], []
    for r in rows:
        if (split is not None and r["split"] != split) or not r.get("label_map"):
            continue
        try:
            sp = (float(r["pixel_spacing_row_mm"]), float(r["pixel_spacing_col_mm"]))
        except (KeyError, ValueError):
            raise InputError(f"{manifest_path} line {r.get('_line')}",
                             "pixel_spacing_row_mm / pixel_spacing_col_mm missing or not numbers") from None
        view = axial_view_of(r)
        lm = load_label_map(r)
        truth = _truth_boxes(r, cache)
        if truth is not None:
            truth = {k: view.box_to_canonical(b, lm.shape) for k, b in truth.items()}
        ex.append(example_from_label_map(view.to_canonical(lm), view.canonical_spacing(sp), truth=truth))
        pids.append(r["patient_id"])
        used.append(r)
    return ex, pids, used


def _with_predicted_masks(examples: list, rows: list[dict], segmenter, regions: list | None = None,
                          fat_shift_reader=None) -> list:
    """Copies of ``examples`` whose masks are the ones ``segmenter`` predicts on the rows' images
    (each in its canonical view, as the pipeline segments it); the predicted facet/foramen regions
    (split by side, or None) are appended to ``regions`` when given; ``fat_shift_reader``: the disc
    and regions are moved back by the fat-water shift as ``analyze`` moves them."""
    from dataclasses import replace

    from ..segmentation.inference import predict_rows
    from .image import side_regions

    outs = predict_rows(segmenter, rows, fat_shift_reader=fat_shift_reader)
    if regions is not None:
        for o in outs:
            lab = o.labels
            regions.append(side_regions(lab == 3, lab == 4, lab == 1) if int(lab.max(initial=0)) > 2 else None)
    return [replace(e, sac_mask=o.labels == 1, disc_mask=o.labels == 2) for e, o in zip(examples, outs)]


def _image_ious(examples: list, regions: list, rule) -> dict | None:
    """Mean IoU (facet, foramen) of the image localiser's boxes, raw and with ``rule``'s calibration."""
    from ..metrics import iou_boxes
    from .placement import place_boxes
    from .rule import BOX_NAMES

    if not examples or all(r is None for r in regions):
        return None
    raw = {"facet": [], "foramen": []}
    cal = {"facet": [], "foramen": []}
    bare = type(rule)(**{**{f: getattr(rule, f) for f in rule.__dataclass_fields__}, "image_calibration": {}})
    for e, reg in zip(examples, regions):
        if reg is None:
            continue
        b_raw = place_boxes("image", e.sac_mask, e.disc_mask, e.spacing, reg, bare)[0]
        b_cal = place_boxes("image", e.sac_mask, e.disc_mask, e.spacing, reg, rule)[0]
        for n in BOX_NAMES:
            if e.truth.get(n) is None:
                continue
            raw[n.split("_")[0]].append(iou_boxes(b_raw.get(n), e.truth[n]))
            cal[n.split("_")[0]].append(iou_boxes(b_cal.get(n), e.truth[n]))
    mean = lambda d: {k: round(float(np.mean(v)), 4) for k, v in d.items() if v}  # noqa: E731
    return {"image_raw": mean(raw), "image_calibrated": mean(cal) if rule.image_calibration else None}


def examples_from_manifest(manifest_path, split: str | None = "train",
                           segmenter=None) -> tuple[list, list[str]]:
    """``(examples, patient_ids)``: one :class:`~lumbargrade.boxes.rule.BoxExample` per row of
    ``split`` (all rows if None) with a label map; ``patient_ids`` parallel to the examples.

    With ``segmenter`` (a :class:`lumbargrade.segmentation.inference.Segmenter`) the masks are
    the ones it predicts on the rows' axial images (what the pipeline sees); else the truth's."""
    ex, pids, rows = _examples_and_rows(manifest_path, split)
    if segmenter is not None and ex:
        ex = _with_predicted_masks(ex, rows, segmenter)
    return ex, pids


def _iou_summary(examples, rule) -> dict:
    from .rule import evaluate_box_rule

    if not examples:
        return None
    return {k: round(v, 4) for k, v in evaluate_box_rule(examples, rule).items()}


def fit_box_rule_from_manifest(manifest_path, split: str = "train", segmenter=None, fat_shift_reader=None):
    """Fit the box rule on ``split`` of a manifest; ``(BoxRuleConfig, report)``.

    ``report``: numbers of levels/patients fitted on, the fitted rule in words, and the mean IoU
    (facet, foramen; both sides pooled) of the fitted rule and of the paper's 36 mm rule on every
    split of the manifest, on truth masks (the best each rule can do) and, with ``segmenter``, on
    its predicted masks, which the rule is then fitted on (as the pipeline will apply it; with
    ``fat_shift_reader``, moved back by the fat-water shift as the pipeline moves them).
    """
    from ..errors import InputError
    from .rule import BoxRuleConfig, fit_box_rule

    by_split, by_split_pred, regions = {}, {}, {}
    for s in ("train", "val", "test"):
        ex, pids, rows = _examples_and_rows(manifest_path, s)
        by_split[s] = (ex, pids)
        if segmenter is not None:  # the same rows, read once, with the segmenter's masks and regions
            regions[s] = []
            by_split_pred[s] = (_with_predicted_masks(ex, rows, segmenter, regions[s], fat_shift_reader) if ex else [],
                                pids)
    fit_on = by_split_pred if segmenter is not None else by_split
    train, pids = fit_on[split] if split in fit_on else examples_from_manifest(manifest_path, split, segmenter)
    if not train:
        raise InputError(manifest_path, f"no rows of split {split!r} with a label map to fit the box rule on")
    try:
        rule = fit_box_rule(train)
    except ValueError as e:
        raise InputError(manifest_path, str(e)) from e
    if segmenter is not None and split in regions and any(r is not None for r in regions[split]):
        # the image localiser's boxes combined with the rule's (lumbargrade.boxes.calibration)
        from dataclasses import replace

        from .calibration import fit_calibration
        from .image import region_boxes
        from .rule import boxes_from_masks

        cases = [(e.truth, region_boxes(reg), boxes_from_masks(e.sac_mask, e.disc_mask, e.spacing, rule),
                  e.sac_mask, e.spacing) for e, reg in zip(train, regions[split]) if reg is not None]
        rule = replace(rule, image_calibration=fit_calibration(cases))
    paper = BoxRuleConfig.paper()
    report = {
        "fitted_on": {"manifest": str(manifest_path), "split": split, "n_levels": len(train),
                      "n_patients": len(set(pids)),
                      "masks": "predicted" if segmenter is not None else "truth",
                      "fat_shift_corrected": fat_shift_reader is not None and segmenter is not None},
        "rule": rule.describe().splitlines(),
        "mean_iou_truth_masks": {
            s: {"n_levels": len(ex), "fitted": _iou_summary(ex, rule), "paper_36mm": _iou_summary(ex, paper)}
            for s, (ex, _) in by_split.items() if ex},
    }
    if segmenter is not None:
        report["mean_iou_predicted_masks"] = {
            s: {"n_levels": len(ex), "fitted": _iou_summary(ex, rule), "paper_36mm": _iou_summary(ex, paper),
                **(_image_ious(ex, regions[s], rule) or {})}
            for s, (ex, _) in by_split_pred.items() if ex}
        report["image_calibration"] = rule.image_calibration
    return rule, report


def run_cli(args) -> int:
    """``lumbargrade train boxes --data MANIFEST --out RUN_DIR [--overwrite]``: fits the rule on
    the train split; writes RUN_DIR/box_rule.json, metrics.json, config.json."""
    import logging

    from .. import __version__
    from ..errors import InputError

    out = Path(args.out)
    if (out / "box_rule.json").exists() and not getattr(args, "overwrite", False):
        raise InputError(out, "already holds box_rule.json (give --overwrite to replace it)")
    segmenter = None
    if getattr(args, "segmentation", None):
        from ..segmentation.inference import load_segmenter

        seg_dir = Path(args.segmentation)
        if (seg_dir / "pack.json").is_file():
            seg_dir = seg_dir / "segmentation"
        segmenter = load_segmenter(seg_dir)
    reader = None
    if getattr(args, "fat_shift", None):
        from ..segmentation.fat_shift import load_fat_shift_reader

        reader = load_fat_shift_reader(args.fat_shift)
    rule, report = fit_box_rule_from_manifest(args.data, split="train", segmenter=segmenter, fat_shift_reader=reader)
    out.mkdir(parents=True, exist_ok=True)
    (out / "box_rule.json").write_text(json.dumps(rule.to_dict(), indent=2) + "\n")
    (out / "metrics.json").write_text(json.dumps(report, indent=2) + "\n")
    (out / "config.json").write_text(json.dumps(
        {"command": "train boxes", "data": str(args.data), "out": str(out), "split": "train",
         "segmentation": getattr(args, "segmentation", None), "fat_shift": getattr(args, "fat_shift", None),
         "fit": "ridge least squares (fit_box_rule defaults)", "lumbargrade_version": __version__},
        indent=2) + "\n")
    logging.getLogger(__name__).info("box rule written to %s", out / "box_rule.json")
    for key in ("mean_iou_truth_masks", "mean_iou_predicted_masks"):
        for s, m in report.get(key, {}).items():
            line = (f"{key[9:]:15s} {s:5s} n={m['n_levels']:4d}  fitted facet {m['fitted']['facet']:.3f} foramen "
                    f"{m['fitted']['foramen']:.3f}   paper36 facet {m['paper_36mm']['facet']:.3f} "
                    f"foramen {m['paper_36mm']['foramen']:.3f}")
            for src in ("image_raw", "image_calibrated"):
                if m.get(src):
                    line += f"   {src} facet {m[src]['facet']:.3f} foramen {m[src]['foramen']:.3f}"
            print(line)
    return 0
