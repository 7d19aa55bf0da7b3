"""``lumbargrade demo``: generate a phantom study, analyze it with the bundled model pack, print
the grade table and say where report.html is. No arguments needed."""

from __future__ import annotations

import argparse


def register(sub: argparse._SubParsersAction) -> argparse.ArgumentParser:
    p = sub.add_parser(
        "demo",
        help="generate a synthetic (phantom) study, analyze it, print grades (no arguments needed)",
        description="Writes a new folder (default ./lumbargrade-demo, or -2, -3... if taken) holding the "
        "phantom study (DICOM + its ground truth) and the analysis (report.json, report.html, seg.dcm, sr.dcm).",
    )
    p.add_argument("--out", help="new folder for the demo (must not exist or be empty)")
    p.add_argument("--seed", type=int, default=2023, help="phantom seed (default 2023)")
    p.add_argument("--models", help="model pack folder (default: the bundled pack)")
    return p


def _new_folder(base: str) -> "Path":  # noqa: F821
    from pathlib import Path

    p = Path(base)
    n = 2
    while p.exists() and any(p.iterdir()):
        p = Path(f"{base}-{n}")
        n += 1
    return p


def run(args: argparse.Namespace) -> int:
    import sys
    import time

    from tqdm import tqdm

    from ..analysis_runner import analyze_one, format_table
    from ..errors import InputError
    from ..modelpack import load_pack
    from ..phantom.cohort import generate_cohort
    from ..pipeline import AnalysisConfig

    t_start = time.perf_counter()
    if args.out:
        from pathlib import Path

        out = Path(args.out)
        if out.exists() and any(out.iterdir()):
            raise InputError(out, "already holds files; choose a new folder for the demo")
    else:
        out = _new_folder("lumbargrade-demo")
    bar = tqdm(total=3, desc="demo", unit="step", file=sys.stderr,
               bar_format="{desc}: {n}/{total} {postfix} [{elapsed}]")
    bar.set_postfix_str("generating a phantom study")
    generate_cohort(out / "phantom", 1, seed=args.seed, split=(0, 0, 1), progress=False)
    patient = sorted(p for p in (out / "phantom").iterdir() if p.is_dir())[0]
    bar.update(1)
    bar.set_postfix_str("loading the model pack")
    pack = load_pack(args.models)
    bar.update(1)
    bar.set_postfix_str("analyzing")
    report = analyze_one(patient / "dicom", out / "analysis", pack, AnalysisConfig())
    bar.update(1)
    bar.close()

    import json

    truth = json.loads((patient / "truth.json").read_text())
    from ..grading.names import CENTRAL_GRADES as names
    print(f"\nPhantom study {patient.name} (synthetic; ground truth in {patient / 'truth.json'})")
    print(f"Model pack: {pack.label} -- trained on: {pack.manifest.get('trained_on') or 'not stated'}\n")
    print(format_table(report))
    print("\ntruth (reader 1) central canal: " + ", ".join(
        f"{lv['level']} {names[lv['grades']['central_canal']['readers'][0]]}" for lv in truth["levels"]))
    for w in report.get("warnings", []):
        print(f"warning: {w}", file=sys.stderr)
    html = out / "analysis" / "report.html"
    print(f"\nreport:  {html if html.is_file() else out / 'analysis' / 'report.json'}")
    print(f"done in {time.perf_counter() - t_start:.1f} s")
    return 0
