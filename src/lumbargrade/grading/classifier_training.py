"""``lumbargrade train classifier``: train a CNN patch classifier on a manifest.

Tasks (labels are reader 1's columns of the manifest, as in the paper; ``labels: consensus`` takes
the median of readers 1-3, columns ``<finding>``, ``<finding>_r2``, ``<finding>_r3``, and ``labels:
truth`` the ``<finding>_truth`` column a phantom cohort has):

* ``central``: 4 grades of ``central_canal`` (0 normal .. 3 severe), patch on the dural sac centroid;
* ``central_binary``: ``central_canal >= 2`` (moderate/severe), same patch;
* ``foramen`` / ``facet``: ``foramen_left``/``foramen_right`` (``facet_...``) 0/1, one patch per
  side on its box, left patches mirrored (one network serves both sides).

Patch location at training (each slice in its canonical view): ``patch_boxes: pipeline`` cuts them
where ``analyze`` does - the sac and the facet/foramen regions predicted by the segmenter given with
``--segmentation``, boxes placed by :func:`lumbargrade.boxes.placement.place_boxes`
(``pipeline_boxes``, default the image localiser); ``rule`` - the sac from label 1 and boxes from
the fitted rule on the truth masks; ``truth`` - the bounding boxes of labels 3-6. Domain
randomisation: ``synth_copies`` synthetic copies of each slice with a tissue map (with
``context_slices``, the neighbouring slices' maps come from the slice bank ``slices.csv`` beside
the manifest, and the three slices of a copy are drawn as one acquisition). All patches are
cut once and kept in memory.

Training: AdamW, cosine schedule, class balance by a weighted sampler (``balance: sampler``) or a
class-weighted loss (``loss``), batch augmentation (intensity scale, gamma, noise, small rotation and
shift; zoom is available but off by default, since patches are cut at a fixed mm size and the grades
depend on sizes; a left-right flip only for the central tasks), validation every epoch (AUROC for
binary tasks, linearly weighted kappa with one-vs-one AUROC for ``central``), best epoch kept by the
validation metric (ties: lower validation loss).

Calibration, after training, on the validation split: balanced training shifts the class prior, so
the training prior is added back (``logit_bias = log(prior)`` when balancing, else 0); then one
temperature ``T`` is fitted by NLL, and for binary tasks (``calibrate_bias: true``, the default)
a shift of the positive logit with it (Platt scaling: the prior correction can over- or
under-shoot when the network is less confident than the balanced training assumed).
Probabilities are ``softmax((logits + logit_bias) / T)``. The binary operating threshold (on the
calibrated probability of moderate/severe) is 0.5 by default (``threshold: 0.5``: the label agrees with the reported probability, and it does not move with a
small validation split), or chosen on validation by Youden's J (``threshold: youden``). The Youden
threshold and the validation sensitivity / specificity at the stored threshold are reported in
metrics.json either way.

The paper's network: ``--model bit_r50x1 --checkpoint BiT-M-R50x1.npz`` (or a timm
``resnetv2_50x1_bit`` state dict; never downloaded) with ``--set input_mean=0.5 --set
input_std=0.5`` (BiT's input range) and larger patches (``--set patch.patch_px=128``); meant for a GPU
(``device: auto`` picks CUDA when present).

RUN_DIR receives ``config.json`` (resolved config plus calibration and threshold: everything
:func:`lumbargrade.grading.classifier_inference.load_classifier` needs), ``model.safetensors``
(best epoch), ``checkpoint.pt`` (last epoch, for resume), ``metrics.json`` and ``train.log``.
"""

from __future__ import annotations

import copy
import json
import logging
import math
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from .calibration import (
    expected_calibration_error,
    fit_platt,
    fit_temperature,
    nll,
    positive_probability,
    softmax,
    youden_threshold,
)
from .classifier_inference import TASKS, forward_logits
from .names import BINARY_LABELS, CENTRAL_GRADES
from .patches import PatchConfig, central_patch, lateral_patch, normalise_context, normalise_slice

__all__ = [
    "DEFAULT_CONFIG",
    "PatchSet",
    "build_patch_set",
    "combine_members",
    "resolve_config",
    "run_cli",
    "train_on_patches",
    "truth_boxes",
]

DEFAULT_CONFIG: dict[str, Any] = {
    "model": "small_cnn",
    "model_kwargs": {},
    "in_chans": 1,
    "input_mean": 0.0,  # the network sees (patch - input_mean) / input_std; BiT-M weights: 0.5 / 0.5
    "input_std": 1.0,
    "epochs": 40,
    "batch_size": 32,
    "lr": 2e-3,
    "weight_decay": 1e-4,
    "warmup_epochs": 1,
    "balance": "sampler",  # sampler | loss | none
    "labels": "reader1",  # training and validation labels: reader1 | consensus (median of readers 1-3) | truth
    "patch_boxes": "auto",  # pipeline (needs --segmentation) | rule | truth | auto (pipeline with --segmentation, else rule)
    "pipeline_boxes": "image",  # with patch_boxes=pipeline: image | fitted | paper (as analyze --boxes)
    "synth_copies": 2,  # domain-randomised copies per slice with a tissue_map (0: none)
    "context_slices": 0,  # 1: the slices below and above as extra channels (lumbargrade.grading.context; in_chans 3)
    "synth": {"p_t2_prior": 1.0, "p_crop": 0.0, "p_flow": 0.0},  # SynthConfig overrides for them
    "patch": PatchConfig().to_dict(),
    "augment": {
        "enabled": True,
        "rotate_deg": 10.0,
        "scale": 0.0,  # off: patches are in mm and grades depend on sizes (sac area...)
        "shift_frac": 0.06,  # of the patch half-width
        "intensity_scale": 0.15,
        "gamma": 0.25,
        "noise": 0.03,
        "hflip_central": True,
    },
    "threshold": 0.5,  # a number in (0, 1) (on the calibrated probability) | youden
    "calibrate": True,
    "calibrate_bias": True,  # binary tasks: also fit a shift of the positive logit (Platt scaling)
    "select": "metric",  # best epoch by: metric (AUROC / kappa; ties: lower val loss) | loss (val NLL) | last
    "patience": 0,  # epochs without improvement before stopping; 0 = never
    "num_threads": 1,
    "device": "auto",
    "eval_batch_size": 256,
}

