"""``lumbargrade train segmentation``: train the dural sac + disc network on a manifest.

RUN_DIR receives ``config.json`` (the resolved :class:`SegConfig`), ``model.safetensors`` (weights
of the best validation epoch), ``checkpoint.pt`` (model, optimizer, epoch, best score, history and
RNG states, written after every epoch; a rerun resumes from it), ``metrics.json`` (the best
epoch's validation Dice per structure, timing, history) and ``train.log``.

Config precedence: :class:`SegConfig` defaults <- ``--config`` JSON <- ``--set key=value``
(<- ``--model``, ``--seed``). Validation Dice is measured each epoch on the ``val`` rows, on the
network's field grid (``target_spacing`` mm), per image and then averaged (an image where both
truth and prediction are empty scores 1).
"""

from __future__ import annotations

import json
import math
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path

import numpy as np

from ..errors import InputError

__all__ = ["RUN_FILES", "SegConfig", "resolve_config", "run_cli", "train_segmentation"]

# config keys that may differ when a run is resumed (run-time or inference-only settings)
_RESUME_FREE = ("epochs", "progress", "num_threads", "device", "largest_component", "recentre_mm",
                "mirror_tta")

RUN_FILES = ("config.json", "model.safetensors", "checkpoint.pt", "metrics.json", "train.log")


@dataclass
class SegConfig:
    """Segmentation training and inference settings (sizes in field pixels, spacing in mm)."""

    model: str = "unet_medium"
    model_kwargs: dict = field(default_factory=dict)
    # "segmenter": the whole-slice network (sac, disc, regions); "sac_refiner": a second look at the
    # dural sac alone, on a finer field centred on the sac (trained centred on the true sac, run
    # centred on the segmenter's outline; see Segmenter.refiner)
    role: str = "segmenter"
    per_structure: bool = False  # True: one binary network per structure (as in the paper)
    # classes: background, dural sac, disc and, with regions, facet and foramen (sides merged;
    # left and right are decided from the patient geometry at inference)
    regions: bool = True
    target_spacing: float = 0.7  # mm per field pixel (a stenotic dural sac is ~8 mm AP: ~11 px)
    size: int = 160  # field side in pixels (160 x 0.7 mm = 112 mm round the image centre)
    margin: int = 24  # extra cached pixels round the field, for spatial augmentation
    epochs: int = 20  # the shipped model: 20 epochs x 1600 slices drawn from a 150-patient slice bank
    samples_per_epoch: int = 1600  # slices drawn per epoch (with replacement); 0 = one pass over the train rows
    # domain randomisation (lumbargrade.segmentation.synth): share of training samples drawn from
    # tissue maps (rows with a tissue_map column) instead of the rendered image, and the recipe
    # (SynthConfig fields; the resolved recipe is saved in config.json). 0 disables it.
    p_synth: float = 0.7
    synth: dict = field(default_factory=dict)
    val_synth_items: int = 200  # domain-randomised validation images (drawn once, fixed seed) scored beside the rendered val slices
    init_from: str = ""  # start from these weights (a run folder or a .safetensors file) instead of random ones
    batch_size: int = 8
    lr: float = (
        1e-2  # AdamW, cosine decay to 0 over `epochs` (1e-3 barely learned the sac in 100 steps)
    )
    weight_decay: float = 1e-4
    dice_weight: float = 1.0
    ce_weight: float = 1.0
    dice_per_image: bool = True  # soft Dice per image (small sacs count fully) or pooled per batch
    small_sac_power: float = 2.0  # >0: draw slices with small dural sacs more often (see dataset); 0 uniform
    cord_weight: float = 1.0  # draw slices with the spinal cord or conus in the sac this many times as often
    augment: bool = True
    augment_params: dict = field(default_factory=dict)  # overrides of AugmentConfig fields
    bf16: bool = True  # bfloat16 autocast for the forward pass (about 1.7x faster training on this CPU)
    device: str = "auto"  # auto | cpu | cuda
    num_threads: int = 0  # torch threads on CPU; 0 leaves torch's default
    max_train_items: int = 0  # 0 = all; >0 keeps the first N train rows (quick runs)
    max_val_items: int = 0
    seed: int = 0
    progress: bool = True  # tqdm bar on stderr
    largest_component: bool = True  # inference: keep each structure's largest connected component
    recentre_mm: float = 25.0  # inference: re-run centred on the structures if they lie further off
    mirror_tta: bool = True  # inference: also look at the left-right mirrored slice; average (and compare) the two

    @property
    def classes(self) -> tuple[str, ...]:
        from .dataset import CLASSES, SAC_CLASSES

        return SAC_CLASSES if self.role == "sac_refiner" else CLASSES[bool(self.regions)]

    def model_args(self) -> dict:
        """Keyword arguments of :func:`.models.create_model` for this config."""
        n = len(self.classes)
        return {"out_channels": n, "n_structures": n - 1, "per_structure": self.per_structure,
                **self.model_kwargs}

    @classmethod
    def from_dict(cls, d: dict, where: str = "config") -> SegConfig:
        cfg = cls()
        cfg.update(d, where)
        return cfg

    def update(self, d: dict, where: str = "config") -> None:
        known = {f.name: f for f in fields(self)}
        for k, v in d.items():
            if k not in known:
                raise InputError(
                    where, f"unknown segmentation config key {k!r}; known: {', '.join(known)}"
                )
            cur = getattr(self, k)
            try:
                if isinstance(cur, bool):
                    if isinstance(v, str):
                        if v.lower() not in ("true", "false", "1", "0", "yes", "no"):
                            raise ValueError(v)
                        v = v.lower() in ("true", "1", "yes")
                    v = bool(v)
                elif isinstance(cur, int):
                    if float(v) != int(float(v)):
                        raise ValueError(v)
                    v = int(float(v))
                elif isinstance(cur, float):
                    v = float(v)
                elif isinstance(cur, dict):
                    if not isinstance(v, dict):
                        raise ValueError(v)
                    if k == "synth":
                        from .synth import SynthConfig

                        try:
                            SynthConfig.from_dict(v)
                        except (KeyError, TypeError) as e:
                            raise ValueError(str(e)) from e
                else:
                    v = str(v)
            except (TypeError, ValueError) as e:
                raise InputError(where, f"{k}={v!r} is not a valid {type(cur).__name__}") from e
            setattr(self, k, v)

    def to_dict(self) -> dict:
        return asdict(self)

    def synth_config(self):
        """The resolved :class:`~.synth.SynthConfig` (defaults <- ``synth``)."""
        from .synth import SynthConfig

        return SynthConfig.from_dict(self.synth)


