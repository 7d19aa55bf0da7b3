"""Second look at each disc: local refinement of the coarse disc-centre landmarks.

The coarse DSNT network (:mod:`lumbargrade.levels.landmarks`) sees the whole mid-sagittal slice
at 256 x 256 and its heatmaps have a stride of 4 input pixels (about 4-6 mm), which limits its
precision along the spine to roughly a millimetre. The axial slice choice needs better: slices
are 3-5 mm apart, so a disc centre 1 mm from the midpoint between two slices is picked wrongly
by a 1 mm error. The refiner looks again at each disc on a patch that is

* centred on the coarse landmark ``k``,
* rotated so that its rows run along the local spine axis (from landmark ``k-1`` to ``k+1``,
  one-sided at the ends) and its columns across it (towards the image's columns),
* ``crop_factor`` x the mean distance between adjacent coarse landmarks on a side (so the scale
  comes from the anatomy itself: PNG slices without spacing work too), resampled to
  ``size`` x ``size`` pixels (about 0.6 mm per pixel for an adult lumbar spine),

and a small DSNT network (one heatmap, stride 2) finds the disc centre in it. Coordinates go back
to the slice through the patch's affine frame. Trained on true landmarks with random
displacement, rotation and scale of the frame (simulating the coarse network's errors).
"""

from __future__ import annotations

import json
import math
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from .names import LEVELS

__all__ = [
    "REFINER_DEFAULTS",
    "LoadedRefiner",
    "TRAIN_DEFAULTS",
    "crop_patch",
    "load_refiner",
    "patch_frame",
    "refine_landmarks",
    "repair_skipped_discs",
    "train_refiner",
]

REFINER_DEFAULTS: dict[str, Any] = {
    "size": 64,
    "crop_factor": 1.0,
    "widths": [16, 32, 48, 64],
    "out_stride": 2,
}

TRAIN_DEFAULTS: dict[str, Any] = {
    "steps": 2500,
    "batch_size": 32,
    "lr": 0.002,
    "weight_decay": 1e-4,
    "sigma_px": 1.0,
    "reg_weight": 1.0,
    "phantom_fraction": 0.5,
    "jitter_frac": 0.08,  # sd of the frame centre's displacement, x the mean disc spacing
    "neighbour_jitter_frac": 0.05,  # sd of the neighbours' displacement (axis and scale errors)
    "rot_deg": 8.0,
    "scale": [0.85, 1.15],
    "p_flip": 0.5,
    "gain": [0.8, 1.2],
    "bias": 0.1,
    "gamma": [0.7, 1.5],
    "noise": [0.0, 0.06],
    "threads": 1,
    "seed": 0,
    "synth_copies": 0,  # domain-randomised copies of each phantom image (as the coarse trainer's)
    "synth": {},
}


# --------------------------------------------------------------------------- geometry
def patch_frame(
    rc: np.ndarray,
    k: int,
    spacing: Sequence[float] | None,
    size: int,
    crop_factor: float = 1.0,
    rot_deg: float = 0.0,
    scale: float = 1.0,
) -> np.ndarray:
    """3x3 matrix mapping patch ``[i, j, 1]`` to slice ``[row, col, 1]`` pixels for landmark ``k``.

    ``rc``: (n, 2) landmarks [row, col] in slice pixels; ``spacing``: (row, col) mm or None
    (square pixels assumed). Patch rows follow the spine axis at landmark ``k`` (downwards), patch
    columns the perpendicular pointing towards increasing slice columns. ``rot_deg`` and ``scale``
    perturb the frame (training augmentation).
    """
    sr, sc = (1.0, 1.0) if spacing is None else (float(spacing[0]), float(spacing[1]))
    s = np.array([sr, sc])
    p = np.asarray(rc, dtype=float) * s  # physical (mm or px) coordinates
    n = len(p)
    a, b = max(k - 1, 0), min(k + 1, n - 1)
    u = p[b] - p[a]
    u = u / (np.linalg.norm(u) or 1.0)
    if u[0] < 0:
        u = -u
    t = math.radians(rot_deg)
    u = np.array([math.cos(t) * u[0] - math.sin(t) * u[1], math.sin(t) * u[0] + math.cos(t) * u[1]])
    v = np.array([-u[1], u[0]])
    if v[1] < 0:
        v = -v
    gap = float(np.mean(np.linalg.norm(np.diff(p, axis=0), axis=1))) if n > 1 else 40.0
    step = crop_factor * scale * gap / size
    c = (size - 1) / 2.0
    m = np.eye(3)
    m[:2, 0] = step * u / s
    m[:2, 1] = step * v / s
    m[:2, 2] = (p[k] - c * step * (u + v)) / s
    return m


