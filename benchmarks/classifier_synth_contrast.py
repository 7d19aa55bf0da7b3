"""A patch classifier on domain-randomised images: how much of its accuracy holds on contrasts the
phantom's renderer does not draw (a stand-in for real scans, which no grade labels exist for here).

The rows of one split of phantom cohorts are cut as ``lumbargrade train classifier`` cuts them
(the first pack's segmenter, box rule and fat-shift reader: patches where ``analyze`` cuts them),
once from the rendered slice and ``--copies`` times from images synthesised anew from the slice's
tissue maps (:mod:`lumbargrade.segmentation.synth`, the first pack's classifier recipe, by default
physically likely T2 contrasts; with three-slice context the neighbouring slices' maps come from
the cohort's slice bank and the three are drawn as one acquisition). Every pack's classifier for
``--task`` scores the same patches. Reported per pack, for the rendered and the synthesised
patches: binary AUROC against ``--labels`` with DeLong's 95% CI, and each pack's paired DeLong
difference against the first pack's.

    python benchmarks/classifier_synth_contrast.py --data COHORT/manifest.csv \
        --data COHORT_2/manifest.csv --models PACK_A --models PACK_B [--task foramen] \
        [--copies 2] [--split val] [--labels reader1] [--seed 0] --out RESULT.json
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
import time
from pathlib import Path

import numpy as np


def _classifier_cfg(clf) -> dict:
    """The training config a classifier was cut with (an ensemble's first member's)."""
    return dict(getattr(clf, "members", [clf])[0].config)


def evaluate(data: list[str], packs: list[str], task: str = "foramen", copies: int = 2, split: str = "val",
             labels: str = "reader1", seed: int = 0) -> dict:
    from lumbargrade import manifest as mf
    from lumbargrade.grading.classifier_inference import load_classifier
    from lumbargrade.grading.classifier_training import (
        _segmenter_and_rule,
        build_patch_set,
        resolve_config,
    )
    from lumbargrade.metrics import delong_ci, delong_test
    from lumbargrade.modelpack import load_pack
    from lumbargrade.provenance import portable_path
    from lumbargrade.runtime import cpu_info
    from lumbargrade.segmentation.fat_shift import load_fat_shift_reader

    if task not in ("foramen", "facet", "central_binary"):
        raise SystemExit(f"--task {task}: a binary task is needed (foramen, facet or central_binary)")
    folder = f"classifier_{task}"
    clfs = [load_classifier(Path(p) / folder, runtime="torch") for p in packs]
    cuts = [_classifier_cfg(c) for c in clfs]
    keys = ("patch", "context_slices", "pipeline_boxes")
    for p, c in zip(packs[1:], cuts[1:]):
        if any(c.get(k) != cuts[0].get(k) for k in keys):
            raise SystemExit(f"{p}: its {folder} cuts patches differently from {packs[0]}'s ({', '.join(keys)})")
    cfg = resolve_config({k: v for k, v in cuts[0].items() if k in ("patch", "context_slices", "in_chans",
                                                                     "pipeline_boxes", "synth")},
                         [f"synth_copies={copies}", "patch_boxes=pipeline", f"labels={labels}"])
    segmenter, rule = _segmenter_and_rule(packs[0], None, cfg)
    shift = Path(packs[0]) / "fat_shift"
    reader = load_fat_shift_reader(shift, runtime="torch") if (shift / "config.json").is_file() else None
    rows = mf.rows_for_split(mf.read_manifests(mf.data_paths(data)), split)
    log = logging.getLogger("classifier_synth_contrast")
    t0 = time.perf_counter()
    ps = build_patch_set(rows, task, cfg, log, segmenter, rule, seed, reader)
    cut_s = time.perf_counter() - t0
    synth = np.array([" synth" in s for s in ps.source])
    y = ps.y.astype(int)
    probs = [c.positive_probability(ps.x) for c in clfs]
    out: dict = {"task": task, "labels": labels, "split": split, "copies": copies, "seed": seed,
                 "data": [portable_path(d, placeholder="COHORT" + (f"_{i + 1}" if i else "")) for i, d in enumerate(data)],
                 "cpu": cpu_info(),
                 "patches": {"rendered": int((~synth).sum()), "synthesised": int(synth.sum())},
                 "positives": {"rendered": int(y[~synth].sum()), "synthesised": int(y[synth].sum())},
                 "cut_seconds": round(cut_s, 1), "synth": cfg["synth"], "packs": []}
    for i, (p, c, pr) in enumerate(zip(packs, clfs, probs)):
        pack = load_pack(p)
        entry: dict = {"pack": portable_path(p, placeholder="PACK" + (f"_{i + 1}" if i else "")),
                       "label": pack.label, "sha256": pack.fingerprint, "threshold": float(c.threshold)}
        for kind, m in (("rendered", ~synth), ("synthesised", synth)):
            auc, lo, hi = delong_ci(y[m], pr[m])
            e = {"auroc": round(float(auc), 4), "ci95": [round(float(lo), 4), round(float(hi), 4)]}
            if i:
                a, b, _, pval = delong_test(y[m], pr[m], probs[0][m])
                e["minus_first"] = round(float(a - b), 4)
                e["delong_p"] = round(float(pval), 4)
            entry[kind] = e
        out["packs"].append(entry)
    return out


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--data", action="append", required=True, help="a cohort's manifest.csv (repeatable)")
    ap.add_argument("--models", action="append", required=True, help="a model pack (repeatable; the first cuts)")
    ap.add_argument("--task", default="foramen")
    ap.add_argument("--copies", type=int, default=2, help="synthesised copies per slice")
    ap.add_argument("--split", default="val")
    ap.add_argument("--labels", default="reader1", help="reader1 | consensus | truth")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--out", required=True, help="result JSON")
    a = ap.parse_args(argv)
    res = evaluate(a.data, a.models, a.task, a.copies, a.split, a.labels, a.seed)
    Path(a.out).parent.mkdir(parents=True, exist_ok=True)
    Path(a.out).write_text(json.dumps(res, indent=2) + "\n")
    for e in res["packs"]:
        print(e["label"], e["sha256"], {k: e[k] for k in ("rendered", "synthesised")})
    return 0


if __name__ == "__main__":
    sys.exit(main())
