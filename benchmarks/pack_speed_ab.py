"""Two model packs on the same studies in one process, alternating: is one slower? (phantom)

A virtual machine's speed changes from minute to minute, so two runs of ``pipeline_speed.py`` a few
minutes apart can differ by more than what a pack change costs. This benchmark loads both packs
once, then analyses each study with one pack and then the other, ``--repeats`` times, without
writing outputs (``lumbargrade.pipeline.analyze_study``), and reports the median analysis time and
the median time of each stage per pack, measured side by side.

    python benchmarks/pack_speed_ab.py --baseline OLD_PACK [--candidate PACK] [--studies 4] \\
        [--repeats 3] [--seed 8787] [--out benchmarks/results/pack_speed_ab.json]

``--candidate`` defaults to the bundled pack. The studies are phantom studies made here
(``--seed``, standard layout).
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path


def main(argv: list[str] | None = None) -> int:
    from lumbargrade.io.study import read_study
    from lumbargrade.modelpack import load_pack
    from lumbargrade.phantom.cohort import generate_cohort
    from lumbargrade.phantom.config import PhantomConfig
    from lumbargrade.pipeline import analyze_study
    from lumbargrade.runtime import cpu_info

    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--baseline", required=True, help="the model pack to compare against")
    ap.add_argument("--candidate", default=None, help="the model pack to time (default: the bundled one)")
    ap.add_argument("--studies", type=int, default=4)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--seed", type=int, default=8787)
    ap.add_argument("--out", default=None)
    a = ap.parse_args(argv)
    packs = {"baseline": load_pack(a.baseline), "candidate": load_pack(a.candidate)}
    names = {k: f"{p.name} {p.version}" for k, p in packs.items()}
    with tempfile.TemporaryDirectory() as tmp:
        generate_cohort(Path(tmp), a.studies, seed=a.seed, split=(0, 0, a.studies), progress=False,
                        config=dataclasses.replace(PhantomConfig(), slice_bank=False))
        studies = [read_study(p / "dicom") for p in sorted(Path(tmp).iterdir()) if (p / "dicom").is_dir()]
        for p in packs.values():  # warm up: the first study pays for lazy set-up
            analyze_study(studies[0], p)
        times: dict[str, dict[str, list[float]]] = {k: {} for k in packs}
        for _ in range(a.repeats):
            for s in studies:
                for k, p in packs.items():
                    t0 = time.perf_counter()
                    r = analyze_study(s, p)
                    times[k].setdefault("analysis", []).append(time.perf_counter() - t0)
                    for stage, t in r.timings_s.items():
                        times[k].setdefault(stage, []).append(float(t))
    res = {"benchmark": "pack_speed_ab", "cpu": cpu_info(), "packs": names, "studies": a.studies,
           "repeats": a.repeats, "seed": a.seed,
           "command": "python benchmarks/pack_speed_ab.py " + " ".join(  # no folder of this machine
               "PACK" if x.startswith("/") else x for x in (sys.argv[1:] if argv is None else argv)),
           "median_s": {k: {st: round(statistics.median(v), 4) for st, v in t.items()} for k, t in times.items()}}
    for k in packs:
        m = res["median_s"][k]
        print(f"{names[k]:>28}: analysis {m['analysis']:.3f} s/study; " +
              ", ".join(f"{st} {v:.3f}" for st, v in m.items() if st != "analysis"))
    if a.out:
        Path(a.out).write_text(json.dumps(res, indent=2) + "\n")
        print(f"results: {a.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
