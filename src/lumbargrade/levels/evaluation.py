"""Evaluating landmarks and axial slice choice on studies with truth (a phantom cohort).

For each patient of a manifest split: the study is read, landmarks are found on the sagittal
series' automatically chosen mid-sagittal slice and mapped to LPS mm, and each level's axial
slice is chosen (:func:`slice_choice.choose_slices_for_landmarks`). Reported, with 95% percentile
bootstrap CIs by patient: landmark error in mm (3D, and in the sagittal plane), level
identification accuracy (each predicted landmark nearer its own true disc centre than any
other), and slice-choice accuracy (chosen SOPInstanceUID == the manifest's ``axial_sop_instance_uid``,
the truth's disc-centre slice), and the chosen plane's excess distance from the true disc
centre over the truth slice's (near 0 when a miss is the equally near neighbour).

Usage: ``python -m lumbargrade.levels.evaluation --data MANIFEST [--models PATH] [--split test]
[--out metrics.json]``.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from .names import LEVELS

__all__ = ["evaluate_cohort", "main"]


def _truth_points(base: Path, rows: list[dict]) -> dict[str, np.ndarray]:
    """Per level LPS mm of the true disc centre: truth.json's ``landmark_patient_mm`` when there,
    else the manifest landmark mapped through the sagittal image's DICOM geometry."""
    out: dict[str, np.ndarray] = {}
    study_dir = base / rows[0]["study_dir"]
    truth_p = study_dir.parent / "truth.json"
    if truth_p.is_file():
        t = json.loads(truth_p.read_text())
        for lv in t.get("levels", []):
            if lv.get("landmark_patient_mm") is not None:
                out[lv["level"]] = np.asarray(lv["landmark_patient_mm"], float)
    if len(out) < len(LEVELS):
        import pydicom

        from ..geometry import SliceGeometry

        for r in rows:
            if r["level"] in out or not r.get("sagittal_image"):
                continue
            ds = pydicom.dcmread(base / r["sagittal_image"], stop_before_pixels=True)
            g = SliceGeometry.from_dicom_values(ds.ImagePositionPatient, ds.ImageOrientationPatient,
                                                ds.PixelSpacing, ds.Rows, ds.Columns)
            out[r["level"]] = g.pixel_to_patient(np.array([float(r["landmark_row"]), float(r["landmark_col"])]))
    return out


