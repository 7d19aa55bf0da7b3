"""What limits the central canal tree: the grade boundaries or the measured areas? (phantom)

The tree grades one number per level, the dural sac area normalised by the disc area, measured on
the segmenter's masks. On the phantom the true masks are known, so the same tree can be run twice
per level: on the areas ``analyze`` measured (what the evaluation reports) and on the true areas
from ``truth.json`` (what a perfect segmenter would give). The gap between the two kappas is what
the measurement noise costs; the area errors are reported per true grade (log of predicted / true
area: 0.05 is a 5 % error).

    python benchmarks/tree_measurement_noise.py --cohort COHORT --evaluation EVAL [--cohort ... --evaluation ...] \\
        [--models PACK] --out benchmarks/results/tree_measurement_noise.json

``COHORT``: a phantom cohort (``truth.json`` per patient); ``EVAL``: the ``lumbargrade evaluate``
output folder of the same cohort (its ``predictions/<patient>/report.json``). Only levels whose
chosen axial slice is the truth's are used (the true areas are of that slice). The tree is the
pack's (default: the bundled pack). Kappas are linearly weighted, against reader 1 and against the
true grade; no CIs (the evaluation's tables have them for the measured areas).
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np

GRADES = ("normal", "mild", "moderate", "severe")


def cohort_rows(cohort: Path, evaluation: Path) -> list[dict]:
    """One dict per level with a report on the truth's slice: true and measured areas, grades."""
    rows = []
    for truth_path in sorted(cohort.glob("*/truth.json")):
        truth = json.loads(truth_path.read_text())
        rep = evaluation / "predictions" / truth["patient_id"] / "report.json"
        if not rep.is_file():
            continue
        levels = {lv["level"]: lv for lv in json.loads(rep.read_text())["levels"]}
        for lv in truth["levels"]:
            p = levels.get(lv["level"])
            if p is None or p.get("axial_sop_instance_uid") != lv.get("axial_sop_instance_uid"):
                continue
            m, q = lv["measurements"], p.get("measurements") or {}
            if not q.get("valid"):
                continue
            g = lv["grades"]["central_canal"]
            rows.append({"sac_true": m["dural_sac_area_mm2"], "disc_true": m["disc_area_mm2"],
                         "sac_pred": q["dural_sac_area_mm2"], "disc_pred": q["disc_area_mm2"],
                         "reader1": int(g["readers"][0]), "truth": int(g["truth"])})
    return rows


def summarise(rows: list[dict], tree) -> dict:
    from lumbargrade.metrics import linear_weighted_kappa

    def grades(sac_key, disc_key):
        return np.array([int(tree.predict([tree.value_of({"dural_sac_area_mm2": r[sac_key], "disc_area_mm2": r[disc_key],
                                                           "area_ratio": r[sac_key] / r[disc_key]})])[0])
                         for r in rows])

    r1 = np.array([r["reader1"] for r in rows])
    tg = np.array([r["truth"] for r in rows])
    measured, oracle = grades("sac_pred", "disc_pred"), grades("sac_true", "disc_true")
    e_sac = np.log([r["sac_pred"] / r["sac_true"] for r in rows])
    e_disc = np.log([r["disc_pred"] / r["disc_true"] for r in rows])
    k = lambda a, b: round(float(linear_weighted_kappa(a, b, n_classes=4)), 3)
    return {
        "n_levels": len(rows),
        "kappa_vs_reader1": {"measured_areas": k(r1, measured), "true_areas": k(r1, oracle)},
        "kappa_vs_true_grade": {"measured_areas": k(tg, measured), "true_areas": k(tg, oracle)},
        "kappa_reader1_vs_true_grade": k(tg, r1),
        "levels_whose_grade_changes_with_the_measurement": int((measured != oracle).sum()),
        "sac_area_log_error": {"mean": round(float(e_sac.mean()), 4), "sd": round(float(e_sac.std()), 4),
                               "sd_by_true_grade": {GRADES[g]: round(float(e_sac[tg == g].std()), 4)
                                                    for g in range(4) if (tg == g).sum() > 1}},
        "disc_area_log_error": {"mean": round(float(e_disc.mean()), 4), "sd": round(float(e_disc.std()), 4)},
    }


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--cohort", action="append", required=True, help="phantom cohort folder (repeatable)")
    ap.add_argument("--evaluation", action="append", required=True,
                    help="`lumbargrade evaluate` output of that cohort (one per --cohort, same order)")
    ap.add_argument("--models", default=None, help="model pack (default: the bundled one)")
    ap.add_argument("--out", default=None, help="write the figures as JSON here")
    a = ap.parse_args(argv)
    if len(a.cohort) != len(a.evaluation):
        ap.error("give one --evaluation per --cohort")
    from lumbargrade.modelpack import load_pack
    from lumbargrade.runtime import cpu_info

    pack = load_pack(a.models)
    tree = pack.get("tree")
    t0 = time.perf_counter()
    out = {"benchmark": "tree_measurement_noise", "model_pack": f"{pack.name} {pack.version}",
           "tree": {"feature": tree.feature_definitions[0], "rules": tree.rules_in_words(),
                    "thresholds": tree.training.get("thresholds", "gini")},
           "cpu": cpu_info(), "command": "python benchmarks/tree_measurement_noise.py " + " ".join(
               f"--cohort {Path(c).name} --evaluation {Path(e).name}" for c, e in zip(a.cohort, a.evaluation)),
           "cohorts": {}}
    for c, e in zip(a.cohort, a.evaluation):
        rows = cohort_rows(Path(c), Path(e))
        if not rows:
            print(f"error: {c}: no level with a report on the truth's slice under {e}/predictions", file=sys.stderr)
            return 2
        s = summarise(rows, tree)
        out["cohorts"][Path(c).name] = s
        kr = s["kappa_vs_reader1"]
        print(f"{Path(c).name}: {s['n_levels']} levels; tree kappa vs reader 1 on measured areas {kr['measured_areas']}, "
              f"on true areas {kr['true_areas']}; sac area error SD {s['sac_area_log_error']['sd']:.3f} "
              f"(by grade {s['sac_area_log_error']['sd_by_true_grade']}), disc {s['disc_area_log_error']['sd']:.3f}")
    out["seconds"] = round(time.perf_counter() - t0, 2)
    if a.out:
        p = Path(a.out)
        p.parent.mkdir(parents=True, exist_ok=True)
        p.write_text(json.dumps(out, indent=2) + "\n")
        print(f"wrote {p}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