def crop_patch(image: np.ndarray, frame: np.ndarray, size: int) -> np.ndarray:
    """Sample ``image`` (rows, cols) on the ``size`` x ``size`` patch of ``frame`` (linear, 0
    outside), Gaussian pre-smoothed when the patch is coarser than the slice."""
    from scipy import ndimage

    img = np.asarray(image, dtype=np.float32)
    step = math.sqrt(abs(np.linalg.det(frame[:2, :2])))  # slice pixels per patch pixel
    if step > 1.3:
        img = ndimage.gaussian_filter(img, sigma=0.4 * step)
    return ndimage.affine_transform(
        img, frame[:2, :2], offset=frame[:2, 2], output_shape=(size, size), order=1, cval=0.0
    ).astype(np.float32)


def _apply(m: np.ndarray, rc: np.ndarray) -> np.ndarray:
    rc = np.atleast_2d(np.asarray(rc, dtype=float))
    return (np.c_[rc, np.ones(len(rc))] @ m.T)[:, :2]


# --------------------------------------------------------------------------- model
def create_refiner(widths: Sequence[int] = (16, 32, 48, 64), out_stride: int = 2, **_: Any):
    """The refiner network: the landmark U-Net with one heatmap (random weights)."""
    from .landmarks import _build_unet

    return _build_unet(n_points=1, widths=tuple(widths), out_stride=int(out_stride))


@dataclass
class LoadedRefiner:
    """A refiner network in eval mode with its config (``refiner``, ``preprocess``...)."""

    net: Any
    config: dict[str, Any]
    folder: Path

    @property
    def params(self) -> dict[str, Any]:
        return dict(REFINER_DEFAULTS, **self.config.get("refiner", {}))


def load_refiner(folder: str | Path, runtime: str | None = None) -> LoadedRefiner:
    """Load a refiner folder (``config.json`` + ``model.safetensors``; ``model.onnx`` per
    ``runtime``, see :mod:`lumbargrade.runtime`)."""
    from ..errors import InputError
    from ..runtime import load_onnx_net, resolve_runtime

    folder = Path(folder)
    cfg_p, w_p = folder / "config.json", folder / "model.safetensors"
    if not cfg_p.is_file() or not w_p.is_file():
        raise InputError(folder, "not a landmark refiner folder (needs config.json and model.safetensors)")
    config = json.loads(cfg_p.read_text())
    net = load_onnx_net(folder, resolve_runtime(runtime))
    if net is None:
        from safetensors.torch import load_file

        net = create_refiner(**dict(REFINER_DEFAULTS, **config.get("refiner", {})))
        try:
            net.load_state_dict(load_file(str(w_p)))
        except (RuntimeError, OSError) as e:
            raise InputError(w_p, f"weights do not fit the refiner architecture ({e.__class__.__name__})") from e
        net.eval()
    return LoadedRefiner(net, config, folder)


def _predict_patches(net, patches: np.ndarray, flip_tta: bool = True) -> tuple[np.ndarray, np.ndarray]:
    """(B, S, S) patches -> ((B, 2) [i, j] patch coordinates of the disc centre, (B,) heatmap
    concentration in [0, 1]: how sharply the network points at one place)."""
    from ..runtime import run_net
    from .heatmaps import decode_heatmaps, normalized_to_pixel

    size = patches.shape[-1]
    x = patches[:, None].astype(np.float32)
    if flip_tta:
        x = np.concatenate([x, x[..., ::-1]], axis=0)
    xy, conc = decode_heatmaps(run_net(net, x))
    xy, conc = xy[:, 0], conc[:, 0]
    if flip_tta:
        b = len(patches)
        xy[b:, 0] = -xy[b:, 0]
        xy = 0.5 * (xy[:b] + xy[b:])
        conc = 0.5 * (conc[:b] + conc[b:])
    return normalized_to_pixel(xy, size, size), conc


