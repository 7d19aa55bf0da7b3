"""``lumbargrade segment``: the dural sac and disc on every axial slice of an input, with a
plausibility verdict per slice.

Input: a DICOM folder or .zip (every slice of every axial series, or ``series`` only), a NIfTI
file (slices along its most axial axis), or one 2-D PNG/NPY image with its pixel spacing. Each
slice is segmented in its canonical view (:mod:`lumbargrade.io.orientation`), the masks are put
back on the slice's own pixel grid and written as ``labels/<name>.png`` (0 background, 1 dural
sac, 2 disc and, with a network that has them, 3/4 facet left/right, 5/6 foramen left/right),
and ``segment.json`` lists every slice:

``{"slices": [{"sop_instance_uid", "index", "label_map", "dural_sac_area_mm2",
"disc_area_mm2", "plausible", "warnings", ...}], ...}``.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from .errors import InputError
from .numbers import json_safe

__all__ = ["SliceInput", "correct_fat_shift", "gather_slices", "segment_slices", "run_segment"]

_IMAGE_SUFFIXES = (".png", ".npy", ".tif", ".tiff", ".jpg", ".jpeg", ".bmp")


@dataclass
class SliceInput:
    """One 2-D slice to segment: its pixels (lazily), spacing, geometry (None for a bare image),
    where it came from, and the name of its label map."""

    name: str
    index: int
    spacing: tuple[float, float]
    geometry: Any
    where: str
    sop_instance_uid: str | None = None
    series_instance_uid: str | None = None
    ref: Any = None
    image: np.ndarray | None = None

    def pixels(self) -> np.ndarray:
        if self.image is not None:
            return self.image
        return np.asarray(self.ref.pixels(), dtype=np.float32)


def _is_nifti(p: Path) -> bool:
    n = p.name.lower()
    return n.endswith(".nii") or n.endswith(".nii.gz")


def _parse_spacing(text: str | None, where: str) -> tuple[float, float]:
    if not text:
        raise InputError(where, "a PNG/NPY image has no pixel spacing: give --spacing ROW_MM,COL_MM")
    try:
        a, b = (float(v) for v in text.split(","))
    except ValueError:
        raise InputError("--spacing", f"expected ROW_MM,COL_MM such as 0.7,0.7, got {text!r}") from None
    if not (a > 0 and b > 0 and np.isfinite(a) and np.isfinite(b)):
        raise InputError("--spacing", f"spacing must be positive, got {text!r}")
    return a, b


def gather_slices(path: str | Path, series: str | None = None, spacing: str | None = None,
                  rules: Any = None) -> tuple[list[SliceInput], list[str]]:
    """The slices of an input (see the module doc) and the reader's warnings."""
    p = Path(path)
    if not p.exists():
        raise InputError(p, "not found")
    if p.is_file() and p.suffix.lower() in _IMAGE_SUFFIXES:
        from .manifest import load_image_file

        img = load_image_file(p)
        sp = _parse_spacing(spacing, str(p))
        return [SliceInput(name=p.stem, index=0, spacing=sp, geometry=None, where=str(p), image=img)], []
    if p.is_file() and _is_nifti(p):
        from .io.nifti import read_nifti

        study = read_nifti(p, rules=rules, slice_axis="axial")
    else:
        from .io import read_study

        study = read_study(p, rules=rules)
    out: list[SliceInput] = []
    chosen = [s for s in study.series if series in (None, s.series_instance_uid)]
    if series is not None and not chosen:
        raise InputError(p, f"no series with SeriesInstanceUID {series}")
    axial = [s for s in chosen if s.plane == "axial"]
    if not axial:
        planes = ", ".join(sorted({s.plane for s in chosen})) or "none"
        raise InputError(p, f"no axial series to segment (series planes: {planes})")
    multi = len(axial) > 1
    for si, s in enumerate(axial):
        k = 0
        for b in s.blocks:
            for ref in b.slices:
                g = ref.geometry
                name = f"s{si + 1:02d}_{k:04d}" if multi else f"{k:04d}"
                out.append(SliceInput(name=name, index=k, spacing=tuple(g.pixel_spacing), geometry=g,
                                      where=ref.display or str(ref.path), sop_instance_uid=ref.sop_instance_uid,
                                      series_instance_uid=s.series_instance_uid, ref=ref))
                k += 1
    return out, list(study.warnings)


def segment_slices(items: list[SliceInput], segmenter: Any, batch: int = 8, progress: Any = None) -> list[dict]:
    """Segment each slice in its canonical view; returns per slice ``{"labels": uint8 [rows, cols]
    on the stored grid, "record": segment.json's entry without the label map path}``."""
    from .boxes.image import side_regions
    from .io.orientation import axial_view
    from .quality import check_slice

    results: list[dict] = []
    for s0 in range(0, len(items), batch):
        part = items[s0:s0 + batch]
        views, canon = [], []
        for it in part:
            try:
                v = axial_view(it.geometry)
            except ValueError as e:
                raise InputError(it.where, str(e)) from None
            img = it.pixels()
            if not np.all(np.isfinite(img)):
                raise InputError(it.where, "image holds values that are not finite")
            views.append(v)
            canon.append((v.to_canonical(img), v.canonical_spacing(it.spacing)))
        outs = segmenter.predict(canon)
        for it, v, (cimg, csp), o in zip(part, views, canon, outs):
            lab = o.labels
            full = np.zeros(lab.shape, np.uint8)
            full[lab == 1] = 1
            full[lab == 2] = 2
            if int(lab.max()) > 2:
                regions = side_regions(lab == 3, lab == 4, lab == 1)
                full[(full == 0) & (regions > 0)] = regions[(full == 0) & (regions > 0)]
            warnings = check_slice(lab == 1, lab == 2, csp, o.quality, disc_expected=False)
            if v.residual_deg > 20.0:
                warnings.append(f"slice rotated {v.residual_deg:.0f} degrees in-plane from the patient's axes")
            px = csp[0] * csp[1]
            rec = {
                "sop_instance_uid": it.sop_instance_uid,
                "series_instance_uid": it.series_instance_uid,
                "index": it.index,
                "dural_sac_area_mm2": round(float((lab == 1).sum()) * px, 2),
                "disc_area_mm2": round(float((lab == 2).sum()) * px, 2),
                "plausible": not warnings,
                "warnings": warnings,
                "orientation": v.to_dict(),
                "quality": o.quality,
            }
            header = getattr(it.ref, "header", None)
            if header is not None:
                from .io.acquisition import fat_water_shift

                rec["fat_water_shift"] = fat_water_shift(header, it.geometry)
            results.append({"labels": v.from_canonical(full), "record": rec, "name": it.name})
        if progress is not None:
            progress(len(part))
    return results


