"""Does a dural sac refiner cope with anatomy the phantom rarely draws? (phantom)

The domain randomisation can change a tissue map before drawing its image
(:mod:`lumbargrade.segmentation.synth`): ``p_rootlet_layer`` redraws the cauda equina as one grey
band against the posterior dura (as a supine patient's roots often lie on real lower-lumbar T2,
where the phantom draws separate dots), ``p_cord`` puts a spinal cord or conus of random size in
the sac, ``p_dura_drop`` erases the dura. This benchmark draws domain-randomised validation fields
of a training cohort's slice bank as they are and again with each ``--option`` applied (every
draw), with the same warp, intensities and artefacts otherwise, and scores the refiner's dural sac
(Dice against the phantom's sac, on the refiner's own field centred on the true sac) on both, and
on the rendered phantom field of the same slices.

    python benchmarks/label_map_options.py --data COHORT/slices.csv [--data COHORT_2/slices.csv] \\
        [--option p_rootlet_layer] [--option p_cord] [--option p_dura_drop] [--refiner PACK/sac_refiner] \\
        [--n 150] [--out benchmarks/results/label_map_options.json] [--picture PNG]

Validation disc-centre slices only (``split`` = val); ``--n`` of them drawn with a fixed seed. The
recipe is the refiner's own (its ``config.json`` ``synth``); ``--refiner`` defaults to the bundled
pack's. No real image is used.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np

OPTIONS = ("p_rootlet_layer", "p_cord", "p_dura_drop")


def dice(a: np.ndarray, b: np.ndarray) -> float:
    return float(2 * (a & b).sum() / max(int(a.sum() + b.sum()), 1))


def refiner_and_val_rows(refiner: str, data: list[str], n: int, seed: int):
    """(the refiner, run with torch; its domain-randomisation recipe; ``n`` validation disc-centre
    slices of the slice banks ``data``, drawn with ``seed``). Raises InputError on a bad refiner
    folder or no such slices."""
    from lumbargrade.errors import InputError
    from lumbargrade.manifest import read_manifests
    from lumbargrade.segmentation.inference import load_segmenter

    ref = load_segmenter(refiner, refiner=False, runtime="torch")
    if ref.cfg.role != "sac_refiner":
        raise InputError(refiner, "not a dural sac refiner")
    rows = [r for r in read_manifests(data, any_level=True)
            if r.get("split") == "val" and r.get("kind") == "disc_centre"]
    if not rows:
        raise InputError(", ".join(data), "no validation disc-centre slices")
    rng = np.random.default_rng(seed)
    rows = [rows[i] for i in rng.choice(len(rows), size=min(n, len(rows)), replace=False)]
    recipe = dict(json.loads((Path(refiner) / "config.json").read_text()).get("synth") or {})
    return ref, recipe, rows


def warped_maps(ds, i: int, synth) -> tuple[np.ndarray, np.ndarray]:
    """Slice ``i``'s tissue map and dural sac on the refiner's field, with the fixed spatial warp of
    that slice (seed 1000 + i)."""
    from scipy import ndimage

    from lumbargrade.segmentation.synth import warp_coordinates

    tis, lab = ds.tissues[i], ds.labels[i]
    coords = warp_coordinates(ds.size, tis.shape, ds.spacing, np.random.default_rng(1000 + i), synth)
    t = ndimage.map_coordinates(tis, coords, order=0, mode="constant", cval=0)
    y = ndimage.map_coordinates(lab, coords, order=0, mode="constant", cval=0) == 1
    return t, y


def refiner_label(refiner: str) -> str:
    """``name version sac_refiner`` when the refiner folder is a model pack's, else its folder name."""
    pack_json = Path(refiner).parent / "pack.json"
    label = Path(refiner).name
    if pack_json.is_file():
        pack = json.loads(pack_json.read_text())
        label = f"{pack.get('name')} {pack.get('version')} {label}"
    return label


def label_map_change(option: str, tissues: np.ndarray, sac: np.ndarray, spacing: float,
                     rng: np.random.Generator, recipe: dict | None = None) -> np.ndarray:
    """The tissue map with one label-map change of :data:`OPTIONS` applied for certain (``recipe``:
    the domain randomisation's other settings, default the :class:`SynthConfig` defaults)."""
    from lumbargrade.segmentation.synth import SynthConfig, erase_dura, insert_cord, layer_rootlets

    cfg = SynthConfig.from_dict(dict(recipe or {}, **{option: 1.0}))
    if option == "p_rootlet_layer":
        return layer_rootlets(tissues, sac, spacing, rng, cfg)
    if option == "p_cord":
        return insert_cord(tissues, sac, spacing, rng, cfg)
    if option == "p_dura_drop":
        return erase_dura(tissues, sac, rng, cfg)
    raise ValueError(f"unknown label-map change {option!r}; expected one of {', '.join(OPTIONS)}")


