"""``lumbargrade train landmarks``: train the DSNT disc-landmark network.

Data:

* ``--data``: a manifest.csv (or folder holding one) whose rows carry ``sagittal_image``,
  ``landmark_row``, ``landmark_col`` for each level (phantom cohorts write these), or ``none``.
  Rows of split ``train`` are trained on, ``val``/``test`` are evaluated (errors in mm).
* ``--real``: a SPIDER-layout folder (``images/``, ``masks/``); disc centres come from the disc
  mask (:mod:`lumbargrade.levels.spider`). ``real_holdout`` studies (config) are never trained on;
  they are evaluated at the end (errors in px and as a fraction of image height). Weights are
  those of the last step: the held-out studies play no part in model selection.

RUN_DIR receives ``config.json`` (resolved config, also the model's config), ``model.safetensors``,
``metrics.json``, ``train.log`` and ``checkpoint.pt`` (to resume).
"""

from __future__ import annotations

import json
import math
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from .names import LEVELS

__all__ = ["DEFAULT_CONFIG", "Sample", "add_synthetic_copies", "augment", "evaluate", "load_manifest", "load_real",
           "run_cli", "train"]

DEFAULT_CONFIG: dict[str, Any] = {
    "steps": 1000,  # the shipped model: 1000 steps (7 min on 1 CPU thread)
    "batch_size": 8,
    "lr": 2e-3,
    "weight_decay": 1e-4,
    "sigma_px": 1.0,            # target Gaussian sigma, heatmap pixels
    "reg_weight": 1.0,          # JS regulariser weight
    "phantom_fraction": 0.4,    # share of each batch drawn from the phantom (when given)
    "real_holdout": None,       # list of SPIDER study ids never trained on; None -> chosen by seed
    "n_real_holdout": 5,
    "study11_all_slices": True,  # SPIDER study 11's off-centre slices as extra training views
    # domain randomisation: this many copies of each phantom training image synthesised from its
    # tissue map (manifest column sagittal_tissue_map; lumbargrade.segmentation.synth), drawn like
    # the rendered images; 0 = none. ``synth``: SynthConfig overrides (its intensity and acquisition
    # part applies; the spatial augmentation is the trainer's own)
    "synth_copies": 0,
    "synth": {},
    "threads": 1,
    "eval_every": 500,
    "aug": {
        "p_crop": 0.5, "rot_deg": 15.0, "scale": [0.85, 1.15], "aspect": [0.92, 1.08],
        "shift": 0.08, "p_flip": 0.5, "gain": [0.8, 1.2], "bias": 0.1, "gamma": [0.7, 1.5],
        "noise": [0.0, 0.06],
    },
}


@dataclass
class Sample:
    """One training/evaluation image: intensity-normalised (rows, cols) image, (5, 2) [row, col]
    targets in its pixels, spacing (row, col) mm or None, group id (study/patient), source."""

    image: np.ndarray
    targets: np.ndarray
    spacing: tuple[float, float] | None
    group: str
    source: str
    name: str
    tissues: np.ndarray | None = None  # tissue codes of the slice (phantom), for domain randomisation


# --------------------------------------------------------------------------- data
def _prep_image(img: np.ndarray, pre: dict[str, Any]) -> np.ndarray:
    from .landmarks import normalise_intensity

    return normalise_intensity(img, pre["percentiles"], pre["clip"])


def load_real(root: str | Path, pre: dict[str, Any]) -> list[Sample]:
    """SPIDER slices with five lumbar disc centres (slices where five are not found are skipped)."""
    from .spider import list_spider, lumbar_disc_centres, read_spider_image, read_spider_mask

    out = []
    for s in list_spider(root):
        c = lumbar_disc_centres(read_spider_mask(s.mask))
        if c is None:
            continue
        img = _prep_image(read_spider_image(s.image), pre)
        out.append(Sample(img, c, None, s.study, "real", s.image.name))
    return out