_LABEL_COLUMNS = {
    "central": ("central_canal",),
    "central_binary": ("central_canal",),
    "foramen": ("foramen_left", "foramen_right"),
    "facet": ("facet_left", "facet_right"),
}

#: where the training and validation labels come from (config ``labels``)
LABEL_SOURCES = ("reader1", "consensus", "truth")

_RUN_FILES = ("config.json", "model.safetensors", "checkpoint.pt", "metrics.json", "train.log")


# --------------------------------------------------------------------------- config


def _deep_update(base: dict, over: Mapping) -> dict:
    out = copy.deepcopy(base)
    for k, v in over.items():
        if isinstance(v, Mapping) and isinstance(out.get(k), dict):
            out[k] = _deep_update(out[k], v)
        else:
            out[k] = copy.deepcopy(v)
    return out


def _parse_value(text: str):
    try:
        return json.loads(text)
    except ValueError:
        return text


def resolve_config(overrides: Mapping | None = None, sets: Sequence[str] = (), where: str = "--set") -> dict:
    """DEFAULT_CONFIG updated by ``overrides`` (a dict) then ``sets`` (``"a.b=value"``, JSON values).

    Unknown keys raise InputError, so a typo does not silently train with the default.
    """
    from ..errors import InputError

    cfg = _deep_update(DEFAULT_CONFIG, overrides or {})
    for item in sets:
        if "=" not in item:
            raise InputError(where, f"{item!r} is not KEY=VALUE")
        key, value = item.split("=", 1)
        parts = key.strip().split(".")
        node = cfg
        for p in parts[:-1]:
            if not isinstance(node.get(p), dict):
                raise InputError(where, f"unknown config key {key!r}")
            node = node[p]
        node[parts[-1]] = _parse_value(value.strip())
    _check_config(cfg, where)
    return cfg


def _check_config(cfg: dict, where: str) -> None:
    from ..errors import InputError
    from .classifiers import list_classifiers

    def unknown(base: Mapping, got: Mapping, prefix: str = "") -> None:
        for k, v in got.items():
            if k not in base:
                raise InputError(where, f"unknown config key {prefix + k!r}")
            if isinstance(base[k], dict) and base[k] and isinstance(v, Mapping):
                unknown(base[k], v, prefix + k + ".")

    unknown(DEFAULT_CONFIG, cfg)
    if cfg["model"] not in list_classifiers():
        raise InputError(where, f"unknown model {cfg['model']!r}; registered: {', '.join(list_classifiers())}")
    if cfg["labels"] not in LABEL_SOURCES:
        raise InputError(where, f"labels must be {', '.join(LABEL_SOURCES)}")
    if cfg["balance"] not in ("sampler", "loss", "none"):
        raise InputError(where, "balance must be sampler, loss or none")
    if cfg["select"] not in ("metric", "loss", "last"):
        raise InputError(where, "select must be metric, loss or last")
    if cfg["patch_boxes"] not in ("auto", "pipeline", "rule", "truth"):
        raise InputError(where, "patch_boxes must be auto, pipeline, rule or truth")
    if cfg["pipeline_boxes"] not in ("image", "fitted", "paper"):
        raise InputError(where, "pipeline_boxes must be image, fitted or paper")
    t = cfg["threshold"]
    if not (t == "youden" or (isinstance(t, (int, float)) and 0 < float(t) < 1)):
        raise InputError(where, "threshold must be 'youden' or a number in (0, 1)")
    if not float(cfg["input_std"]) > 0:
        raise InputError(where, "input_std must be > 0")
    if int(cfg["epochs"]) < 1 or int(cfg["batch_size"]) < 1:
        raise InputError(where, "epochs and batch_size must be >= 1")
    if int(cfg["context_slices"]) not in (0, 1):
        raise InputError(where, "context_slices must be 0 or 1")
    if int(cfg["context_slices"]) and int(cfg["in_chans"]) != 3:
        raise InputError(where, "context_slices=1 needs in_chans=3 (caudal, graded and cranial slice)")


# --------------------------------------------------------------------------- data


@dataclass
class PatchSet:
    """Patches ``x`` [n, h, w] float32, labels ``y`` [n] int64, and per patch its patient and source."""

    x: np.ndarray
    y: np.ndarray
    patient: list[str] = field(default_factory=list)
    source: list[str] = field(default_factory=list)

    def __len__(self) -> int:
        return len(self.y)


def truth_boxes(label_map: np.ndarray) -> dict[str, list[int] | None]:
    """Bounding boxes ``[r0, c0, r1, c1]`` (end-exclusive) of labels 3-6; None where absent."""
    from ..boxes.rule import boxes_from_label_map

    return dict(boxes_from_label_map(label_map))


def _label(row: Mapping, column: str, task: str) -> int | None:
    from ..errors import InputError

    v = str(row.get(column, "")).strip()
    if v == "":
        return None
    try:
        g = int(float(v))
    except ValueError as e:
        raise InputError(f"manifest line {row.get('_line')}, column {column}", f"{v!r} is not an integer grade") from e
    if task == "central":
        if g not in (0, 1, 2, 3):
            raise InputError(f"manifest line {row.get('_line')}, column {column}", f"grade {g} is not 0-3")
        return g
    if task == "central_binary":
        return int(g >= 2)
    if g not in (0, 1):
        raise InputError(f"manifest line {row.get('_line')}, column {column}", f"{g} is not 0/1")
    return g


def label_columns(column: str, source: str) -> tuple[str, ...]:
    """The manifest columns the labels of a finding's ``column`` are read from (:func:`row_label`)."""
    if source not in LABEL_SOURCES:
        raise ValueError(f"unknown label source {source!r}")
    return {"reader1": (column,), "truth": (f"{column}_truth",),
            "consensus": (column, f"{column}_r2", f"{column}_r3")}[source]


def row_label(row: Mapping, column: str, task: str, source: str = "reader1") -> int | None:
    """The label of ``task`` for a finding's manifest ``column`` (e.g. ``foramen_left``), taken from
    ``source`` (:data:`LABEL_SOURCES`): reader 1 (the column itself), the consensus (median of the
    grades of readers 1-3: ``column``, ``column_r2``, ``column_r3``; all three needed where any is
    given) or the true grade (``column_truth``). None where the row has no grade."""
    from ..errors import InputError

    cols = label_columns(column, source)
    if source != "consensus":
        return _label(row, cols[0], task)
    grades = [_label(row, c, "central" if task == "central_binary" else task) for c in cols]
    if all(g is None for g in grades):
        return None
    if any(g is None for g in grades):
        missing = ", ".join(c for c, g in zip(cols, grades) if g is None)
        raise InputError(f"manifest line {row.get('_line')}", f"labels=consensus needs readers 1-3; {missing} empty")
    g = int(np.median(grades))
    return int(g >= 2) if task == "central_binary" else g


