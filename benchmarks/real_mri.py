"""The segmenter on real MRI: axial planes of a real 3D T2 volume against outlines drawn without it.

Test data: ``tests/fixtures/real_axial`` (8 axial planes, 1 mm, of the spinalcordtoolbox lumbar T2
volume in ``tests/fixtures/nifti``, lower thoracic to upper lumbar, a 38 mm wide sagittal slab,
with dural sac outlines made as ``benchmarks/real_mri_reference.py`` describes). No model of the
project was trained or tuned on these images.

Each plane is segmented as ``lumbargrade segment`` does (canonical view, located search,
plausibility gate), stored in each of the 8 in-plane layouts (rotations, flips, transposes, with
ImageOrientationPatient to match). Reported per plane and layout: dural sac Dice against the
reference, Dice against the standard layout's prediction, the plausibility verdict; per plane, the
share of the reference outline's rays that end at the edge of its hand-placed region (there the
outline follows the region, not the image; ``benchmarks/reference_method_phantom.py`` measures
what that does on the phantom); and the target checks: Dice >= 0.85 in every layout, >= 0.95 between layouts, and no plane with Dice < 0.5
returned as plausible without a warning.

    python benchmarks/real_mri.py [--models PACK] [--out benchmarks/results/real_mri.json] [--picture PNG]
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))


def evaluate(models: str | None = None, runtime: str | None = None) -> dict:
    from real_mri_reference import load_reference, reference_outline

    from lumbargrade.io.orientation import LAYOUTS, axial_view, restore
    from lumbargrade.metrics import dice
    from lumbargrade.modelpack import load_pack
    from lumbargrade.runtime import cpu_info
    from lumbargrade.segment_runner import SliceInput, segment_slices

    refs, recs, masks = load_reference()
    pack = load_pack(models, runtime=runtime)
    seg = pack.get("segmentation")
    rows = []
    t0 = time.perf_counter()
    for ref, rec, truth in zip(refs, recs, masks):
        img, g = ref.pixels(), ref.geometry
        items = []
        for layout in LAYOUTS:
            s, g2 = restore(img, g, layout)
            items.append(SliceInput(name=layout, index=int(rec["index"]), spacing=tuple(g2.pixel_spacing),
                                    geometry=g2, where=f"slice {rec['index']} {layout}", image=s))
        res = segment_slices(items, seg)
        sacs = []
        for it, r in zip(items, res):
            canon = axial_view(it.geometry).to_canonical(r["labels"])
            sacs.append(canon == 1)
        for layout, r, sac in zip(LAYOUTS, res, sacs):
            rows.append({
                "index": int(rec["index"]), "layout": layout,
                "dice": round(dice(sac, truth), 4),
                "dice_vs_standard_layout": round(dice(sac, sacs[0]), 4),
                "sac_area_mm2": r["record"]["dural_sac_area_mm2"],
                "reference_area_mm2": float(truth.sum()),
                "plausible": r["record"]["plausible"],
                "warnings": r["record"]["warnings"],
            })
    secs = time.perf_counter() - t0
    d = np.array([r["dice"] for r in rows])
    cross = np.array([r["dice_vs_standard_layout"] for r in rows])
    silent_wrong = [r for r in rows if r["dice"] < 0.5 and r["plausible"]]
    per_slice = {}
    for r in rows:
        per_slice.setdefault(r["index"], []).append(r["dice"])
    return {
        "model_pack": pack.label,
        "segmentation_runtime": getattr(seg, "runtime", None),
        "cpu": cpu_info().get("model") or "unknown",
        "n_planes": len(recs),
        "n_layouts": 8,
        "seconds": round(secs, 2),
        "dice_mean": round(float(d.mean()), 4),
        "dice_median": round(float(np.median(d)), 4),
        "dice_min": round(float(d.min()), 4),
        "dice_per_plane_min": {str(k): round(min(v), 4) for k, v in per_slice.items()},
        # share of each reference outline's rays that end at its hand-placed region's edge
        # (there the outline is where the region was drawn, not a half-maximum of the image)
        "reference_region_bound_rays": {str(rec["index"]): round(reference_outline(ref.pixels(), rec["roi"])[1], 3)
                                        for ref, rec in zip(refs, recs)},
        "cross_layout_dice_min": round(float(cross.min()), 4),
        "n_plausible": int(sum(r["plausible"] for r in rows)),
        "n_wrong_but_plausible": len(silent_wrong),
        "targets": {
            "dice_ge_0.85_every_layout": bool(d.min() >= 0.85),
            "cross_layout_dice_ge_0.95": bool(cross.min() >= 0.95),
            "no_wrong_slice_returned_plausible": not silent_wrong,
        },
        "rows": rows,
    }


def pictures(models: str | None, out: Path, runtime: str | None = None, title: str = "") -> Path:
    """A montage of the planes (canonical view, 4x) with the reference (green) and the segmenter's
    dural sac (red) and disc (yellow) outlines."""
    from PIL import Image, ImageDraw
    from real_mri_reference import load_reference
    from scipy import ndimage

    from lumbargrade.modelpack import load_pack
    from lumbargrade.segment_runner import SliceInput, segment_slices

    refs, recs, masks = load_reference()
    seg = load_pack(models, runtime=runtime).get("segmentation")
    items = [SliceInput(name=str(r["index"]), index=int(r["index"]), spacing=tuple(ref.geometry.pixel_spacing),
                        geometry=ref.geometry, where=str(r["index"]), image=ref.pixels()) for ref, r in zip(refs, recs)]
    res = segment_slices(items, seg)
    k = 4
    tiles = []
    for it, r, truth in zip(items, res, masks):
        img = it.image
        lo, hi = np.percentile(img, [1, 99.5])
        g = (np.clip((img - lo) / (hi - lo + 1e-6), 0, 1) * 255).astype(np.uint8)
        rgb = np.repeat(np.kron(g, np.ones((k, k), np.uint8))[..., None], 3, axis=2)
        for mask, color in ((r["labels"] == 2, (255, 220, 0)), (truth, (0, 255, 0)), (r["labels"] == 1, (255, 40, 40))):
            big = np.kron(mask.astype(np.uint8), np.ones((k, k), np.uint8)).astype(bool)
            edge = big & ~ndimage.binary_erosion(big)
            rgb[edge] = color
        rows_ = np.nonzero(truth.any(axis=1))[0]
        c = int(rows_.mean()) if rows_.size else img.shape[0] // 2
        r0 = max(0, (c - 55) * k)
        tile = Image.fromarray(rgb[r0:r0 + 110 * k])
        d = ImageDraw.Draw(tile)
        rec = r["record"]
        d.text((3, 3), f"k={it.index}", fill=(255, 255, 255))
        d.text((3, 15), "ok" if rec["plausible"] else "flagged", fill=(0, 255, 0) if rec["plausible"] else (255, 80, 80))
        tiles.append(tile)
    w = sum(t.width + 4 for t in tiles)
    h = max(t.height for t in tiles) + (16 if title else 0)
    sheet = Image.new("RGB", (w, h))
    x = 0
    for t in tiles:
        sheet.paste(t, (x, 16 if title else 0))
        x += t.width + 4
    if title:
        ImageDraw.Draw(sheet).text((4, 2), title, fill=(255, 255, 255))
    out.parent.mkdir(parents=True, exist_ok=True)
    sheet.save(out)
    return out


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--models", help="model pack folder (default: the bundled pack)")
    ap.add_argument("--runtime", choices=["auto", "onnx", "torch"], default=None)
    ap.add_argument("--out", default=str(HERE / "results" / "real_mri.json"), help="JSON results file")
    ap.add_argument("--picture", help="also write a montage PNG here")
    ap.add_argument("--title", default="", help="title line of the montage")
    args = ap.parse_args(argv)
    res = evaluate(args.models, args.runtime)
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(res, indent=1) + "\n")
    print(f"model pack {res['model_pack']} ({res['segmentation_runtime']}), CPU {res['cpu']}")
    print(f"{res['n_planes']} real planes x 8 layouts: dural sac Dice mean {res['dice_mean']:.3f}, "
          f"median {res['dice_median']:.3f}, min {res['dice_min']:.3f}; between layouts min {res['cross_layout_dice_min']:.3f}")
    print("per plane (min over layouts): " + ", ".join(f"{k}: {v:.2f}" for k, v in res["dice_per_plane_min"].items()))
    print("reference rays ending at the region's edge: "
          + ", ".join(f"{k}: {v:.0%}" for k, v in res["reference_region_bound_rays"].items()))
    print(f"plausible {res['n_plausible']} of {len(res['rows'])}; wrong (Dice < 0.5) but plausible: {res['n_wrong_but_plausible']}")
    print("targets: " + ", ".join(f"{k} {'met' if v else 'NOT met'}" for k, v in res["targets"].items()))
    if args.picture:
        print("picture:", pictures(args.models, Path(args.picture), args.runtime, args.title))
    return 0


if __name__ == "__main__":
    sys.exit(main())
