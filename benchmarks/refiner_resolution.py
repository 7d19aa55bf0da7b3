"""Does the dural sac refiner shrink the sac on coarsely acquired images? (phantom)

On axial planes of a real 1 mm T2 volume the bundled refiner outlines a dural sac 20-30 % smaller
than the reference on five of eight planes (docs/real-mri.md). This benchmark asks whether the
acquisition resolution alone does that on the phantom: it draws domain-randomised validation fields
of a training cohort's slice bank (the refiner's own recipe, its own field centred on the true sac,
no field-of-view cut) with the acquisition pixel size fixed to each of ``--resolution`` ranges, with
and without the cauda equina layered against the posterior dura, and reports per setting the
refiner's sac Dice (direct and mirrored looks averaged, as ``analyze`` runs it) and the predicted /
true sac area (median and mean; and at probability 0.4). ``--p-t2-prior 1`` draws every field with
a physically likely T2 FSE contrast (bright epidural fat beside bright CSF), ``--dura-drop`` erases
the dura next to the sac in every field (as on a real 1 mm image, where it is seldom seen). No real
image is used.

    python benchmarks/refiner_resolution.py --data COHORT/slices.csv [--data COHORT_2/slices.csv] \\
        [--refiner PACK/sac_refiner] [--n 100] [--p-t2-prior P] [--dura-drop] \\
        [--out benchmarks/results/refiner_resolution.json]
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))

RESOLUTIONS = ((0.35, 0.45), (0.7, 0.8), (1.0, 1.0), (1.2, 1.3))


def main(argv: list[str] | None = None) -> int:
    from label_map_options import refiner_and_val_rows, refiner_label, warped_maps

    from lumbargrade.errors import InputError
    from lumbargrade.modelpack import default_pack_path
    from lumbargrade.runtime import cpu_info
    from lumbargrade.segmentation.dataset import SegmentationDataset
    from lumbargrade.segmentation.synth import (
        SynthConfig,
        erase_dura,
        layer_rootlets,
        normalise_inside,
        synthesize,
    )

    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--data", action="append", required=True, help="a phantom slice bank (slices.csv); repeatable")
    ap.add_argument("--refiner", default=str(default_pack_path() / "sac_refiner"))
    ap.add_argument("--n", type=int, default=100, help="validation slices to draw")
    ap.add_argument("--seed", type=int, default=7)
    ap.add_argument("--p-t2-prior", type=float, default=None,
                    help="share of fields with a physically likely T2 contrast (default: the refiner's recipe)")
    ap.add_argument("--dura-drop", action="store_true", help="erase the dura next to the sac in every field")
    ap.add_argument("--out", default=None, help="JSON results file")
    args = ap.parse_args(argv)
    try:
        ref, recipe, rows = refiner_and_val_rows(args.refiner, args.data, args.n, args.seed)
    except InputError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    c = ref.cfg
    t0 = time.perf_counter()
    ds = SegmentationDataset(rows, c.target_spacing, (c.size, c.size), c.margin,
                             synth=SynthConfig.from_dict(recipe), p_synth=1.0, sac_field=True)
    banded = SynthConfig.from_dict(dict(recipe, p_rootlet_layer=1.0))
    no_dura = SynthConfig.from_dict(dict(recipe, p_dura_drop=1.0))
    if args.p_t2_prior is not None:
        recipe["p_t2_prior"] = float(args.p_t2_prior)
    result = {"refiner": refiner_label(args.refiner), "cpu": cpu_info().get("model"),
              "p_t2_prior": recipe.get("p_t2_prior", SynthConfig().p_t2_prior), "dura_erased": bool(args.dura_drop),
              "settings": {}}
    for res in RESOLUTIONS:
        synth = SynthConfig.from_dict(dict(recipe, resolution_mm=list(res), p_crop=0.0))
        for band in (False, True):
            dice, ratio, ratio4 = [], [], []
            for i in range(len(ds)):
                if ds.tissues[i] is None:
                    continue
                t, y = warped_maps(ds, i, synth)
                if args.dura_drop:
                    t = erase_dura(t, y, np.random.default_rng(7000 + i), no_dura)
                if band:
                    t = layer_rootlets(t, y, ds.spacing, np.random.default_rng(5000 + i), banded)
                img = normalise_inside(synthesize(t, y, ds.spacing, np.random.default_rng(2000 + i), synth), None)
                probs, _ = ref._looks([np.ascontiguousarray(img, dtype=np.float32)])
                p = probs[0][0]
                pred = p > 0.5
                dice.append(2 * (pred & y).sum() / max(int(pred.sum() + y.sum()), 1))
                ratio.append(pred.sum() / max(int(y.sum()), 1))
                ratio4.append((p > 0.4).sum() / max(int(y.sum()), 1))
            key = f"{res[0]}-{res[1]} mm" + (", roots layered" if band else "")
            result["settings"][key] = {
                "dice": round(float(np.mean(dice)), 4),
                "area_ratio_median": round(float(np.median(ratio)), 4),
                "area_ratio_mean": round(float(np.mean(ratio)), 4),
                "area_ratio_at_0.4_median": round(float(np.median(ratio4)), 4),
                "n": len(dice),
            }
            print(key, result["settings"][key], flush=True)
    result["seconds"] = round(time.perf_counter() - t0, 1)
    if args.out:
        Path(args.out).parent.mkdir(parents=True, exist_ok=True)
        Path(args.out).write_text(json.dumps(result, indent=2) + "\n")
        print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
