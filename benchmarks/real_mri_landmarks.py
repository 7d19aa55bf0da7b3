"""The landmark networks on real sagittal MRI: SPIDER slices the networks never trained on, and the
real 3D T2 volume of the test fixtures.

For every slice of the SPIDER studies the pack's landmark model held out (its ``metrics.json``
``real_heldout.studies``; SPIDER disc masks give the truth: the disc components above the
sacrum, the lowest being L5/S1), the five landmarks are predicted as ``analyze`` predicts them
(coarse network, refiner, naming check) and compared with the truth: error in pixels and as a
fraction of the image height, level identification (each landmark nearest its own disc), and
whether the result was flagged. The target: every level right on every held-out image, or the
image flagged. The real T2 volume (lower thoracic to upper lumbar: no L5/S1 in view) must be
flagged.

    python benchmarks/real_mri_landmarks.py [--spider DIR] [--models PACK] [--out JSON] [--picture PNG]

``--spider`` defaults to the three held-out SPIDER slices kept in ``tests/fixtures/spider``.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent


def evaluate(spider: Path, models: str | None = None) -> dict:
    from lumbargrade.io.nifti import read_nifti
    from lumbargrade.levels.landmarks import landmarks_for_series, load_model, predict_landmarks
    from lumbargrade.levels.names import LEVELS
    from lumbargrade.levels.spider import list_spider, lumbar_disc_centres, read_spider_image, read_spider_mask
    from lumbargrade.modelpack import default_pack_path

    pack = Path(models) if models else default_pack_path()
    model = load_model(pack)
    held = set((json.loads((model.folder / "metrics.json").read_text()).get("real_heldout") or {}).get("studies") or [])
    rows = []
    for s in list_spider(spider):
        if s.study not in held:
            continue
        truth = lumbar_disc_centres(read_spider_mask(s.mask))
        if truth is None:
            continue
        img = read_spider_image(s.image)
        r = predict_landmarks(model, img)
        rc = np.stack([r.rows, r.cols], 1)
        err = np.hypot(*(rc - truth).T)
        ident = [int(np.argmin(np.hypot(*(truth - p).T)) == k) for k, p in enumerate(rc)]
        rows.append({"image": s.image.name, "study": s.study, "error_px": round(float(err.mean()), 2),
                     "error_frac_height": round(float(err.mean() / img.shape[0]), 5),
                     "levels_identified": int(sum(ident)), "flagged": bool(r.flagged),
                     "warnings": list(r.warnings), "pred_rc": np.round(rc, 1).tolist(),
                     "true_rc": np.round(truth, 1).tolist()})
    study = read_nifti(ROOT / "tests" / "fixtures" / "nifti" / "t2_lumbar.nii.gz")
    lm = landmarks_for_series(model, study.series[0])
    wrong = [r for r in rows if r["levels_identified"] < len(LEVELS)]
    return {
        "model": str(model.folder.name),
        "held_out_studies": sorted(held),
        "n_images": len(rows),
        "mean_error_frac_height": round(float(np.mean([r["error_frac_height"] for r in rows])), 5) if rows else None,
        "images_all_levels_right": sum(r["levels_identified"] == len(LEVELS) for r in rows),
        "images_wrong": len(wrong),
        "images_wrong_and_flagged": sum(r["flagged"] for r in wrong),
        "images_flagged": sum(r["flagged"] for r in rows),
        "target_every_image_right_or_flagged": all(r["flagged"] for r in wrong),
        "rows": rows,
        "t2_volume": {"flagged": bool(lm.flagged), "warnings": list(lm.warnings),
                      "landmarks_rc": lm.rc().round(1).tolist(), "slice_index": lm.slice_index},
    }


def picture(spider: Path, res: dict, out: Path) -> Path:
    """Each held-out slice with the truth (green) and predicted (red) disc centres."""
    from PIL import Image, ImageDraw

    from lumbargrade.levels.spider import read_spider_image

    tiles = []
    for r in res["rows"]:
        img = read_spider_image(spider / "images" / r["image"])
        lo, hi = np.percentile(img, [1, 99.5])
        g = (np.clip((img - lo) / (hi - lo + 1e-6), 0, 1) * 255).astype(np.uint8)
        pic = Image.fromarray(g).convert("RGB").resize((g.shape[1] // 2, g.shape[0] // 2))
        d = ImageDraw.Draw(pic)
        for (tr, tc), (pr, pc) in zip(r["true_rc"], r["pred_rc"]):
            d.ellipse([tc / 2 - 4, tr / 2 - 4, tc / 2 + 4, tr / 2 + 4], outline=(0, 255, 0), width=2)
            d.line([pc / 2 - 5, pr / 2, pc / 2 + 5, pr / 2], fill=(255, 40, 40), width=2)
            d.line([pc / 2, pr / 2 - 5, pc / 2, pr / 2 + 5], fill=(255, 40, 40), width=2)
        d.text((4, 4), f"{r['image']}  {r['levels_identified']}/5 right"
                       f"{'  FLAGGED' if r['flagged'] else ''}", fill=(255, 255, 0))
        tiles.append(pic)
    if not tiles:
        raise SystemExit("no held-out images to draw")
    w = sum(t.width + 4 for t in tiles)
    sheet = Image.new("RGB", (w, max(t.height for t in tiles)))
    x = 0
    for t in tiles:
        sheet.paste(t, (x, 0))
        x += t.width + 4
    out.parent.mkdir(parents=True, exist_ok=True)
    sheet.save(out)
    return out


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--spider", default=str(ROOT / "tests" / "fixtures" / "spider"),
                    help="SPIDER-layout folder (images/, masks/)")
    ap.add_argument("--models", help="model pack (default: the bundled pack)")
    ap.add_argument("--out", default=str(HERE / "results" / "real_mri_landmarks.json"))
    ap.add_argument("--picture", help="also write a montage PNG here")
    args = ap.parse_args(argv)
    res = evaluate(Path(args.spider), args.models)
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(res, indent=1) + "\n")
    print(f"held-out real SPIDER slices ({', '.join(res['held_out_studies'])}): {res['n_images']} images, "
          f"mean error {100 * (res['mean_error_frac_height'] or 0):.2f}% of the height; all five levels right on "
          f"{res['images_all_levels_right']}; wrong {res['images_wrong']} (flagged {res['images_wrong_and_flagged']}); "
          f"flagged in all {res['images_flagged']}")
    print(f"target (every image right or flagged): {'met' if res['target_every_image_right_or_flagged'] else 'NOT met'}")
    v = res["t2_volume"]
    print(f"real T2 volume (no L5/S1 in view): {'flagged' if v['flagged'] else 'NOT flagged'}: {v['warnings'][:2]}")
    if args.picture:
        print("picture:", picture(Path(args.spider), res, Path(args.picture)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