def _slice_views(row: Mapping, cfg: Mapping, segmenter, box_rule, log, fat_shift=None) -> dict | None:
    """The canonical view of a row's slice with its sac mask and boxes as the patches use them:
    ``{"image", "spacing", "sac", "boxes", "tissues"}``."""
    from .. import manifest as mf
    from ..boxes.placement import place_boxes
    from ..errors import InputError

    if not row.get("label_map"):
        raise InputError(f"manifest line {row.get('_line')}", "classifier training needs the label_map column")
    image, spacing = mf.load_axial(row)
    lm = mf.load_label_map(row)
    if lm.shape != image.shape:
        raise InputError(f"manifest line {row.get('_line')}",
                         f"label map shape {lm.shape} differs from the image's {image.shape}")
    view = mf.axial_view_of(row)
    context = paths = None
    if int(cfg.get("context_slices", 0)):
        paths = mf.axial_context_paths(row)
        context = [None if a is None else view.to_canonical(a) for a in mf.load_axial_context(row, paths=paths)]
    image, lm, spacing = view.to_canonical(image), view.to_canonical(lm), view.canonical_spacing(spacing)
    tissues = None
    if row.get("tissue_map") and int(cfg["synth_copies"]) > 0:
        tissues = view.to_canonical(_load_png(row, "tissue_map"))
        if paths is not None:
            tissues = _context_tissues(row, tissues, view, paths)
    source = cfg["patch_boxes"]
    if source == "truth":
        return {"image": image, "spacing": spacing, "sac": lm == 1, "boxes": truth_boxes(lm), "tissues": tissues,
                "context": context}
    if source == "pipeline":
        from ..boxes.image import side_regions

        if segmenter is None:
            raise InputError("patch_boxes", "pipeline boxes need --segmentation (a segmentation run or model pack)")
        centre = None
        if (lm == 1).any():  # centred near the sac, as analyze centres it near the disc landmark
            ii, jj = np.nonzero(lm == 1)
            centre = (float(ii.mean()), float(jj.mean()))
        (o,) = segmenter.predict([(image, spacing)], [centre])
        labels = o.labels if fat_shift is None else fat_shift.correct_canonical(row, o.labels)
        sac, disc = labels == 1, labels == 2
        regions = side_regions(labels == 3, labels == 4, sac) if len(segmenter.classes) > 3 else None
        boxes, _, _ = place_boxes(cfg["pipeline_boxes"], sac, disc, spacing, regions, box_rule)
        if not sac.any():
            sac = lm == 1  # a missed sac: the truth's, so the level still trains
        return {"image": image, "spacing": spacing, "sac": sac, "boxes": boxes, "tissues": tissues,
                "context": context}
    sac = lm == 1
    boxes = truth_boxes(lm)
    ruled, _, _ = place_boxes("fitted", sac, lm == 2, spacing, None, box_rule)
    boxes.update({k: b for k, b in ruled.items() if b[2] > b[0] and b[3] > b[1]})
    return {"image": image, "spacing": spacing, "sac": sac, "boxes": boxes, "tissues": tissues, "context": context}


def _bank_tissue_maps(base_dir: str) -> dict[Path, Path]:
    """Resolved ``axial_image`` -> resolved ``tissue_map`` of the slice bank (``slices.csv``)
    beside a manifest; empty without one. Cached per folder for the life of the process."""
    import csv

    if base_dir in _BANK_TISSUES:
        return _BANK_TISSUES[base_dir]
    found: dict[Path, Path] = {}
    bank = Path(base_dir) / "slices.csv"
    if bank.is_file():
        with open(bank, newline="") as fh:
            for r in csv.DictReader(fh):
                if r.get("axial_image") and r.get("tissue_map"):
                    found[(Path(base_dir) / r["axial_image"]).resolve()] = (Path(base_dir) / r["tissue_map"]).resolve()
    _BANK_TISSUES[base_dir] = found
    return found


_BANK_TISSUES: dict[str, dict[Path, Path]] = {}


def _context_tissues(row: Mapping, centre: np.ndarray, view, paths) -> np.ndarray | None:
    """``[3, H, W]`` tissue maps (caudal, graded, cranial; canonical view) of a row's slice and its
    neighbours (files ``paths``, :func:`lumbargrade.manifest.axial_context_paths`), the graded
    slice's map standing in where there is no neighbour (as
    :func:`lumbargrade.grading.context.stack_context` does for images). The neighbours' maps come
    from the slice bank beside the manifest (:func:`_bank_tissue_maps`); None when a neighbour
    exists but the bank has no map for it (the row then gets no synthetic copies)."""
    from .. import manifest as mf

    bank = _bank_tissue_maps(str(row.get("_base_dir", ".")))
    maps = []
    for f in paths:
        if f is None:
            maps.append(centre)
        elif f in bank:
            maps.append(view.to_canonical(mf.load_image_file(bank[f]).astype(np.uint8)))
        else:
            return None
    if any(m.shape != centre.shape for m in maps):
        return None
    return np.stack([maps[0], centre, maps[1]])


def _load_png(row: Mapping, column: str) -> np.ndarray:
    from .. import manifest as mf
    from ..errors import InputError

    p = Path(row[column])
    if not p.is_absolute():
        p = Path(row.get("_base_dir", ".")) / p
    if not p.is_file():
        raise InputError(p, f"file not found (manifest line {row.get('_line')}, column {column})")
    return mf.load_image_file(p).astype(np.uint8)


