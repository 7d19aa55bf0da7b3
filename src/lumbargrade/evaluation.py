"""End-to-end evaluation of ``analyze`` reports against annotated truth: every metric of the paper's
Results with patient-level bootstrap 95% CIs, the paper's Tables 2 and 3 as Markdown, ROC figures
(Figs. 4 and 5) and confusion matrices.

The metric part (:func:`compute_metrics`) is pure: it takes a list of :class:`LevelPair` (one per
annotated (patient, level): the truth record, the report's level record or None, and the label maps
as arrays) and returns a JSON-ready dict. Reading truth and reports (:func:`load_truth`,
:func:`load_reports`, :func:`make_pairs`) and writing tables and figures are separate functions.

Definitions (units and choices; see also docs/reproducing.md):

* **Reference labels** are reader 1's grades (as in the paper). Central canal ``0 normal, 1 mild,
  2 moderate, 3 severe``; binary findings and the binarised central canal: ``1`` = moderate/severe.
  The report's grade names ``normal..severe`` map to ``0..3``; its binary labels
  ``"moderate/severe"`` to 1 and ``"normal/mild"`` to 0.
* **Slice matching**: a level's Dice and box IoU are computed only when the report chose the same
  axial slice as the truth (same SOPInstanceUID; truth masks exist only on that slice). A level
  where the pipeline chose another slice is counted as a miss in *slice choice accuracy* and left out
  of Dice / IoU (``n`` in each entry says how many levels were used). Grading metrics use every
  level the report graded, whatever slice it chose (end-to-end, as a user sees it).
* **Dice** (dural sac = label 1, disc = label 2): per level between the report's label map and the
  truth label map, then the mean over levels. **IoU** per box type (facet, foramen), left and right
  pooled, the report's ``boxes`` against the truth's boxes (truth.json ``boxes``, else the bounding
  boxes of labels 3-6 of the truth label map).
* **Landmark error**: Euclidean distance in mm (LPS) between the report's landmark
  (``slice_choice.landmark_patient_mm``, else ``sagittal.landmarks[level].patient_mm``) and the truth
  disc centre (``landmark_patient_mm``); mean over levels. **Level identification**: a level is
  identified when its predicted landmark is nearer its own truth disc centre than any other truth
  disc centre of the patient; a level without a predicted landmark counts as not identified (only
  computed when some landmark was predicted at all).
* **Slice choice accuracy**: report ``axial_sop_instance_uid`` == truth's; a level missing from the
  report counts as wrong.
* **Central canal, 4 grades** (tree and CNN vs reader 1): accuracy, one-vs-one AUROC (Hand & Till)
  and linearly weighted kappa (``n_classes=4``). The CNN's class scores are its ``probabilities``.
  The tree's class scores are the leaf class frequencies: from the report's ``tree.probabilities``
  when present, else from the tree model given to :func:`compute_metrics` (``tree_model``, applied
  to the reported ratio), else a one-hot of the tree's grade (recorded in ``notes``).
* **Binary AUROC**: central canal (normal/mild vs moderate/severe) for the CNN from
  ``cnn.binary_probability``; for the tree from a monotone score of the reported ratio
  (``-ratio`` when a smaller ratio means a worse grade, which is checked on the tree's own grades,
  not on the reference) so the ROC curve sweeps every threshold on the ratio; foramen and facet from
  each side's ``probability``, left and right pooled. **DeLong**: paired test of the tree's and the
  CNN's binary central canal AUROC on the levels that have both.
* **Agreement** (Table 3): linearly weighted kappa of readers 2 and 3, the CNN and the tree against
  reader 1, reader 2 against reader 3, and (extra, phantom) of every reader and model against the
  true grade.
* **CIs**: percentile bootstrap, ``n_boot`` resamples of whole patients (all levels of a drawn patient
  kept), :func:`lumbargrade.metrics.bootstrap_ci`.
"""

from __future__ import annotations

import csv
import json
import math
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from .errors import InputError

__all__ = [
    "BINARY_FINDINGS",
    "GRADE_NAMES",
    "PAPER",
    "LevelPair",
    "compute_metrics",
    "evaluate_predictions",
    "format_tables",
    "load_reports",
    "load_truth",
    "make_pairs",
    "write_figures",
    "write_level_csv",
    "write_outputs",
]

from .grading.names import CENTRAL_GRADES as GRADE_NAMES
from .grading.names import LATERAL_FINDINGS as BINARY_FINDINGS
_FINDINGS = ("central_canal",) + BINARY_FINDINGS

#: The paper's own figures (Bharadwaj et al., Eur Radiol 2023; Results, Tables 2 and 3):
#: ``key -> (value, ci_low, ci_high)``; CI None where the paper gives none. Percent where the paper
#: reports percent (accuracy, multi-class AUROC).
PAPER: dict[str, tuple[float, float | None, float | None]] = {
    "dice_dural_sac": (0.93, 0.92, 0.95),
    "dice_disc": (0.94, 0.92, 0.94),
    "iou_foramen": (0.72, 0.70, 0.74),
    "iou_facet": (0.83, 0.82, 0.84),
    "landmark_error_mm": (2.14, 0.97, 3.22),
    "cnn_accuracy": (63.8, 59.7, 68.1),
    "cnn_ovo_auroc": (75.4, 72.6, 78.3),
    "cnn_kappa": (0.54, 0.51, 0.60),
    "tree_accuracy": (72.7, 67.8, 76.3),
    "tree_ovo_auroc": (81.9, 78.5, 83.8),
    "tree_kappa": (0.80, 0.76, 0.82),
    "auroc_central_cnn": (0.94, 0.93, 0.95),
    "auroc_central_tree": (0.95, 0.93, 0.96),
    "auroc_foramen": (0.92, 0.91, 0.93),
    "auroc_facet": (0.93, 0.91, 0.94),
    "kappa_r2_r1": (0.86, None, None),
    "kappa_r3_r1": (0.80, None, None),
    "kappa_r2_r3": (0.74, None, None),
    "kappa_cnn_r1": (0.54, None, None),
    "kappa_tree_r1": (0.80, None, None),
}
#: The paper's DeLong result (Fig. 4): tree vs CNN, p < 0.01.
PAPER_DELONG_P = "< 0.01"