def _load_sagittal_file(p: Path) -> tuple[np.ndarray, tuple[float, float] | None]:
    from ..manifest import load_image_file

    if p.suffix.lower() in (".png", ".npy", ".jpg", ".jpeg", ".tif", ".tiff", ".bmp"):
        return load_image_file(p), None
    import pydicom

    from ..errors import InputError

    try:
        ds = pydicom.dcmread(p)
        arr = ds.pixel_array.astype(np.float32)
    except Exception as e:
        raise InputError(p, f"cannot read sagittal image ({e.__class__.__name__}: {e})") from e
    arr = arr * float(getattr(ds, "RescaleSlope", 1) or 1) + float(getattr(ds, "RescaleIntercept", 0) or 0)
    ps = getattr(ds, "PixelSpacing", None)
    return arr, (None if ps is None else (float(ps[0]), float(ps[1])))


def load_manifest(path: str | Path, pre: dict[str, Any]) -> dict[str, list[Sample]]:
    """Manifest rows with ``sagittal_image`` + landmarks -> samples by split (one per image)."""
    from ..errors import InputError
    from ..manifest import read_manifest

    rows = read_manifest(path, required=("patient_id", "split", "level"))
    groups: dict[tuple[str, str], dict] = {}
    for r in rows:
        if not r.get("sagittal_image") or r.get("landmark_row", "") == "" or r.get("landmark_col", "") == "":
            continue
        key = (r["_base_dir"], r["sagittal_image"])
        g = groups.setdefault(key, {"split": r["split"], "patient": r["patient_id"], "lm": {},
                                    "tissues": r.get("sagittal_tissue_map", "")})
        try:
            g["lm"][r["level"]] = (float(r["landmark_row"]), float(r["landmark_col"]))
        except ValueError as e:
            raise InputError(f"manifest line {r.get('_line')}", "landmark_row/landmark_col not numbers") from e
    out: dict[str, list[Sample]] = {"train": [], "val": [], "test": []}
    for (base, rel), g in groups.items():
        if any(lv not in g["lm"] for lv in LEVELS):
            continue
        p = Path(rel) if Path(rel).is_absolute() else Path(base) / rel
        if not p.is_file():
            raise InputError(p, "sagittal_image not found")
        img, sp = _load_sagittal_file(p)
        tg = np.array([g["lm"][lv] for lv in LEVELS], dtype=float)
        tis = None
        if g.get("tissues"):
            from ..manifest import load_image_file

            tp = Path(g["tissues"]) if Path(g["tissues"]).is_absolute() else Path(base) / g["tissues"]
            if not tp.is_file():
                raise InputError(tp, "sagittal_tissue_map not found")
            tis = load_image_file(tp).astype(np.uint8)
            if tis.shape != img.shape:
                raise InputError(tp, f"tissue map shape {tis.shape} differs from the image's {img.shape}")
        out.setdefault(g["split"], []).append(Sample(_prep_image(img, pre), tg, sp, g["patient"], "phantom", p.name,
                                                     tis))
    if not any(out.values()):
        raise InputError(path, "no rows with sagittal_image, landmark_row and landmark_col for all five levels")
    return out


# --------------------------------------------------------------------------- augmentation
def _about_centre(size: int, rot_deg: float, scale: float, aspect: float, shift: tuple[float, float],
                  flip: bool) -> np.ndarray:
    c = (size - 1) / 2.0
    t = math.radians(rot_deg)
    r = np.array([[math.cos(t), -math.sin(t)], [math.sin(t), math.cos(t)]])
    s = np.diag([scale * aspect, scale / aspect])
    a = r @ s
    if flip:
        a = a @ np.diag([1.0, -1.0])
    m = np.eye(3)
    m[:2, :2] = a
    m[:2, 2] = np.array([c, c]) - a @ np.array([c, c]) + np.array(shift) * size
    return m


