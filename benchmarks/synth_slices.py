"""The segmenter as ``analyze`` runs it, on domain-randomised whole slices (phantom).

``benchmarks/label_map_options.py`` scores the dural sac refiner alone on its own 45 mm field,
centred on the true sac. This benchmark scores what a user gets: the first-look segmenter on the
whole slice (its located search, its field, its mirrored look), then the refiner centred on the
first look's sac, on images drawn from the phantom's tissue maps on each slice's own pixel grid
with random contrast, artefacts, acquisition resolution and field of view
(:mod:`lumbargrade.segmentation.synth`, its default ranges: no spatial warp, the slice stays where
the scanner put it). Each validation disc-centre slice is drawn once as it is and once with each
label-map change (roots layered against the posterior dura, a spinal cord, the dura erased), with
the same intensities and artefacts. Three ways of taking the dural sac are scored (Dice against
the phantom's sac, on the slice grid):

- ``first_look``: the segmenter alone;
- ``refined``: the refiner's outline (the bundled behaviour);
- ``fused``: the two looks' sac probabilities blended, the refiner at ``--weight`` (0.5: their
  mean), > 0.5, largest component (``Segmenter.refiner_weight``; a pack's ``sac_refiner.weight``).

The rendered phantom slices are scored the same way. No real image is used.

    python benchmarks/synth_slices.py --data COHORT/slices.csv [--data COHORT_2/slices.csv] \\
        [--models PACK] [--n 100] [--seed 11] [--weight 0.5] [--out benchmarks/results/synth_slices.json]
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))

VARIANTS = ("plain", "p_rootlet_layer", "p_cord", "p_dura_drop")
WAYS = ("first_look", "refined", "fused")


def val_rows(data: list[str], n: int, seed: int) -> list[dict]:
    """``n`` validation disc-centre slices (with a tissue map) of the slice banks ``data``."""
    from lumbargrade.errors import InputError
    from lumbargrade.manifest import read_manifests

    rows = [r for r in read_manifests(data, any_level=True)
            if r.get("split") == "val" and r.get("kind") == "disc_centre" and r.get("tissue_map")]
    if not rows:
        raise InputError(", ".join(data), "no validation disc-centre slices with a tissue map")
    rng = np.random.default_rng(seed)
    return [rows[i] for i in sorted(rng.choice(len(rows), size=min(n, len(rows)), replace=False))]


def bank_arguments(ap: argparse.ArgumentParser, n: int) -> None:
    """The arguments of the benchmarks that draw validation slices of phantom slice banks:
    ``--data`` (repeatable), ``--models``, ``--n`` (default ``n``), ``--seed``."""
    ap.add_argument("--data", action="append", required=True, help="a phantom slice bank (slices.csv); repeatable")
    ap.add_argument("--models", default=None, help="model pack folder (default: the bundled pack)")
    ap.add_argument("--n", type=int, default=n, help="validation slices to draw")
    ap.add_argument("--seed", type=int, default=11)


def rows_and_pack(args: argparse.Namespace) -> tuple[list[dict], object]:
    """(validation rows, model pack) of :func:`bank_arguments`' arguments; raises InputError."""
    from lumbargrade.modelpack import load_pack

    return val_rows(args.data, args.n, args.seed), load_pack(args.models)


def canonical_slice(row: dict):
    """(image, label map, tissue map, (row_mm, col_mm)) of a slice bank row, canonical view."""
    from lumbargrade.manifest import axial_view_of, load_axial, load_label_map
    from lumbargrade.segmentation.dataset import _load_tissues

    image, spacing = load_axial(row)
    view = axial_view_of(row)
    return (view.to_canonical(image), view.to_canonical(load_label_map(row)),
            view.to_canonical(_load_tissues(row)), view.canonical_spacing(spacing))