def build_patch_set(rows: Sequence[Mapping], task: str, cfg: Mapping, log: logging.Logger | None = None,
                    segmenter=None, box_rule=None, seed: int = 0, fat_shift_reader=None) -> PatchSet:
    """Cut the training patches of ``task`` from manifest ``rows`` (needs ``label_map``), each slice
    in its canonical view (:func:`lumbargrade.manifest.axial_view_of`).

    Where the patches sit (``patch_boxes``): ``pipeline`` - as ``analyze`` cuts them: ``segmenter``
    predicts the sac and the facet/foramen regions and the boxes come from
    :func:`lumbargrade.boxes.placement.place_boxes` (source ``pipeline_boxes``, rule ``box_rule``);
    ``rule`` - the fitted rule on the truth masks; ``truth`` - labels 3-6.
    With ``synth_copies`` > 0, rows with a ``tissue_map`` add that many domain-randomised copies
    of the slice (:mod:`lumbargrade.segmentation.synth`, recipe ``synth``), cut at the same places.
    ``fat_shift_reader``: with ``pipeline``, the predicted disc and regions are moved back by the
    fat-water shift as ``analyze`` moves them (:mod:`lumbargrade.segmentation.fat_shift`).
    """
    pcfg = PatchConfig.from_dict(cfg["patch"])
    fat_shift = None
    if fat_shift_reader is not None and segmenter is not None:
        from ..segmentation.fat_shift import ShiftForRows

        fat_shift = ShiftForRows(fat_shift_reader, list(rows))
    xs, ys, pats, srcs = [], [], [], []
    n_rows = n_synth = 0
    lateral = task in ("foramen", "facet")
    n_copies = int(cfg["synth_copies"])
    synth = None
    if n_copies > 0:
        from ..segmentation.synth import SynthConfig

        synth = SynthConfig.from_dict(dict(cfg.get("synth") or {}))
    rng = np.random.default_rng(seed)
    for row in rows:
        labels = {c: row_label(row, c, task, cfg.get("labels", "reader1")) for c in _LABEL_COLUMNS[task]}
        if all(v is None for v in labels.values()):
            continue
        v = _slice_views(row, cfg, segmenter, box_rule, log, fat_shift)
        n_rows += 1
        images = [normalise_slice(v["image"], pcfg.percentiles)]
        if v.get("context") is not None:
            images = [normalise_context(v["image"], *v["context"], percentiles=pcfg.percentiles)]
        if synth is not None and v["tissues"] is not None:
            images += [_synthetic_slice(v["tissues"], v["sac"], v["spacing"], rng, synth, pcfg)
                       for _ in range(n_copies)]
            n_synth += 1
        elif synth is not None and v.get("context") is not None and log:
            log.warning("%s %s: no tissue maps for its neighbouring slices, no synthetic copies",
                        row.get("patient_id"), row.get("level"))
        src = f"{row.get('patient_id')} {row.get('level')}"
        for k, norm in enumerate(images):
            tag = src if k == 0 else f"{src} synth{k}"
            if not lateral:
                if not v["sac"].any():
                    if log:
                        log.warning("%s: empty dural sac, skipped", src)
                    break
                xs.append(central_patch(norm, v["spacing"], v["sac"], pcfg))
                ys.append(labels["central_canal"])
                pats.append(str(row.get("patient_id")))
                srcs.append(tag)
                continue
            for col, y in labels.items():
                box = v["boxes"].get(col)
                if y is None or box is None or box[2] <= box[0] or box[3] <= box[1]:
                    continue
                xs.append(lateral_patch(norm, v["spacing"], box, col, pcfg))
                ys.append(y)
                pats.append(str(row.get("patient_id")))
                srcs.append(f"{tag} {col}")
    if synth is not None and log:
        log.info("%d of %d slices with %d domain-randomised copies each (the others have no tissue maps)",
                 n_synth, n_rows, n_copies)
    if not xs:
        return PatchSet(np.zeros((0, pcfg.patch_px, pcfg.patch_px), np.float32), np.zeros(0, np.int64))
    return PatchSet(np.stack(xs).astype(np.float32), np.asarray(ys, np.int64), pats, srcs)


def _synthetic_slice(tissues: np.ndarray, sac: np.ndarray, spacing, rng, synth, pcfg: PatchConfig) -> np.ndarray:
    """A domain-randomised copy of a slice (same geometry: no spatial warp), normalised like the
    real one. ``tissues`` ``[H, W]``, or ``[3, H, W]`` for a context stack (caudal, graded,
    cranial): the three are drawn as one acquisition (one seed for all three: the same random
    contrast, artefacts and noise, pixel for pixel) and normalised as
    :func:`~lumbargrade.grading.patches.normalise_context` normalises a stored stack."""
    from ..segmentation.synth import synthesize

    mm = float(np.mean(spacing))
    if tissues.ndim == 2:
        return normalise_slice(synthesize(tissues, sac, mm, rng, synth), pcfg.percentiles)
    draw = int(rng.integers(2**63))
    caudal, centre, cranial = (synthesize(t, sac, mm, np.random.default_rng(draw), synth) for t in tissues)
    return normalise_context(centre, caudal, cranial, percentiles=pcfg.percentiles)


# --------------------------------------------------------------------------- training


def _augment(xb, aug: Mapping, hflip: bool, gen):
    """Random batch augmentation on ``xb`` [b, 1, h, w] (torch)."""
    import torch
    import torch.nn.functional as F

    b = xb.shape[0]
    dev = xb.device

    def u(lo, hi, n=b):
        return torch.rand(n, generator=gen).to(dev) * (hi - lo) + lo

    ang = u(-1, 1) * math.radians(float(aug["rotate_deg"]))
    sc = 1.0 + u(-1, 1) * float(aug["scale"])
    sh = u(-1, 1, 2 * b).view(b, 2) * float(aug["shift_frac"])
    cos, sin = torch.cos(ang) / sc, torch.sin(ang) / sc
    theta = torch.stack([torch.stack([cos, -sin, sh[:, 0]], 1), torch.stack([sin, cos, sh[:, 1]], 1)], 1)
    if hflip:
        flip = (torch.rand(b, generator=gen) < 0.5).to(dev)
        theta[flip, 0, :] = theta[flip, 0, :] * torch.tensor([-1.0, -1.0, 1.0], device=dev)
    grid = F.affine_grid(theta, list(xb.shape), align_corners=False)
    x = F.grid_sample(xb, grid, mode="bilinear", padding_mode="border", align_corners=False)
    x = x * (1.0 + u(-1, 1) * float(aug["intensity_scale"]))[:, None, None, None]
    g = torch.exp(u(-1, 1) * math.log1p(float(aug["gamma"])))[:, None, None, None]
    x = torch.sign(x) * torch.abs(x).clamp_min(1e-6) ** g
    noise = torch.randn(x.shape, generator=gen).to(dev) * (u(0, 1) * float(aug["noise"]))[:, None, None, None]
    return x + noise


