"""``lumbargrade evaluate``: run a model pack on every study of a split and compare with the truth.

Writes OUT/metrics.json, OUT/tables.md (the paper's Tables 2 and 3, ours beside the paper's),
OUT/roc_*.png, OUT/confusion_*.png (unless --no-figures; they need the training extra),
OUT/levels.csv and OUT/predictions/<patient>/report.json.

``--data`` more than once pools several cohorts into one sample (patients become
``<cohort>/<patient id>``; the reports go to OUT/predictions/<cohort>/<patient>/); ``--baseline``
adds the paired difference to another pack's reports on the same studies.
"""

from __future__ import annotations

import argparse


def register(sub: argparse._SubParsersAction) -> argparse.ArgumentParser:
    p = sub.add_parser(
        "evaluate",
        help="evaluate a model pack on an annotated cohort (metrics with CIs, the paper's tables, ROC figures)",
        description="Run `analyze` on every study of a manifest's split (or read reports already made "
        "with --predictions) and compute every metric of the paper's Results against reader 1, with "
        "patient-level bootstrap 95%% CIs; several cohorts pooled, and the paired difference to a baseline "
        "pack's reports.",
    )
    p.add_argument("--data", required=True, action="append",
                   help="manifest.csv, or a folder holding one (e.g. a phantom cohort); give it more than once to "
                   "pool several cohorts into one sample")
    p.add_argument("--models", help="model pack folder (default: the bundled pack)")
    p.add_argument("--out", required=True, help="output folder")
    p.add_argument("--split", default="test", help="split to evaluate: train, val, test or all (default: test)")
    p.add_argument("--predictions", action="append",
                   help="folder of report.json files already made (one sub-folder per study); skips running the "
                   "pipeline; one per --data, in the same order")
    p.add_argument("--baseline", action="append",
                   help="another pack's report.json files on the same studies (one per --data, in the same "
                   "order): adds the paired difference of each headline metric, with CIs and DeLong's test")
    p.add_argument("--n-boot", type=int, default=1000, help="bootstrap resamples (default 1000)")
    p.add_argument("--seed", type=int, default=0, help="bootstrap seed")
    p.add_argument("--slice-choice", choices=["landmarks", "block"], default="landmarks",
                   help="axial slice choice when running the pipeline (default: landmarks)")
    p.add_argument("--overwrite", action="store_true", help="re-analyze studies whose report.json already exists")
    p.add_argument("--no-figures", action="store_true",
                   help="write metrics.json, tables.md and levels.csv only (the ROC and confusion figures need "
                   "matplotlib, in the training extra)")
    p.add_argument("--runtime", choices=["auto", "onnx", "torch"], default=None,
                   help="how the networks run (default auto: ONNX Runtime where the pack has a current export)")
    return p