# --------------------------------------------------------------------------- data
@dataclass
class LevelPair:
    """One annotated (patient, level) and what the report says about it.

    ``truth``: the truth level record (truth.json schema: ``axial_sop_instance_uid``, ``boxes``,
    ``landmark_patient_mm``, ``grades: {finding: {"truth", "readers": [r1, r2, r3]}}``; any part may
    be missing). ``pred``: the report's level record, or None when the report has no such level.
    ``truth_label_map`` / ``pred_label_map``: uint8 label maps (or None). ``truth_landmarks``: every
    truth disc centre of the patient, ``{level: [x, y, z]}`` LPS mm (for level identification).
    ``pred_landmark_mm``: the report's landmark for this level (LPS mm) or None.
    """

    patient_id: str
    level: str
    truth: dict
    pred: dict | None = None
    truth_label_map: np.ndarray | None = None
    pred_label_map: np.ndarray | None = None
    truth_landmarks: dict[str, Sequence[float]] = field(default_factory=dict)
    pred_landmark_mm: Sequence[float] | None = None


def _grade_index(g: Any) -> int | None:
    """A grade as 0..3 from a name ('normal'..'severe') or a number; None when missing."""
    if g is None or g == "":
        return None
    if isinstance(g, str):
        s = g.strip().lower()
        if s in GRADE_NAMES:
            return GRADE_NAMES.index(s)
        try:
            return int(float(s))
        except ValueError:
            return None
    try:
        v = float(g)
    except (TypeError, ValueError):
        return None
    return int(v) if math.isfinite(v) else None


def _binary_label(v: Any) -> int | None:
    if v is None or v == "":
        return None
    if isinstance(v, str):
        s = v.strip().lower()
        if s in ("moderate/severe", "1", "true"):
            return 1
        if s in ("normal/mild", "0", "false"):
            return 0
        return None
    return int(bool(v))


def _reader(truth: Mapping, finding: str, k: int) -> int | None:
    """Reader ``k`` (0-based; 0 = reader 1) of a finding, or the true grade for ``k = 'truth'``."""
    g = (truth.get("grades") or {}).get(finding) or {}
    if k == "truth":
        return _grade_index(g.get("truth"))
    r = g.get("readers") or []
    return _grade_index(r[k]) if k < len(r) else None


def _finite(x: Any) -> bool:
    try:
        return x is not None and math.isfinite(float(x))
    except (TypeError, ValueError):
        return False


# --------------------------------------------------------------------------- metrics
def _ci(fn: Callable[..., float], arrays: Sequence, groups: Sequence, n_boot: int, seed: int) -> dict | None:
    """Bootstrap CI dict (value, ci_low, ci_high, n_boot, n_skipped, n, n_patients), or None when
    there are no items or the metric is undefined on the whole sample."""
    from .metrics import bootstrap_ci

    if len(groups) == 0:
        return None
    arrs = [np.asarray(a) for a in arrays]
    try:
        v = float(fn(*arrs))
    except (ValueError, ZeroDivisionError):
        return None
    if not math.isfinite(v):
        return None
    r = bootstrap_ci(fn, *arrs, groups=np.asarray(groups), n_boot=n_boot, rng=seed).to_dict()
    r["n"] = len(groups)
    r["n_patients"] = len(set(groups))
    return r


def _mean(x) -> float:
    x = np.asarray(x, dtype=float)
    if x.size == 0:
        raise ValueError("empty")
    return float(x.mean())


def _label_map_dice(pair: LevelPair) -> tuple[float, float] | None:
    from .metrics import dice

    t, p = pair.truth_label_map, pair.pred_label_map
    if t is None or p is None:
        return None
    t, p = np.asarray(t), np.asarray(p)
    if t.shape != p.shape:
        return None
    return dice(p == 1, t == 1), dice(p == 2, t == 2)


def _truth_boxes(pair: LevelPair) -> dict:
    boxes = dict(pair.truth.get("boxes") or {})
    if not boxes and pair.truth_label_map is not None:
        from .localization import boxes_from_label_map

        boxes = boxes_from_label_map(pair.truth_label_map)
    return boxes


def _slice_matches(pair: LevelPair) -> bool:
    t = pair.truth.get("axial_sop_instance_uid")
    p = (pair.pred or {}).get("axial_sop_instance_uid")
    return bool(t) and bool(p) and str(t) == str(p)