def _val_metrics(task: str, logits: np.ndarray, y: np.ndarray, bias: np.ndarray) -> dict:
    from .. import metrics as M

    probs = softmax(logits + bias[None, :])
    out = {"loss": nll(logits + bias[None, :], y) if len(y) else float("nan")}
    if task == "central":
        pred = probs.argmax(1)
        out["kappa"] = M.linear_weighted_kappa(y, pred, 4)
        out["ovo_auroc"] = M.ovo_auroc(y, probs)
        out["accuracy"] = M.accuracy(y, pred)
        out["binary_auroc"] = M.binary_auroc((y >= 2).astype(int), positive_probability(probs))
        out["metric"] = out["kappa"]
    else:
        out["auroc"] = M.binary_auroc(y, probs[:, 1])
        out["accuracy"] = float(np.mean(probs.argmax(1) == y)) if len(y) else float("nan")
        out["metric"] = out["auroc"]
    return {k: (None if isinstance(v, float) and math.isnan(v) else float(v)) for k, v in out.items()}


def _better(m: dict, best: dict | None, select: str = "metric") -> bool:
    """Is epoch metrics ``m`` better than ``best``? ``select``: metric (ties: lower loss), loss, last."""
    if best is None or select == "last":
        return True
    if select == "loss":
        la = math.inf if m.get("loss") is None else m["loss"]
        return la < (math.inf if best.get("loss") is None else best["loss"])
    a = -math.inf if m.get("metric") is None else m["metric"]
    b = -math.inf if best.get("metric") is None else best["metric"]
    if a != b:
        return a > b
    la = math.inf if m.get("loss") is None else m["loss"]
    lb = math.inf if best.get("loss") is None else best["loss"]
    return la < lb


def _setup_log(out_dir: Path) -> logging.Logger:
    log = logging.getLogger(f"lumbargrade.train.classifier.{out_dir.resolve()}")
    log.setLevel(logging.INFO)
    log.propagate = False
    for h in list(log.handlers):
        log.removeHandler(h)
    fh = logging.FileHandler(out_dir / "train.log")
    fh.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(message)s"))
    log.addHandler(fh)
    return log


def _close_log(log: logging.Logger) -> None:
    for h in list(log.handlers):
        h.close()
        log.removeHandler(h)


def _binary_labels(task: str, y: np.ndarray) -> np.ndarray:
    """0/1 per patch: moderate/severe (central grades 2-3) or the binary label itself."""
    return (y >= 2).astype(int) if task == "central" else y


def _operating_point(pos: np.ndarray, ybin: np.ndarray, rule: str | float) -> tuple[float, dict]:
    """The binary threshold on the probability ``pos`` (``rule``: a number, or ``youden`` on these
    patches) with the Youden point and the sensitivity / specificity at the threshold (the latter
    only when both classes are present)."""
    point = {"youden_threshold": youden_threshold(pos, ybin)}
    threshold = point["youden_threshold"] if rule == "youden" else float(rule)
    if ybin.any() and not ybin.all():
        point["val_sensitivity"] = float(np.mean(pos[ybin == 1] >= threshold))
        point["val_specificity"] = float(np.mean(pos[ybin == 0] < threshold))
    return threshold, point


def _setup_of(cfg: Mapping) -> dict:
    """The settings a checkpoint must share to be resumed (``context_slices`` only when set, so
    checkpoints written before it existed still resume)."""
    setup = {key: cfg[key] for key in ("patch", "model_kwargs", "in_chans", "patch_boxes")}
    if int(cfg.get("context_slices", 0) or 0):
        setup["context_slices"] = int(cfg["context_slices"])
    return setup