def augment(sample: Sample, rng: np.random.Generator, pre: dict[str, Any], aug: dict[str, Any]
            ) -> tuple[np.ndarray, np.ndarray]:
    """One augmented view: ((size, size) input, (5, 2) targets in input pixels [row, col]).

    Crops that cut off the top and/or bottom keep all five targets inside (with half a disc
    spacing of margin); then rotation, scaling, aspect change, shift and left-right flip (targets
    that would leave the field are avoided by retrying), then gain, bias, gamma and noise.
    """
    from .landmarks import preprocess_transform, resample

    size = int(pre["size"])
    h, w = sample.image.shape
    t = sample.targets
    gap = float(np.median(np.hypot(*np.diff(t, axis=0).T)))
    crop = None
    if rng.random() < aug["p_crop"]:
        lo = max(0.0, t[:, 0].min() - 0.6 * gap)
        hi = min(float(h), t[:, 0].max() + 0.6 * gap)
        r0 = rng.uniform(0.0, lo) if lo > 0 else 0.0
        r1 = rng.uniform(hi, float(h)) if hi < h else float(h)
        crop = (r0, r1)
    base = preprocess_transform((h, w), sample.spacing, size, crop)
    for _ in range(10):
        a = _about_centre(
            size,
            rng.uniform(-aug["rot_deg"], aug["rot_deg"]),
            rng.uniform(*aug["scale"]),
            rng.uniform(*aug["aspect"]),
            (rng.uniform(-aug["shift"], aug["shift"]), rng.uniform(-aug["shift"], aug["shift"])),
            rng.random() < aug["p_flip"],
        )
        m = a @ base
        tt = (np.c_[t, np.ones(len(t))] @ m.T)[:, :2]
        if np.all((tt > 4) & (tt < size - 5)):
            break
    else:
        m = base
        tt = (np.c_[t, np.ones(len(t))] @ m.T)[:, :2]
    x = resample(sample.image, m, size, pre.get("antialias_sigma_per_scale", 0.4))
    x = x * rng.uniform(*aug["gain"]) + rng.uniform(-aug["bias"], aug["bias"])
    g = rng.uniform(*aug["gamma"])
    x = np.sign(x) * np.abs(x) ** g
    x = x + rng.normal(0.0, rng.uniform(*aug["noise"]), x.shape)
    return x.astype(np.float32), tt


def add_synthetic_copies(samples: Sequence[Sample], n: int, synth: dict | None, pre: dict[str, Any],
                         seed: int = 0) -> list[Sample]:
    """``samples`` plus ``n`` domain-randomised copies of each sample that has a tissue map: the
    image drawn anew from its tissue codes (:func:`lumbargrade.segmentation.synth.synthesize`,
    recipe ``synth``), same geometry and targets, source ``"phantom-synth"``."""
    from dataclasses import replace

    out = list(samples)
    todo = [s for s in samples if s.tissues is not None]
    if n <= 0 or not todo:
        return out
    from ..phantom.tissues import Tissue
    from ..segmentation.synth import SynthConfig, synthesize

    cfg = SynthConfig.from_dict(dict(synth or {}))
    rng = np.random.default_rng([seed, 7])
    for s in todo:
        sp = float(np.mean(s.spacing)) if s.spacing else 1.0
        for _ in range(n):
            img = synthesize(s.tissues, s.tissues == int(Tissue.CSF), sp, rng, cfg)
            out.append(replace(s, image=_prep_image(img, pre), source="phantom-synth", tissues=None))
    return out


def _input_for_eval(sample: Sample, pre: dict[str, Any]) -> tuple[np.ndarray, np.ndarray]:
    from .landmarks import preprocess_transform, resample

    size = int(pre["size"])
    m = preprocess_transform(sample.image.shape, sample.spacing, size)
    return resample(sample.image, m, size, pre.get("antialias_sigma_per_scale", 0.4)), m