def refine_landmarks(
    refiner: LoadedRefiner,
    image: np.ndarray,
    rc: np.ndarray,
    spacing: Sequence[float] | None = None,
    normalised: bool = False,
    max_shift_frac: float = 0.35,
    return_concentration: bool = False,
):
    """Refined (n, 2) [row, col] landmarks on ``image`` (rows, cols) from coarse ``rc``.

    ``normalised``: the image already has the landmark model's intensity normalisation. A
    refined point that moves more than ``max_shift_frac`` x the mean disc spacing from the coarse
    one is not trusted (the coarse point is kept). ``return_concentration`` also returns each
    patch's heatmap concentration (n,).
    """
    from .landmarks import PREPROCESS_DEFAULTS, normalise_intensity

    prm = refiner.params
    size = int(prm["size"])
    rc = np.asarray(rc, dtype=float)
    img = np.asarray(image, dtype=np.float32)
    if not normalised:
        pre = dict(PREPROCESS_DEFAULTS, **refiner.config.get("preprocess", {}))
        img = normalise_intensity(img, pre["percentiles"], pre["clip"])
    frames = [patch_frame(rc, k, spacing, size, float(prm["crop_factor"])) for k in range(len(rc))]
    patches = np.stack([crop_patch(img, f, size) for f in frames])
    ij, conc = _predict_patches(refiner.net, patches)
    out = np.stack([_apply(f, p)[0] for f, p in zip(frames, ij)])
    s = np.array([1.0, 1.0]) if spacing is None else np.asarray(spacing, dtype=float)
    phys = rc * s
    gap = float(np.mean(np.linalg.norm(np.diff(phys, axis=0), axis=1))) if len(rc) > 1 else np.inf
    moved = np.linalg.norm((out - rc) * s, axis=1)
    keep = moved > max_shift_frac * gap
    out[keep] = rc[keep]
    conc = np.where(keep, 0.0, conc)  # an untrusted point carries no evidence
    if return_concentration:
        return out, conc
    return out


def repair_skipped_discs(
    refiner: LoadedRefiner,
    image: np.ndarray,
    rc: np.ndarray,
    spacing: Sequence[float] | None = None,
    normalised: bool = False,
    skip_ratio: float = 1.3,
    accept_ratio: tuple[float, float] = (0.7, 1.35),
) -> tuple[np.ndarray, list[str]]:
    """Re-find upper landmarks that sit one disc too high (a disc skipped: the classic level-count
    error of a network that sees T12/L1 above L1/L2).

    The lower three landmarks (L3/L4..L5/S1, next to the sacrum, rarely wrong) set the reference
    disc spacing when their two gaps agree (within 30%). Going up (L2/L3, then L1/L2), a gap longer
    than ``skip_ratio`` x the reference is taken as a skipped disc: the landmark is re-seeded one
    disc spacing above the level below it (continuing the local spine direction), refined on its
    patch, and kept only if the new gap is within ``accept_ratio`` x the reference and the
    refiner's heatmap there is at least half as concentrated as at the anchor discs. Returns
    ``(rc, notes)``; ``notes`` name each repaired level. Coordinates as in :func:`refine_landmarks`.
    """
    rc = np.asarray(rc, dtype=float).copy()
    notes: list[str] = []
    if len(rc) != 5:
        return rc, notes
    s = np.array([1.0, 1.0]) if spacing is None else np.asarray(spacing, dtype=float)

    def gap(a: np.ndarray, b: np.ndarray) -> float:
        return float(np.linalg.norm((a - b) * s))

    g2, g3 = gap(rc[2], rc[3]), gap(rc[3], rc[4])
    if min(g2, g3) <= 0 or max(g2, g3) / min(g2, g3) > 1.3:
        return rc, notes
    ref = 0.5 * (g2 + g3)
    for k in (1, 0):
        if gap(rc[k], rc[k + 1]) <= skip_ratio * ref:
            continue
        up = rc[k + 1] - rc[k + 2]  # one disc upwards, in slice pixels
        seed = rc.copy()
        seed[k] = rc[k + 1] + up * (ref / max(gap(rc[k + 1], rc[k + 2]), 1e-6))
        new_all, conc_new = refine_landmarks(refiner, image, seed, spacing, normalised=normalised,
                                             return_concentration=True)
        _, conc_old = refine_landmarks(refiner, image, rc, spacing, normalised=normalised,
                                       return_concentration=True)
        new = new_all[k]
        g = gap(new, rc[k + 1])
        # the refiner must point sharply at the new place: at least half as sharply as at the
        # lower (anchor) discs
        sharp = conc_new[k] >= 0.5 * float(np.median(conc_old[2:]))
        if accept_ratio[0] * ref <= g <= accept_ratio[1] * ref and sharp:
            notes.append(f"{LEVELS[k]}: re-found one disc lower than first placed "
                         f"({gap(rc[k], rc[k + 1]):.0f} -> {g:.0f} {'mm' if spacing is not None else 'px'} "
                         f"from {LEVELS[k + 1]})")
            rc[k] = new
    return rc, notes


