"""End-to-end evaluation of ``analyze`` reports against annotated truth: every metric of the paper's
Results with patient-level bootstrap 95% CIs, the paper's Tables 2 and 3 as Markdown, ROC figures
(Figs. 4 and 5) and confusion matrices.

One module per stage, each a pure function of :class:`LevelPair` s (one per annotated (patient,
level): the truth record, the report's level record or None, and the label maps as arrays):
:mod:`.levels` (landmarks, level identification, slice choice), :mod:`.segmentation` (Dice),
:mod:`.boxes` (IoU, per box source), :mod:`.grading` (kappa, AUROC, DeLong, agreement).
:mod:`.data` reads truth and reports and pairs them; :mod:`.tables` writes tables and figures;
:func:`compute_metrics` gathers the stages.

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
* **Dice** (dural sac = label 1, disc = label 2; facet and foramen regions = labels 3/4 and 5/6,
  the mean of both sides, where both label maps hold regions): per level between the report's
  label map and the truth label map, then the mean over levels. **IoU** per box type (facet,
  foramen), left and right pooled, the report's ``boxes`` against the truth's boxes (truth.json
  ``boxes``, else the bounding boxes of labels 3-6 of the truth label map); also for each box
  source the report holds (``boxes_by_source``: image localiser, fitted rule, paper rule).
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
* **Several cohorts** (:func:`evaluate_cohorts`) are pooled into one sample: a patient is
  ``<cohort>/<patient id>``, and the bootstrap resamples the pooled patients.
* **Against a baseline** (the reports of another pack on the same studies): the paired difference of
  each headline metric with a patient bootstrap CI, and DeLong's paired test for the AUROCs
  (:mod:`.comparison`).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from .data import (
    BINARY_FINDINGS,
    GRADE_NAMES,
    LevelPair,
    load_reports,
    load_truth,
    make_pairs,
    pack_labels,
)
from .tables import PAPER, format_tables, write_figures, write_level_csv, write_outputs

__all__ = [
    "BINARY_FINDINGS",
    "GRADE_NAMES",
    "PAPER",
    "Cohort",
    "LevelPair",
    "compute_metrics",
    "evaluate_cohorts",
    "evaluate_predictions",
    "format_tables",
    "load_reports",
    "load_truth",
    "make_pairs",
    "pack_labels",
    "pool_pairs",
    "pooled_id",
    "write_figures",
    "write_level_csv",
    "write_outputs",
]


def compute_metrics(pairs: Sequence[LevelPair], n_boot: int = 1000, seed: int = 0,
                    tree_model: Any = None, reader: int = 0) -> dict[str, Any]:
    """Every metric of the paper's Results from ``pairs``, each with a patient bootstrap 95% CI.

    ``tree_model``: a :class:`lumbargrade.grading.tree.RatioTree` whose leaf frequencies score the
    tree's grades for the one-vs-one AUROC when the reports carry no tree probabilities.
    ``reader``: the reference reader (0 = reader 1). Returns a JSON-ready dict (see the module
    docstring for every definition); a metric that cannot be computed is ``None``.
    """
    from .boxes import box_metrics
    from .grading import grading_metrics
    from .levels import level_metrics, slice_choice_metrics
    from .segmentation import segmentation_metrics

    pairs = list(pairs)
    out: dict[str, Any] = {
        "n_patients": len({p.patient_id for p in pairs}),
        "n_levels": len(pairs),
        "n_levels_reported": sum(p.pred is not None for p in pairs),
        "n_boot": int(n_boot),
        "seed": int(seed),
        "reference": f"reader {reader + 1}",
    }
    out["slice_choice_accuracy"], out["n_slice_matched"] = slice_choice_metrics(pairs, n_boot, seed)
    out["segmentation"] = segmentation_metrics(pairs, n_boot, seed)
    out["localization"] = box_metrics(pairs, n_boot, seed)
    out["landmarks"] = level_metrics(pairs, n_boot, seed)
    out.update(grading_metrics(pairs, n_boot, seed, tree_model=tree_model, reader=reader))
    return out


@dataclass(frozen=True)
class Cohort:
    """One annotated cohort to evaluate: its ``name`` (the patient prefix when pooled), ``data``
    (manifest.csv or its folder), ``predictions`` (folder of report.json files) and optionally
    ``baseline`` (another pack's reports on the same studies, to compare against); ``truth``:
    :func:`load_truth` of ``data`` when the caller has read it already (else it is read here)."""

    name: str
    data: str | Path
    predictions: str | Path
    baseline: str | Path | None = None
    truth: list[dict] | None = None


def pooled_id(cohort: str, patient_id: str) -> str:
    """A patient's id in a pooled sample: ``<cohort>/<patient id>``."""
    return f"{cohort}/{patient_id}"


def pool_pairs(cohorts: Sequence[tuple[str, Sequence[LevelPair]]]) -> list[LevelPair]:
    """The pairs of several cohorts as one sample; patient ids become :func:`pooled_id`
    (ids repeat across cohorts, and the bootstrap must draw each cohort's patients as distinct)."""
    return [replace(p, patient_id=pooled_id(name, p.patient_id)) for name, pairs in cohorts for p in pairs]


def evaluate_cohorts(cohorts: Sequence[Cohort], out: str | Path, split: str | None = "test", n_boot: int = 1000,
                     seed: int = 0, tree_model: Any = None, extra: Mapping[str, Any] | None = None,
                     figures: bool = True) -> dict[str, Any]:
    """Truth and reports of one or more cohorts -> metrics written into ``out`` (``figures``: also
    the ROC and confusion figures; they need matplotlib, in the training extra).

    Several cohorts are pooled (:func:`pool_pairs`; ``metrics["cohorts"]`` lists them). When every
    cohort has a ``baseline``, ``metrics["versus_baseline"]`` holds the paired differences
    (:func:`.comparison.compare_reports`)."""
    from .comparison import compare_reports

    cohorts = list(cohorts)
    if not cohorts:
        raise ValueError("no cohort to evaluate")
    with_base = [c.baseline is not None for c in cohorts]
    if any(with_base) and not all(with_base):
        raise ValueError("give a baseline for every cohort or for none")
    pooled = len(cohorts) > 1
    groups, base_groups, labels, base_labels, missing, listing = [], [], set(), set(), [], []
    for c in cohorts:
        truth = c.truth if c.truth is not None else load_truth(c.data, split)
        reports = load_reports(c.predictions)
        pairs, miss = make_pairs(truth, reports)
        groups.append((c.name, pairs))
        labels.update(pack_labels(reports))
        missing += [pooled_id(c.name, m) if pooled else m for m in miss]
        listing.append({"name": c.name, "n_patients": len(truth), "n_levels": len(pairs),
                        "patients_without_report": len(miss)})
        if c.baseline is not None:
            base_reports = load_reports(c.baseline)
            base_groups.append((c.name, make_pairs(truth, base_reports)[0]))
            base_labels.update(pack_labels(base_reports))
    pairs = pool_pairs(groups) if pooled else groups[0][1]
    metrics = compute_metrics(pairs, n_boot=n_boot, seed=seed, tree_model=tree_model)
    metrics["patients_without_report"] = missing
    metrics["split"] = split
    metrics["model_pack_labels"] = sorted(labels)
    if pooled:
        metrics["cohorts"] = listing
    if base_groups:
        base = pool_pairs(base_groups) if pooled else base_groups[0][1]
        metrics["versus_baseline"] = compare_reports(pairs, base, n_boot=n_boot, seed=seed)
        metrics["baseline_pack_labels"] = sorted(base_labels)
    write_outputs(metrics, out, extra=extra, figures=figures)
    write_level_csv(pairs, Path(out) / "levels.csv")
    return metrics


def evaluate_predictions(data: str | Path, predictions: str | Path, out: str | Path, split: str | None = "test",
                         n_boot: int = 1000, seed: int = 0, tree_model: Any = None,
                         extra: Mapping[str, Any] | None = None, figures: bool = True) -> dict[str, Any]:
    """Truth from ``data`` + reports under ``predictions`` -> metrics written into ``out``: one
    cohort of :func:`evaluate_cohorts`."""
    return evaluate_cohorts([Cohort(Path(data).name, data, predictions)], out, split=split, n_boot=n_boot,
                            seed=seed, tree_model=tree_model, extra=extra, figures=figures)