def _parse_set(items: list[str]) -> dict:
    out = {}
    for it in items or []:
        if "=" not in it:
            raise InputError("--set", f"{it!r} is not KEY=VALUE")
        k, v = it.split("=", 1)
        try:
            out[k.strip()] = json.loads(v)
        except json.JSONDecodeError:
            out[k.strip()] = v
    return out


def resolve_config(
    config_file: str | None = None,
    sets: list[str] | None = None,
    model: str | None = None,
    seed: int | None = None,
) -> SegConfig:
    """Defaults <- JSON file <- ``--set`` items <- ``--model``/``--seed``; validated."""
    from .models import list_models, model_divisor

    cfg = SegConfig()
    if config_file:
        p = Path(config_file)
        try:
            d = json.loads(p.read_text())
        except FileNotFoundError as e:
            raise InputError(p, "config file not found") from e
        except (json.JSONDecodeError, UnicodeDecodeError) as e:
            raise InputError(p, f"not valid JSON ({e})") from e
        if not isinstance(d, dict):
            raise InputError(p, "config must be a JSON object")
        cfg.update(d, str(p))
    cfg.update(_parse_set(sets or []), "--set")
    if model:
        cfg.model = model
    if seed is not None:
        cfg.seed = int(seed)
    if cfg.model not in list_models():
        raise InputError(
            "--model",
            f"unknown segmentation model {cfg.model!r}; known: {', '.join(list_models())}",
        )
    div = model_divisor(cfg.model)
    if cfg.size <= 0 or cfg.size % div:
        raise InputError(
            "config size", f"{cfg.size} must be a positive multiple of {div} for {cfg.model}"
        )
    for k in ("epochs", "batch_size"):
        if getattr(cfg, k) < 1:
            raise InputError(f"config {k}", "must be at least 1")
    if cfg.target_spacing <= 0 or cfg.lr <= 0:
        raise InputError("config", "target_spacing and lr must be positive")
    if not 0.0 <= cfg.p_synth <= 1.0:
        raise InputError("config p_synth", f"{cfg.p_synth} is not a probability")
    if not cfg.cord_weight > 0:
        raise InputError("config cord_weight", f"must be positive, got {cfg.cord_weight}")
    cfg.synth = cfg.synth_config().to_dict()  # the resolved recipe goes into config.json
    if cfg.device not in ("auto", "cpu", "cuda"):
        raise InputError("config device", f"{cfg.device!r} is not auto, cpu or cuda")
    if cfg.role not in ("segmenter", "sac_refiner"):
        raise InputError("config role", f"{cfg.role!r} is not segmenter or sac_refiner")
    if cfg.role == "sac_refiner":
        cfg.regions = False  # the refiner outlines the dural sac only
    return cfg