def _tree_direction(ratios: np.ndarray, grades: np.ndarray) -> float:
    """-1 when a smaller ratio goes with a higher tree grade (the usual case), +1 otherwise; decided
    from the tree's own grades (Spearman sign), never from the reference labels."""
    from scipy.stats import spearmanr

    if ratios.size < 2 or np.unique(grades).size < 2 or np.unique(ratios).size < 2:
        return -1.0
    rho = spearmanr(ratios, grades).statistic
    return -1.0 if not np.isfinite(rho) or rho <= 0 else 1.0


def _row_normalise(p: np.ndarray) -> np.ndarray:
    p = np.asarray(p, dtype=float)
    s = p.sum(axis=1, keepdims=True)
    s[s == 0] = 1.0
    return p / s


def compute_metrics(pairs: Sequence[LevelPair], n_boot: int = 1000, seed: int = 0,
                    tree_model: Any = None, reader: int = 0) -> dict[str, Any]:
    """Every metric of the paper's Results from ``pairs``, each with a patient bootstrap 95% CI.

    ``tree_model``: a :class:`lumbargrade.grading.tree.RatioTree` whose leaf frequencies score the
    tree's grades for the one-vs-one AUROC when the reports carry no tree probabilities.
    ``reader``: the reference reader (0 = reader 1). Returns a JSON-ready dict (see the module
    docstring for every definition); a metric that cannot be computed is ``None``.
    """
    from .metrics import (
        accuracy,
        binary_auroc,
        confusion_matrix,
        delong_test,
        iou_boxes,
        linear_weighted_kappa,
        ovo_auroc,
    )

    pairs = list(pairs)
    out: dict[str, Any] = {
        "n_patients": len({p.patient_id for p in pairs}),
        "n_levels": len(pairs),
        "n_levels_reported": sum(p.pred is not None for p in pairs),
        "n_boot": int(n_boot),
        "seed": int(seed),
        "reference": f"reader {reader + 1}",
    }
    notes: dict[str, str] = {}
    kappa4 = lambda a, b: linear_weighted_kappa(a, b, n_classes=4)

    # ---- slice choice, segmentation, boxes
    sc, sc_g = [], []
    dice_s, dice_d, dg = [], [], []
    iou = {"facet": ([], []), "foramen": ([], [])}
    for p in pairs:
        if p.truth.get("axial_sop_instance_uid"):
            sc.append(float(_slice_matches(p)))
            sc_g.append(p.patient_id)
        if p.pred is None or not _slice_matches(p):
            continue
        d = _label_map_dice(p)
        if d is not None:
            dice_s.append(d[0])
            dice_d.append(d[1])
            dg.append(p.patient_id)
        tb = _truth_boxes(p)
        pb = p.pred.get("boxes") or {}
        for name in BINARY_FINDINGS:
            kind = name.split("_")[0]
            if tb.get(name) is None:
                continue
            iou[kind][0].append(iou_boxes(pb.get(name), tb[name]))
            iou[kind][1].append(p.patient_id)
    out["slice_choice_accuracy"] = _ci(_mean, [sc], sc_g, n_boot, seed)
    out["n_slice_matched"] = int(sum(sc))
    out["segmentation"] = {
        "dice_dural_sac": _ci(_mean, [dice_s], dg, n_boot, seed),
        "dice_disc": _ci(_mean, [dice_d], dg, n_boot, seed),
    }
    out["localization"] = {f"iou_{k}": _ci(_mean, [v[0]], v[1], n_boot, seed) for k, v in iou.items()}

    # ---- landmarks
    err, eg, per_level = [], [], {}
    ident, ig = [], []
    any_pred = any(p.pred_landmark_mm is not None for p in pairs)
    for p in pairs:
        t = p.truth.get("landmark_patient_mm")
        if t is None:
            continue
        t = np.asarray(t, float)
        q = None if p.pred_landmark_mm is None else np.asarray(p.pred_landmark_mm, float)
        if q is not None:
            e = float(np.linalg.norm(q - t))
            err.append(e)
            eg.append(p.patient_id)
            per_level.setdefault(p.level, ([], []))
            per_level[p.level][0].append(e)
            per_level[p.level][1].append(p.patient_id)
        if any_pred:
            ok = 0.0
            if q is not None and p.truth_landmarks:
                dist = {lv: float(np.linalg.norm(q - np.asarray(c, float))) for lv, c in p.truth_landmarks.items()}
                ok = float(min(dist, key=dist.get) == p.level)
            ident.append(ok)
            ig.append(p.patient_id)
    out["landmarks"] = {
        "landmark_error_mm": _ci(_mean, [err], eg, n_boot, seed),
        "landmark_error_mm_per_level": {lv: _ci(_mean, [v[0]], v[1], n_boot, seed) for lv, v in sorted(per_level.items())},
        "level_identification_accuracy": _ci(_mean, [ident], ig, n_boot, seed) if any_pred else None,
    }

    # ---- central canal, 4 grades + binary
    rows = []  # (pid, r1, tree_grade, tree_ratio, tree_prob, cnn_grade, cnn_prob4, cnn_bin)
    prob_source = set()
    for p in pairs:
        r1 = _reader(p.truth, "central_canal", reader)
        if r1 is None or p.pred is None:
            continue
        c = p.pred.get("central_canal") or {}
        tree = c.get("tree") or {}
        cnn = c.get("cnn") or {}
        tg = _grade_index(tree.get("grade"))
        ratio = tree.get("ratio") if _finite(tree.get("ratio")) else None
        tp = None
        if tg is not None:
            if tree.get("probabilities") is not None and len(tree["probabilities"]) == 4:
                tp, src = np.asarray(tree["probabilities"], float), "report"
            elif tree_model is not None and ratio is not None:
                tp, src = np.asarray(tree_model.predict_proba([float(ratio)])[0], float), "tree_model"
            else:
                tp, src = np.eye(4)[tg], "one_hot"
            prob_source.add(src)
        cg = _grade_index(cnn.get("grade"))
        cp = cnn.get("probabilities")
        cp = np.asarray(cp, float) if cp is not None and len(cp) == 4 else None
        cb = cnn.get("binary_probability") if _finite(cnn.get("binary_probability")) else None
        rows.append((p.patient_id, r1, tg, ratio, tp, cg, cp, cb, _reader(p.truth, "central_canal", "truth")))
    # report: tree.probabilities in the report; tree_model: the pack's leaf frequencies at the
    # reported ratio; one_hot: the tree's grade only (no probabilities at hand)
    notes["tree_ovo_scores"] = ("class scores from " + "/".join(sorted(prob_source))) if prob_source else "none"

    central: dict[str, Any] = {}
    confusion: dict[str, Any] = {}
    for model, gi, pi in (("tree", 2, 4), ("cnn", 5, 6)):
        sel = [r for r in rows if r[gi] is not None]
        g = [r[0] for r in sel]
        y = np.array([r[1] for r in sel], int)
        pred = np.array([r[gi] for r in sel], int)
        m: dict[str, Any] = {
            "accuracy": _ci(accuracy, [y, pred], g, n_boot, seed),
            "kappa": _ci(kappa4, [y, pred], g, n_boot, seed),
        }
        psel = [r for r in sel if r[pi] is not None]
        if psel:
            prob = _row_normalise(np.vstack([r[pi] for r in psel]))
            m["ovo_auroc"] = _ci(ovo_auroc, [np.array([r[1] for r in psel], int), prob], [r[0] for r in psel], n_boot, seed)
        else:
            m["ovo_auroc"] = None
        central[model] = m
        if sel:
            confusion[f"central_{model}"] = confusion_matrix(y, pred, 4).tolist()
    out["central_canal"] = central

    # binary central canal
    binary: dict[str, Any] = {}
    roc: dict[str, Any] = {}
    tsel = [r for r in rows if r[3] is not None and r[2] is not None]
    direction = _tree_direction(np.array([r[3] for r in tsel], float), np.array([r[2] for r in tsel], int))
    notes["tree_binary_score"] = f"{'-' if direction < 0 else '+'}{'ratio'} (monotone in the tree's feature; direction from the tree's own grades)"
    yb_t = np.array([int(r[1] >= 2) for r in tsel], int)
    s_t = np.array([direction * float(r[3]) for r in tsel], float)
    binary["central_tree"] = _ci(binary_auroc, [yb_t, s_t], [r[0] for r in tsel], n_boot, seed)
    csel = [r for r in rows if r[7] is not None]
    yb_c = np.array([int(r[1] >= 2) for r in csel], int)
    s_c = np.array([float(r[7]) for r in csel], float)
    binary["central_cnn"] = _ci(binary_auroc, [yb_c, s_c], [r[0] for r in csel], n_boot, seed)
    roc["central_tree"] = (yb_t, s_t)
    roc["central_cnn"] = (yb_c, s_c)
    both = [r for r in rows if r[3] is not None and r[2] is not None and r[7] is not None]
    dl = None
    if both:
        yb = np.array([int(r[1] >= 2) for r in both], int)
        try:
            a_t, a_c, z, pval = delong_test(yb, [direction * float(r[3]) for r in both], [float(r[7]) for r in both])
            dl = {"auroc_tree": a_t, "auroc_cnn": a_c, "z": z, "p": pval, "n": len(both)}
        except ValueError as e:
            dl = {"error": str(e), "n": len(both)}
    out["delong_central_tree_vs_cnn"] = dl
    # binarised central canal confusion for the tree and CNN grades
    for model, gi in (("tree", 2), ("cnn", 5)):
        sel = [r for r in rows if r[gi] is not None]
        if sel:
            confusion[f"central_binary_{model}"] = confusion_matrix(
                [int(r[1] >= 2) for r in sel], [int(r[gi] >= 2) for r in sel], 2).tolist()

    # foramen / facet, left and right pooled
    for kind in ("foramen", "facet"):
        ys, ss, ls, gs = [], [], [], []
        for p in pairs:
            if p.pred is None:
                continue
            for side in ("left", "right"):
                f = f"{kind}_{side}"
                y = _reader(p.truth, f, reader)
                rec = p.pred.get(f) or {}
                if y is None or not _finite(rec.get("probability")):
                    continue
                ys.append(int(y))
                ss.append(float(rec["probability"]))
                lab = _binary_label(rec.get("label"))
                ls.append(lab if lab is not None else int(float(rec["probability"]) >= 0.5))
                gs.append(p.patient_id)
        binary[kind] = _ci(binary_auroc, [np.array(ys, int), np.array(ss, float)], gs, n_boot, seed)
        roc[kind] = (np.array(ys, int), np.array(ss, float))
        if ys:
            confusion[kind] = confusion_matrix(ys, ls, 2).tolist()
            binary[f"{kind}_accuracy"] = _ci(accuracy, [np.array(ys), np.array(ls)], gs, n_boot, seed)
    out["binary_auroc"] = binary

    # ---- agreement (Table 3) and extras vs the true grade
    agree: dict[str, Any] = {}
    raters: dict[str, Callable[[LevelPair], int | None]] = {
        "reader1": lambda p: _reader(p.truth, "central_canal", 0),
        "reader2": lambda p: _reader(p.truth, "central_canal", 1),
        "reader3": lambda p: _reader(p.truth, "central_canal", 2),
        "truth": lambda p: _reader(p.truth, "central_canal", "truth"),
        "cnn": lambda p: _grade_index(((p.pred or {}).get("central_canal") or {}).get("cnn", {}).get("grade")),
        "tree": lambda p: _grade_index(((p.pred or {}).get("central_canal") or {}).get("tree", {}).get("grade")),
    }
    ref = f"reader{reader + 1}"

    def kappa_of(a: str, b: str) -> dict | None:
        sel = [(raters[a](p), raters[b](p), p.patient_id) for p in pairs]
        sel = [s for s in sel if s[0] is not None and s[1] is not None]
        return _ci(kappa4, [np.array([s[0] for s in sel]), np.array([s[1] for s in sel])],
                   [s[2] for s in sel], n_boot, seed)

    for a in ("reader2", "reader3", "cnn", "tree", "reader1"):
        if a != ref:
            agree[f"{a}_vs_{ref}"] = kappa_of(a, ref)
    agree["reader2_vs_reader3"] = kappa_of("reader2", "reader3")
    for a in ("reader1", "reader2", "reader3", "cnn", "tree"):
        agree[f"{a}_vs_truth"] = kappa_of(a, "truth")
    # binary findings: readers 2, 3 vs reader 1 (the paper: all 1.0), unweighted = weighted for 2 classes
    for kind in ("foramen", "facet"):
        for k in (1, 2):
            a, b, g = [], [], []
            for p in pairs:
                for side in ("left", "right"):
                    x, y = _reader(p.truth, f"{kind}_{side}", k), _reader(p.truth, f"{kind}_{side}", reader)
                    if x is not None and y is not None:
                        a.append(x)
                        b.append(y)
                        g.append(p.patient_id)
            agree[f"{kind}_reader{k + 1}_vs_{ref}"] = _ci(
                lambda u, v: linear_weighted_kappa(u, v, n_classes=2), [np.array(a), np.array(b)], g, n_boot, seed)
    out["agreement"] = agree
    out["confusion"] = confusion
    out["notes"] = notes
    out["_roc"] = roc  # arrays for the figures; removed before writing JSON
    return out