def main(argv: list[str] | None = None) -> int:
    from scipy import ndimage

    from lumbargrade.errors import InputError
    from lumbargrade.modelpack import default_pack_path
    from lumbargrade.runtime import cpu_info
    from lumbargrade.segmentation.dataset import SegmentationDataset
    from lumbargrade.segmentation.synth import (
        SynthConfig,
        normalise_inside,
        synthesize,
    )

    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--data", action="append", required=True, help="a phantom slice bank (slices.csv); repeatable")
    ap.add_argument("--refiner", default=str(default_pack_path() / "sac_refiner"))
    ap.add_argument("--option", action="append", choices=list(OPTIONS),
                    help="a label-map change to score (repeatable; default: all three)")
    ap.add_argument("--n", type=int, default=150, help="validation slices to draw")
    ap.add_argument("--seed", type=int, default=7)
    ap.add_argument("--out", default=None, help="JSON results file")
    ap.add_argument("--picture", default=None, help="PNG of the first pairs (green: truth, red: refiner)")
    args = ap.parse_args(argv)

    try:
        ref, recipe, rows = refiner_and_val_rows(args.refiner, args.data, args.n, args.seed)
    except InputError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    synth = SynthConfig.from_dict(recipe)
    options = args.option or list(OPTIONS)
    c = ref.cfg
    t0 = time.perf_counter()
    ds = SegmentationDataset(rows, c.target_spacing, (c.size, c.size), c.margin, synth=synth, p_synth=1.0,
                             sac_field=True)
    m = int(c.margin)

    def sac_of(img: np.ndarray) -> np.ndarray:
        return ref._probs_fields([np.ascontiguousarray(img, dtype=np.float32)])[0][0] > 0.5

    scores, tiles = [], []
    for i in range(len(ds)):
        if ds.tissues[i] is None:
            continue
        t, y = warped_maps(ds, i, synth)
        row = {}
        drawn = [("plain", t)] + [(o, label_map_change(o, t, y, ds.spacing, np.random.default_rng(5000 + i), recipe))
                                  for o in options]
        for name, tt in drawn:
            img = normalise_inside(synthesize(tt, y, ds.spacing, np.random.default_rng(2000 + i), synth), None)
            pred = sac_of(img)
            row[name] = dice(pred, y)
            if len(tiles) < 12:
                tiles.append((img, pred, y))
        rendered = ds.images[i][m:-m, m:-m] if m else ds.images[i]
        truth = (ds.labels[i][m:-m, m:-m] if m else ds.labels[i]) == 1
        row["rendered"] = dice(sac_of(rendered), truth)
        scores.append(row)
    result = {
        "refiner": refiner_label(args.refiner),
        "cpu": cpu_info().get("model"),
        "n_slices": len(scores),
        "seconds": round(time.perf_counter() - t0, 1),
    }
    result["dice"] = {}
    for name in ["rendered", "plain", *options]:
        v = np.array([s[name] for s in scores])
        result["dice"][name] = {"mean": round(float(v.mean()), 4), "p10": round(float(np.percentile(v, 10)), 4)}
    print(f"{len(scores)} validation fields, refiner sac Dice (mean): "
          + ", ".join(f"{k} {v['mean']:.3f}" for k, v in result["dice"].items()))
    if args.out:
        Path(args.out).parent.mkdir(parents=True, exist_ok=True)
        Path(args.out).write_text(json.dumps(result, indent=2) + "\n")
        print(f"wrote {args.out}")
    if args.picture:
        from PIL import Image

        out = []
        for img, pred, truth in tiles:
            g = np.clip(img * 255, 0, 255).astype(np.uint8)
            rgb = np.stack([g] * 3, -1)
            rgb[pred & ~ndimage.binary_erosion(pred)] = (255, 0, 0)
            rgb[truth & ~ndimage.binary_erosion(truth)] = (0, 255, 0)
            out.append(rgb)
        Image.fromarray(np.concatenate(out, 1)).save(args.picture)
    return 0


if __name__ == "__main__":
    sys.exit(main())