# --------------------------------------------------------------------------- training
def _training_patch(sample, k: int, rng: np.random.Generator, prm: dict, cfg: dict):
    """One augmented (patch, [i, j] target) for landmark ``k`` of a training sample."""
    size = int(prm["size"])
    t = np.asarray(sample.targets, dtype=float)
    s = np.array([1.0, 1.0]) if sample.spacing is None else np.asarray(sample.spacing, dtype=float)
    gap = float(np.mean(np.linalg.norm(np.diff(t * s, axis=0), axis=1)))
    noisy = t + rng.normal(0.0, cfg["neighbour_jitter_frac"] * gap, t.shape) / s
    noisy[k] = t[k] + rng.normal(0.0, cfg["jitter_frac"] * gap, 2) / s
    f = patch_frame(noisy, k, sample.spacing, size, float(prm["crop_factor"]),
                    rot_deg=rng.uniform(-cfg["rot_deg"], cfg["rot_deg"]), scale=rng.uniform(*cfg["scale"]))
    target = _apply(np.linalg.inv(f), t[k])[0]
    x = crop_patch(sample.image, f, size)
    if rng.random() < cfg["p_flip"]:
        x = x[:, ::-1]
        target = np.array([target[0], size - 1 - target[1]])
    x = x * rng.uniform(*cfg["gain"]) + rng.uniform(-cfg["bias"], cfg["bias"])
    x = np.sign(x) * np.abs(x) ** rng.uniform(*cfg["gamma"])
    x = x + rng.normal(0.0, rng.uniform(*cfg["noise"]), x.shape)
    return x.astype(np.float32), target


