"""Benchmark: time a phantom cohort (default 200 patients, 2 workers). Not a test.

    python benchmarks/phantom_cohort.py [--patients 200] [--workers 2] [--out DIR] [--json FILE]

Prints total seconds and seconds per patient and writes them as JSON (default
benchmarks/results/phantom_cohort.json). The cohort goes to a temporary folder unless --out.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import tempfile
import time
from pathlib import Path


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--patients", type=int, default=200)
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--preview", action="store_true")
    ap.add_argument("--out", help="cohort folder (default: a temporary folder, removed afterwards)")
    ap.add_argument("--json", default=str(Path(__file__).parent / "results" / "phantom_cohort.json"))
    args = ap.parse_args()

    from lumbargrade.phantom.cohort import generate_cohort

    tmp = None
    out = args.out
    if out is None:
        tmp = tempfile.TemporaryDirectory(prefix="phantom-bench-")
        out = tmp.name
    t0 = time.perf_counter()
    res = generate_cohort(out, args.patients, args.seed, preview=args.preview, workers=args.workers,
                          overwrite=True)
    total = time.perf_counter() - t0
    size = sum(p.stat().st_size for p in Path(out).rglob("*") if p.is_file())
    ps = sorted(res["patient_seconds"])
    result = {
        "patients": args.patients,
        "workers": args.workers,
        "preview": args.preview,
        "seconds_total": round(total, 2),
        "seconds_per_patient_wall": round(total / args.patients, 3),
        "patient_seconds_median": round(ps[len(ps) // 2], 3),
        "patient_seconds_max": round(ps[-1], 3),
        "patient_cpu_seconds_mean": round(sum(res["patient_cpu_seconds"]) / args.patients, 3),
        # what the cohort would take with `workers` otherwise idle cores (CPU time / workers)
        "estimated_seconds_idle_machine": round(sum(res["patient_cpu_seconds"]) / args.workers, 1),
        "estimated_seconds_200_patients_idle_machine": round(
            200 * sum(res["patient_cpu_seconds"]) / args.patients / args.workers, 1),
        "load_average_1min_at_end": round(os.getloadavg()[0], 2),
        "bytes_written": size,
        "cpu_count": os.cpu_count(),
        "platform": platform.platform(),
    }
    print(json.dumps(result, indent=2))
    Path(args.json).parent.mkdir(parents=True, exist_ok=True)
    Path(args.json).write_text(json.dumps(result, indent=2) + "\n")
    if tmp is not None:
        tmp.cleanup()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