def train_on_patches(
    train: PatchSet,
    val: PatchSet,
    task: str,
    out_dir: str | Path,
    config: Mapping | None = None,
    *,
    seed: int = 0,
    checkpoint_path: str | Path | None = None,
    overwrite: bool = False,
    extra_config: Mapping | None = None,
    log: logging.Logger | None = None,
    progress: bool | None = None,
) -> dict:
    """Train, keep the best epoch, calibrate on ``val`` and write the run folder. Returns metrics.

    Resumes from ``out_dir/checkpoint.pt`` when present (unless ``overwrite``). ``extra_config``
    is stored in config.json as given (data source, command...).
    """
    import torch
    from safetensors.torch import save_file
    from tqdm import tqdm

    from ..errors import InputError
    from .classifiers import create_classifier

    if task not in TASKS:
        raise InputError("--task", f"unknown task {task!r}; one of {', '.join(TASKS)}")
    cfg = resolve_config(config or {})
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    from ..distributed import current  # data-parallel hook (lumbargrade.distributed): rank 0 writes

    dist = current()
    if not dist.is_main:
        log, overwrite = logging.getLogger("lumbargrade.rank"), False
        log.addHandler(logging.NullHandler())
        log.propagate = False
    if overwrite:
        for name in _RUN_FILES:
            (out / name).unlink(missing_ok=True)
    elif (out / "model.safetensors").exists() and not (out / "checkpoint.pt").exists():
        raise InputError(out, "holds a finished run without checkpoint.pt; use --overwrite to start afresh")
    own_log = log is None
    log = log or _setup_log(out)
    k = TASKS[task]
    if len(train) == 0:
        raise InputError(out, f"no training patches for task {task}")
    if train.y.min() < 0 or train.y.max() >= k:
        raise ValueError(f"labels outside 0..{k - 1}")

    torch.set_num_threads(int(cfg["num_threads"]))
    torch.manual_seed(seed)
    np.random.seed(seed)
    device = torch.device("cuda" if (cfg["device"] == "auto" and torch.cuda.is_available()) else
                          ("cpu" if cfg["device"] == "auto" else cfg["device"]))
    gen = torch.Generator().manual_seed(seed)
    in_chans = int(cfg["in_chans"])
    imean, istd = float(cfg["input_mean"]), float(cfg["input_std"])
    model = create_classifier(cfg["model"], k, checkpoint_path=checkpoint_path, in_chans=in_chans,
                              **dict(cfg["model_kwargs"]))
    model.to(device)
    train_model = dist.wrap(model)  # data-parallel hook: DDP for the training forward only
    opt = torch.optim.AdamW(model.parameters(), lr=float(cfg["lr"]), weight_decay=float(cfg["weight_decay"]))
    epochs = int(cfg["epochs"])
    bs = min(int(cfg["batch_size"]), len(train))
    steps_per_epoch = max(1, math.ceil(len(train) / bs))
    total = epochs * steps_per_epoch
    warm = int(cfg["warmup_epochs"]) * steps_per_epoch

    def lr_lambda(step: int) -> float:
        if step < warm:
            return (step + 1) / warm
        return 0.5 * (1 + math.cos(math.pi * min(1.0, (step - warm) / max(1, total - warm))))

    sched = torch.optim.lr_scheduler.LambdaLR(opt, lr_lambda)

    counts = np.bincount(train.y, minlength=k).astype(np.float64)
    prior = np.maximum(counts, 1) / max(counts.sum(), 1)
    balance = cfg["balance"]
    if balance == "sampler":
        sample_w = torch.as_tensor(1.0 / np.maximum(counts, 1)[train.y], dtype=torch.double)
    loss_w = None
    if balance == "loss":
        loss_w = torch.as_tensor(counts.sum() / (k * np.maximum(counts, 1)), dtype=torch.float32, device=device)
    logit_bias = np.log(prior) - np.log(1.0 / k) if balance != "none" else np.zeros(k)
    crit = torch.nn.CrossEntropyLoss(weight=loss_w)
    aug = dict(cfg["augment"])
    hflip = bool(aug.get("hflip_central")) and task in ("central", "central_binary")
    x_train = torch.from_numpy(train.x)
    if x_train.ndim == 3:
        x_train = x_train[:, None]
    y_train = torch.from_numpy(train.y)

    start, best, history, best_state = 0, None, [], None
    ckpt = out / "checkpoint.pt"
    if ckpt.exists():
        state = torch.load(ckpt, map_location="cpu", weights_only=False)
        same = _setup_of(cfg)
        if state.get("setup", same) != same:
            raise InputError(ckpt, "was written with other patch / model settings; use --overwrite or another --out")
        if state.get("task") != task or state.get("model_name") != cfg["model"]:
            raise InputError(ckpt, f"is a checkpoint of task {state.get('task')} / {state.get('model_name')}; "
                             "use --overwrite or another --out")
        model.load_state_dict(state["model"])
        opt.load_state_dict(state["optimizer"])
        sched.load_state_dict(state["scheduler"])
        gen.set_state(state["generator"])
        start, best, history, best_state = state["epoch"] + 1, state["best"], state["history"], state["best_state"]
        log.info("resumed from %s at epoch %d", ckpt, start)
    log.info("task %s, model %s, %d train / %d val patches, class counts %s, device %s",
             task, cfg["model"], len(train), len(val), counts.astype(int).tolist(), device)

    bad_epochs = 0
    bar = tqdm(range(start, epochs), desc=f"train {task}", disable=(not progress) if progress is not None else None)
    for epoch in bar:
        t0 = time.perf_counter()
        model.train()
        if balance == "sampler":
            order = torch.multinomial(sample_w, len(train), replacement=True, generator=gen)
        else:
            order = torch.randperm(len(train), generator=gen)
        tot, n = 0.0, 0
        for i in range(0, len(order), bs):
            idx = order[i : i + bs]
            if len(idx) < 2 * dist.world_size and len(order) > 1:
                continue  # BatchNorm needs two items (on every data-parallel rank)
            xb = x_train[idx].to(device)
            yb = y_train[idx].to(device)
            if aug.get("enabled", True):
                xb = _augment(xb, aug, hflip, gen)
            if imean != 0.0 or istd != 1.0:
                xb = (xb - imean) / istd
            if in_chans != 1:
                xb = xb.expand(-1, in_chans, -1, -1)
            n_global = len(idx)
            xb, yb = dist.shard(xb, yb)  # data-parallel hook: this rank's part of the global batch
            loss = crit(train_model(xb), yb) * dist.loss_scale(n_global)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            sched.step()
            tot += float(loss.detach()) * len(idx)
            n += len(idx)
        train_loss = tot / max(n, 1)
        if not dist.is_main:  # data-parallel hook: rank 0 evaluates, writes and decides to stop
            if dist.broadcast(None):
                break
            continue
        if len(val):
            vlog = forward_logits(model, val.x, in_chans, int(cfg["eval_batch_size"]), device, imean, istd)
            vm = _val_metrics(task, vlog, val.y, logit_bias)
        else:
            vm = {"metric": -train_loss, "loss": train_loss}
        secs = time.perf_counter() - t0
        rec = {"epoch": epoch, "train_loss": train_loss, "seconds": secs, **{f"val_{a}": b for a, b in vm.items()}}
        history.append(rec)
        improved = _better(vm, best, cfg["select"]) if len(val) else True  # no validation: the last epoch
        if improved:
            best = {**vm, "epoch": epoch}
            best_state = {a: b.detach().cpu().clone() for a, b in model.state_dict().items()}
            save_file({a: b.contiguous() for a, b in best_state.items()}, str(out / "model.safetensors"))
            bad_epochs = 0
        else:
            bad_epochs += 1
        log.info("epoch %d: train loss %.4f, val %s, %.1f s%s", epoch, train_loss,
                 {a: (round(b, 4) if isinstance(b, float) else b) for a, b in vm.items()}, secs,
                 " (best)" if improved else "")
        bar.set_postfix(loss=f"{train_loss:.3f}", val=f"{vm.get('metric') or float('nan'):.3f}")
        setup = _setup_of(cfg)
        torch.save({"epoch": epoch, "task": task, "model_name": cfg["model"], "setup": setup,
                    "model": model.state_dict(),
                    "optimizer": opt.state_dict(), "scheduler": sched.state_dict(),
                    "generator": gen.get_state(), "best": best, "history": history,
                    "best_state": best_state}, ckpt)
        if dist.broadcast(int(cfg["patience"]) > 0 and bad_epochs >= int(cfg["patience"])):
            log.info("no improvement for %d epochs: stopping", bad_epochs)
            break
    bar.close()
    if not dist.is_main:  # data-parallel hook
        return {}

    # ---- calibration and threshold on the validation split, with the best weights
    model.load_state_dict(best_state)
    temperature, calib = 1.0, {}
    prior_bias = np.asarray(logit_bias, dtype=np.float64).copy()
    threshold = float(cfg["threshold"]) if cfg["threshold"] != "youden" else 0.5
    if len(val):
        vlog = forward_logits(model, val.x, in_chans, int(cfg["eval_batch_size"]), device, imean, istd)
        raw = softmax(vlog)
        if cfg["calibrate"] and k == 2 and cfg.get("calibrate_bias", True):
            temperature, logit_bias = fit_platt(vlog, val.y, prior_bias)
        elif cfg["calibrate"]:
            temperature = fit_temperature(vlog + logit_bias[None, :], val.y)
        cal = softmax(vlog + logit_bias[None, :], temperature)
        calib = {
            "nll_before": nll(vlog, val.y), "nll_after": nll(vlog + logit_bias[None, :], val.y, temperature),
            "ece_before": expected_calibration_error(raw, val.y),
            "ece_after": expected_calibration_error(cal, val.y),
        }
        pos = positive_probability(cal)
        ybin = _binary_labels(task, val.y)
        threshold, point = _operating_point(pos, ybin, cfg["threshold"])
        calib.update(point)
        calib["binary_ece_after"] = expected_calibration_error(np.stack([1 - pos, pos], 1), ybin)
    else:
        log.warning("no validation patches: no calibration (T = 1) and threshold %.2f", threshold)
    calib = {a: float(b) for a, b in calib.items()}
    log.info("calibration: T = %.3f, logit bias %s, %s; threshold %.3f (%s)", temperature,
             np.round(logit_bias, 3).tolist(), {a: round(b, 4) for a, b in calib.items()}, threshold, cfg["threshold"])

    from .. import __version__

    resolved = {
        **cfg,
        "task": task,
        "num_classes": k,
        "classes": list(CENTRAL_GRADES) if task == "central" else list(BINARY_LABELS),
        "seed": seed,
        "backbone_checkpoint": str(checkpoint_path) if checkpoint_path else None,
        "temperature": temperature,
        "logit_bias": [float(v) for v in logit_bias],
        "prior_logit_bias": [float(v) for v in prior_bias],
        "threshold": threshold,
        "threshold_rule": cfg["threshold"],
        "train_class_counts": counts.astype(int).tolist(),
        "weights": "model.safetensors",
        "lumbargrade_version": __version__,
        **dict(extra_config or {}),
    }
    (out / "config.json").write_text(json.dumps(resolved, indent=2) + "\n")
    secs = [h["seconds"] for h in history]
    metrics = {
        "task": task,
        "best_epoch": best.get("epoch") if best else None,
        "val": {a: b for a, b in (best or {}).items() if a != "epoch"},
        "calibration": {"temperature": temperature, "logit_bias": resolved["logit_bias"], **calib},
        "threshold": threshold,
        "n_train": len(train),
        "n_val": len(val),
        "train_class_counts": counts.astype(int).tolist(),
        "val_class_counts": np.bincount(val.y, minlength=k).astype(int).tolist() if len(val) else [0] * k,
        "seconds_per_epoch": float(np.mean(secs)) if secs else None,
        "history": history,
    }
    (out / "metrics.json").write_text(json.dumps(metrics, indent=2) + "\n")
    log.info("done: best epoch %s, val %s", metrics["best_epoch"], metrics["val"])
    if own_log:
        _close_log(log)
    return metrics