def draw(tissues: np.ndarray, sac: np.ndarray, spacing: float, variant: str, i: int):
    """One domain-randomised image of a slice (seeded by the slice ``i``; the label-map change
    ``variant`` drawn with its own seed so that the intensities match across variants)."""
    from label_map_options import label_map_change

    from lumbargrade.segmentation.synth import (
        SynthConfig,
        normalise_inside,
        random_fov_mask,
        synthesize,
    )

    t = tissues if variant == "plain" else label_map_change(variant, tissues, sac, spacing,
                                                           np.random.default_rng(5000 + i))
    cfg = SynthConfig()
    rng = np.random.default_rng(2000 + i)
    img = synthesize(t, sac, spacing, rng, cfg)
    ii, jj = np.nonzero(sac)
    inside = random_fov_mask(img.shape, spacing, rng, cfg, (float(ii.mean()), float(jj.mean())))
    return normalise_inside(img, inside)


def sac_ways(seg, image: np.ndarray, spacing: tuple[float, float], weight: float = 0.5) -> dict[str, np.ndarray]:
    """The dural sac taken each of the :data:`WAYS` (boolean masks on the slice grid); ``fused``
    blends the two looks with the refiner at ``weight`` (``Segmenter.refiner_weight``)."""
    ref, w0 = seg.refiner, seg.refiner_weight
    try:
        seg.refiner = None
        first = seg.predict([(image, spacing)])[0]
        seg.refiner = ref
        out = {"first_look": first.sac}
        for way, w in (("refined", 1.0), ("fused", weight)):
            seg.refiner_weight = w
            out[way] = seg._refine_sac([(image, spacing)], [first])[0].sac
    finally:
        seg.refiner, seg.refiner_weight = ref, w0
    return out


def main(argv: list[str] | None = None) -> int:
    from lumbargrade.errors import InputError
    from lumbargrade.metrics import dice
    from lumbargrade.runtime import cpu_info

    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    bank_arguments(ap, n=100)
    ap.add_argument("--weight", type=float, default=0.5, help="the refiner's share in the fused dural sac")
    ap.add_argument("--out", default=None, help="JSON results file")
    args = ap.parse_args(argv)
    try:
        rows, pack = rows_and_pack(args)
    except InputError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    seg = pack.get("segmentation")
    if seg.refiner is None:
        print("error: the pack has no dural sac refiner", file=sys.stderr)
        return 2
    t0 = time.perf_counter()
    scores: dict[str, dict[str, list[float]]] = {v: {w: [] for w in WAYS} for v in ("rendered", *VARIANTS)}
    for i, row in enumerate(rows):
        image, labels, tissues, spacing = canonical_slice(row)
        truth = labels == 1
        if not truth.any():
            continue
        sp = float(np.sqrt(spacing[0] * spacing[1]))
        for v in ("rendered", *VARIANTS):
            img = image if v == "rendered" else draw(tissues, truth, sp, v, i)
            for w, m in sac_ways(seg, img, spacing, args.weight).items():
                scores[v][w].append(dice(m, truth))
    result = {
        "model_pack": pack.label,
        "cpu": cpu_info().get("model"),
        "n_slices": len(scores["plain"]["refined"]),
        "fused_weight": args.weight,
        "seconds": round(time.perf_counter() - t0, 1),
        "dice": {v: {w: {"mean": round(float(np.mean(s)), 4), "p10": round(float(np.percentile(s, 10)), 4)}
                     for w, s in d.items()} for v, d in scores.items()},
    }
    synth_mean = {w: round(float(np.mean([result["dice"][v][w]["mean"] for v in VARIANTS])), 4) for w in WAYS}
    result["dice_synth_mean"] = synth_mean
    print(f"model pack {result['model_pack']}, CPU {result['cpu']}, {result['n_slices']} slices, {result['seconds']} s")
    for v, d in result["dice"].items():
        print(f"  {v:16s} " + "  ".join(f"{w} {d[w]['mean']:.3f} (p10 {d[w]['p10']:.3f})" for w in WAYS))
    print("  synthesised mean " + "  ".join(f"{w} {synth_mean[w]:.3f}" for w in WAYS))
    if args.out:
        Path(args.out).parent.mkdir(parents=True, exist_ok=True)
        Path(args.out).write_text(json.dumps(result, indent=2) + "\n")
        print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