def train_refiner(cfg: dict[str, Any], prm: dict[str, Any], phantom: Sequence, real: Sequence,
                  log=print):
    """Train a refiner on samples (:class:`lumbargrade.levels.training.Sample`, intensity-
    normalised, with true targets); returns the network (eval mode)."""
    import torch

    from ..distributed import current  # data-parallel hook (lumbargrade.distributed)
    from .dsnt import (
        euclidean_loss,
        js_regulariser,
        pixel_to_normalized,
        soft_argmax,
        spatial_softmax,
    )
    from .training import _silent, one_cycle

    dist = current()
    if not dist.is_main:
        log = _silent
    torch.set_num_threads(int(cfg["threads"]))
    torch.manual_seed(int(cfg["seed"]))
    rng = np.random.default_rng(int(cfg["seed"]))
    net = create_refiner(**prm)
    opt = torch.optim.AdamW(net.parameters(), lr=float(cfg["lr"]), weight_decay=float(cfg["weight_decay"]))
    steps = int(cfg["steps"])
    sched = one_cycle(opt, float(cfg["lr"]), steps)
    train_net = dist.wrap(net)  # data-parallel hook: DDP for the training forward only
    size = int(prm["size"])
    p_ph = float(cfg["phantom_fraction"]) if phantom and real else (1.0 if phantom else 0.0)
    by_group: dict[str, list] = {}
    for s in real:
        by_group.setdefault(s.group, []).append(s)
    groups = sorted(by_group)
    t0 = time.time()
    net.train()
    for step in range(steps):
        xs, ts = [], []
        for _ in range(int(cfg["batch_size"])):
            if rng.random() < p_ph:
                smp = phantom[rng.integers(len(phantom))]
            else:
                g = by_group[groups[rng.integers(len(groups))]]
                smp = g[rng.integers(len(g))]
            x, t = _training_patch(smp, int(rng.integers(len(smp.targets))), rng, prm, cfg)
            xs.append(x)
            ts.append(t)
        n_global = len(xs)
        x_np, t_np = dist.shard(np.stack(xs)[:, None], np.stack(ts))  # data-parallel hook: this rank's part
        x = torch.from_numpy(x_np)
        tgt = pixel_to_normalized(torch.from_numpy(t_np).float()[:, None], size, size)
        heat = spatial_softmax(train_net(x))
        xy = soft_argmax(heat)
        loss_e = euclidean_loss(xy, tgt).mean()
        loss = loss_e + float(cfg["reg_weight"]) * js_regulariser(heat, tgt, float(cfg["sigma_px"])).mean()
        opt.zero_grad()
        (loss * dist.loss_scale(n_global)).backward()
        opt.step()
        sched.step()
        if (step + 1) % 100 == 0 or step + 1 == steps:
            log(f"step {step + 1}/{steps} loss {float(loss.detach()):.4f} "
                f"coord-err {float(loss_e.detach()) * size / 2:.2f} patch-px {time.time() - t0:.0f}s")
    net.eval()
    return net


# --------------------------------------------------------------------------- command
def run_cli(args) -> int:
    """Entry point of ``lumbargrade train landmark-refiner``.

    Trains on the manifest's train-split sagittal images and (``--real``) the SPIDER slices,
    except the studies the coarse landmark model (``--landmarks``, default the packaged one) held
    out, then measures coarse and refined errors on the phantom val/test splits and those held-out
    real studies. Writes config.json, model.safetensors, metrics.json, train.log to RUN_DIR.
    """
    import shlex
    import sys

    from ..errors import InputError
    from .landmarks import load_model
    from .training import _parse_sets

    out = Path(args.out)
    if (out / "model.safetensors").exists() and not args.overwrite:
        raise InputError(out, "holds a finished run (use --overwrite or another --out)")
    manifest = None if str(args.data).lower() == "none" else args.data
    real_root = getattr(args, "real", None)
    if real_root and not Path(real_root).is_dir():
        raise InputError(real_root, "--real must be a SPIDER-layout folder (images/, masks/)")
    cfg = dict(TRAIN_DEFAULTS)
    prm = dict(REFINER_DEFAULTS)
    if args.config:
        try:
            extra = json.loads(Path(args.config).read_text())
        except (OSError, json.JSONDecodeError) as e:
            raise InputError(args.config, f"cannot read config JSON ({e.__class__.__name__})") from e
        prm.update(extra.pop("refiner", {}))
        cfg.update(extra)
    for k, v in _parse_sets(args.set).items():
        if k.startswith("refiner."):
            prm[k[8:]] = v
        elif k in cfg:
            cfg[k] = v
        else:
            raise InputError(f"--set {k}", f"unknown config key (known: {', '.join(sorted(cfg))}, refiner.*)")
    cfg["seed"] = int(args.seed)
    coarse = load_model(getattr(args, "landmarks", None))
    out.mkdir(parents=True, exist_ok=True)
    argv = getattr(args, "_argv", None) or sys.argv[1:]
    command = "lumbargrade " + " ".join(shlex.quote(a) for a in argv)
    workers = int(getattr(args, "workers", 1) or 1)
    from ..distributed import launch  # data-parallel hook: --workers N processes (DDP)

    launch(_train_and_measure, workers, cfg, prm, str(coarse.folder), manifest, real_root, out, command,
           ray_address=getattr(args, "ray", None))
    return 0