def _augment_config(cfg: SegConfig):
    from .augment import AugmentConfig

    a = AugmentConfig()
    for k, v in cfg.augment_params.items():
        if not hasattr(a, k):
            raise InputError("config augment_params", f"unknown augmentation key {k!r}")
        setattr(a, k, float(v))
    return a


class _Log:
    def __init__(self, path: Path) -> None:
        self.path = path

    def __call__(self, msg: str) -> None:
        line = f"{time.strftime('%Y-%m-%d %H:%M:%S')} {msg}"
        with open(self.path, "a", encoding="utf-8") as f:
            f.write(line + "\n")


def _rng_state() -> dict:
    import random

    import torch

    st = {
        "python": random.getstate(),
        "numpy": np.random.get_state(),
        "torch": torch.get_rng_state(),
    }
    if torch.cuda.is_available():
        st["cuda"] = torch.cuda.get_rng_state_all()
    return st


def _set_rng_state(st: dict) -> None:
    import random

    import torch

    random.setstate(st["python"])
    np.random.set_state(st["numpy"])
    torch.set_rng_state(st["torch"])
    if "cuda" in st and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(st["cuda"])


def _seed_all(seed: int) -> None:
    import random

    import torch

    random.seed(seed)
    np.random.seed(seed % (2**32))
    torch.manual_seed(seed)


def evaluate_fields(model, ds, cfg: SegConfig, device, batch_size: int | None = None) -> dict:
    """Mean per-image Dice of each structure (dural sac, disc, and facet, foramen with regions) on a
    non-augmented dataset, field grid. ``model``: a network, or a list of them (an ensemble: the
    mean of their probabilities)."""
    import torch

    from .losses import dice_score, probs_to_labels, structure_probs

    models = list(model) if isinstance(model, (list, tuple)) else [model]  # an ensemble: mean probabilities
    for m in models:
        m.eval()
    names = cfg.classes[1:]
    scores: dict[str, list[float]] = {n: [] for n in names}
    with torch.inference_mode():
        for x, y in ds.batches(batch_size or cfg.batch_size, shuffle=False):
            xt = torch.from_numpy(x).to(device)
            each = []
            for m in models:
                with torch.autocast(device_type=device.type, dtype=torch.bfloat16, enabled=cfg.bf16):
                    logits = m(xt)
                each.append(structure_probs(logits, cfg.per_structure))
            probs = torch.stack(each).mean(0).cpu().numpy()
            pred = probs_to_labels(probs, cfg.per_structure)
            for p, t in zip(pred, y):
                for k, n in enumerate(names, start=1):
                    scores[n].append(dice_score(p == k, t == k))
    return {n: float(np.mean(v)) if v else float("nan") for n, v in scores.items()}