# --------------------------------------------------------------------------- reading truth / reports
def _load_png(path: Path) -> np.ndarray | None:
    if not path.is_file():
        return None
    from .manifest import load_image_file

    return load_image_file(path).astype(np.uint8)


def load_truth(data: str | Path, split: str | None = "test") -> list[dict]:
    """Truth per patient from a manifest (or a folder holding ``manifest.csv``), ``split`` only
    (None: all). Returns ``[{"patient_id", "study_instance_uid", "study_dir" (absolute or None),
    "levels": [truth level records]}]``. A patient folder with the phantom's ``truth.json`` next
    to the manifest (``<manifest dir>/<patient_id>/truth.json``) gives the full record (boxes,
    landmark_patient_mm, readers, true grade); otherwise the record is built from the manifest's
    columns (reader 1 = ``<finding>``, readers 2/3 = ``<finding>_r2/_r3``, ``<finding>_truth``)."""
    from .manifest import read_manifest, resolve_manifest

    mpath = resolve_manifest(data)
    base = mpath.parent
    rows = read_manifest(mpath, required=("patient_id", "split", "level"))
    if split:
        rows = [r for r in rows if r["split"] == split]
        if not rows:
            raise InputError(mpath, f"no rows in split {split!r}")
    patients: dict[str, dict] = {}
    for r in rows:
        pid = r["patient_id"]
        pt = patients.setdefault(pid, {"patient_id": pid, "study_instance_uid": r.get("study_instance_uid") or None,
                                        "study_dir": str(base / r["study_dir"]) if r.get("study_dir") else None,
                                        "levels": {}, "_truth_json": None})
        if pt["_truth_json"] is None:
            tj = base / pid / "truth.json"
            pt["_truth_json"] = json.loads(tj.read_text()) if tj.is_file() else {}
        rec: dict[str, Any] = {"level": r["level"]}
        full = next((lv for lv in (pt["_truth_json"].get("levels") or []) if lv.get("level") == r["level"]), None)
        if full is not None:
            rec.update(full)
            if full.get("label_map"):
                rec["label_map_path"] = str(base / pid / full["label_map"])
        else:
            if r.get("axial_sop_instance_uid"):
                rec["axial_sop_instance_uid"] = r["axial_sop_instance_uid"]
            grades = {}
            for f in _FINDINGS:
                readers = [_grade_index(r.get(f)), _grade_index(r.get(f"{f}_r2")), _grade_index(r.get(f"{f}_r3"))]
                if any(x is not None for x in readers):
                    grades[f] = {"truth": _grade_index(r.get(f"{f}_truth")), "readers": readers}
            rec["grades"] = grades
        if "label_map_path" not in rec and r.get("label_map"):
            rec["label_map_path"] = str(base / r["label_map"])
        pt["levels"][r["level"]] = rec
    out = []
    for pt in patients.values():
        tj = pt.pop("_truth_json")
        pt["study_instance_uid"] = pt["study_instance_uid"] or tj.get("study_instance_uid")
        pt["levels"] = list(pt["levels"].values())
        out.append(pt)
    return out


