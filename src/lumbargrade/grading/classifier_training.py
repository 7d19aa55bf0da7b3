"""``lumbargrade train classifier``: train a CNN patch classifier on a manifest.

Tasks (labels are reader 1's columns of the manifest):

* ``central``: 4 grades of ``central_canal`` (0 normal .. 3 severe), patch on the dural sac centroid;
* ``central_binary``: ``central_canal >= 2`` (moderate/severe), same patch;
* ``foramen`` / ``facet``: ``foramen_left``/``foramen_right`` (``facet_...``) 0/1, one patch per
  side on its box, left patches mirrored (one network serves both sides).

Patch location at training: the sac centroid from label 1 of the label map; lateral boxes from the
geometric rule on the ground-truth sac and disc masks (``patch_boxes: rule``, via
:func:`lumbargrade.localization.boxes_from_masks`) or the bounding boxes of labels 3-6
(``patch_boxes: truth``). All patches are cut once and kept in memory.

Training: AdamW, cosine schedule, class balance by a weighted sampler (``balance: sampler``) or a
class-weighted loss (``loss``), batch augmentation (intensity scale, gamma, noise, small rotation and
shift; zoom is available but off by default, since patches are cut at a fixed mm size and the grades
depend on sizes; a left-right flip only for the central tasks), validation every epoch (AUROC for
binary tasks, linearly weighted kappa with one-vs-one AUROC for ``central``), best epoch kept by the
validation metric (ties: lower validation loss).

Calibration, after training, on the validation split: balanced training shifts the class prior, so
the training prior is added back (``logit_bias = log(prior)`` when balancing, else 0); then one
temperature ``T`` is fitted by NLL. Probabilities are ``softmax((logits + logit_bias) / T)``. The
binary operating threshold (on the calibrated probability of moderate/severe) is 0.5 by default
(``threshold: 0.5``: the label agrees with the reported probability, and it does not move with a
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
    fit_temperature,
    nll,
    positive_probability,
    softmax,
    youden_threshold,
)
from .classifier_inference import TASKS, forward_logits
from .patches import PatchConfig, central_patch, lateral_patch, normalise_slice
from .names import BINARY_LABELS, CENTRAL_GRADES

__all__ = [
    "DEFAULT_CONFIG",
    "PatchSet",
    "build_patch_set",
    "display_orientation",
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
    "patch_boxes": "rule",  # rule | truth
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
    if cfg["balance"] not in ("sampler", "loss", "none"):
        raise InputError(where, "balance must be sampler, loss or none")
    if cfg["select"] not in ("metric", "loss", "last"):
        raise InputError(where, "select must be metric, loss or last")
    if cfg["patch_boxes"] not in ("rule", "truth"):
        raise InputError(where, "patch_boxes must be rule or truth")
    t = cfg["threshold"]
    if not (t == "youden" or (isinstance(t, (int, float)) and 0 < float(t) < 1)):
        raise InputError(where, "threshold must be 'youden' or a number in (0, 1)")
    if not float(cfg["input_std"]) > 0:
        raise InputError(where, "input_std must be > 0")
    if int(cfg["epochs"]) < 1 or int(cfg["batch_size"]) < 1:
        raise InputError(where, "epochs and batch_size must be >= 1")


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
    try:
        from ..localization import boxes_from_label_map
    except ImportError:
        boxes_from_label_map = None
    if boxes_from_label_map is not None:
        return dict(boxes_from_label_map(label_map))
    names = {3: "facet_left", 4: "facet_right", 5: "foramen_left", 6: "foramen_right"}
    out: dict[str, list[int] | None] = {}
    for value, name in names.items():
        rows, cols = np.nonzero(label_map == value)
        out[name] = None if not rows.size else [int(rows.min()), int(cols.min()), int(rows.max()) + 1, int(cols.max()) + 1]
    return out


def _rule_boxes_fn():
    try:
        from ..localization import boxes_from_masks
    except ImportError:
        return None
    return boxes_from_masks


def display_orientation(row: Mapping, base_dir=None) -> tuple[bool, bool]:
    """``(left_is_higher_col, anterior_is_low_row)`` of a row's axial slice.

    From ImageOrientationPatient when ``axial_image`` is DICOM (row_cosine[0] > 0, col_cosine[1] > 0);
    the standard display ``(True, True)`` otherwise.
    """
    from pathlib import Path as _P

    value = row.get("axial_image", "")
    p = _P(value)
    if not p.is_absolute():
        p = _P(base_dir if base_dir is not None else row.get("_base_dir", ".")) / p
    if p.suffix.lower() in (".png", ".npy", ".jpg", ".jpeg", ".tif", ".tiff", ".bmp"):
        return True, True
    try:
        import pydicom

        ds = pydicom.dcmread(p, stop_before_pixels=True, specific_tags=["ImageOrientationPatient"])
        iop = [float(v) for v in ds.ImageOrientationPatient]
    except Exception:  # noqa: BLE001 - not DICOM or no orientation: assume the standard display
        return True, True
    return iop[0] >= 0, iop[4] >= 0


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


def build_patch_set(rows: Sequence[Mapping], task: str, cfg: Mapping, log: logging.Logger | None = None) -> PatchSet:
    """Cut the training patches of ``task`` from manifest ``rows`` (needs ``label_map``)."""
    from .. import manifest as mf
    from ..errors import InputError

    pcfg = PatchConfig.from_dict(cfg["patch"])
    rule = _rule_boxes_fn() if cfg["patch_boxes"] == "rule" else None
    if cfg["patch_boxes"] == "rule" and rule is None and log:
        log.warning("lumbargrade.localization.boxes_from_masks is not available: using truth boxes")
    # rule boxes are the paper's: the geometric rule on the ground-truth sac and disc masks, so the
    # training patches sit where inference (rule on predicted masks) will cut them
    xs, ys, pats, srcs = [], [], [], []
    lateral = task in ("foramen", "facet")
    n_rule_fail = 0
    for row in rows:
        labels = {c: _label(row, c, task) for c in _LABEL_COLUMNS[task]}
        if all(v is None for v in labels.values()):
            continue
        if not row.get("label_map"):
            raise InputError(f"manifest line {row.get('_line')}", "classifier training needs the label_map column")
        image, spacing = mf.load_axial(row)
        lm = mf.load_label_map(row)
        if lm.shape != image.shape:
            raise InputError(f"manifest line {row.get('_line')}",
                             f"label map shape {lm.shape} differs from the image's {image.shape}")
        sac = lm == 1
        norm = normalise_slice(image, pcfg.percentiles)
        lhc, alr = display_orientation(row)
        orient = {"left_is_higher_col": lhc, "anterior_is_low_row": alr}
        src = f"{row.get('patient_id')} {row.get('level')}"
        if not lateral:
            if not sac.any():
                if log:
                    log.warning("%s: empty dural sac in label map, skipped", src)
                continue
            xs.append(central_patch(norm, spacing, sac, pcfg, **orient))
            ys.append(labels["central_canal"])
            pats.append(str(row.get("patient_id")))
            srcs.append(src)
            continue
        truth = truth_boxes(lm)
        boxes = dict(truth)
        if rule is not None:
            try:
                ruled = rule(sac, lm == 2, spacing, left_is_higher_col=lhc, anterior_is_low_row=alr)
            except Exception as e:  # noqa: BLE001 - a failed rule falls back to the truth boxes
                ruled = {}
                if log:
                    log.warning("%s: box rule failed (%s), using truth boxes", src, e)
            for name, b in (ruled or {}).items():
                if b is not None and b[2] > b[0] and b[3] > b[1]:
                    boxes[name] = b
                else:
                    n_rule_fail += 1
        for col, y in labels.items():
            box = boxes.get(col)
            if y is None or box is None:
                continue
            xs.append(lateral_patch(norm, spacing, box, col, pcfg, **orient))
            ys.append(y)
            pats.append(str(row.get("patient_id")))
            srcs.append(f"{src} {col}")
    if n_rule_fail and log:
        log.warning("box rule gave no box %d times: truth boxes used there", n_rule_fail)
    if not xs:
        return PatchSet(np.zeros((0, pcfg.patch_px, pcfg.patch_px), np.float32), np.zeros(0, np.int64))
    return PatchSet(np.stack(xs).astype(np.float32), np.asarray(ys, np.int64), pats, srcs)


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
    x_train = torch.from_numpy(train.x)[:, None]
    y_train = torch.from_numpy(train.y)

    start, best, history, best_state = 0, None, [], None
    ckpt = out / "checkpoint.pt"
    if ckpt.exists():
        state = torch.load(ckpt, map_location="cpu", weights_only=False)
        same = {key: cfg[key] for key in ("patch", "model_kwargs", "in_chans", "patch_boxes")}
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
        setup = {key: cfg[key] for key in ("patch", "model_kwargs", "in_chans", "patch_boxes")}
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
    threshold = float(cfg["threshold"]) if cfg["threshold"] != "youden" else 0.5
    if len(val):
        vlog = forward_logits(model, val.x, in_chans, int(cfg["eval_batch_size"]), device, imean, istd)
        raw = softmax(vlog)
        if cfg["calibrate"]:
            temperature = fit_temperature(vlog + logit_bias[None, :], val.y)
        cal = softmax(vlog + logit_bias[None, :], temperature)
        calib = {
            "nll_before": nll(vlog, val.y), "nll_after": nll(vlog + logit_bias[None, :], val.y, temperature),
            "ece_before": expected_calibration_error(raw, val.y),
            "ece_after": expected_calibration_error(cal, val.y),
        }
        pos = positive_probability(cal)
        ybin = (val.y >= 2).astype(int) if task == "central" else val.y
        calib["youden_threshold"] = youden_threshold(pos, ybin)
        if cfg["threshold"] == "youden":
            threshold = calib["youden_threshold"]
        if ybin.any() and not ybin.all():
            calib["val_sensitivity"] = float(np.mean(pos[ybin == 1] >= threshold))
            calib["val_specificity"] = float(np.mean(pos[ybin == 0] < threshold))
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
    rows = mf.read_manifest(args.data)
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
        train = build_patch_set(mf.rows_for_split(rows, "train"), task, cfg, log)
        val = build_patch_set(mf.rows_for_split(rows, "val"), task, cfg, log)
        log.info("cut %d train + %d val patches in %.1f s", len(train), len(val), time.perf_counter() - t0)
        if len(train) == 0:
            raise InputError(args.data, f"no train rows with labels for task {task}")
        extra = {"data": str(mf.resolve_manifest(args.data).resolve())}
        from ..distributed import launch  # data-parallel hook: --workers N processes (DDP)

        workers = int(getattr(args, "workers", 1) or 1)
        metrics = launch(_train_rank, workers, train, val, task, out, cfg, int(args.seed), ckpt, extra,
                         log if workers == 1 and not getattr(args, "ray", None) else None,
                         ray_address=getattr(args, "ray", None))
    finally:
        _close_log(log)
    v = metrics["val"]
    key = "kappa" if task == "central" else "auroc"
    print(f"{task}: best epoch {metrics['best_epoch']}, val {key} {v.get(key)}, "
          f"T = {metrics['calibration']['temperature']:.3f}, threshold {metrics['threshold']:.3f} -> {out}")
    return 0