def _synthetic_val(val_ds, cfg: SegConfig):
    """``cfg.val_synth_items`` domain-randomised images drawn once (seed 12345) from the val rows
    that have tissue maps: the same images are scored every epoch."""
    from .dataset import FixedSet

    idx = [i for i, t in enumerate(val_ds.tissues) if t is not None]
    if not idx or cfg.val_synth_items <= 0:
        return None
    state = val_ds.rng.bit_generator.state
    val_ds.rng = np.random.default_rng(12345)
    pick = val_ds.rng.choice(idx, size=int(cfg.val_synth_items), replace=len(idx) < cfg.val_synth_items)
    items = []
    for i in pick:
        x, y = val_ds._synthetic(int(i), label_augment=False)
        items.append((np.ascontiguousarray(x[None], dtype=np.float32), np.ascontiguousarray(y, dtype=np.int64)))
    val_ds.rng.bit_generator.state = state
    return FixedSet(items)


def _score(dice: dict | None) -> float:
    """Model-choice score: mean Dice of the dural sac and disc (the graded structures) and, at
    half weight, of the regions."""
    if not dice:
        return float("nan")
    main = [dice[k] for k in ("dural_sac", "disc") if k in dice]
    extra = [dice[k] for k in ("facet", "foramen") if k in dice]
    return float((sum(main) + 0.5 * sum(extra)) / (len(main) + 0.5 * len(extra)))


def _prepare_run_dir(out: Path, cfg: SegConfig, overwrite: bool) -> bool:
    """Create/clean RUN_DIR; return True when resuming from checkpoint.pt."""
    if out.exists() and not out.is_dir():
        raise InputError(out, "exists and is not a folder")
    out.mkdir(parents=True, exist_ok=True)
    if overwrite:
        for name in RUN_FILES:
            (out / name).unlink(missing_ok=True)
        return False
    metrics = out / "metrics.json"
    ckpt = out / "checkpoint.pt"
    saved_cfg = out / "config.json"
    if ckpt.exists() and saved_cfg.exists():
        try:
            old = json.loads(saved_cfg.read_text())
        except json.JSONDecodeError as e:
            raise InputError(
                saved_cfg, "corrupt config.json; use --overwrite to start afresh"
            ) from e
        new = json.loads(json.dumps(cfg.to_dict()))  # tuples -> lists, as saved
        diff = sorted(
            k for k in set(old) | set(new) if k not in _RESUME_FREE and old.get(k) != new.get(k)
        )
        if diff:
            raise InputError(
                out,
                f"holds a run with a different config ({', '.join(diff)}); "
                "use --overwrite to start afresh or another --out",
            )
        if metrics.exists():
            try:
                m = json.loads(metrics.read_text())
            except json.JSONDecodeError:
                m = {}
            if m.get("finished") and int(m.get("epochs_done", 0)) >= cfg.epochs:
                raise InputError(
                    out,
                    "holds a finished segmentation run; use --overwrite to retrain "
                    "(or raise epochs to continue it)",
                )
        return True
    if metrics.exists() or (out / "model.safetensors").exists():
        raise InputError(out, "holds results but no checkpoint to resume from; use --overwrite")
    return False


def _read_rows(manifest) -> list[dict]:
    from ..manifest import read_manifests

    return read_manifests(manifest, required=("patient_id", "split", "level", "axial_image", "label_map"),
                          any_level=True)


def _val_rows(rows: list[dict], cfg: SegConfig) -> list[dict]:
    """The validation rows scored: ``split`` = val (of a slice bank, its disc-centre slices)."""
    from ..manifest import rows_for_split

    val_rows = rows_for_split(rows, "val")
    if any(r.get("kind") for r in val_rows):  # a slice bank: score the disc-centre slices
        val_rows = [r for r in val_rows if r.get("kind") == "disc_centre"] or val_rows
    return val_rows[: cfg.max_val_items] if cfg.max_val_items > 0 else val_rows


def _val_sets(val_rows: list[dict], cfg: SegConfig, synth, progress=None):
    """(rendered validation fields, fixed domain-randomised validation images or None); (None, None)
    without validation rows."""
    from .dataset import SegmentationDataset

    if not val_rows:
        return None, None
    val_ds = SegmentationDataset(val_rows, cfg.target_spacing, (cfg.size, cfg.size), cfg.margin, augment=None,
                                 progress=progress, regions=cfg.regions, synth=synth,
                                 sac_field=cfg.role == "sac_refiner")
    return val_ds, (_synthetic_val(val_ds, cfg) if synth is not None else None)