def load_reports(folder: str | Path) -> dict[str, tuple[dict, Path]]:
    """Every ``report.json`` under ``folder`` (recursively): ``{key: (report, its folder)}`` keyed
    by StudyInstanceUID and by the report folder's name (e.g. a patient id)."""
    root = Path(folder)
    if not root.is_dir():
        raise InputError(root, "predictions folder not found")
    out: dict[str, tuple[dict, Path]] = {}
    for f in sorted(root.rglob("report.json")):
        try:
            rep = json.loads(f.read_text())
        except json.JSONDecodeError as e:
            raise InputError(f, f"not valid JSON ({e.msg} at line {e.lineno})") from e
        if rep.get("study_instance_uid"):
            out[str(rep["study_instance_uid"])] = (rep, f.parent)
        out.setdefault(f.parent.name, (rep, f.parent))
    return out


def _report_landmark(rec: Mapping, report: Mapping) -> list[float] | None:
    p = (rec.get("slice_choice") or {}).get("landmark_patient_mm")
    if p is None:
        lm = ((report.get("sagittal") or {}).get("landmarks") or {}).get(rec.get("level"), {})
        p = lm.get("patient_mm") if isinstance(lm, Mapping) else None
    return None if p is None else [float(v) for v in p]


def make_pairs(truth: Sequence[dict], reports: Mapping[str, tuple[dict, Path]],
               load_label_maps: bool = True) -> tuple[list[LevelPair], list[str]]:
    """Pair each truth level with its report level (report found by StudyInstanceUID, else by the
    patient id as folder name). Returns ``(pairs, patients_without_report)``."""
    pairs: list[LevelPair] = []
    missing: list[str] = []
    for pt in truth:
        hit = reports.get(str(pt.get("study_instance_uid"))) or reports.get(pt["patient_id"])
        if hit is None:
            missing.append(pt["patient_id"])
        report, rdir = hit if hit is not None else ({}, None)
        by_level = {lv.get("level"): lv for lv in report.get("levels", [])}
        lms = {lv["level"]: lv["landmark_patient_mm"] for lv in pt["levels"] if lv.get("landmark_patient_mm") is not None}
        for t in pt["levels"]:
            pred = by_level.get(t["level"])
            tl = pl = None
            if load_label_maps:
                if t.get("label_map_path"):
                    tl = _load_png(Path(t["label_map_path"]))
                if pred is not None and pred.get("label_map") and rdir is not None:
                    pl = _load_png(rdir / pred["label_map"])
            pairs.append(LevelPair(
                patient_id=pt["patient_id"], level=t["level"], truth=t, pred=pred,
                truth_label_map=tl, pred_label_map=pl, truth_landmarks=lms,
                pred_landmark_mm=_report_landmark(pred, report) if pred is not None else None,
            ))
    return pairs, missing


