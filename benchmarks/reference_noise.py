"""How much of a shortfall against reader 1 is the reference's own noise? (phantom)

``lumbargrade evaluate`` scores the grades against reader 1 of the phantom's simulated readers, as
the paper scores against its reference radiologist; on the phantom it also scores them against the
grade the phantom drew (``truth``): ``binary_auroc_vs_truth`` for the foramina and facets and
``agreement.*_vs_truth`` for the central canal. This benchmark puts both side by side for several
cohorts already evaluated, with reader 1 against the truth (how noisy the reference is), from the
evaluation's own metrics (:func:`lumbargrade.evaluation.compute_metrics` on the saved reports;
95% CIs by a patient bootstrap, 1,000 resamples).

    python benchmarks/reference_noise.py --cohort COHORT --evaluation EVAL [--name A] \\
        [--cohort ... --evaluation ... --name ...] --out benchmarks/results/reference_noise.json

``COHORT``: a phantom cohort (``truth.json`` per patient); ``EVAL``: the ``lumbargrade evaluate``
output folder of the same cohort (its ``predictions/<patient>/report.json``).

The ceiling: a model whose score were the phantom's latent severity itself (``truth.json``
``severities``, from which the true grade and the readers' grades are drawn) would rank the
foramina and facets perfectly against the truth, and against reader 1 it would score
``ceiling_vs_reader1`` (binary AUROC of the severity against reader 1's labels, sides pooled): no
model can expect more against reader 1 on that cohort.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path


def _ci(entry: dict | None) -> list | None:
    if not entry:
        return None
    return [round(entry["value"], 4), round(entry["ci_low"], 4), round(entry["ci_high"], 4)]


def severity_ceiling(truth: list[dict], kind: str) -> float | None:
    """Binary AUROC of the latent severity against reader 1 for ``kind`` (foramen / facet), left and
    right pooled, over the levels of ``truth`` (:func:`lumbargrade.evaluation.load_truth`)."""
    import numpy as np

    from lumbargrade.evaluation.data import reader_grade
    from lumbargrade.metrics import binary_auroc

    y, s = [], []
    for pt in truth:
        for lv in pt["levels"]:
            for side in ("left", "right"):
                r, sev = reader_grade(lv, f"{kind}_{side}", 0), (lv.get("severities") or {}).get(f"{kind}_{side}")
                if r is not None and sev is not None:
                    y.append(r)
                    s.append(float(sev))
    if not y:
        return None
    v = binary_auroc(np.array(y), np.array(s))
    return round(float(v), 4) if np.isfinite(v) else None


def main(argv: list[str] | None = None) -> int:
    from lumbargrade.evaluation import compute_metrics, load_reports, load_truth, make_pairs

    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--cohort", action="append", required=True)
    ap.add_argument("--evaluation", action="append", required=True)
    ap.add_argument("--name", action="append", default=None, help="a label per cohort (default: its folder name)")
    ap.add_argument("--split", default="test")
    ap.add_argument("--out", default=None)
    args = ap.parse_args(argv)
    if len(args.cohort) != len(args.evaluation) or (args.name and len(args.name) != len(args.cohort)):
        print("error: give one --evaluation (and --name, if any) per --cohort", file=sys.stderr)
        return 2
    names = args.name or [Path(c).name for c in args.cohort]
    results = {}
    for name, cohort, evaluation in zip(names, args.cohort, args.evaluation):
        preds = Path(evaluation) / "predictions"
        if not Path(cohort).is_dir() or not preds.is_dir():
            print(f"error: {cohort} or {preds} not found", file=sys.stderr)
            return 2
        truth = load_truth(cohort, args.split)
        pairs, _ = make_pairs(truth, load_reports(preds))
        m = compute_metrics(pairs, n_boot=1000, seed=0)
        vs_truth = m.get("binary_auroc_vs_truth") or {}
        a = m["agreement"]
        res = {
            f"{kind}_auroc": {"vs_reader1": _ci(m["binary_auroc"].get(kind)), "vs_truth": _ci(vs_truth.get(kind)),
                              "ceiling_vs_reader1": severity_ceiling(truth, kind)}
            for kind in ("foramen", "facet")
        }
        for model in ("cnn", "tree"):
            res[f"central_{model}_kappa"] = {"vs_reader1": _ci(a.get(f"{model}_vs_reader1")),
                                             "vs_truth": _ci(a.get(f"{model}_vs_truth"))}
        res["reader1_vs_truth_central_kappa"] = _ci(a.get("reader1_vs_truth"))
        results[name] = res
        line = ", ".join(f"{k} {v['vs_reader1'][0]:.3f} / {v['vs_truth'][0]:.3f}"
                         + (f" (ceiling {v['ceiling_vs_reader1']:.3f})" if v.get("ceiling_vs_reader1") else "")
                         for k, v in res.items() if isinstance(v, dict) and v["vs_truth"])
        print(f"{name} (against reader 1 / against the truth): {line}; reader 1 against the truth, central "
              f"canal kappa {res['reader1_vs_truth_central_kappa'][0]:.3f}")
    if args.out:
        Path(args.out).parent.mkdir(parents=True, exist_ok=True)
        Path(args.out).write_text(json.dumps({"cohorts": results, "ci": "95% patient bootstrap, 1,000 resamples"},
                                             indent=2) + "\n")
        print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