def correct_fat_shift(items: list[SliceInput], results: list[dict], reader: Any, max_slices: int = 24) -> None:
    """Move each slice's disc and facet/foramen regions back by the fat-water shift, as ``analyze``
    does (in place; :mod:`lumbargrade.segmentation.fat_shift`): size and stored axis from the
    header, direction read by ``reader`` from up to ``max_slices`` slices of the series (evenly
    spaced). ``record["fat_water_shift"]["correction"]`` says what was done."""
    from .io.acquisition import fat_water_shift_px, readout_index_axis
    from .segmentation.fat_shift import correct_masks, correction_record, readout_rows

    series: dict[str, list[tuple[SliceInput, dict, float, int]]] = {}
    for it, r in zip(items, results):
        header = getattr(it.ref, "header", None)
        size = fat_water_shift_px(header) if header is not None else None
        axis = readout_index_axis(header) if header is not None else None
        if size is None or axis is None or r["record"].get("fat_water_shift") is None:
            continue
        if reader is None:
            r["record"]["fat_water_shift"]["correction"] = {"applied": False,
                                                            "reason": "the model pack has no fat-shift reader"}
            continue
        series.setdefault(str(it.series_instance_uid), []).append((it, r, size, axis))
    for group in series.values():
        pick = np.unique(np.linspace(0, len(group) - 1, min(len(group), max_slices)).round().astype(int))
        d = reader.direction([readout_rows(group[i][0].pixels(), group[i][3]) for i in pick])
        for it, r, size, axis in group:
            r["record"]["fat_water_shift"]["correction"] = correction_record(d, size, axis, it.geometry, reader)
            if d["sign"] == 0:
                continue
            lab = r["labels"]
            regions = np.where(lab >= 3, lab, 0).astype(np.uint8)
            disc, regions = correct_masks(lab == 2, regions, d["sign"] * size, axis, reader.alpha)
            new = np.where(lab == 1, 1, 0).astype(np.uint8)
            new[(new == 0) & disc] = 2
            new[(new == 0) & (regions > 0)] = regions[(new == 0) & (regions > 0)]
            r["labels"] = new
            px = float(it.spacing[0]) * float(it.spacing[1])
            r["record"]["disc_area_mm2"] = round(float((new == 2).sum()) * px, 2)


def run_segment(args: Any) -> int:
    """Entry point of ``lumbargrade segment`` (parsed args)."""
    import sys

    from .modelpack import load_pack
    from .report.json_report import check_output_folder

    out = Path(args.out)
    check_output_folder(out, args.overwrite)
    t0 = time.perf_counter()
    items, warns = gather_slices(args.input, args.series, args.spacing)
    if not items:
        raise InputError(args.input, "no slices found")
    pack = load_pack(args.models, runtime=getattr(args, "runtime", None))
    segmenter = pack.get("segmentation")
    if segmenter is None:
        raise InputError(pack.path, "model pack has no segmentation model")
    bar = None
    if not args.quiet and len(items) > 1:
        from tqdm import tqdm

        bar = tqdm(total=len(items), desc="segment", unit="slice", file=sys.stderr)
    try:
        results = segment_slices(items, segmenter, progress=(bar.update if bar else None))
    finally:
        if bar is not None:
            bar.close()
    if getattr(args, "fat_shift_correction", True):
        correct_fat_shift(items, results, pack.get("fat_shift"))
    from .report.json_report import atomic_output

    with atomic_output(out, args.overwrite) as tmp:
        (tmp / "labels").mkdir(parents=True, exist_ok=True)
        records = []
        for r in results:
            rel = f"labels/{r['name']}.png"
            _save_label_png(r["labels"], tmp / rel)
            records.append({**r["record"], "label_map": rel})
        doc = {
            "input": str(args.input),
            "model_pack": pack.label,
            "model_pack_sha256": pack.fingerprint,
            "model_pack_trained_on": pack.manifest.get("trained_on"),
            "segmentation": {"classes": list(getattr(segmenter, "classes", ())),
                             "runtime": getattr(segmenter, "runtime", None),
                             "sac_refiner_weight": getattr(segmenter, "sac_refiner_weight", None)},
            "slices": records,
            "warnings": warns,
            "seconds": round(time.perf_counter() - t0, 3),
        }
        (tmp / "segment.json").write_text(json.dumps(json_safe(doc), indent=2) + "\n")
    n_bad = sum(not r["plausible"] for r in records)
    print(f"segmented {len(records)} slice(s) into {out}; {n_bad} flagged as implausible "
          f"(see segment.json)")
    return 0


def _save_label_png(arr: np.ndarray, path: Path) -> None:
    from PIL import Image

    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(np.asarray(arr, dtype=np.uint8), mode="L").save(path, format="PNG")
