"""How much do the foramen / facet labels depend on the training seed? (phantom)

Two model packs that differ only in one classifier, trained with the same command and data but
another ``--seed``, are evaluated on the same cohorts (``lumbargrade evaluate``); this script
compares their per-side outputs level by level: the share of findings whose binary label
(normal/mild vs moderate/severe at each classifier's own threshold) differs between the two, and
how far the probabilities lie apart. Run it once for two single networks and once for two
ensembles (``train classifier --ensemble 3`` with ``--seed 0`` and ``--seed 3``: members of
disjoint seeds) to see what averaging buys.

    python benchmarks/classifier_seed_stability.py --finding foramen \\
        --compare "one network: seed 0 vs seed 3" EVAL_S0_A EVAL_S3_A --compare "one network: seed 0 vs seed 3" EVAL_S0_B EVAL_S3_B ... \\
        --compare "ensemble of 3: seeds 0-2 vs 3-5" EVAL_E0_A EVAL_E3_A ... \\
        --out benchmarks/results/classifier_seed_stability.json

``EVAL_*``: ``lumbargrade evaluate`` output folders (``predictions/<patient>/report.json`` and
``metrics.json``). Comparisons with the same label are pooled (one entry per cohort pair).
Only levels both runs reported on the same axial slice are compared. A LABEL ending in ``@T``
(e.g. ``"one network: seed 0 vs seed 3@0.3"``) relabels both runs at the probability threshold T
instead of taking the labels each run reported at its own classifier's threshold.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np

SIDES = ("left", "right")


def paired_findings(a: Path, b: Path, finding: str) -> list[tuple[float, str, float, str]]:
    """(probability, label) of run a and of run b for every side of every level both reported."""
    out = []
    for rep_a in sorted((a / "predictions").glob("*/report.json")):
        rep_b = b / "predictions" / rep_a.parent.name / "report.json"
        if not rep_b.is_file():
            continue
        la = {lv["level"]: lv for lv in json.loads(rep_a.read_text())["levels"]}
        lb = {lv["level"]: lv for lv in json.loads(rep_b.read_text())["levels"]}
        for name, x in la.items():
            y = lb.get(name)
            if y is None or x.get("axial_sop_instance_uid") != y.get("axial_sop_instance_uid"):
                continue
            for side in SIDES:
                fx, fy = x.get(f"{finding}_{side}") or {}, y.get(f"{finding}_{side}") or {}
                if fx.get("probability") is None or fy.get("probability") is None:
                    continue
                out.append((float(fx["probability"]), str(fx["label"]), float(fy["probability"]), str(fy["label"])))
    return out


def auroc_of(evaluation: Path, finding: str) -> float | None:
    try:
        return round(float(json.loads((evaluation / "metrics.json").read_text())["binary_auroc"][finding]["value"]), 4)
    except (OSError, KeyError, TypeError, ValueError):
        return None


def summarise(pairs: list[tuple[float, str, float, str]], threshold: float | None = None) -> dict:
    pa = np.array([p[0] for p in pairs])
    pb = np.array([p[2] for p in pairs])
    if threshold is None:
        flips = sum(p[1] != p[3] for p in pairs)
    else:
        flips = int(((pa >= threshold) != (pb >= threshold)).sum())
    d = np.abs(pa - pb)
    return {"n_findings": len(pairs), "labels_that_differ": int(flips),
            "share_that_differs": round(flips / max(len(pairs), 1), 4),
            "probability_difference": {"mean": round(float(d.mean()), 4), "median": round(float(np.median(d)), 4),
                                       "p95": round(float(np.percentile(d, 95)), 4), "max": round(float(d.max()), 4)}}


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--finding", choices=("foramen", "facet"), required=True)
    ap.add_argument("--compare", nargs=3, action="append", required=True, metavar=("LABEL", "EVAL_X", "EVAL_Y"),
                    help="two evaluations of the same cohort (repeatable; the same LABEL pools cohorts)")
    ap.add_argument("--out", default=None, help="write the figures as JSON here")
    a = ap.parse_args(argv)
    from lumbargrade.runtime import cpu_info

    t0 = time.perf_counter()
    groups: dict[str, dict] = {}
    thresholds: dict[str, float | None] = {}
    for label, x, y in a.compare:
        px, py = Path(x), Path(y)
        if label not in thresholds:
            head, sep, tail = label.rpartition("@")
            try:
                thresholds[label] = float(tail) if sep and head else None
            except ValueError:
                thresholds[label] = None
            if thresholds[label] is not None and not 0 < thresholds[label] < 1:
                print(f"error: {label}: the threshold after @ must lie in (0, 1)", file=sys.stderr)
                return 2
        for p in (px, py):
            if not (p / "predictions").is_dir():
                print(f"error: {p}: not a `lumbargrade evaluate` output (no predictions/)", file=sys.stderr)
                return 2
        pairs = paired_findings(px, py, a.finding)
        if not pairs:
            print(f"error: {px} and {py}: no level reported by both", file=sys.stderr)
            return 2
        g = groups.setdefault(label, {"pairs": [], "cohorts": []})
        g["pairs"] += pairs
        g["cohorts"].append({"x": px.name, "y": py.name, **summarise(pairs, thresholds[label]),
                             "auroc_x": auroc_of(px, a.finding), "auroc_y": auroc_of(py, a.finding)})
    out = {"benchmark": "classifier_seed_stability", "finding": a.finding, "cpu": cpu_info(),
           "command": "python benchmarks/classifier_seed_stability.py --finding " + a.finding + " " + " ".join(
               f'--compare "{lab}" {Path(x).name} {Path(y).name}' for lab, x, y in a.compare),
           "comparisons": {}}
    for label, g in groups.items():
        s = summarise(g["pairs"], thresholds[label])
        out["comparisons"][label] = {**s, "threshold": thresholds[label] if thresholds[label] is not None
                                     else "each run's own", "cohorts": g["cohorts"]}
        print(f"{label}: {s['labels_that_differ']} of {s['n_findings']} labels differ ({100 * s['share_that_differs']:.1f}%), "
              f"probability difference mean {s['probability_difference']['mean']:.3f}, "
              f"95th percentile {s['probability_difference']['p95']:.3f}")
    out["seconds"] = round(time.perf_counter() - t0, 2)
    if a.out:
        p = Path(a.out)
        p.parent.mkdir(parents=True, exist_ok=True)
        p.write_text(json.dumps(out, indent=2) + "\n")
        print(f"wrote {p}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
