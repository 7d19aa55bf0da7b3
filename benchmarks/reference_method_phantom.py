"""How exact is the real-plane reference outline? Its method on phantom slices, against the truth.

The real-plane check (``benchmarks/real_mri.py``) scores the segmenter against dural sac outlines
drawn by ``benchmarks/real_mri_reference.py``: inside a hand-placed region of interest (an ellipse
that should leave the bright epidural fat out), the outermost half-maximum point along 240 rays,
median-filtered. This benchmark runs that same procedure on rendered phantom validation slices,
where the true sac is known, with the region of interest drawn from the truth: the ellipse around
the true sac's extent plus a margin (``--margin``, mm), and either with the fat it takes in left
as it is (``fat kept``) or blanked out (``fat excluded``: every fat pixel set to the slice's
minimum in the copy the procedure reads, as a perfectly placed region would leave it out).

Reported per setting: the reference's Dice and area ratio against the truth; the bundled
segmenter's Dice against the truth and against the reference, and its area over the reference's;
the share of rays whose outermost bright point is the region's edge (the outline there is where
the region was placed, not a half-maximum; ``python benchmarks/real_mri_reference.py --check``
prints the same share for each real plane).
What it tells: how much of a shortfall against such a reference the reference itself can cause,
and how that depends on what the region of interest takes in. No real image is used.

    python benchmarks/reference_method_phantom.py --data COHORT/slices.csv [--data COHORT_2/slices.csv] \\
        [--models PACK] [--n 120] [--min-area 80] [--out benchmarks/results/reference_method_phantom.json]

Validation disc-centre slices only, drawn with a fixed seed; slices whose true sac is smaller than
``--min-area`` mm2 are left out (the real planes are not stenotic).
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))

MARGINS_MM = (0.5, 1.0, 1.5)


def truth_roi(truth: np.ndarray, spacing: tuple[float, float], margin_mm: float) -> dict:
    """The region of interest of :func:`real_mri_reference.reference_mask` (pixels): the ellipse
    around the true sac's row and column extent, each semi-axis ``margin_mm`` longer."""
    ii, jj = np.nonzero(truth)
    ry = (ii.max() - ii.min() + 1) / 2 + margin_mm / spacing[0]
    rx = (jj.max() - jj.min() + 1) / 2 + margin_mm / spacing[1]
    return {"ellipse": [float(ii.mean()), float(jj.mean()), float(ry), float(rx)]}


def main(argv: list[str] | None = None) -> int:
    from real_mri_reference import reference_outline
    from synth_slices import bank_arguments, canonical_slice, rows_and_pack

    from lumbargrade.errors import InputError
    from lumbargrade.metrics import dice
    from lumbargrade.phantom.tissues import FAT_TISSUES
    from lumbargrade.runtime import cpu_info

    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    bank_arguments(ap, n=120)
    ap.add_argument("--min-area", type=float, default=80.0, help="smallest true sac kept, mm2")
    ap.add_argument("--margin", type=float, action="append", default=None,
                    help="margin of the region of interest around the true sac, mm; repeatable (default 0.5, 1, 1.5)")
    ap.add_argument("--out", default=None, help="JSON results file")
    args = ap.parse_args(argv)
    margins = tuple(args.margin) if args.margin else MARGINS_MM
    try:
        rows, pack = rows_and_pack(args)
    except InputError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    seg = pack.get("segmentation")
    fat_codes = [int(t) for t in FAT_TISSUES]
    t0 = time.perf_counter()
    scores: dict[str, list[tuple[float, ...]]] = {}
    net_truth, spacings = [], []
    for row in rows:
        image, labels, tissues, spacing = canonical_slice(row)
        truth = labels == 1
        if truth.sum() * spacing[0] * spacing[1] < args.min_area:
            continue
        net = seg.predict([(image, spacing)])[0].sac
        net_truth.append(dice(net, truth))
        spacings.append(float(np.sqrt(spacing[0] * spacing[1])))
        no_fat = np.where(np.isin(tissues, fat_codes), image.min(), image)
        for margin in margins:
            roi = truth_roi(truth, spacing, margin)
            for fat, img in (("fat kept", image), ("fat excluded", no_fat)):
                ref, bound = reference_outline(img, roi)
                scores.setdefault(f"margin {margin:g} mm, {fat}", []).append(
                    (dice(ref, truth), ref.sum() / truth.sum(), dice(net, ref), net.sum() / max(ref.sum(), 1), bound))
    if not net_truth:
        print("error: no validation slice with a large enough dural sac", file=sys.stderr)
        return 2
    result = {
        "model_pack": pack.label,
        "cpu": cpu_info().get("model"),
        "n_slices": len(net_truth),
        "pixel_mm": [round(min(spacings), 3), round(float(np.median(spacings)), 3), round(max(spacings), 3)],
        "seconds": round(time.perf_counter() - t0, 1),
        "segmenter_dice_vs_truth": round(float(np.mean(net_truth)), 4),
        "settings": {},
    }
    print(f"model pack {result['model_pack']}, CPU {result['cpu']}, {result['n_slices']} slices "
          f"(pixels {result['pixel_mm'][0]}-{result['pixel_mm'][2]} mm), {result['seconds']} s")
    print(f"  segmenter vs truth: Dice {result['segmenter_dice_vs_truth']:.3f}")
    for name, vals in scores.items():
        v = np.asarray(vals)
        s = {
            "reference_dice_vs_truth": round(float(v[:, 0].mean()), 4),
            "reference_area_over_truth_median": round(float(np.median(v[:, 1])), 3),
            "segmenter_dice_vs_reference": round(float(v[:, 2].mean()), 4),
            "segmenter_dice_vs_reference_p10": round(float(np.percentile(v[:, 2], 10)), 4),
            "segmenter_area_over_reference_median": round(float(np.median(v[:, 3])), 3),
            "region_bound_rays": round(float(v[:, 4].mean()), 3),
        }
        result["settings"][name] = s
        print(f"  {name:28s} reference vs truth Dice {s['reference_dice_vs_truth']:.3f}, area x"
              f"{s['reference_area_over_truth_median']:.2f} | segmenter vs reference Dice "
              f"{s['segmenter_dice_vs_reference']:.3f} (p10 {s['segmenter_dice_vs_reference_p10']:.3f}), "
              f"area x{s['segmenter_area_over_reference_median']:.2f}; rays ending at the region's edge "
              f"{s['region_bound_rays']:.0%}")
    if args.out:
        Path(args.out).parent.mkdir(parents=True, exist_ok=True)
        Path(args.out).write_text(json.dumps(result, indent=2) + "\n")
        print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
