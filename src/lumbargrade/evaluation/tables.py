"""Writing an evaluation: ``metrics.json``, ``tables.md`` (the paper's Tables 2 and 3 with the
paper's figures beside ours), ROC figures (Figs. 4 and 5), confusion matrices and ``levels.csv``."""

from __future__ import annotations

import csv
import json
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

import numpy as np

from .comparison import METRICS as COMPARED
from .data import GRADE_NAMES, LevelPair, reader_grade, slice_matches

__all__ = ["PAPER", "PAPER_DELONG_P", "format_tables", "write_figures", "write_level_csv", "write_outputs"]

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
    if m.get("cohorts"):
        L.append(f"{len(m['cohorts'])} cohorts pooled (a patient is cohort/patient id; the bootstrap resamples the "
                 "pooled patients): " + ", ".join(f"{c['name']} ({c['n_patients']} patients)" for c in m["cohorts"])
                 + ".")
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
    src = loc.get("reported_source")
    row(f"IoU, foramen boxes{f' ({src})' if src else ''}", loc.get("iou_foramen"), "iou_foramen", digits=3)
    row(f"IoU, facet boxes{f' ({src})' if src else ''}", loc.get("iou_facet"), "iou_facet", digits=3)
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
    vt = m.get("binary_auroc_vs_truth") or {}
    if vt:
        L.append("")
        L.append("## Extra: foramen and facet AUROC against the true grade (phantom only)")
        L.append("")
        L.append("| Finding | AUROC | 95% CI | n | against reader 1 |")
        L.append("|---|---|---|---|---|")
        for kind in ("foramen", "facet"):
            e = vt.get(kind)
            v, ci = _fmt_ci(e, digits=3)
            r, _ = _fmt_ci(b.get(kind), digits=3)
            L.append(f"| {kind} | {v} | {ci} | {e.get('n') if e else 0} | {r} |")
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
    by = loc.get("by_source") or {}
    regions = {k: seg.get(f"dice_{k}_region") for k in ("facet", "foramen")}
    if by or any(regions.values()):
        L.append("## Extra: facet and foramen localisation by box source")
        L.append("")
        L.append("| Source | IoU facet | 95% CI | IoU foramen | 95% CI | n |")
        L.append("|---|---|---|---|---|---|")
        names = {"image": "image localiser (segmenter's regions)", "fitted": "fitted rule on the masks",
                 "paper": "paper's 36 mm rule"}
        for s, e in by.items():
            f, o = _fmt_ci(e.get("iou_facet"), digits=3), _fmt_ci(e.get("iou_foramen"), digits=3)
            n = (e.get("iou_facet") or {}).get("n", 0)
            L.append(f"| {names.get(s, s)} | {f[0]} | {f[1]} | {o[0]} | {o[1]} | {n} |")
        L.append("")
        if any(regions.values()):
            f, o = _fmt_ci(regions["facet"], digits=3), _fmt_ci(regions["foramen"], digits=3)
            L.append(f"Region Dice (image localiser vs the truth's regions, mean of left and right): facet {f[0]} "
                     f"{f[1]}, foramen {o[0]} {o[1]}.")
            L.append("")
    vb = m.get("versus_baseline")
    if vb:
        L.extend(_baseline_table(vb, m.get("model_pack_labels"), m.get("baseline_pack_labels")))
    notes = m.get("notes") or {}
    if notes:
        L.append("Notes: " + "; ".join(f"{k}: {v}" for k, v in notes.items()) + ". Dice and IoU use only levels "
                 "where the chosen axial slice is the truth's slice (see slice choice accuracy).")
        L.append("")
    return "\n".join(L)


_BASELINE_ROWS = {  # row labels of the metrics of .comparison.METRICS
    "dice_dural_sac": "Dice, dural sac", "dice_disc": "Dice, disc",
    "central_tree_kappa": "Central canal kappa, decision tree", "central_cnn_kappa": "Central canal kappa, CNN",
    "central_cnn_auroc": "AUROC central canal binary, CNN", "foramen_auroc": "AUROC foramen (left+right)",
    "facet_auroc": "AUROC facet (left+right)",
}


def _baseline_table(vb: Mapping[str, Any], labels, base_labels) -> list[str]:
    """The paired comparison with the baseline reports (:mod:`.comparison`) as Markdown lines."""
    these = ", ".join(labels or []) or "these reports"
    base = ", ".join(base_labels or []) or "the baseline reports"
    L = ["## Against the baseline (paired: the same levels graded by both)", "",
         (f"This: {these}. Baseline: {base}. Difference = this - baseline, 95% CI by a paired patient bootstrap; "
          "DeLong's paired test for the AUROCs."), "",
         "| Metric | This | Baseline | Difference | 95% CI | DeLong p | n |", "|---|---|---|---|---|---|---|"]
    for key in COMPARED:  # the metrics compare_reports computes, in its order
        label, e = _BASELINE_ROWS.get(key, key), vb.get(key)
        if not e:
            L.append(f"| {label} | n/a | n/a | n/a | | | 0 |")
            continue
        d, ci = _fmt_ci(e.get("difference"), digits=3)
        p = e.get("delong_p")
        L.append(f"| {label} | {e['value']:.3f} | {e['baseline']:.3f} | {d} | {ci} | "
                 f"{f'{p:.3g}' if p is not None else '-'} | {e['n']} |")
    L.append("")
    return L


# --------------------------------------------------------------------------- figures
def write_figures(metrics: Mapping[str, Any], out: str | Path) -> list[Path]:
    """``roc_central.png`` (tree vs CNN, DeLong p in the legend: the paper's Fig. 4),
    ``roc_foramen.png`` / ``roc_facet.png`` (Fig. 5), and ``confusion_<grading>.png``."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from ..metrics import binary_auroc, roc_curve_points

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


def write_level_csv(pairs: Iterable[LevelPair], path: str | Path) -> None:
    """Per-level table (patient, level, slice match, reader grades, model outputs) for inspection."""
    cols = ["patient_id", "level", "slice_match", "r1", "r2", "r3", "truth", "tree_grade", "tree_ratio",
            "cnn_grade", "cnn_binary_probability"]
    with open(path, "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(cols)
        for p in pairs:
            c = (p.pred or {}).get("central_canal") or {}
            w.writerow([p.patient_id, p.level, int(slice_matches(p)),
                        reader_grade(p.truth, "central_canal", 0), reader_grade(p.truth, "central_canal", 1),
                        reader_grade(p.truth, "central_canal", 2), reader_grade(p.truth, "central_canal", "truth"),
                        (c.get("tree") or {}).get("grade"), (c.get("tree") or {}).get("ratio"),
                        (c.get("cnn") or {}).get("grade"), (c.get("cnn") or {}).get("binary_probability")])