# --------------------------------------------------------------------------- CLI


def combine_members(out_dir: str | Path, members: Sequence[str | Path], val: PatchSet, task: str,
                    config: Mapping, extra_config: Mapping | None = None,
                    log: logging.Logger | None = None) -> dict:
    """Write the ensemble of trained member run folders (inside ``out_dir``) as ``out_dir/config.json``
    + ``metrics.json``: the mean of the members' calibrated probabilities, its binary threshold
    (``config["threshold"]``: a number, or ``youden`` on ``val`` for the mean) and its validation
    figures beside each member's. Returns the metrics (same keys as :func:`train_on_patches`)."""
    from ..metrics import binary_auroc, linear_weighted_kappa
    from .classifier_inference import ClassifierEnsemble, load_classifier, member_names

    out = Path(out_dir)
    cfg = resolve_config(config or {})
    rel = member_names(out, members)
    loaded = [load_classifier(m, runtime="torch") for m in members]
    ens = ClassifierEnsemble(loaded, {})
    threshold = float(cfg["threshold"]) if cfg["threshold"] != "youden" else 0.5
    per_member, ens_val, calib = [], {}, {}
    if len(val):
        ybin = _binary_labels(task, val.y)
        for f, clf in zip(rel, loaded):
            mm = json.loads((out / f / "metrics.json").read_text())
            per_member.append({"folder": f, "seed": clf.config.get("seed"), "val": mm.get("val"),
                               "threshold": clf.threshold})
        prob = ens.predict(val.x)
        pos = positive_probability(prob)
        if ybin.any() and not ybin.all():
            ens_val["auroc"] = float(binary_auroc(ybin, pos))
        if task == "central":
            ens_val["kappa"] = float(linear_weighted_kappa(val.y, prob.argmax(1), n_classes=4))
        ens_val["accuracy"] = float(np.mean(prob.argmax(1) == val.y))
        ens_val["metric"] = ens_val.get("kappa" if task == "central" else "auroc")
        threshold, calib = _operating_point(pos, ybin, cfg["threshold"])
        calib["binary_ece"] = expected_calibration_error(np.stack([1 - pos, pos], 1), ybin)
    from .. import __version__

    first = loaded[0]
    resolved = {
        **cfg,
        "task": task,
        "num_classes": first.num_classes,
        "classes": list(CENTRAL_GRADES) if task == "central" else list(BINARY_LABELS),
        "members": rel,
        "combine": "mean of the members' calibrated probabilities",
        "seeds": [c.config.get("seed") for c in loaded],
        "patch": first.patch.to_dict(),
        "threshold": threshold,
        "threshold_rule": cfg["threshold"],
        "lumbargrade_version": __version__,
        **dict(extra_config or {}),
    }
    (out / "config.json").write_text(json.dumps(resolved, indent=2) + "\n")
    metrics = {
        "task": task,
        "ensemble": len(loaded),
        "best_epoch": None,
        "val": ens_val,
        "calibration": {a: float(b) for a, b in calib.items()},
        "threshold": threshold,
        "n_val": len(val),
        "members": per_member,
    }
    (out / "metrics.json").write_text(json.dumps(metrics, indent=2) + "\n")
    if log is not None:
        log.info("ensemble of %d: val %s, threshold %.3f (%s)", len(loaded),
                 {a: round(b, 4) for a, b in ens_val.items() if isinstance(b, float)}, threshold, cfg["threshold"])
    return metrics