def _train_and_measure(cfg: dict[str, Any], prm: dict[str, Any], coarse_folder: str, manifest: str | None,
                       real_root: str | None, out: Path, command: str) -> dict[str, Any]:
    """Load the data, train (:func:`train_refiner`) and, on rank 0, measure coarse and refined
    errors and write the run folder; returns the metrics (``{}`` on other ranks). Module-level, so
    that data-parallel workers can be given it."""
    from safetensors.torch import save_file

    from ..distributed import current
    from ..errors import InputError
    from .landmarks import PREPROCESS_DEFAULTS, load_model
    from .training import (
        _silent,
        add_synthetic_copies,
        evaluate,
        load_manifest,
        load_real,
        predict_samples,
        run_logger,
    )

    coarse = load_model(coarse_folder)
    pre = dict(PREPROCESS_DEFAULTS, **coarse.config.get("preprocess", {}))
    hold = list(coarse.config.get("real_holdout") or [])
    main = current().is_main
    log, close = run_logger(out / "train.log") if main else (_silent, lambda: None)
    try:
        ph: dict[str, list] = {"train": [], "val": [], "test": []}
        if manifest:
            ph.update(load_manifest(manifest, pre))
        real = load_real(real_root, pre) if real_root else []
        real_train = [s for s in real if s.group not in hold]
        real_test = [s for s in real if s.group in hold]
        n0 = len(ph["train"])
        ph["train"] = add_synthetic_copies(ph["train"], int(cfg["synth_copies"]), cfg.get("synth"), pre,
                                           int(cfg["seed"]))
        if len(ph["train"]) > n0:
            log(f"domain randomisation: {len(ph['train']) - n0} phantom images synthesised from tissue maps")
        if not ph["train"] and not real_train:
            raise InputError(manifest or real_root or "--data", "no training images (give --data and/or --real)")
        log(f"refiner: {len(ph['train'])} phantom + {len(real_train)} real training images; "
            f"real held out: studies {hold} ({len(real_test)} slices)")
        t0 = time.time()
        net = train_refiner(cfg, prm, ph["train"], real_train, log=log)
        seconds = round(time.time() - t0, 1)
        if not main:  # data-parallel hook: rank 0 measures and writes
            return {}
        refiner = LoadedRefiner(net, {"refiner": prm, "preprocess": pre}, out)
        metrics: dict[str, Any] = {"steps": int(cfg["steps"]), "train_seconds": seconds,
                                   "selection": "weights of the last step (held-out data not used for selection)",
                                   "coarse_model": str(coarse.folder)}
        for name, samples in (("phantom_val", ph.get("val", [])), ("phantom_test", ph.get("test", [])),
                              ("real_heldout", real_test)):
            if not samples:
                continue
            co = predict_samples(coarse.net, samples, pre)
            rf = [refine_landmarks(refiner, s.image, c, s.spacing, normalised=True) for s, c in zip(samples, co)]
            metrics[name] = {"coarse": evaluate(co, samples), "refined": evaluate(rf, samples)}
            unit = "mm" if "mm" in metrics[name]["coarse"] else "px"
            log(f"{name}: mean error coarse {metrics[name]['coarse'][unit]['all']['mean']:.2f} {unit} -> "
                f"refined {metrics[name]['refined'][unit]['all']['mean']:.2f} {unit}; identification "
                f"{metrics[name]['refined']['level_identification_accuracy']:.3f}")
        parts = []
        if real_root:
            parts.append("SPIDER sagittal T2 PNG slices (van der Graaf et al., Sci Data 2024; CC BY 4.0), "
                         f"studies {hold} held out")
        if manifest:
            parts.append(f"sagittal images of manifest {manifest} (split train)")
        config = {"refiner": prm, "preprocess": pre, "train": cfg, "real_holdout": hold,
                  "architecture": "dsnt_unet_small (1 heatmap, local patch)",
                  "command": command, "workers": current().world_size,
                  "data": {"manifest": manifest, "real": real_root}, "trained_on": "; ".join(parts)}
        save_file({k: v.contiguous() for k, v in net.state_dict().items()}, str(out / "model.safetensors"))
        (out / "config.json").write_text(json.dumps(config, indent=2) + "\n")
        (out / "metrics.json").write_text(json.dumps(metrics, indent=2) + "\n")
    finally:
        close()
    return metrics