# --------------------------------------------------------------------------- evaluation
def _bootstrap_ci(values_by_group: dict[str, list[float]], n_boot: int = 2000, seed: int = 0,
                  alpha: float = 0.05) -> tuple[float, float]:
    """Percentile bootstrap CI of the mean, resampling groups (studies / patients)."""
    groups = list(values_by_group)
    if not groups:
        return (float("nan"), float("nan"))
    try:  # the project's metrics module when present
        from ..metrics import bootstrap_ci  # type: ignore[attr-defined]
    except ImportError:
        bootstrap_ci = None
    vals = [np.asarray(values_by_group[g], dtype=float) for g in groups]
    if bootstrap_ci is not None:
        try:
            ids = np.concatenate([[i] * len(v) for i, v in enumerate(vals)])
            res = bootstrap_ci(lambda idx: float(np.mean(np.concatenate([vals[i] for i in np.unique(ids[idx])]))),
                               groups=ids, n_boot=n_boot, seed=seed)
            return (float(res[0]), float(res[1]))
        except Exception:  # noqa: BLE001 - fall back to the local helper on any API mismatch
            pass
    rng = np.random.default_rng(seed)
    stats = []
    for _ in range(n_boot):
        pick = rng.integers(0, len(vals), len(vals))
        stats.append(float(np.mean(np.concatenate([vals[i] for i in pick]))))
    return (float(np.percentile(stats, 100 * alpha / 2)), float(np.percentile(stats, 100 * (1 - alpha / 2))))


def evaluate(pred_rc: Sequence[np.ndarray], samples: Sequence[Sample]) -> dict[str, Any]:
    """Landmark errors of predictions ``(5, 2)`` per sample against its targets.

    Returns per-level and overall mean error in pixels, as a fraction of image height, and in
    mm (samples with spacing), each with a 95% bootstrap CI by group, and the level
    identification accuracy (a landmark counts as identified when it is nearer its own true disc
    than any other true disc; ``all_identified`` per image).
    """
    out: dict[str, Any] = {"n_images": len(samples), "n_groups": len({s.group for s in samples})}
    per: dict[str, dict[str, dict[str, list[float]]]] = {k: {lv: {} for lv in (*LEVELS, "all")}
                                                         for k in ("px", "frac_height", "mm")}
    ident, all_ok = [], []
    for p, s in zip(pred_rc, samples):
        p = np.asarray(p, dtype=float)
        d_px = np.hypot(*(p - s.targets).T)
        h = s.image.shape[0]
        if s.spacing is not None:
            d_mm = np.hypot((p[:, 0] - s.targets[:, 0]) * s.spacing[0], (p[:, 1] - s.targets[:, 1]) * s.spacing[1])
        else:
            d_mm = None
        for k, lv in enumerate(LEVELS):
            for key, val in (("px", d_px[k]), ("frac_height", d_px[k] / h), ("mm", None if d_mm is None else d_mm[k])):
                if val is None:
                    continue
                per[key][lv].setdefault(s.group, []).append(float(val))
                per[key]["all"].setdefault(s.group, []).append(float(val))
        dist = np.hypot(p[:, None, 0] - s.targets[None, :, 0], p[:, None, 1] - s.targets[None, :, 1])
        ok = np.argmin(dist, axis=1) == np.arange(len(LEVELS))
        ident.extend(ok.tolist())
        all_ok.append(bool(ok.all()))
    for key, d in per.items():
        if not d["all"]:
            continue
        out[key] = {}
        for lv, by_group in d.items():
            vals = [v for vs in by_group.values() for v in vs]
            lo, hi = _bootstrap_ci(by_group)
            out[key][lv] = {"mean": float(np.mean(vals)), "ci95": [lo, hi], "max": float(np.max(vals))}
    out["level_identification_accuracy"] = float(np.mean(ident)) if ident else float("nan")
    out["images_all_levels_identified"] = float(np.mean(all_ok)) if all_ok else float("nan")
    return out


def predict_samples(net, samples: Sequence[Sample], pre: dict[str, Any], flip_tta: bool = True) -> list[np.ndarray]:
    """Network predictions ``(5, 2)`` [row, col] in each sample's own pixels."""
    from .landmarks import LoadedLandmarkModel, predict_landmarks

    model = LoadedLandmarkModel(net, {"preprocess": pre}, Path("."))
    out = []
    for s in samples:
        # samples are already intensity-normalised; normalising again is a no-op up to clipping
        r = predict_landmarks(model, s.image, s.spacing, flip_tta=flip_tta)
        out.append(np.stack([r.rows, r.cols], axis=1))
    return out