# --------------------------------------------------------------------------- tables
def _fmt_ci(m: Mapping | None, scale: float = 1.0, digits: int = 2) -> tuple[str, str]:
    if not m or m.get("value") is None:
        return "n/a", ""
    v = f"{m['value'] * scale:.{digits}f}"
    if m.get("ci_low") is None or m.get("ci_high") is None:
        return v, ""
    return v, f"[{m['ci_low'] * scale:.{digits}f}, {m['ci_high'] * scale:.{digits}f}]"


def _fmt_paper(key: str, digits: int = 2) -> str:
    if key not in PAPER:
        return "-"
    v, lo, hi = PAPER[key]
    s = f"{v:.{digits}f}"
    return s + (f" [{lo:.{digits}f}, {hi:.{digits}f}]" if lo is not None else "")


def format_tables(metrics: Mapping[str, Any], title: str = "lumbargrade evaluation") -> str:
    """Markdown: the paper's Tables 2 and 3 (ours beside the paper's), then the other Results."""
    m = metrics
    L = [f"# {title}", ""]
    L.append(f"{m['n_patients']} patients, {m['n_levels']} levels ({m['n_levels_reported']} reported); "
             f"reference: {m['reference']}; 95% CIs: patient bootstrap, {m['n_boot']} resamples.")
    L.append("")
    L.append("## Table 2. Multi-class grading of central canal stenosis (vs reader 1)")
    L.append("")
    L.append("| Model | Accuracy (%) | 95% CI | Paper | AUROC one-vs-one (%) | 95% CI | Paper | Cohen's kappa (linear) | 95% CI | Paper |")
    L.append("|---|---|---|---|---|---|---|---|---|---|")
    for name, key in (("BiT CNN / CNN", "cnn"), ("Decision tree", "tree")):
        c = (m.get("central_canal") or {}).get(key) or {}
        acc = _fmt_ci(c.get("accuracy"), 100, 1)
        auc = _fmt_ci(c.get("ovo_auroc"), 100, 1)
        kap = _fmt_ci(c.get("kappa"))
        L.append(f"| {name} | {acc[0]} | {acc[1]} | {_fmt_paper(key + '_accuracy', 1)} | {auc[0]} | {auc[1]} | "
                 f"{_fmt_paper(key + '_ovo_auroc', 1)} | {kap[0]} | {kap[1]} | {_fmt_paper(key + '_kappa')} |")
    L.append("")
    L.append("## Table 3. Agreement with reader 1, central canal, linearly weighted kappa")
    L.append("")
    L.append("| | Reader 2 | Reader 3 | CNN model | Decision tree model |")
    L.append("|---|---|---|---|---|")
    a = m.get("agreement") or {}
    cells = [_fmt_ci(a.get(k)) for k in ("reader2_vs_reader1", "reader3_vs_reader1", "cnn_vs_reader1", "tree_vs_reader1")]
    L.append("| ours | " + " | ".join(f"{v} {ci}".strip() for v, ci in cells) + " |")
    L.append("| paper | " + " | ".join(_fmt_paper(k) for k in ("kappa_r2_r1", "kappa_r3_r1", "kappa_cnn_r1", "kappa_tree_r1")) + " |")
    L.append("")
    L.append("## Other results (paper: Results text, Figs. 4-6)")
    L.append("")
    L.append("| Metric | Ours | 95% CI | n | Paper |")
    L.append("|---|---|---|---|---|")

    def row(label: str, entry: Mapping | None, paper_key: str | None = None, scale: float = 1.0, digits: int = 2,
            paper: str | None = None) -> None:
        v, ci = _fmt_ci(entry, scale, digits)
        n = str(entry.get("n")) if entry else "0"
        p = paper if paper is not None else (_fmt_paper(paper_key, digits) if paper_key else "-")
        L.append(f"| {label} | {v} | {ci} | {n} | {p} |")

    seg, loc, lm, b = m.get("segmentation") or {}, m.get("localization") or {}, m.get("landmarks") or {}, m.get("binary_auroc") or {}
    row("Dice, dural sac", seg.get("dice_dural_sac"), "dice_dural_sac", digits=3)
    row("Dice, disc", seg.get("dice_disc"), "dice_disc", digits=3)
    row("IoU, foramen boxes", loc.get("iou_foramen"), "iou_foramen", digits=3)
    row("IoU, facet boxes", loc.get("iou_facet"), "iou_facet", digits=3)
    row("Landmark error (mm)", lm.get("landmark_error_mm"), "landmark_error_mm")
    row("Level identification accuracy", lm.get("level_identification_accuracy"), digits=3)
    row("Axial slice choice accuracy", m.get("slice_choice_accuracy"), digits=3)
    row("AUROC central canal binary, CNN", b.get("central_cnn"), "auroc_central_cnn", digits=3)
    row("AUROC central canal binary, decision tree", b.get("central_tree"), "auroc_central_tree", digits=3)
    row("AUROC foramen (left+right)", b.get("foramen"), "auroc_foramen", digits=3)
    row("AUROC facet (left+right)", b.get("facet"), "auroc_facet", digits=3)
    dl = m.get("delong_central_tree_vs_cnn") or {}
    p = dl.get("p")
    L.append(f"| DeLong p, tree vs CNN (binary central) | {f'{p:.3g}' if p is not None else 'n/a'} | "
             f"| {dl.get('n', 0)} | {PAPER_DELONG_P} |")
    row("Kappa reader 2 vs reader 3", a.get("reader2_vs_reader3"), "kappa_r2_r3")
    for kind in ("foramen", "facet"):
        for k in (2, 3):
            row(f"Kappa {kind}, reader {k} vs reader 1", a.get(f"{kind}_reader{k}_vs_reader1"), paper="1.00")
    L.append("")
    L.append("## Extra: agreement with the true grade (phantom only), linearly weighted kappa")
    L.append("")
    L.append("| Rater | Kappa | 95% CI | n |")
    L.append("|---|---|---|---|")
    for k in ("reader1", "reader2", "reader3", "cnn", "tree"):
        e = a.get(f"{k}_vs_truth")
        v, ci = _fmt_ci(e)
        L.append(f"| {k} | {v} | {ci} | {e.get('n') if e else 0} |")
    L.append("")
    per = lm.get("landmark_error_mm_per_level") or {}
    if per:
        L.append("## Extra: landmark error per level (mm)")
        L.append("")
        L.append("| Level | Error (mm) | 95% CI | n |")
        L.append("|---|---|---|---|")
        for lv, e in per.items():
            v, ci = _fmt_ci(e)
            L.append(f"| {lv} | {v} | {ci} | {e.get('n') if e else 0} |")
        L.append("")
    notes = m.get("notes") or {}
    if notes:
        L.append("Notes: " + "; ".join(f"{k}: {v}" for k, v in notes.items()) + ". Dice and IoU use only levels "
                 "where the chosen axial slice is the truth's slice (see slice choice accuracy).")
        L.append("")
    return "\n".join(L)