def run(args: argparse.Namespace) -> int:
    import sys
    import time
    from pathlib import Path

    from ..errors import InputError
    from ..evaluation import Cohort, evaluate_cohorts, load_truth, pooled_id

    split = None if args.split == "all" else args.split
    if split not in (None, "train", "val", "test"):
        raise InputError("--split", f"{args.split!r} is not train, val, test or all")
    if args.n_boot < 10:
        raise InputError("--n-boot", "use at least 10 resamples")
    for opt, given in (("--predictions", args.predictions), ("--baseline", args.baseline)):
        if given and len(given) != len(args.data):
            raise InputError(opt, f"given {len(given)} times for {len(args.data)} --data; give one per --data, "
                             "in the same order")
    if not args.no_figures:
        from ..extras import require

        require("evaluate", ("matplotlib",), alternative="--no-figures")
    out = Path(args.out)
    names = cohort_names(args.data)
    pooled = len(args.data) > 1
    truths = [load_truth(d, split) for d in args.data]
    tree_model = None
    pack = None
    if args.models or not args.predictions:
        from ..modelpack import load_pack

        pack = load_pack(args.models, runtime=args.runtime)
        tree_model = pack.get("tree")
    t0 = time.perf_counter()
    failures: list[dict] = []
    if args.predictions:
        pred_dirs = [Path(d) for d in args.predictions]
    else:
        pred_dirs = [out / "predictions" / n if pooled else out / "predictions" for n in names]
        for n, truth, d in zip(names, truths, pred_dirs):
            failures += [dict(f, patient_id=pooled_id(n, f["patient_id"])) if pooled else f for f in
                         run_pipeline(truth, pack, d, slice_choice=args.slice_choice, overwrite=args.overwrite)]
    t_run = time.perf_counter() - t0
    from ..provenance import portable_path

    def record(paths, placeholder):
        cells = [portable_path(d, base=out, placeholder=placeholder + (f"_{i + 1}" if i else ""))
                 for i, d in enumerate(paths)]
        return cells if pooled else cells[0]

    extra = {  # paths as others can read them: relative to OUT, the package, or placeholders
        "data": record(args.data, "COHORT"),
        "model_pack": portable_path(pack.path, base=out, placeholder="PACK") if pack is not None else None,
        "runtime": pack.runtimes() if pack is not None and not args.predictions else None,
        "predictions": record(pred_dirs, "PREDICTIONS"),
        "baseline": record(args.baseline, "BASELINE") if args.baseline else None,
        "pipeline_failures": failures,
        "pipeline_seconds": round(t_run, 1) if not args.predictions else None,
    }
    cohorts = [Cohort(n, d, p, b, truth=t)  # the truth read above, not read again
               for n, d, p, b, t in zip(names, args.data, pred_dirs, args.baseline or [None] * len(names), truths)]
    m = evaluate_cohorts(cohorts, out, split=split, n_boot=args.n_boot, seed=args.seed, tree_model=tree_model,
                         extra=extra, figures=not args.no_figures)
    print((out / "tables.md").read_text())
    print(f"metrics: {out / 'metrics.json'}; tables: {out / 'tables.md'}"
          + ("" if args.no_figures else f"; figures: {out}/roc_*.png"))
    if failures:
        print(f"lumbargrade: {len(failures)} studies failed: see metrics.json pipeline_failures", file=sys.stderr)
    if m.get("patients_without_report"):
        print(f"lumbargrade: no report for {len(m['patients_without_report'])} patients "
              f"({', '.join(m['patients_without_report'][:5])}...)", file=sys.stderr)
    return 0


def cohort_names(data: list[str]) -> list[str]:
    """A short name per ``--data`` (its folder's name, or the manifest's folder's), made unique
    with ``-2``, ``-3``... (the patient prefix when cohorts are pooled)."""
    from pathlib import Path

    names: list[str] = []
    for d in data:
        p = Path(d)
        base = (p.parent.name if p.suffix else p.name) or "cohort"
        name, k = base, 2
        while name in names:
            name, k = f"{base}-{k}", k + 1
        names.append(name)
    return names


def run_pipeline(truth: list, pack, pred_dir, slice_choice: str = "landmarks", overwrite: bool = False) -> list[dict]:
    """``analyze`` every patient's study into ``pred_dir/<patient_id>/`` with the pack loaded once.
    A patient whose report.json exists is skipped (resumable) unless ``overwrite``. Returns the
    failures ``[{"patient_id", "error"}]`` (one bad study does not stop the others)."""
    import sys
    from pathlib import Path

    from tqdm import tqdm

    from ..analysis_runner import analyze_one
    from ..errors import InputError
    from ..pipeline import AnalysisConfig

    pred_dir = Path(pred_dir)
    pred_dir.mkdir(parents=True, exist_ok=True)
    config = AnalysisConfig(slice_choice=slice_choice)
    failures = []
    for pt in tqdm(truth, desc="analyze", unit="study", file=sys.stderr):
        dest = pred_dir / pt["patient_id"]
        if (dest / "report.json").is_file() and not overwrite:
            continue
        if not pt.get("study_dir"):
            failures.append({"patient_id": pt["patient_id"], "error": "no study_dir in the manifest"})
            continue
        try:
            analyze_one(pt["study_dir"], dest, pack, config, overwrite=True)
        except InputError as e:
            failures.append({"patient_id": pt["patient_id"], "error": e.one_line()})
        except Exception as e:  # noqa: BLE001 - one bad study must not stop the evaluation
            failures.append({"patient_id": pt["patient_id"], "error": f"{type(e).__name__}: {e}"})
    return failures