def _segmenter_and_rule(path: str | None, rule_path: str | None, cfg: dict):
    """The segmenter (and the fitted box rule: ``rule_path``, else the pack's box_rule.json when
    ``path`` is a model pack) that place the patches with ``patch_boxes=pipeline``; resolves
    ``patch_boxes=auto`` in ``cfg``. (None, rule) without ``path``."""
    from ..boxes.rule import BoxRuleConfig
    from ..errors import InputError

    if cfg["patch_boxes"] == "auto":
        cfg["patch_boxes"] = "pipeline" if path else "rule"
    rule = None
    if rule_path:
        try:
            rule = BoxRuleConfig.from_dict(json.loads(Path(rule_path).read_text()))
        except (OSError, ValueError) as e:
            raise InputError(rule_path, f"not a box rule file ({e})") from None
    if not path:
        if cfg["patch_boxes"] == "pipeline":
            raise InputError("--segmentation", "patch_boxes=pipeline needs --segmentation (a segmentation run "
                             "folder or a model pack)")
        return None, rule
    from ..segmentation.inference import load_segmenter

    p = Path(path)
    if (p / "pack.json").is_file():
        if rule is None and (p / "box_rule.json").is_file():
            rule = BoxRuleConfig.from_dict(json.loads((p / "box_rule.json").read_text()))
        p = p / "segmentation"
    return load_segmenter(p), rule


def _train_rank(train, val, task, out, cfg, seed, ckpt, extra, log):
    """:func:`train_on_patches` with positional arguments (what each data-parallel worker runs)."""
    return train_on_patches(train, val, task, out, cfg, seed=seed, checkpoint_path=ckpt, overwrite=False,
                            extra_config=extra, log=log)


def run_cli(args) -> int:
    """Entry point of ``lumbargrade train classifier`` (parser in lumbargrade.commands.train)."""
    import sys

    from .. import manifest as mf
    from ..errors import InputError

    overrides: dict = {}
    if getattr(args, "config", None):
        try:
            overrides = json.loads(Path(args.config).read_text())
        except OSError as e:
            raise InputError(args.config, f"cannot read config ({e.strerror})") from e
        except ValueError as e:
            raise InputError(args.config, f"not valid JSON ({e})") from e
        if not isinstance(overrides, dict):
            raise InputError(args.config, "config must be a JSON object")
    if getattr(args, "model", None):
        overrides["model"] = args.model
    cfg = resolve_config(overrides, getattr(args, "set", []) or [], where="--set" if not args.config else args.config)
    ckpt = getattr(args, "checkpoint", None)
    if ckpt and not Path(ckpt).is_file():
        raise InputError(ckpt, "checkpoint file not found")
    task = args.cls_task
    n_members = 1 if getattr(args, "ensemble", None) is None else int(args.ensemble)
    if n_members < 1:
        raise InputError("--ensemble", "must be at least 1")
    datas = mf.data_paths(args.data)
    rows = mf.read_manifests(datas)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    if args.overwrite:
        for name in _RUN_FILES:
            (out / name).unlink(missing_ok=True)
    log = _setup_log(out)
    stream = logging.StreamHandler(sys.stderr)
    stream.setFormatter(logging.Formatter("%(message)s"))
    log.addHandler(stream)
    try:
        t0 = time.perf_counter()
        segmenter, box_rule = _segmenter_and_rule(getattr(args, "segmentation", None),
                                                  getattr(args, "box_rule", None), cfg)
        seed = int(args.seed)
        reader = None
        if getattr(args, "fat_shift", None):
            from ..segmentation.fat_shift import load_fat_shift_reader

            reader = load_fat_shift_reader(args.fat_shift)
        train = build_patch_set(mf.rows_for_split(rows, "train"), task, cfg, log, segmenter, box_rule, seed, reader)
        val = build_patch_set(mf.rows_for_split(rows, "val"), task, dict(cfg, synth_copies=0), log, segmenter,
                              box_rule, seed, reader)
        log.info("cut %d train + %d val patches in %.1f s", len(train), len(val), time.perf_counter() - t0)
        if len(train) == 0:
            cols = [c for col in _LABEL_COLUMNS[task] for c in label_columns(col, cfg["labels"])]
            raise InputError(", ".join(datas), f"no train rows with labels for task {task} "
                             f"(labels={cfg['labels']}: columns {', '.join(cols)})")
        resolved = [str(mf.resolve_manifest(d).resolve()) for d in datas]
        extra = {"data": resolved[0] if len(resolved) == 1 else resolved,
                 "segmentation": getattr(args, "segmentation", None), "box_rule": getattr(args, "box_rule", None),
                 "fat_shift": getattr(args, "fat_shift", None)}
        from ..distributed import launch  # data-parallel hook: --workers N processes (DDP)

        workers = int(getattr(args, "workers", 1) or 1)
        ray = getattr(args, "ray", None)

        def train_one(folder: Path, s: int) -> dict:
            return launch(_train_rank, workers, train, val, task, folder, cfg, s, ckpt, extra,
                          log if workers == 1 and not ray else None, ray_address=ray)

        if n_members == 1:
            metrics = train_one(out, seed)
        else:
            folders = [out / "members" / f"seed{seed + k}" for k in range(n_members)]
            for k, member in enumerate(folders):
                log.info("ensemble member %d of %d: seed %d -> %s", k + 1, n_members, seed + k, member)
                if args.overwrite:
                    for name in _RUN_FILES:
                        (member / name).unlink(missing_ok=True)
                train_one(member, seed + k)
            metrics = combine_members(out, folders, val, task, cfg, extra, log)
    finally:
        _close_log(log)
    v = metrics["val"]
    key = "kappa" if task == "central" else "auroc"
    if metrics.get("ensemble"):
        print(f"{task}: ensemble of {metrics['ensemble']}, val {key} {v.get(key)} (members "
              f"{[m['val'].get(key) if m.get('val') else None for m in metrics['members']]}), "
              f"threshold {metrics['threshold']:.3f} -> {out}")
        return 0
    print(f"{task}: best epoch {metrics['best_epoch']}, val {key} {v.get(key)}, "
          f"T = {metrics['calibration']['temperature']:.3f}, threshold {metrics['threshold']:.3f} -> {out}")
    return 0
