"""How much of the remaining phantom error is chemical-shift misregistration? (phantom, known physics)

On T2 fast spin echo, fat is displaced relative to water along the frequency-encoding (readout)
axis by the fat-water shift: 3.5 ppm of the Larmor frequency over the pixel bandwidth, about 1-3
pixels at 3 T. The phantom renders it (``truth.json`` ``mr.chemical_shift_px`` and
``mr.readout_axis``, the stored pixel grid; fat always moves towards higher indices), while its
label maps are the anatomy, i.e. where the water is. Structures outlined against fat (the disc's
lateral and posterior edges, the fat-filled foramina, the facet joints among fat and muscle) then
appear displaced, and a network that outlines what it sees inherits the displacement; the dural sac
(CSF, water) does not.

For every level whose axial slice the pipeline chose correctly, this benchmark measures, in the
stored pixel grid, the offset of each predicted structure's centroid from the truth's along the
readout axis and across it, and its slope against the slice's fat-water shift (1 = the prediction
follows the displaced fat entirely, 0 = no displacement). It then asks what knowing the shift would
be worth: the predicted disc and facet/foramen regions moved back by ``alpha`` times the shift
(an oracle: the phantom's own value, which the DICOM header does not carry), the disc Dice and the
box IoU (raw region boxes, and calibrated as the pipeline does with the pack's calibration).

    python benchmarks/chemical_shift.py --cohort COHORT --evaluation EVAL_OUT [--models PACK]

``COHORT``: a phantom cohort (``lumbargrade phantom ... --split 0,0,N``); ``EVAL_OUT``: its
``lumbargrade evaluate --data COHORT --out EVAL_OUT`` output (run here when it is missing).
Several ``--cohort``/``--evaluation`` pairs may be given; each is reported on its own.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
STRUCTURES = {"dural_sac": (1,), "disc": (2,), "facet_left": (3,), "facet_right": (4,),
              "foramen_left": (5,), "foramen_right": (6,)}
ALPHAS = (0.0, 0.5, 0.75, 1.0)


def _evaluate(cohort: Path, out: Path, models: str | None) -> None:
    if (out / "metrics.json").is_file():
        return
    cmd = [sys.executable, "-m", "lumbargrade", "evaluate", "--data", str(cohort), "--out", str(out),
           "--split", "test", "--no-figures", "--n-boot", "200"]
    if models:
        cmd += ["--models", models]
    subprocess.run(cmd, check=True, stdout=subprocess.DEVNULL)


def _shifted(labels: np.ndarray, values: tuple[int, ...], shift: list[float]) -> np.ndarray:
    """``labels`` with the structures ``values`` moved by ``shift`` pixels (row, col); linear
    interpolation of each structure's mask, kept where it exceeds one half."""
    from scipy import ndimage

    out = labels.copy()
    for v in values:
        out[out == v] = 0
    for v in values:
        m = ndimage.shift((labels == v).astype(np.float32), shift, order=1) > 0.5
        out[m & (out == 0)] = v
    return out


def _dice(a: np.ndarray, b: np.ndarray) -> float:
    s = int(a.sum()) + int(b.sum())
    return 1.0 if s == 0 else 2.0 * float((a & b).sum()) / s


def oracle_shift(cohort: Path):
    """``patient_id -> (signed shift in stored pixels, stored axis)`` from the phantom's truth.json
    (fat moves towards higher indices of the readout axis)."""
    cache: dict[str, tuple[float, int]] = {}

    def shift_of(pid: str) -> tuple[float, int]:
        if pid not in cache:
            mr = json.loads((cohort / pid / "truth.json").read_text())["mr"]
            cache[pid] = (float(mr.get("chemical_shift_px") or 0.0), int(mr.get("readout_axis", 1)))
        return cache[pid]

    return shift_of


