"""Grading metrics: central canal (4 grades, tree and CNN; binarised), foramen and facet (binary),
DeLong's test of the tree against the CNN, and reader agreement (the paper's Table 3).

* **Central canal, 4 grades** (tree and CNN vs the reference reader): accuracy, one-vs-one AUROC
  (Hand & Till) and linearly weighted kappa. The CNN's class scores are its ``probabilities``; the
  tree's are the leaf class frequencies (the report's ``tree.probabilities``, else the tree model
  applied to the reported ratio, else a one-hot of its grade; recorded in ``notes``).
* **Binary AUROC**: central canal (normal/mild vs moderate/severe) for the CNN from
  ``cnn.binary_probability``; for the tree from a monotone score of the reported ratio (its
  direction from the tree's own grades, never from the reference); foramen and facet from each
  side's ``probability``, left and right pooled. **DeLong**: paired test of the two central AUROCs.
* **Agreement**: linearly weighted kappa of readers 2 and 3, the CNN and the tree against the
  reference, reader 2 against reader 3, and (phantom) of every reader and model against the truth;
  (phantom) foramen and facet AUROC against the true grade too (``binary_auroc_vs_truth``).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import numpy as np

from .data import LevelPair, binary_label, finite, grade_index, reader_grade
from .stats import ci

__all__ = ["grading_metrics"]


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


def grading_metrics(pairs: Sequence[LevelPair], n_boot: int, seed: int, tree_model: Any = None,
                    reader: int = 0) -> dict[str, Any]:
    """``{"central_canal", "binary_auroc", "delong_central_tree_vs_cnn", "agreement", "confusion",
    "notes", "_roc"}`` (``_roc``: arrays for the figures)."""
    from ..metrics import accuracy, binary_auroc, confusion_matrix, delong_test, linear_weighted_kappa, ovo_auroc

    out: dict[str, Any] = {}
    notes: dict[str, str] = {}
    kappa4 = lambda a, b: linear_weighted_kappa(a, b, n_classes=4)  # noqa: E731

    # ---- central canal, 4 grades + binary
    rows = []  # (pid, r1, tree_grade, tree_ratio, tree_prob, cnn_grade, cnn_prob4, cnn_bin)
    prob_source = set()
    for p in pairs:
        r1 = reader_grade(p.truth, "central_canal", reader)
        if r1 is None or p.pred is None:
            continue
        c = p.pred.get("central_canal") or {}
        tree = c.get("tree") or {}
        cnn = c.get("cnn") or {}
        tg = grade_index(tree.get("grade"))
        ratio = tree.get("ratio") if finite(tree.get("ratio")) else None
        tp = None
        if tg is not None:
            if tree.get("probabilities") is not None and len(tree["probabilities"]) == 4:
                tp, src = np.asarray(tree["probabilities"], float), "report"
            elif tree_model is not None and ratio is not None:
                tp, src = np.asarray(tree_model.predict_proba([float(ratio)])[0], float), "tree_model"
            else:
                tp, src = np.eye(4)[tg], "one_hot"
            prob_source.add(src)
        cg = grade_index(cnn.get("grade"))
        cp = cnn.get("probabilities")
        cp = np.asarray(cp, float) if cp is not None and len(cp) == 4 else None
        cb = cnn.get("binary_probability") if finite(cnn.get("binary_probability")) else None
        rows.append((p.patient_id, r1, tg, ratio, tp, cg, cp, cb, reader_grade(p.truth, "central_canal", "truth")))
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
            "accuracy": ci(accuracy, [y, pred], g, n_boot, seed),
            "kappa": ci(kappa4, [y, pred], g, n_boot, seed),
        }
        psel = [r for r in sel if r[pi] is not None]
        if psel:
            prob = _row_normalise(np.vstack([r[pi] for r in psel]))
            m["ovo_auroc"] = ci(ovo_auroc, [np.array([r[1] for r in psel], int), prob], [r[0] for r in psel], n_boot, seed)
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
    binary["central_tree"] = ci(binary_auroc, [yb_t, s_t], [r[0] for r in tsel], n_boot, seed)
    csel = [r for r in rows if r[7] is not None]
    yb_c = np.array([int(r[1] >= 2) for r in csel], int)
    s_c = np.array([float(r[7]) for r in csel], float)
    binary["central_cnn"] = ci(binary_auroc, [yb_c, s_c], [r[0] for r in csel], n_boot, seed)
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
    vs_truth: dict[str, Any] = {}
    for kind in ("foramen", "facet"):
        ys, ss, ls, gs, ts = [], [], [], [], []
        for p in pairs:
            if p.pred is None:
                continue
            for side in ("left", "right"):
                f = f"{kind}_{side}"
                y = reader_grade(p.truth, f, reader)
                rec = p.pred.get(f) or {}
                if y is None or not finite(rec.get("probability")):
                    continue
                ys.append(int(y))
                ss.append(float(rec["probability"]))
                lab = binary_label(rec.get("label"))
                ls.append(lab if lab is not None else int(float(rec["probability"]) >= 0.5))
                gs.append(p.patient_id)
                ts.append(reader_grade(p.truth, f, "truth"))
        binary[kind] = ci(binary_auroc, [np.array(ys, int), np.array(ss, float)], gs, n_boot, seed)
        if ts and all(t is not None for t in ts):  # phantom: the same probabilities against the true grade
            vs_truth[kind] = ci(binary_auroc, [np.array(ts, int), np.array(ss, float)], gs, n_boot, seed)
        roc[kind] = (np.array(ys, int), np.array(ss, float))
        if ys:
            confusion[kind] = confusion_matrix(ys, ls, 2).tolist()
            binary[f"{kind}_accuracy"] = ci(accuracy, [np.array(ys), np.array(ls)], gs, n_boot, seed)
    out["binary_auroc"] = binary
    if vs_truth:
        out["binary_auroc_vs_truth"] = vs_truth

    # ---- agreement (Table 3) and extras vs the true grade
    agree: dict[str, Any] = {}
    raters: dict[str, Callable[[LevelPair], int | None]] = {
        "reader1": lambda p: reader_grade(p.truth, "central_canal", 0),
        "reader2": lambda p: reader_grade(p.truth, "central_canal", 1),
        "reader3": lambda p: reader_grade(p.truth, "central_canal", 2),
        "truth": lambda p: reader_grade(p.truth, "central_canal", "truth"),
        "cnn": lambda p: grade_index(((p.pred or {}).get("central_canal") or {}).get("cnn", {}).get("grade")),
        "tree": lambda p: grade_index(((p.pred or {}).get("central_canal") or {}).get("tree", {}).get("grade")),
    }
    ref = f"reader{reader + 1}"

    def kappa_of(a: str, b: str) -> dict | None:
        sel = [(raters[a](p), raters[b](p), p.patient_id) for p in pairs]
        sel = [s for s in sel if s[0] is not None and s[1] is not None]
        return ci(kappa4, [np.array([s[0] for s in sel]), np.array([s[1] for s in sel])],
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
                    x, y = reader_grade(p.truth, f"{kind}_{side}", k), reader_grade(p.truth, f"{kind}_{side}", reader)
                    if x is not None and y is not None:
                        a.append(x)
                        b.append(y)
                        g.append(p.patient_id)
            agree[f"{kind}_reader{k + 1}_vs_{ref}"] = ci(
                lambda u, v: linear_weighted_kappa(u, v, n_classes=2), [np.array(a), np.array(b)], g, n_boot, seed)
    out["agreement"] = agree
    out["confusion"] = confusion
    out["notes"] = notes
    out["_roc"] = roc  # arrays for the figures; removed before writing JSON
    return out