# --------------------------------------------------------------------------- training
def one_cycle(opt, lr: float, steps: int):
    """The one-cycle learning-rate schedule of the landmark trainers (PyTorch's ``OneCycleLR``,
    peak ``lr``): warm-up over the first 10% of ``steps``, then cosine annealing. From 3 steps on
    the warm-up lasts at least 2 steps: PyTorch divides by zero where it would last exactly one
    (10 steps at 10%)."""
    import torch

    from ..errors import InputError

    if steps < 1:
        raise InputError("--set steps", f"must be at least 1, got {steps}")
    pct = 0.1 if steps < 3 else max(0.1, 2.0 / steps)
    return torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=lr, total_steps=steps, pct_start=pct)


def _choose_holdout(studies: list[str], n: int, seed: int) -> list[str]:
    cand = sorted(s for s in set(studies) if s != "11")
    rng = np.random.default_rng(seed + 12345)
    return sorted(rng.choice(cand, size=min(n, len(cand)), replace=False).tolist(), key=lambda x: int(x) if x.isdigit() else x)


def train(config: dict[str, Any], out: Path, real_root: str | None, manifest: str | None,
          log=print) -> dict[str, Any]:
    """Train with ``config`` (DEFAULT_CONFIG plus overrides); write RUN_DIR files; return metrics."""
    import torch

    from ..distributed import current  # data-parallel hook (lumbargrade.distributed): rank 0 writes
    from .dsnt import (
        euclidean_loss,
        js_regulariser,
        pixel_to_normalized,
        soft_argmax,
        spatial_softmax,
    )
    from .landmarks import ARCH_DEFAULTS, PREPROCESS_DEFAULTS, create_model, save_model

    dist = current()
    if not dist.is_main:
        log = _silent
    torch.set_num_threads(int(config["threads"]))
    seed = int(config["seed"])
    torch.manual_seed(seed)
    rng = np.random.default_rng(seed)
    pre = dict(PREPROCESS_DEFAULTS, **config.get("preprocess", {}))
    arch = dict(ARCH_DEFAULTS, **config.get("arch", {}))
    config["preprocess"], config["arch"] = pre, arch

    real_train: list[Sample] = []
    real_test: list[Sample] = []
    if real_root:
        real = load_real(real_root, pre)
        hold = config.get("real_holdout") or _choose_holdout([s.group for s in real], int(config["n_real_holdout"]), seed)
        config["real_holdout"] = list(hold)
        real_test = [s for s in real if s.group in hold]
        real_train = [s for s in real if s.group not in hold]
        if not config["study11_all_slices"]:
            s11 = [s for s in real_train if s.group == "11"]
            if s11:
                mid = s11[len(s11) // 2]
                real_train = [s for s in real_train if s.group != "11"] + [mid]
        log(f"real: {len(real_train)} training slices from {len({s.group for s in real_train})} studies; "
            f"held out studies {hold} ({len(real_test)} slices)")
    ph: dict[str, list[Sample]] = {"train": [], "val": [], "test": []}
    if manifest:
        ph = load_manifest(manifest, pre)
        log(f"phantom: {len(ph['train'])} train, {len(ph.get('val', []))} val, {len(ph.get('test', []))} test images")
    if not real_train and not ph["train"]:
        from ..errors import InputError

        raise InputError(manifest or real_root or "--data", "no training images (give --data and/or --real)")

    # sample real images by study (study 11's slices share one study's weight)
    by_study: dict[str, list[Sample]] = {}
    for s in real_train:
        by_study.setdefault(s.group, []).append(s)
    studies = sorted(by_study)
    p_ph = float(config["phantom_fraction"]) if ph["train"] and real_train else (1.0 if ph["train"] else 0.0)

    n_before = len(ph["train"])
    ph["train"] = add_synthetic_copies(ph["train"], int(config.get("synth_copies", 0)), config.get("synth"),
                                       pre, seed)
    if len(ph["train"]) > n_before:
        log(f"domain randomisation: {len(ph['train']) - n_before} phantom images synthesised from tissue maps")

    def draw() -> Sample:
        if rng.random() < p_ph:
            return ph["train"][rng.integers(len(ph["train"]))]
        st = by_study[studies[rng.integers(len(studies))]]
        return st[rng.integers(len(st))]

    net = create_model(arch["name"], **{k: v for k, v in arch.items() if k != "name"})
    opt = torch.optim.AdamW(net.parameters(), lr=float(config["lr"]), weight_decay=float(config["weight_decay"]))
    steps = int(config["steps"])
    sched = one_cycle(opt, float(config["lr"]), steps)
    train_net = dist.wrap(net)  # data-parallel hook: DDP for the training forward only
    start = 0
    ck = out / "checkpoint.pt"
    if ck.is_file():
        state = torch.load(ck, map_location="cpu", weights_only=False)
        net.load_state_dict(state["model"])
        opt.load_state_dict(state["opt"])
        sched.load_state_dict(state["sched"])
        start = int(state["step"])
        rng = np.random.default_rng(seed + start)
        log(f"resumed from step {start}")
    size = int(pre["size"])
    bs = int(config["batch_size"])
    sigma = float(config["sigma_px"])
    t0 = time.time()
    net.train()
    for step in range(start, steps):
        xs, ts = [], []
        for _ in range(bs):
            x, t = augment(draw(), rng, pre, config["aug"])
            xs.append(x)
            ts.append(t)
        n_global = len(xs)
        x_np, t_np = dist.shard(np.stack(xs)[:, None], np.stack(ts))  # data-parallel hook: this rank's part
        x = torch.from_numpy(x_np)
        tgt = pixel_to_normalized(torch.from_numpy(t_np).float(), size, size)
        heat = spatial_softmax(train_net(x))
        xy = soft_argmax(heat)
        loss_e = euclidean_loss(xy, tgt).mean()
        loss_r = js_regulariser(heat, tgt, sigma).mean()
        loss = loss_e + float(config["reg_weight"]) * loss_r
        opt.zero_grad()
        (loss * dist.loss_scale(n_global)).backward()
        opt.step()
        sched.step()
        if (step + 1) % 25 == 0:
            err_px = float(loss_e.detach()) * size / 2.0
            log(f"step {step + 1}/{steps} loss {float(loss.detach()):.4f} coord-err {err_px:.1f} input-px "
                f"js {float(loss_r.detach()):.3f} {time.time() - t0:.0f}s")
        if dist.is_main and ((step + 1) % int(config["eval_every"]) == 0 or step + 1 == steps):
            torch.save({"model": net.state_dict(), "opt": opt.state_dict(), "sched": sched.state_dict(),
                        "step": step + 1}, ck)
            if ph.get("val"):
                net.eval()
                m = evaluate(predict_samples(net, ph["val"], pre), ph["val"])
                net.train()
                log(f"  phantom val: mean {m['mm']['all']['mean']:.2f} mm" if "mm" in m else
                    f"  phantom val: mean {m['px']['all']['mean']:.2f} px")
    if not dist.is_main:  # data-parallel hook: rank 0 evaluates and writes
        return {}
    net.eval()
    metrics: dict[str, Any] = {"steps": steps, "train_seconds": round(time.time() - t0, 1),
                               "selection": "weights of the last step (held-out data not used for selection)"}
    if real_test:
        preds = predict_samples(net, real_test, pre)
        metrics["real_heldout"] = evaluate(preds, real_test)
        metrics["real_heldout"]["studies"] = config["real_holdout"]
        metrics["real_heldout"]["per_image"] = [
            {"image": s.name, "pred_rc": np.round(p, 1).tolist(), "true_rc": np.round(s.targets, 1).tolist()}
            for s, p in zip(real_test, preds)]
        m = metrics["real_heldout"]
        log(f"real held-out: mean {m['px']['all']['mean']:.1f} px = {100 * m['frac_height']['all']['mean']:.2f}% "
            f"of height; identification {m['level_identification_accuracy']:.3f}")
    for split in ("val", "test"):
        if ph.get(split):
            metrics[f"phantom_{split}"] = evaluate(predict_samples(net, ph[split], pre), ph[split])
    config["levels"] = list(LEVELS)
    save_model(net, out, config)
    (out / "metrics.json").write_text(json.dumps(metrics, indent=2) + "\n")
    return metrics


def _parse_sets(items: Sequence[str]) -> dict[str, Any]:
    from ..errors import InputError

    out: dict[str, Any] = {}
    for it in items:
        if "=" not in it:
            raise InputError(f"--set {it}", "expected KEY=VALUE")
        k, v = it.split("=", 1)
        try:
            val = json.loads(v)
        except json.JSONDecodeError:
            val = v
        out[k.strip()] = val
    return out


def run_cli(args) -> int:
    """Entry point of ``lumbargrade train landmarks``."""
    from ..errors import InputError

    out = Path(args.out)
    if out.exists() and (out / "model.safetensors").exists() and not args.overwrite and not (out / "checkpoint.pt").exists():
        raise InputError(out, "holds a finished run (use --overwrite or another --out)")
    if args.overwrite and out.exists():
        for name in ("checkpoint.pt", "model.safetensors", "metrics.json", "train.log"):
            (out / name).unlink(missing_ok=True)
    out.mkdir(parents=True, exist_ok=True)
    config = json.loads(json.dumps(DEFAULT_CONFIG))
    if args.config:
        try:
            config.update(json.loads(Path(args.config).read_text()))
        except (OSError, json.JSONDecodeError) as e:
            raise InputError(args.config, f"cannot read config JSON ({e.__class__.__name__})") from e
    for k, v in _parse_sets(args.set).items():
        if k.startswith("aug."):
            config["aug"][k[4:]] = v
        elif k not in config and k not in ("preprocess", "arch"):
            raise InputError(f"--set {k}", f"unknown config key (known: {', '.join(sorted(config))})")
        else:
            config[k] = v
    config["seed"] = int(args.seed)
    manifest = None if str(args.data).lower() == "none" else args.data
    real = getattr(args, "real", None)
    if real and not Path(real).is_dir():
        raise InputError(real, "--real must be a SPIDER-layout folder (images/, masks/)")
    import shlex

    argv = getattr(args, "_argv", None) or sys.argv[1:]
    config["command"] = "lumbargrade " + " ".join(shlex.quote(a) for a in argv)
    config["data"] = {"manifest": manifest, "real": real}
    config["architecture"] = config.get("arch", {}).get("name", "dsnt_unet_small")
    parts = []
    if real:
        parts.append("SPIDER sagittal T2 PNG slices (van der Graaf et al., Sci Data 2024; CC BY 4.0), "
                     "held-out studies excluded")
    if manifest:
        parts.append(f"sagittal images of manifest {manifest} (split train)")
    config["trained_on"] = "; ".join(parts)
    (out / "command.txt").write_text(config["command"] + "\n")
    config["workers"] = int(getattr(args, "workers", 1) or 1)
    from ..distributed import launch  # data-parallel hook: --workers N processes (DDP)

    launch(_train_logged, config["workers"], config, out, real, manifest, ray_address=getattr(args, "ray", None))
    return 0


def _train_logged(config: dict[str, Any], out: Path, real: str | None, manifest: str | None) -> dict[str, Any]:
    """:func:`train` with the run's train.log (rank 0 of a data-parallel run logs; the others are
    silent). Module-level, so that worker processes can be given it."""
    from ..distributed import current

    if not current().is_main:
        return train(config, out, real, manifest, _silent)
    log, close = run_logger(out / "train.log")
    try:
        return train(config, out, real, manifest, log)
    finally:
        close()


def _silent(msg: str) -> None:
    """The log of data-parallel ranks other than 0 (they write nothing)."""


def run_logger(path: Path):
    """``(log, close)``: ``log(msg)`` prints a line and appends it to ``path`` (a run's train.log)."""
    log_f = open(path, "a")

    def log(msg: str) -> None:
        print(msg, flush=True)
        log_f.write(msg + "\n")
        log_f.flush()

    return log, log_f.close