def evaluate_cohort(manifest: str | Path, model: Any, split: str = "test",
                    log: Callable[[str], None] | None = None) -> dict[str, Any]:
    """Landmark and slice-choice metrics on one split (or ``"all"``) of a manifest (see module
    docstring)."""
    from ..io import read_study
    from ..manifest import read_manifest
    from .landmarks import landmarks_for_series
    from .slice_choice import choose_slices_for_landmarks
    from .training import _bootstrap_ci

    rows = [r for r in read_manifest(manifest, required=("patient_id", "split", "level", "study_dir"))
            if split == "all" or r["split"] == split]
    by_pt: dict[str, list[dict]] = {}
    for r in rows:
        by_pt.setdefault(r["patient_id"], []).append(r)
    err3d: dict[str, list[float]] = {}
    err2d: dict[str, list[float]] = {}
    ident: dict[str, list[float]] = {}
    correct: dict[str, list[float]] = {}
    truth_correct: dict[str, list[float]] = {}
    per_level_err: dict[str, list[float]] = {lv: [] for lv in LEVELS}
    per_level_ok: dict[str, list[float]] = {lv: [] for lv in LEVELS}
    dist_chosen: list[float] = []
    excess: list[float] = []
    flagged = 0
    for pid, prs in sorted(by_pt.items()):
        base = Path(prs[0]["_base_dir"])
        study = read_study(base / prs[0]["study_dir"])
        try:
            sag, ax = study.find("sagittal_t2"), study.find("axial_t2")
            if sag is None or ax is None:
                if log:
                    log(f"{pid}: no sagittal or axial T2 series; skipped")
                continue
            lm = landmarks_for_series(model, sag)
            flagged += int(lm.flagged)
            truth = _truth_points(base, prs)
            pred = np.array([lm.patient_mm(lv) for lv in LEVELS])
            tru = np.array([truth[lv] for lv in LEVELS])
            normal = max(sag.blocks, key=len).slices[0].geometry.normal
            d3 = np.linalg.norm(pred - tru, axis=1)
            dv = pred - tru
            d2 = np.linalg.norm(dv - np.outer(dv @ normal, normal), axis=1)
            err3d[pid], err2d[pid] = d3.tolist(), d2.tolist()
            dd = np.linalg.norm(pred[:, None] - tru[None], axis=-1)
            ident[pid] = (np.argmin(dd, axis=1) == np.arange(len(LEVELS))).astype(float).tolist()
            blocks = [[s.geometry for s in b.slices] for b in ax.blocks]
            chosen = choose_slices_for_landmarks(pred, blocks)
            from_truth = choose_slices_for_landmarks(tru, blocks)
            want = {r["level"]: r.get("axial_sop_instance_uid", "") for r in prs}
            ok, tok = [], []
            for k, lv in enumerate(LEVELS):
                c, ct = chosen[lv], from_truth[lv]
                uid = None if c is None else ax.blocks[c.block].slices[c.slice].sop_instance_uid
                tuid = None if ct is None else ax.blocks[ct.block].slices[ct.slice].sop_instance_uid
                ok.append(float(uid is not None and uid == want.get(lv)))
                tok.append(float(tuid is not None and tuid == want.get(lv)))
                per_level_err[lv].append(float(d3[k]))
                per_level_ok[lv].append(ok[-1])
                if c is not None:
                    dist_chosen.append(abs(float(c.distance_mm)))
                if c is not None and ct is not None:
                    # how much farther the chosen plane is from the TRUE disc centre than the
                    # truth's slice (0 when the same slice; small when the centre lies between two)
                    g = ax.blocks[c.block].slices[c.slice].geometry
                    excess.append(abs(float(g.signed_distance(tru[k]))) - abs(float(ct.distance_mm)))
            correct[pid], truth_correct[pid] = ok, tok
            if log:
                log(f"{pid}: error {d3.mean():.2f} mm, slices correct {int(sum(ok))}/5"
                    f"{' FLAGGED' if lm.flagged else ''}")
        finally:
            study.close()

    def summary(d: dict[str, list[float]]) -> dict[str, Any]:
        vals = [v for vs in d.values() for v in vs]
        if not vals:
            return {"mean": None}
        lo, hi = _bootstrap_ci(d)
        return {"mean": float(np.mean(vals)), "ci95": [lo, hi], "max": float(np.max(vals)), "n": len(vals)}

    return {
        "split": split,
        "n_patients": len(err3d),
        "landmark_error_mm_3d": summary(err3d),
        "landmark_error_mm_in_plane": summary(err2d),
        "landmark_error_mm_3d_per_level": {lv: float(np.mean(v)) if v else None for lv, v in per_level_err.items()},
        "level_identification_accuracy": summary(ident),
        "slice_choice_accuracy": summary(correct),
        "slice_choice_accuracy_per_level": {lv: float(np.mean(v)) if v else None for lv, v in per_level_ok.items()},
        "slice_choice_accuracy_from_true_landmarks": summary(truth_correct),
        "chosen_slice_distance_mm_mean": float(np.mean(dist_chosen)) if dist_chosen else None,
        "chosen_slice_excess_distance_mm": (
            {"mean": float(np.mean(excess)), "max": float(np.max(excess)),
             "fraction_under_1mm": float(np.mean(np.asarray(excess) < 1.0))} if excess else None),
        "flagged_studies": flagged,
    }


def main(argv: list[str] | None = None) -> int:
    import argparse

    from .landmarks import load_model

    p = argparse.ArgumentParser(prog="python -m lumbargrade.levels.evaluation", description=__doc__.split("\n\n")[0])
    p.add_argument("--data", required=True, help="manifest.csv or a folder holding one")
    p.add_argument("--models", default=None, help="landmark model folder (default: packaged)")
    p.add_argument("--split", default="test", help="train, val, test or all")
    p.add_argument("--out", default=None, help="write the metrics JSON here")
    a = p.parse_args(argv)
    m = evaluate_cohort(a.data, load_model(a.models), a.split, log=print)
    text = json.dumps(m, indent=2)
    print(text)
    if a.out:
        Path(a.out).write_text(text + "\n")
    return 0


if __name__ == "__main__":  # pragma: no cover
    import sys

    sys.exit(main())
