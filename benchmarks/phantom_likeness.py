"""Side-by-side figure: a phantom patient next to the real lumbar T2 in shared/data/sct-t2-lumbar.

    python benchmarks/phantom_likeness.py --cohort DIR --patient P0000 --out docs/images/phantom-vs-real.png

Top row: the real T2 (NeuroPoly sct example data, MIT licence): mid-sagittal and axial reformats
at three lumbar discs (the volume is a 38 mm sagittal slab, so the reformats are narrow).
Bottom row: the phantom's mid-sagittal slice and its L3/L4, L4/L5 and L5/S1 disc-centre axial
slices (from the DICOM files, 120 mm window around the canal). Same grey-level windowing
(1st-99.5th percentile) everywhere. For judging likeness by eye; not a test.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np

REAL = Path(__file__).resolve().parents[2] / "shared" / "data" / "sct-t2-lumbar" / "t2_lumbar.nii.gz"
# S indices of three lumbar discs in the real volume (picked by eye on the mid-sagittal slice)
REAL_DISC_S = (105, 69, 38)


def _win(a: np.ndarray) -> tuple[float, float]:
    lo, hi = np.percentile(a, [1, 99.5])
    return float(lo), float(hi)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--cohort", required=True)
    ap.add_argument("--patient", default="P0000")
    ap.add_argument("--real", default=str(REAL))
    ap.add_argument("--out", default="docs/images/phantom-vs-real.png")
    args = ap.parse_args()

    import nibabel as nib
    import pydicom
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    vol = np.asarray(nib.load(args.real).dataobj, dtype=np.float32)  # RAS: (R, A, S)
    pdir = Path(args.cohort) / args.patient
    truth = json.loads((pdir / "truth.json").read_text())
    fig = Figure(figsize=(16, 8), dpi=80, facecolor="black")
    FigureCanvasAgg(fig)
    axes = fig.subplots(2, 4)
    # real: mid-sagittal, display anterior left, superior up
    sag = np.flipud(vol[vol.shape[0] // 2].T)[:, ::-1]
    lo, hi = _win(sag)
    axes[0, 0].imshow(sag, cmap="gray", vmin=lo, vmax=hi)
    axes[0, 0].set_title("real T2 (sct example), mid-sagittal", color="white", fontsize=9)
    for j, s in enumerate(REAL_DISC_S):
        # rows: A reversed (posterior at the bottom); columns: R reversed (patient left on the right)
        ax_img = vol[:, :, s].T[::-1, ::-1]
        lo, hi = _win(ax_img)
        axes[0, j + 1].imshow(ax_img, cmap="gray", vmin=lo, vmax=hi, aspect="equal")
        axes[0, j + 1].set_title(f"real T2, axial reformat at S index {s}", color="white", fontsize=9)
    mid = pydicom.dcmread(pdir / truth["sagittal"]["mid_image"]).pixel_array.astype(np.float32)
    lo, hi = _win(mid)
    axes[1, 0].imshow(mid, cmap="gray", vmin=lo, vmax=hi)
    axes[1, 0].set_title(f"phantom {args.patient}, mid-sagittal", color="white", fontsize=9)
    levels = {lv["level"]: lv for lv in truth["levels"]}
    for j, name in enumerate(("L3/L4", "L4/L5", "L5/S1")):
        lv = levels[name]
        img = pydicom.dcmread(pdir / lv["axial_image"]).pixel_array.astype(np.float32)
        ps = lv["pixel_spacing_mm"][0]
        half = int(60 / ps)
        cr, cc = img.shape[0] // 2, img.shape[1] // 2
        if lv["boxes"]["facet_left"] and lv["boxes"]["facet_right"]:
            fl, fr = lv["boxes"]["facet_left"], lv["boxes"]["facet_right"]
            cr = (min(fl[0], fr[0]) + max(fl[2], fr[2])) // 2
            cc = (min(fl[1], fr[1]) + max(fl[3], fr[3])) // 2
        crop = img[max(0, cr - half): cr + half, max(0, cc - half): cc + half]
        lo, hi = _win(crop)
        axes[1, j + 1].imshow(crop, cmap="gray", vmin=lo, vmax=hi)
        g = lv["grades"]["central_canal"]["truth"]
        axes[1, j + 1].set_title(f"phantom {name} axial (central grade {g})", color="white", fontsize=9)
    for a in axes.flat:
        a.set_axis_off()
    fig.tight_layout()
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(args.out, facecolor="black", metadata={"Software": None})
    print(args.out)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