def analyse(cohort: Path, evaluation: Path, box_rule: dict, shift_of=None, alphas=ALPHAS,
            collect: dict | None = None) -> dict:
    """Per-structure offsets along/across the readout axis and the figures with the predicted disc
    and regions moved back by ``alpha`` x the shift. ``shift_of``: ``patient_id -> (signed stored
    pixels, stored axis)`` (default: the oracle, :func:`oracle_shift`). ``collect``: filled per
    alpha with the calibration cases ``(truth, image, rule, sac, spacing)`` (canonical view)."""
    from lumbargrade.boxes.calibration import apply_calibration
    from lumbargrade.boxes.image import region_boxes
    from lumbargrade.evaluation.data import load_reports, load_truth, make_pairs, slice_matches
    from lumbargrade.io.orientation import AxialView
    from lumbargrade.metrics import iou_boxes

    pairs = make_pairs(load_truth(cohort, "test"), load_reports(evaluation / "predictions"))
    if isinstance(pairs, tuple):
        pairs = pairs[0]
    calib = box_rule.get("image_calibration") or {}
    truth_shift = oracle_shift(cohort)
    shift_of = shift_of or truth_shift
    shifts: dict[str, float] = {}
    offsets: dict[str, list] = {k: [] for k in STRUCTURES}
    disc_dice = {a: [] for a in alphas}
    raw_iou = {a: {"facet": [], "foramen": []} for a in alphas}
    cal_iou = {a: {"facet": [], "foramen": []} for a in alphas}
    n_levels = 0
    for p in pairs:
        if p.pred is None or not slice_matches(p) or p.pred_label_map is None or p.truth_label_map is None:
            continue
        cs, axis = truth_shift(p.patient_id)  # the offsets are measured against the true shift
        shifts[p.patient_id] = cs
        used, used_axis = shift_of(p.patient_id)  # the correction uses what shift_of says
        truth, pred = p.truth_label_map, p.pred_label_map
        n_levels += 1
        for name, (v,) in STRUCTURES.items():
            t, q = truth == v, pred == v
            if t.any() and q.any():
                d = np.argwhere(q).mean(0) - np.argwhere(t).mean(0)
                offsets[name].append((cs, float(d[axis]), float(d[1 - axis])))
        o = p.pred.get("orientation") or {}
        view = AxialView(bool(o.get("transpose")), bool(o.get("flip_rows")), bool(o.get("flip_cols")))
        shape = pred.shape
        tb = {k: view.box_to_canonical(b, shape) for k, b in (p.truth.get("boxes") or {}).items() if b}
        rule = {k: view.box_to_canonical(b, shape)
                for k, b in ((p.pred.get("boxes_by_source") or {}).get("fitted") or {}).items() if b}
        spacing = view.canonical_spacing(tuple(p.truth["pixel_spacing_mm"]))
        for a in alphas:
            shift = [0.0, 0.0]
            shift[used_axis] = -a * used
            moved = _shifted(pred, (2, 3, 4, 5, 6), shift)
            disc_dice[a].append(_dice(moved == 2, truth == 2))
            canon = view.to_canonical(moved)
            found = {k: b for k, b in region_boxes(canon).items() if b is not None}
            sac_c = view.to_canonical(pred == 1)
            if collect is not None:
                collect.setdefault(a, []).append((tb, found, rule, sac_c, spacing))
            cal = apply_calibration(found, rule, sac_c, spacing, calib) if calib else found
            for name, t in tb.items():
                kind = name.split("_")[0]
                raw_iou[a][kind].append(iou_boxes(found.get(name), t))
                cal_iou[a][kind].append(iou_boxes(cal.get(name), t))
    res: dict = {"n_levels": n_levels, "offsets_px": {}, "oracle_correction": {}}
    for name, rows in offsets.items():
        if not rows:
            continue
        r = np.array(rows)
        slope = float(np.polyfit(r[:, 0], r[:, 1], 1)[0]) if np.ptp(r[:, 0]) > 0 else None
        res["offsets_px"][name] = {"n": len(r), "mean_along_readout": round(float(r[:, 1].mean()), 3),
                                   "mean_across_readout": round(float(r[:, 2].mean()), 3),
                                   "slope_along_readout_vs_shift": None if slope is None else round(slope, 3)}
    res["mean_fat_water_shift_px"] = round(float(np.mean(list(shifts.values()))), 3)
    for a in alphas:
        res["oracle_correction"][str(a)] = {
            "dice_disc": round(float(np.mean(disc_dice[a])), 4),
            "iou_raw_regions": {k: round(float(np.mean(v)), 4) for k, v in raw_iou[a].items() if v},
            "iou_calibrated": {k: round(float(np.mean(v)), 4) for k, v in cal_iou[a].items() if v},
        }
    return res


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--cohort", action="append", required=True, type=Path, help="phantom cohort folder")
    ap.add_argument("--evaluation", action="append", required=True, type=Path,
                    help="its lumbargrade evaluate output folder (run here when missing)")
    ap.add_argument("--models", default=None, help="model pack (default: the bundled one)")
    ap.add_argument("--out", type=Path, default=HERE / "results" / "chemical_shift.json")
    args = ap.parse_args(argv)
    if len(args.cohort) != len(args.evaluation):
        ap.error("give one --evaluation per --cohort")
    from lumbargrade.modelpack import default_pack_path

    pack = Path(args.models) if args.models else default_pack_path()
    box_rule = json.loads((pack / "box_rule.json").read_text()) if (pack / "box_rule.json").is_file() else {}
    version = json.loads((pack / "pack.json").read_text()).get("version") if (pack / "pack.json").is_file() else None
    from lumbargrade.runtime import cpu_info

    results = {"cpu": cpu_info(), "model_pack": version,
               "command": "python benchmarks/chemical_shift.py " + " ".join(
                   f"--cohort {c.name} --evaluation {e.name}" for c, e in zip(args.cohort, args.evaluation)),
               "cohorts": {}}
    for cohort, ev in zip(args.cohort, args.evaluation):
        _evaluate(cohort, ev, args.models)
        r = analyse(cohort, ev, box_rule)
        results["cohorts"][cohort.name] = r
        print(f"{cohort.name}: {r['n_levels']} levels, mean fat-water shift {r['mean_fat_water_shift_px']} px")
        for name, o in r["offsets_px"].items():
            print(f"  {name:14s} offset along readout {o['mean_along_readout']:+.2f} px "
                  f"(slope vs shift {o['slope_along_readout_vs_shift']}), across {o['mean_across_readout']:+.2f} px")
        for a, c in r["oracle_correction"].items():
            print(f"  moved back {a:>4s} x shift: Dice disc {c['dice_disc']:.4f}  IoU raw facet "
                  f"{c['iou_raw_regions']['facet']:.3f} foramen {c['iou_raw_regions']['foramen']:.3f}  calibrated "
                  f"facet {c['iou_calibrated']['facet']:.3f} foramen {c['iou_calibrated']['foramen']:.3f}")
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(results, indent=2) + "\n")
    print(f"results: {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
