"""Level naming on spines with a lumbosacral transitional vertebra (phantom).

A lumbarised S1 puts one more mobile disc (S1/S2) below L5/S1, and a sacralised L5 leaves only a
thin, rudimentary L5/S1 disc: a landmark network that names the levels from the sacrum up may then
shift every name by one. This benchmark writes the same patients three times with the phantom:
without, with a lumbarised S1 (``lumbargrade phantom --lumbarised-s1 1``) and with a sacralised
L5 (``--sacralised-l5 1``); every other draw of a patient is the same. It runs the pack's landmark
stage on each mid-sagittal slice as ``analyze`` does (coarse network, refiner, naming check) and
counts, per version: images with every level right (each predicted disc centre nearest its own
true one), images wrong, and of those how many were flagged. The target of the real-MRI work:
every level right, or the image flagged.

    python benchmarks/transitional_levels.py [--patients 20] [--seed 8080] [--models PACK] [--work DIR]
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


def make_cohort(out: Path, patients: int, seed: int, flags: list[str], workers: int) -> Path:
    """``lumbargrade phantom`` (no slice bank, extra ``flags``) into ``out``; reuses a finished one."""
    if (out / "manifest.csv").is_file():
        return out
    subprocess.run([sys.executable, "-m", "lumbargrade", "phantom", "--out", str(out), "--patients", str(patients),
                    "--seed", str(seed), "--split", "0,0,1", "--no-slice-bank", "--quiet",
                    "--workers", str(workers), *flags], check=True)
    return out


def evaluate_cohort(cohort: Path, model) -> list[dict]:
    """Per patient: levels identified on the mid-sagittal slice, error (mm), flagged, warnings."""
    import pydicom

    from lumbargrade.levels.landmarks import predict_landmarks
    from lumbargrade.levels.names import LEVELS

    by_patient: dict[str, dict] = {}
    with (cohort / "manifest.csv").open(newline="") as f:
        for r in csv.DictReader(f):
            by_patient.setdefault(r["patient_id"], {})[r["level"]] = r
    rows = []
    for pid, levels in sorted(by_patient.items()):
        truth = np.array([[float(levels[lv]["landmark_row"]), float(levels[lv]["landmark_col"])] for lv in LEVELS])
        first = levels[LEVELS[0]]
        ds = pydicom.dcmread(cohort / first["sagittal_image"])
        spacing = [float(v) for v in ds.PixelSpacing]
        res = predict_landmarks(model, ds.pixel_array.astype(np.float32), spacing)
        pred = np.stack([res.rows, res.cols], 1)
        ident = [int(np.argmin(np.hypot(*(truth - p).T)) == k) for k, p in enumerate(pred)]
        err_mm = np.hypot((pred[:, 0] - truth[:, 0]) * spacing[0], (pred[:, 1] - truth[:, 1]) * spacing[1])
        info = json.loads((cohort / pid / "truth.json").read_text())
        rows.append({"patient": pid, "transition": info.get("lumbosacral_transition"),
                     "levels_identified": int(sum(ident)), "error_mm": round(float(err_mm.mean()), 2),
                     "flagged": bool(res.flagged), "warnings": list(res.warnings)})
    return rows


def summarise(rows: list[dict]) -> dict:
    wrong = [r for r in rows if r["levels_identified"] < 5]
    return {"n_images": len(rows),
            "images_all_levels_right": len(rows) - len(wrong),
            "images_wrong": len(wrong),
            "images_wrong_and_flagged": sum(r["flagged"] for r in wrong),
            "images_right_but_flagged": sum(r["flagged"] for r in rows if r["levels_identified"] == 5),
            "target_every_image_right_or_flagged": all(r["flagged"] for r in wrong),
            "median_error_mm_right_images": round(float(np.median([r["error_mm"] for r in rows
                                                                    if r["levels_identified"] == 5])), 2)
            if len(wrong) < len(rows) else None}


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--patients", type=int, default=20)
    ap.add_argument("--seed", type=int, default=8080)
    ap.add_argument("--models", help="model pack (default: the bundled pack)")
    ap.add_argument("--work", help="folder for the two cohorts (default: a temporary one)")
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--out", default=str(HERE / "results" / "transitional_levels.json"))
    args = ap.parse_args(argv)
    from lumbargrade.levels.landmarks import load_model
    from lumbargrade.modelpack import default_pack_path
    from lumbargrade.runtime import cpu_info

    pack = Path(args.models) if args.models else default_pack_path()
    model = load_model(pack)
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(args.work) if args.work else Path(tmp)
        out = {"cpu": cpu_info(), "model_pack": pack.name if args.models else "bundled",
               "patients": args.patients, "seed": args.seed,
               "command": f"python benchmarks/transitional_levels.py --patients {args.patients} --seed {args.seed}"}
        for name, flags in (("standard", []), ("lumbarised_s1", ["--lumbarised-s1", "1"]),
                            ("sacralised_l5", ["--sacralised-l5", "1"])):
            cohort = make_cohort(work / name, args.patients, args.seed, flags, args.workers)
            rows = evaluate_cohort(cohort, model)
            out[name] = {**summarise(rows), "rows": rows}
            s = out[name]
            print(f"{name}: {s['images_all_levels_right']}/{s['n_images']} images with every level right, "
                  f"{s['images_wrong']} wrong ({s['images_wrong_and_flagged']} of them flagged), "
                  f"{s['images_right_but_flagged']} right but flagged")
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(out, indent=1) + "\n")
    print(f"results: {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
