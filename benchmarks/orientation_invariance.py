"""Does the result depend on how the axial series is stored? (phantom, all 8 in-plane layouts)

A real axial series may be stored rotated or flipped (prone, feet first, transposed). lumbargrade
segments and measures every slice in its canonical view, so the anatomy the network sees is the
same whatever the layout; what changes with the layout is everything the scanner does along the
stored rows and columns (readout direction, chemical shift, partial Fourier, ringing), which then
lands on a different side of the anatomy. This benchmark writes the same patients eight times
(``lumbargrade phantom --axial-layout L`` for each layout; every anatomical draw is the same), runs
``lumbargrade evaluate`` on each, and compares per level across the layouts: the dural sac area
(spread: largest / smallest; and predicted / true), the tree and CNN central grades (the same in all
eight?), and per layout the Dice and box IoU of the evaluation.

    python benchmarks/orientation_invariance.py [--patients 10] [--seed 6060] [--models PACK] [--work DIR]
"""

from __future__ import annotations

import argparse
import csv
import json
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
LAYOUTS = ("+x+y", "-x+y", "+x-y", "-x-y", "+y+x", "-y+x", "+y-x", "-y-x")


def _slug(layout: str) -> str:
    return layout.replace("+", "p").replace("-", "m")


def make_cohort(out: Path, patients: int, seed: int, layout: str, workers: int) -> Path:
    """``lumbargrade phantom`` (test split only, no slice bank) with one axial layout; reuses a finished one."""
    if not (out / "manifest.csv").is_file():
        subprocess.run([sys.executable, "-m", "lumbargrade", "phantom", "--out", str(out), "--patients", str(patients),
                        "--seed", str(seed), "--split", "0,0,1", "--no-slice-bank", "--quiet",
                        "--workers", str(workers), f"--axial-layout={layout}"], check=True)
    return out


def evaluate(cohort: Path, out: Path, models: str | None) -> dict:
    """``lumbargrade evaluate`` on the cohort's test split (no figures); its metrics.json."""
    if not (out / "metrics.json").is_file():
        cmd = [sys.executable, "-m", "lumbargrade", "evaluate", "--data", str(cohort), "--out", str(out),
               "--split", "test", "--no-figures", "--n-boot", "200"]
        if models:
            cmd += ["--models", models]
        subprocess.run(cmd, check=True, stdout=subprocess.DEVNULL)
    return json.loads((out / "metrics.json").read_text())


def level_results(cohort: Path, predictions: Path) -> dict[tuple[str, str], dict]:
    """(patient, level) -> predicted and true sac area (mm²), tree and CNN grades."""
    truth = {}
    with (cohort / "manifest.csv").open(newline="") as f:
        for r in csv.DictReader(f):
            truth[(r["patient_id"], r["level"])] = float(r["dural_sac_area_mm2"])
    out = {}
    for rep in sorted(predictions.glob("*/report.json")):
        pid = rep.parent.name
        for lv in json.loads(rep.read_text())["levels"]:
            c = lv.get("central_canal") or {}
            out[(pid, lv["level"])] = {
                "sac_mm2": (lv.get("measurements") or {}).get("dural_sac_area_mm2"),
                "true_sac_mm2": truth.get((pid, lv["level"])),
                "tree": (c.get("tree") or {}).get("grade"),
                "cnn": (c.get("cnn") or {}).get("grade"),
            }
    return out


def compare(per_layout: dict[str, dict]) -> dict:
    """Spread of the sac area and agreement of the grades over the layouts, per level."""
    keys = sorted(set.intersection(*(set(v) for v in per_layout.values())))
    spread, same_tree, same_cnn, worst = [], 0, 0, []
    for k in keys:
        areas = [per_layout[L][k]["sac_mm2"] for L in per_layout]
        if any(a is None or not a > 0 for a in areas):
            continue
        s = max(areas) / min(areas)
        spread.append(s)
        worst.append((s, k))
        same_tree += len({per_layout[L][k]["tree"] for L in per_layout}) == 1
        same_cnn += len({per_layout[L][k]["cnn"] for L in per_layout}) == 1
    spread = np.asarray(spread)
    worst.sort(reverse=True)
    return {"n_levels": int(spread.size),
            "sac_area_spread_median": round(float(np.median(spread)), 3),
            "sac_area_spread_p90": round(float(np.percentile(spread, 90)), 3),
            "sac_area_spread_max": round(float(spread.max()), 3),
            "levels_with_spread_over_1.10": int((spread > 1.10).sum()),
            "levels_same_tree_grade_all_layouts": int(same_tree),
            "levels_same_cnn_grade_all_layouts": int(same_cnn),
            "worst_levels": [{"patient": k[0], "level": k[1], "spread": round(float(s), 3)} for s, k in worst[:5]]}


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--patients", type=int, default=10)
    ap.add_argument("--seed", type=int, default=6060)
    ap.add_argument("--models", help="model pack (default: the bundled pack)")
    ap.add_argument("--work", help="folder for the cohorts and evaluations, reused by a later run with another "
                    "--models (default: a temporary one)")
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--out", default=str(HERE / "results" / "orientation_invariance.json"))
    args = ap.parse_args(argv)
    from lumbargrade.runtime import cpu_info

    with tempfile.TemporaryDirectory() as tmp:
        work = Path(args.work) if args.work else Path(tmp)
        from lumbargrade.modelpack import default_pack_path

        pack_dir = Path(args.models) if args.models else default_pack_path()
        manifest = json.loads((pack_dir / "pack.json").read_text())
        tag = pack_dir.name if args.models else "bundled"
        res = {"cpu": cpu_info(), "model_pack": f"{manifest.get('name')} {manifest.get('version')}",
               "patients": args.patients, "seed": args.seed,
               "command": f"python benchmarks/orientation_invariance.py --patients {args.patients} --seed {args.seed}",
               "layouts": {}}
        per_layout = {}
        for layout in LAYOUTS:
            cohort = make_cohort(work / f"cohort_{_slug(layout)}", args.patients, args.seed, layout, args.workers)
            ev_dir = work / f"eval_{tag}_{_slug(layout)}"
            m = evaluate(cohort, ev_dir, args.models)
            per_layout[layout] = level_results(cohort, ev_dir / "predictions")
            ratios = [v["sac_mm2"] / v["true_sac_mm2"] for v in per_layout[layout].values()
                      if v["sac_mm2"] and v["true_sac_mm2"]]
            res["layouts"][layout] = {
                "dice_dural_sac": round(m["segmentation"]["dice_dural_sac"]["value"], 4),
                "dice_disc": round(m["segmentation"]["dice_disc"]["value"], 4),
                "iou_facet": round(m["localization"]["iou_facet"]["value"], 4),
                "iou_foramen": round(m["localization"]["iou_foramen"]["value"], 4),
                "sac_area_pred_over_true_median": round(float(np.median(ratios)), 3),
            }
            print(f"{layout}: " + ", ".join(f"{k} {v}" for k, v in res["layouts"][layout].items()))
        res["across_layouts"] = compare(per_layout)
        a = res["across_layouts"]
        print(f"across the 8 layouts, {a['n_levels']} levels: sac area largest/smallest median "
              f"{a['sac_area_spread_median']}, 90th percentile {a['sac_area_spread_p90']}, max "
              f"{a['sac_area_spread_max']}; same tree grade in all 8: {a['levels_same_tree_grade_all_layouts']}, "
              f"same CNN grade: {a['levels_same_cnn_grade_all_layouts']}")
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(res, indent=1) + "\n")
    print(f"results: {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
