"""Redraw the reference dural sac outlines of the real axial test slices (tests/fixtures/real_axial).

The outlines were made without any lumbargrade network: on each slice a region of interest (an
ellipse, optionally cut by straight lines) was placed by hand around the dural sac so that it
excludes the bright epidural fat next to it; inside it the outline follows the half-maximum of
the CSF signal along 240 rays from the sac centre (the outermost point at least
(p90 + p10) / 2 of the region's intensities), the radii are median-filtered over 19 rays (one
ray lost to a rootlet or a flow void does not dent the outline), and the polygon is rasterised
by pixel coverage (>= 0.5 of 4 x 4 sub-pixels). The regions of interest are in
reference.json beside the masks.

    python benchmarks/real_mri_reference.py            # rewrite the masks from reference.json
    python benchmarks/real_mri_reference.py --check    # compare with the committed masks
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
FIXTURE = HERE.parent / "tests" / "fixtures" / "real_axial"
UP = 4


def reference_mask(plane: np.ndarray, roi: dict) -> np.ndarray:
    """Boolean mask of the dural sac on a canonical plane (rows, cols) from its ROI record."""
    return reference_outline(plane, roi)[0]


def reference_outline(plane: np.ndarray, roi: dict) -> tuple[np.ndarray, float]:
    """(mask, share of region-bound rays): the reference mask of :func:`reference_mask`, and the
    share of its rays (of those that found the sac) whose outermost bright point is the last point
    inside the region of interest, where the outline follows the hand-placed region, not a
    half-maximum of the image."""
    from matplotlib.path import Path as MPath
    from scipy import ndimage

    s = np.asarray(plane, dtype=np.float64)
    h, w = s.shape
    cy, cx, ry, rx = roi["ellipse"]
    ccy, ccx = roi.get("centre", (cy, cx))

    def inside(r, c):
        m = ((r - cy) / ry) ** 2 + ((c - cx) / rx) ** 2 <= 1
        for a, b, lim in roi.get("cuts", []):
            m &= a * r + b * c <= lim
        return m

    rr, cc = np.mgrid[0:h, 0:w]
    vals = s[inside(rr.astype(float), cc.astype(float))]
    thr = roi.get("frac", 0.5) * (np.percentile(vals, 90) + np.percentile(vals, 10))
    angles = np.linspace(0, 2 * np.pi, 240, endpoint=False)
    steps = np.arange(0, max(ry, rx) * 1.2, 0.05)
    radii = []
    bound = 0
    for a in angles:
        r, c = ccy + steps * np.sin(a), ccx + steps * np.cos(a)
        ok = inside(r, c)
        val = ndimage.map_coordinates(s, [r, c], order=3, mode="nearest")
        good = np.nonzero(ok & (val >= thr))[0]
        if not len(good):
            radii.append(np.nan)
            continue
        j = good[-1]
        if j + 1 < len(steps) and ok[j + 1]:
            f = (val[j] - thr) / max(val[j] - val[j + 1], 1e-6)
            radii.append(steps[j] + f * (steps[j + 1] - steps[j]))
        else:
            radii.append(steps[j])
            bound += 1
    radii = np.array(radii)
    found = int(np.count_nonzero(~np.isnan(radii)))
    radii[radii < 0.6 * np.nanmedian(radii)] = np.nan
    idx = np.arange(len(radii))
    ok = ~np.isnan(radii)
    radii = np.interp(idx, idx[ok], radii[ok], period=len(radii))
    win = int(roi.get("smooth", 9))
    ext = np.concatenate([radii[-win:], radii, radii[:win]])
    radii = np.array([np.median(ext[i:i + 2 * win + 1]) for i in range(len(radii))])
    poly = MPath(np.stack([ccx + radii * np.cos(angles), ccy + radii * np.sin(angles)], 1))
    sub = (np.arange(UP) + 0.5) / UP - 0.5
    yy = (np.arange(h)[:, None] + sub[None, :]).ravel()
    xx = (np.arange(w)[:, None] + sub[None, :]).ravel()
    gy, gx = np.meshgrid(yy, xx, indexing="ij")
    inn = poly.contains_points(np.stack([gx.ravel(), gy.ravel()], 1)).reshape(h, UP, w, UP)
    return inn.mean(axis=(1, 3)) >= 0.5, bound / max(found, 1)


def load_reference(fixture: Path = FIXTURE) -> tuple[list, list[dict], list[np.ndarray]]:
    """(canonical planes, slice records, reference masks) of the fixture."""
    from PIL import Image

    from lumbargrade.io.nifti import read_nifti

    doc = json.loads((fixture / "reference.json").read_text())
    study = read_nifti((fixture / doc["volume"]).resolve(), slice_axis="axial")
    block = study.series[0].blocks[0]
    refs = [block.slices[int(r["index"])] for r in doc["slices"]]
    masks = [np.asarray(Image.open(fixture / r["mask"])) > 0 for r in doc["slices"]]
    return refs, doc["slices"], masks


def main(argv=None) -> int:
    from PIL import Image

    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--check", action="store_true", help="compare with the committed masks; write nothing")
    args = ap.parse_args(argv)
    refs, recs, masks = load_reference()
    bad = 0
    for ref, rec, old in zip(refs, recs, masks):
        m, bound = reference_outline(ref.pixels(), rec["roi"])
        where = f"{bound:.0%} of its rays end at the region's edge"
        if args.check:
            same = np.array_equal(m, old)
            bad += not same
            print(f"slice {rec['index']}: {int(m.sum())} mm2 {'same' if same else 'DIFFERS'}; {where}")
        else:
            Image.fromarray(m.astype(np.uint8)).save(FIXTURE / rec["mask"])
            print(f"slice {rec['index']}: {int(m.sum())} px; {where}")
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