def train_segmentation(
    manifest: str | Path, out: str | Path, cfg: SegConfig, overwrite: bool = False
) -> dict:
    """Train on the manifest's ``train`` rows, validate on ``val`` rows; returns metrics.json's dict."""
    import torch
    from tqdm import tqdm

    from ..manifest import data_paths, rows_for_split
    from .dataset import SegmentationDataset
    from .losses import seg_loss
    from .models import create_model, load_weights, save_weights

    out = Path(out)
    rows = _read_rows(manifest)
    train_rows = rows_for_split(rows, "train")
    val_rows = _val_rows(rows, cfg)
    if cfg.max_train_items > 0:
        train_rows = train_rows[: cfg.max_train_items]
    if not train_rows:
        raise InputError(", ".join(data_paths(manifest)), "no rows with split=train")
    from ..distributed import current  # data-parallel hook (lumbargrade.distributed): rank 0 writes

    dist = current()
    if dist.is_main:
        resume = _prepare_run_dir(out, cfg, overwrite)
        (out / "config.json").write_text(json.dumps(cfg.to_dict(), indent=2) + "\n")
    resume = dist.broadcast(resume if dist.is_main else None)
    log = _Log(out / "train.log") if dist.is_main else (lambda msg: None)

    if cfg.num_threads > 0:
        torch.set_num_threads(cfg.num_threads)
    if cfg.device == "auto":
        device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    else:
        if cfg.device == "cuda" and not torch.cuda.is_available():
            raise InputError("config device", "cuda requested but no CUDA device is available")
        device = torch.device(cfg.device)
    _seed_all(cfg.seed)

    size = (cfg.size, cfg.size)
    bar = (
        (lambda it, desc: tqdm(it, desc=desc, leave=False))
        if cfg.progress and dist.is_main
        else (lambda it, desc: it)
    )
    t0 = time.time()
    synth = cfg.synth_config() if cfg.p_synth > 0 and cfg.augment else None
    train_ds = SegmentationDataset(
        train_rows,
        cfg.target_spacing,
        size,
        cfg.margin,
        augment=_augment_config(cfg) if cfg.augment else None,
        seed=cfg.seed,
        progress=lambda it: bar(it, "load train"),
        regions=cfg.regions,
        synth=synth,
        p_synth=cfg.p_synth,
        sac_field=cfg.role == "sac_refiner",
    )
    n_synth = sum(t is not None for t in train_ds.tissues)
    if synth is not None and not n_synth:
        log("note: no train row has a tissue_map; domain randomisation is off (rendered images only)")
    val_ds, val_synth = _val_sets(val_rows, cfg, synth, lambda it: bar(it, "load val"))
    log(
        f"{'resume' if resume else 'start'}: {len(train_ds)} train slices ({n_synth} with tissue maps), "
        f"{len(val_ds) if val_ds else 0} val, {len(val_synth) if val_synth else 0} domain-randomised val "
        f"from {manifest}; loaded in {time.time() - t0:.1f} s; device {device}"
    )
    if val_ds is None:
        log("warning: no val rows; the last epoch's weights are kept")

    draw_weights = train_ds.sampling_weights(cfg.small_sac_power, cfg.cord_weight)
    model = create_model(cfg.model, **cfg.model_args()).to(device)
    if cfg.init_from and not resume:
        src = Path(cfg.init_from)
        src = src / "model.safetensors" if src.is_dir() else src
        load_weights(model, src)
        log(f"initialised from {src}")
    opt = torch.optim.AdamW(model.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
    train_model = dist.wrap(model)  # data-parallel hook: DDP for the training forward only
    start_epoch, best, best_epoch, best_dice, history = 0, -1.0, -1, None, []
    elapsed_prev = 0.0
    if resume:
        try:
            ck = torch.load(out / "checkpoint.pt", map_location="cpu", weights_only=False)
            model.load_state_dict(ck["model"])
            opt.load_state_dict(ck["optimizer"])
        except Exception as e:
            raise InputError(
                out / "checkpoint.pt", f"cannot resume from it ({e}); use --overwrite"
            ) from e
        start_epoch = int(ck["epoch"]) + 1
        best, best_epoch, best_dice = (
            float(ck["best_score"]),
            int(ck["best_epoch"]),
            ck.get("best_dice"),
        )
        history = list(ck.get("history", []))
        elapsed_prev = float(ck.get("elapsed_s", 0.0))
        _set_rng_state(ck["rng"])
        if "data_rng" in ck:
            train_ds.rng.bit_generator.state = ck["data_rng"]
        log(f"resumed after epoch {start_epoch} (best {best:.4f} at epoch {best_epoch + 1})")

    t_start = time.time()
    for epoch in range(start_epoch, cfg.epochs):
        te = time.time()
        lr = 0.5 * cfg.lr * (1 + math.cos(math.pi * epoch / cfg.epochs))
        for g in opt.param_groups:
            g["lr"] = lr
        model.train()
        losses = []
        n_items = cfg.samples_per_epoch or len(train_ds)
        n_batches = math.ceil(n_items / cfg.batch_size)
        it = train_ds.batches(cfg.batch_size, shuffle=True, weights=draw_weights, n_items=n_items)
        pbar = tqdm(
            it,
            total=n_batches,
            desc=f"epoch {epoch + 1}/{cfg.epochs}",
            leave=False,
            disable=not (cfg.progress and dist.is_main),
        )
        for x, y in pbar:
            n_global = len(x)
            x, y = dist.shard(x, y)  # data-parallel hook: this rank's part of the global batch
            xt, yt = torch.from_numpy(x).to(device), torch.from_numpy(y).to(device)
            with torch.autocast(device_type=device.type, dtype=torch.bfloat16, enabled=cfg.bf16):
                logits = train_model(xt)
            loss = seg_loss(
                logits, yt, cfg.per_structure, cfg.dice_weight, cfg.ce_weight, cfg.dice_per_image
            ) * dist.loss_scale(n_global)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            losses.append(float(loss.detach()))
            pbar.set_postfix(loss=f"{losses[-1]:.4f}")
        train_loss = float(np.mean(losses))
        if not dist.is_main:  # data-parallel hook: rank 0 evaluates and writes
            continue
        dice_synth = None
        if val_ds is not None:
            dice = evaluate_fields(model, val_ds, cfg, device)
            score = _score(dice)
            if val_synth is not None:
                dice_synth = evaluate_fields(model, val_synth, cfg, device)
                score = 0.5 * (score + _score(dice_synth))
        else:
            dice, score = None, float(epoch)
        improved = score > best
        if improved:
            best, best_epoch, best_dice = score, epoch, dice
            save_weights(
                model,
                out / "model.safetensors",
                metadata={"model": cfg.model, "epoch": str(epoch + 1)},
            )
        dt = time.time() - te
        rec = {
            "epoch": epoch + 1,
            "lr": lr,
            "train_loss": train_loss,
            "time_s": round(dt, 2),
            "val_dice": dice,
            "val_dice_synth": dice_synth,
            "score": score,
        }
        history.append(rec)
        msg = f"epoch {epoch + 1}/{cfg.epochs} loss {train_loss:.4f} lr {lr:.2e} {dt:.1f} s"
        if dice is not None:
            msg += " val dice " + " ".join(f"{k} {v:.4f}" for k, v in dice.items())
        if dice_synth is not None:
            msg += " | synth " + " ".join(f"{k} {v:.4f}" for k, v in dice_synth.items())
        log(msg + (" *best" if improved else ""))
        elapsed = elapsed_prev + time.time() - t_start
        ck = {
            "model": model.state_dict(),
            "optimizer": opt.state_dict(),
            "epoch": epoch,
            "best_score": best,
            "best_epoch": best_epoch,
            "best_dice": best_dice,
            "history": history,
            "rng": _rng_state(),
            "data_rng": train_ds.rng.bit_generator.state,
            "elapsed_s": elapsed,
            "config": cfg.to_dict(),
        }
        tmp = out / "checkpoint.pt.tmp"
        torch.save(ck, tmp)
        tmp.replace(out / "checkpoint.pt")
        _write_metrics(
            out,
            cfg,
            history,
            best_epoch,
            best_dice,
            elapsed,
            len(train_ds),
            len(val_ds) if val_ds else 0,
            finished=(epoch + 1 == cfg.epochs),
        )
    if not dist.is_main:  # data-parallel hook
        return {}
    metrics = json.loads((out / "metrics.json").read_text())
    if not metrics.get("finished"):  # nothing left to run (epochs lowered): mark finished
        metrics = _write_metrics(
            out,
            cfg,
            history,
            best_epoch,
            best_dice,
            elapsed_prev,
            len(train_ds),
            len(val_ds) if val_ds else 0,
            True,
        )
    # make sure the best weights are what model.safetensors holds (already saved on improvement)
    load_weights(model, out / "model.safetensors")
    log(f"done: best epoch {best_epoch + 1}, val dice {best_dice}")
    return metrics


def _write_metrics(
    out: Path,
    cfg: SegConfig,
    history: list,
    best_epoch: int,
    best_dice,
    elapsed: float,
    n_train: int,
    n_val: int,
    finished: bool,
) -> dict:
    m = {
        "task": "segmentation" if cfg.role == "segmenter" else cfg.role,
        "model": cfg.model,
        "per_structure": cfg.per_structure,
        "best_epoch": best_epoch + 1,
        "val_dice": best_dice,
        "val_dice_synth": next((h.get("val_dice_synth") for h in history
                                if h["epoch"] == best_epoch + 1), None),
        "val_dice_mean": (
            None if best_dice is None
            else float(np.mean([best_dice[k] for k in ("dural_sac", "disc") if k in best_dice]))
        ),
        "epochs_done": len(history),
        "epochs": cfg.epochs,
        "finished": bool(finished),
        "time_s": round(elapsed, 1),
        "seconds_per_epoch": round(float(np.mean([h["time_s"] for h in history])), 2)
        if history
        else None,
        "n_train": n_train,
        "n_val": n_val,
        "history": history,
    }
    (out / "metrics.json").write_text(json.dumps(m, indent=2) + "\n")
    return m


def _finished_member(folder: Path, cfg: SegConfig) -> bool:
    """True when ``folder`` holds a finished run of ``cfg`` (same config but for the keys a run may
    resume with): an ensemble member that need not be trained again."""
    try:
        old = json.loads((folder / "config.json").read_text())
        m = json.loads((folder / "metrics.json").read_text())
    except (OSError, ValueError):
        return False
    if not (folder / "model.safetensors").is_file():
        return False
    new = json.loads(json.dumps(cfg.to_dict()))
    same = all(old.get(k) == new.get(k) for k in set(old) | set(new) if k not in _RESUME_FREE)
    return same and bool(m.get("finished")) and int(m.get("epochs_done", 0)) >= cfg.epochs


def combine_members(out: str | Path, members: Sequence[str | Path], manifest, log=None) -> dict:
    """Write the ensemble of trained member run folders (inside ``out``) as ``out/config.json`` (the
    first member's config plus ``members`` and ``seeds``) and ``out/metrics.json``: the Dice of the
    mean of the members' probabilities on the validation fields their trainer scored (rendered and
    domain-randomised, the same images) beside each member's best epoch. Returns the metrics."""
    import torch

    from ..grading.classifier_inference import member_names
    from .models import create_model, load_weights

    out = Path(out)
    rel, cfgs, nets = member_names(out, members), [], []
    for m in members:
        q = Path(m)
        c = SegConfig.from_dict(json.loads((q / "config.json").read_text()), str(q / "config.json"))
        net = create_model(c.model, **c.model_args())
        load_weights(net, q / "model.safetensors")
        cfgs.append(c)
        nets.append(net)
    from .inference import check_members_share

    check_members_share([Path(m) for m in members], cfgs)
    first = cfgs[0]
    if first.num_threads > 0:
        torch.set_num_threads(first.num_threads)
    device = torch.device("cpu")
    val_ds, val_synth = _val_sets(_val_rows(_read_rows(manifest), first),
                                  first, first.synth_config() if first.p_synth > 0 and first.augment else None)
    val = {"val_dice": None, "val_dice_synth": None}
    if val_ds is not None:
        val["val_dice"] = evaluate_fields(nets, val_ds, first, device)
        if val_synth is not None:
            val["val_dice_synth"] = evaluate_fields(nets, val_synth, first, device)
    per_member = []
    for f, c in zip(rel, cfgs):
        mm = json.loads((out / f / "metrics.json").read_text())
        per_member.append({"folder": f, "seed": c.seed, "best_epoch": mm.get("best_epoch"),
                           "val_dice": mm.get("val_dice"), "val_dice_synth": mm.get("val_dice_synth")})
    from .. import __version__

    resolved = {**first.to_dict(), "members": rel, "seeds": [c.seed for c in cfgs],
                "combine": "mean of the members' structure probabilities", "lumbargrade_version": __version__}
    (out / "config.json").write_text(json.dumps(resolved, indent=2) + "\n")
    metrics = {"task": "segmentation" if first.role == "segmenter" else first.role, "model": first.model,
               "ensemble": len(nets), **val, "n_val": len(val_ds) if val_ds is not None else 0,
               "n_val_synth": len(val_synth) if val_synth is not None else 0, "finished": True,
               "members": per_member}
    (out / "metrics.json").write_text(json.dumps(metrics, indent=2) + "\n")
    if log is not None:
        log(f"ensemble of {len(nets)}: val {val['val_dice']} | synth {val['val_dice_synth']}")
    return metrics


def _dice_text(d: dict, keys: Sequence[str] | None = None) -> str:
    """``sac 0.9500 disc 0.9600 ...``: the structures' Dice (only ``keys`` when given)."""
    return " ".join(f"{'sac' if k == 'dural_sac' else k} {v:.4f}" for k, v in d.items() if keys is None or k in keys)


def run_cli(args) -> int:
    """Entry point of ``lumbargrade train segmentation`` (parsed args from commands/train.py)."""
    import sys

    cfg = resolve_config(args.config, args.set, getattr(args, "model", None), args.seed)
    from ..distributed import launch  # data-parallel hook: --workers N processes (DDP)

    n_members = 1 if getattr(args, "ensemble", None) is None else int(args.ensemble)
    if n_members < 1:
        raise InputError("--ensemble", "must be at least 1")
    workers, ray = getattr(args, "workers", 1) or 1, getattr(args, "ray", None)
    if n_members > 1:
        out = Path(args.out)
        folders = []
        for k in range(n_members):
            member_cfg = SegConfig.from_dict(dict(cfg.to_dict(), seed=cfg.seed + k), "--seed")
            folder = out / "members" / f"seed{cfg.seed + k}"
            folders.append(folder)
            if not args.overwrite and _finished_member(folder, member_cfg):
                print(f"ensemble member {k + 1} of {n_members}: {folder} holds it already", file=sys.stderr)
                continue
            print(f"ensemble member {k + 1} of {n_members}: seed {cfg.seed + k} -> {folder}", file=sys.stderr)
            launch(train_segmentation, workers, args.data, folder, member_cfg, args.overwrite, ray_address=ray)
        m = combine_members(out, folders, args.data)
        ds = m.get("val_dice_synth") or {}
        print(f"{m['task']}: ensemble of {n_members}, val Dice {_dice_text(m.get('val_dice') or {})}"
              + (f" | domain-randomised {_dice_text(ds)}" if ds else "") + f" -> {out}", file=sys.stdout)
        return 0
    m = launch(train_segmentation, workers, args.data, args.out, cfg, args.overwrite, ray_address=ray)
    dice = _dice_text(m.get("val_dice") or {}, ("dural_sac", "disc"))
    print(
        f"{m.get('task', 'segmentation')}: best epoch {m['best_epoch']}/{m['epochs']}, val Dice {dice}; "
        f"{m['time_s']:.0f} s; weights {Path(args.out) / 'model.safetensors'}",
        file=sys.stdout,
    )
    return 0