# --------------------------------------------------------------------------- figures
def write_figures(metrics: Mapping[str, Any], out: str | Path) -> list[Path]:
    """``roc_central.png`` (tree vs CNN, DeLong p in the legend: the paper's Fig. 4),
    ``roc_foramen.png`` / ``roc_facet.png`` (Fig. 5), and ``confusion_<grading>.png``."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from .metrics import binary_auroc, roc_curve_points

    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    roc = metrics.get("_roc") or {}
    written: list[Path] = []

    def curve(ax, key: str, label: str, color: str) -> None:
        y, s = roc.get(key, (np.array([]), np.array([])))
        if len(y) and 0 < int(np.sum(y)) < len(y):
            fpr, tpr, _ = roc_curve_points(y, s)
            ax.plot(fpr, tpr, color=color, lw=2, label=f"{label} (AUROC {binary_auroc(y, s):.3f})")
        else:
            ax.plot([], [], color=color, label=f"{label} (AUROC n/a: one class only)")

    def finish(fig, ax, title: str, name: str) -> None:
        ax.plot([0, 1], [0, 1], ls="--", color="grey", lw=1)
        ax.set_xlim(0, 1)
        ax.set_ylim(0, 1.01)
        ax.set_xlabel("1 - specificity (false positive rate)")
        ax.set_ylabel("sensitivity (true positive rate)")
        ax.set_title(title, fontsize=9)
        ax.legend(loc="lower right", fontsize=8)
        fig.tight_layout()
        p = out / name
        fig.savefig(p, dpi=120)
        plt.close(fig)
        written.append(p)

    fig, ax = plt.subplots(figsize=(5, 5))
    curve(ax, "central_cnn", "CNN", "m")
    curve(ax, "central_tree", "Decision tree", "g")
    dl = metrics.get("delong_central_tree_vs_cnn") or {}
    if dl.get("p") is not None:
        ax.plot([], [], " ", label=f"DeLong p = {dl['p']:.3g} (n = {dl['n']})")
    elif dl:
        ax.plot([], [], " ", label=f"DeLong: n/a ({dl.get('error', '')})"[:60])
    finish(fig, ax, "Central canal stenosis, normal/mild vs moderate/severe", "roc_central.png")
    for kind, title, color in (("foramen", "Foraminal stenosis", "b"), ("facet", "Facet arthropathy", "r")):
        fig, ax = plt.subplots(figsize=(5, 5))
        curve(ax, kind, "CNN (left + right)", color)
        finish(fig, ax, f"{title}, normal/mild vs moderate/severe", f"roc_{kind}.png")

    for name, cm in (metrics.get("confusion") or {}).items():
        cm = np.asarray(cm)
        k = cm.shape[0]
        ticks = list(GRADE_NAMES) if k == 4 else ["normal/mild", "mod/severe"]
        fig, ax = plt.subplots(figsize=(4.5, 4))
        ax.imshow(cm, cmap="Blues")
        for i in range(k):
            for j in range(k):
                ax.text(j, i, str(int(cm[i, j])), ha="center", va="center",
                        color="white" if cm[i, j] > cm.max() / 2 else "black")
        ax.set_xticks(range(k), ticks, rotation=30, fontsize=8)
        ax.set_yticks(range(k), ticks, fontsize=8)
        ax.set_xlabel("model")
        ax.set_ylabel("reader 1")
        ax.set_title(name.replace("_", " "))
        fig.tight_layout()
        p = out / f"confusion_{name}.png"
        fig.savefig(p, dpi=120)
        plt.close(fig)
        written.append(p)
    return written


def _jsonable(metrics: Mapping[str, Any]) -> dict:
    return {k: v for k, v in metrics.items() if not k.startswith("_")}


def write_outputs(metrics: Mapping[str, Any], out: str | Path, title: str = "lumbargrade evaluation",
                  extra: Mapping[str, Any] | None = None, figures: bool = True) -> dict[str, Path]:
    """Write ``metrics.json``, ``tables.md`` and (``figures``; needs matplotlib, in the training
    extra) the figures into ``out``."""
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    doc = _jsonable(metrics)
    if extra:
        doc.update(extra)
    (out / "metrics.json").write_text(json.dumps(doc, indent=2) + "\n")
    (out / "tables.md").write_text(format_tables(metrics, title) + "\n")
    figs = write_figures(metrics, out) if figures else []
    return {"metrics": out / "metrics.json", "tables": out / "tables.md", **{p.stem: p for p in figs}}


def evaluate_predictions(data: str | Path, predictions: str | Path, out: str | Path, split: str | None = "test",
                         n_boot: int = 1000, seed: int = 0, tree_model: Any = None,
                         extra: Mapping[str, Any] | None = None, figures: bool = True) -> dict[str, Any]:
    """Truth from ``data`` + reports under ``predictions`` -> metrics written into ``out``
    (``figures``: also the ROC and confusion figures)."""
    truth = load_truth(data, split)
    reports = load_reports(predictions)
    pairs, missing = make_pairs(truth, reports)
    metrics = compute_metrics(pairs, n_boot=n_boot, seed=seed, tree_model=tree_model)
    metrics["patients_without_report"] = missing
    metrics["split"] = split
    write_outputs(metrics, out, extra=extra, figures=figures)
    write_level_csv(pairs, Path(out) / "levels.csv")
    return metrics


def write_level_csv(pairs: Iterable[LevelPair], path: str | Path) -> None:
    """Per-level table (patient, level, slice match, reader grades, model outputs) for inspection."""
    cols = ["patient_id", "level", "slice_match", "r1", "r2", "r3", "truth", "tree_grade", "tree_ratio",
            "cnn_grade", "cnn_binary_probability"]
    with open(path, "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(cols)
        for p in pairs:
            c = (p.pred or {}).get("central_canal") or {}
            w.writerow([p.patient_id, p.level, int(_slice_matches(p)),
                        _reader(p.truth, "central_canal", 0), _reader(p.truth, "central_canal", 1),
                        _reader(p.truth, "central_canal", 2), _reader(p.truth, "central_canal", "truth"),
                        (c.get("tree") or {}).get("grade"), (c.get("tree") or {}).get("ratio"),
                        (c.get("cnn") or {}).get("grade"), (c.get("cnn") or {}).get("binary_probability")])
