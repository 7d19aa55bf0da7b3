"""The fat-water shift: its direction read from the image, and the fat-bounded outlines moved back.

On T2 spin-echo images fat is displaced relative to water along the readout axis by the fat-water
shift (:mod:`lumbargrade.io.acquisition`: its size and axis come from the DICOM header, its sign
does not). The segmenter outlines what it sees, so its disc and its facet/foramen regions (edges
against epidural, foraminal and facet fat) follow the displaced fat; the dural sac (CSF, water)
does not. This module

* reads the direction from the image: a small CNN (:func:`build_net`) scores a slice turned so the
  readout runs along its rows (:func:`readout_rows`); the score of a slice minus that of its
  mirror image along the readout is antisymmetric, so a network that ignored the image would be
  at chance. The series' direction is the sign of the mean over its slices, used only when at least
  ``min_agreement`` of the slices agree (:meth:`FatShiftReader.direction`);
* moves the disc mask and the facet/foramen regions back by ``alpha`` x the shift along the
  readout (:func:`shift_mask`, :func:`correct_masks`), before measurements and boxes;
* trains the reader (:func:`run_cli`, ``lumbargrade train fat-shift``) on studies whose direction
  is known: a ``fat_shift_sign`` manifest column (+1: fat displaced towards higher stored indices
  along the readout, -1: lower), else the phantom's ``truth.json`` (``mr.chemical_shift_px``).

Shifts are in stored pixels; ``axis`` is the stored array axis of the readout (0 rows, 1 columns).
"""

from __future__ import annotations

import json
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from ..errors import InputError

__all__ = [
    "CONFIG_DEFAULTS",
    "FatShiftReader",
    "ShiftForRows",
    "build_net",
    "correct_masks",
    "load_fat_shift_reader",
    "readout_rows",
    "run_cli",
    "shift_mask",
]

#: Training and inference settings (``config.json`` of a run holds the resolved values).
CONFIG_DEFAULTS: dict[str, Any] = {
    "crop": 128,  # pixels of the centre crop the network sees (zero-padded where the slice is smaller)
    "channels": [16, 32, 48, 64],
    "alpha": 0.75,  # fraction of the header's shift moved back (chosen on a tuning phantom cohort)
    "min_agreement": 0.8,  # fraction of a series' slices whose own score has the series' sign
    "steps": 750,
    "batch_size": 16,
    "lr": 0.002,
    "weight_decay": 0.0001,
    "num_threads": 2,
    "seed": 0,
}


def readout_rows(image: np.ndarray, axis: int) -> np.ndarray:
    """A stored slice turned so the readout runs along its rows (transposed when the readout is
    the stored axis 0; fat displaced towards higher stored indices then lies towards higher
    columns), divided by its 99th percentile (float32)."""
    a = np.asarray(image, dtype=np.float32)
    if axis == 0:
        a = a.T
    return a / max(1.0, float(np.percentile(a, 99)))


def centre_crop(a: np.ndarray, n: int) -> np.ndarray:
    """The central ``n`` x ``n`` pixels of ``a`` (zero-padded where ``a`` is smaller)."""
    out = np.zeros((n, n), np.float32)
    h, w = a.shape
    r0, c0 = max(0, (h - n) // 2), max(0, (w - n) // 2)
    part = a[r0:r0 + n, c0:c0 + n]
    pr, pc = (n - part.shape[0]) // 2, (n - part.shape[1]) // 2
    out[pr:pr + part.shape[0], pc:pc + part.shape[1]] = part
    return out


def build_net(channels: Sequence[int] = (16, 32, 48, 64)):
    """Four conv stages (3x3 convs, batch norm, ReLU; stride 2 from the second), global mean, one
    logit: "fat displaced towards higher columns"."""
    from torch import nn

    class FatShiftNet(nn.Module):
        def __init__(self):
            super().__init__()
            ch, layers = [1, *[int(c) for c in channels]], []
            for i in range(len(ch) - 1):
                layers += [nn.Conv2d(ch[i], ch[i + 1], 3, padding=1), nn.BatchNorm2d(ch[i + 1]), nn.ReLU(),
                           nn.Conv2d(ch[i + 1], ch[i + 1], 3, padding=1, stride=2 if i else 1),
                           nn.BatchNorm2d(ch[i + 1]), nn.ReLU()]
            self.features = nn.Sequential(*layers)
            self.head = nn.Linear(ch[-1], 1)

        def forward(self, x):
            return self.head(self.features(x).mean((2, 3)))

    return FatShiftNet()


@dataclass
class FatShiftReader:
    """A loaded direction reader: ``net(x [n, 1, crop, crop]) -> logits [n, 1]`` and its config."""

    net: Any
    config: dict

    @property
    def runtime(self) -> str:
        return getattr(self.net, "runtime", "torch")

    @property
    def alpha(self) -> float:
        return float(self.config["alpha"])

    def scores(self, turned: Sequence[np.ndarray]) -> np.ndarray:
        """Per slice (each from :func:`readout_rows`): logit(slice) - logit(mirror image along the
        readout); > 0 says fat is displaced towards higher columns (higher stored indices)."""
        from ..runtime import run_net

        if not len(turned):
            return np.zeros(0, np.float32)
        n = int(self.config["crop"])
        x = np.stack([centre_crop(a, n) for a in turned])[:, None]
        both = np.concatenate([x, np.ascontiguousarray(x[..., ::-1])])
        z = run_net(self.net, both).reshape(-1)
        return z[: len(x)] - z[len(x):]

    def direction(self, turned: Sequence[np.ndarray]) -> dict[str, Any]:
        """The series' direction from its slices: ``{"sign": +1 | -1 | 0, "agreement",
        "mean_score", "n_slices"}``; ``sign`` is 0 (no correction) when fewer than
        ``min_agreement`` of the slices agree with the mean's sign."""
        s = self.scores(turned)
        if not len(s) or float(s.mean()) == 0.0:
            return {"sign": 0, "agreement": 0.0, "mean_score": 0.0, "n_slices": len(s)}
        sign = 1 if s.mean() > 0 else -1
        agree = float(np.mean(np.sign(s) == sign))
        return {"sign": sign if agree >= float(self.config["min_agreement"]) else 0,
                "agreement": round(agree, 3), "mean_score": round(float(s.mean()), 3), "n_slices": len(s)}


def load_fat_shift_reader(folder: str | Path, runtime: str | None = None) -> FatShiftReader:
    """Load a reader folder (``config.json`` + ``model.safetensors``; ``model.onnx`` per
    ``runtime``, see :mod:`lumbargrade.runtime`)."""
    from ..runtime import TorchNet, load_onnx_net, resolve_runtime

    folder = Path(folder)
    cfg_p, w_p = folder / "config.json", folder / "model.safetensors"
    if not cfg_p.is_file() or not w_p.is_file():
        raise InputError(folder, "not a fat-shift reader folder (needs config.json and model.safetensors)")
    try:
        config = dict(CONFIG_DEFAULTS, **json.loads(cfg_p.read_text()))
    except json.JSONDecodeError as e:
        raise InputError(cfg_p, f"not valid JSON ({e})") from e
    net = load_onnx_net(folder, resolve_runtime(runtime))
    if net is None:
        from safetensors.torch import load_file

        module = build_net(config["channels"])
        try:
            module.load_state_dict(load_file(str(w_p)))
        except (RuntimeError, OSError) as e:
            raise InputError(w_p, f"weights do not fit the fat-shift reader ({e.__class__.__name__})") from e
        net = TorchNet(module)
    return FatShiftReader(net, config)


def shift_mask(mask: np.ndarray, shift_rc: Sequence[float]) -> np.ndarray:
    """A boolean mask moved by ``shift_rc`` (rows, columns; sub-pixel): linear interpolation of the
    mask, kept where it exceeds one half."""
    mask = np.asarray(mask, bool)
    if not mask.any() or not any(shift_rc):
        return mask.copy()
    from scipy import ndimage

    # only the mask's bounding box, widened by the move, is interpolated (the rest stays empty)
    pad = int(np.ceil(max(abs(float(v)) for v in shift_rc))) + 1
    rows, cols = np.nonzero(np.any(mask, axis=1))[0], np.nonzero(np.any(mask, axis=0))[0]
    r0, r1 = max(0, rows[0] - pad), min(mask.shape[0], rows[-1] + pad + 1)
    c0, c1 = max(0, cols[0] - pad), min(mask.shape[1], cols[-1] + pad + 1)
    out = np.zeros_like(mask)
    part = mask[r0:r1, c0:c1].astype(np.float32)
    out[r0:r1, c0:c1] = ndimage.shift(part, list(shift_rc), order=1, mode="constant") > 0.5
    return out


def correct_masks(disc: np.ndarray | None, regions: np.ndarray | None, shift_px: float, axis: int,
                  alpha: float) -> tuple[np.ndarray | None, np.ndarray | None]:
    """The disc mask and the facet/foramen regions (uint8, values 3-6) on the stored grid moved back
    by ``alpha`` x ``shift_px`` (signed: > 0 fat displaced towards higher indices) along ``axis``."""
    move = [0.0, 0.0]
    move[int(axis)] = -float(alpha) * float(shift_px)
    disc = None if disc is None else shift_mask(disc, move)
    if regions is not None:
        out = np.zeros_like(regions)
        for v in (3, 4, 5, 6):
            m = shift_mask(regions == v, move)
            out[m & (out == 0)] = v
        regions = out
    return disc, regions


def patient_direction(geometry: Any, axis: int, sign: int) -> str:
    """Where fat displaced towards ``sign`` along stored ``axis`` lies in the patient (``left``,
    ``right``, ``anterior``, ``posterior``, ``superior``, ``inferior``; LPS cosines)."""
    cos = np.asarray(geometry.row_cosine if axis == 1 else geometry.col_cosine, float) * sign
    k = int(np.argmax(np.abs(cos)))
    return (("left", "right"), ("posterior", "anterior"), ("superior", "inferior"))[k][0 if cos[k] > 0 else 1]


def correction_record(direction: dict[str, Any], size_px: float, axis: int, geometry: Any,
                      reader: FatShiftReader) -> dict[str, Any]:
    """What ``report.json`` / ``segment.json`` record of one slice's correction
    (``fat_water_shift.correction``): ``applied``, ``agreement``, ``n_slices`` and either the move
    (``fat_displaced_towards``, ``moved_back_px``, ``moved_back_mm``, ``alpha``, ``structures``)
    or the ``reason`` nothing moved. ``direction``: :meth:`FatShiftReader.direction`'s answer."""
    rec: dict[str, Any] = {"applied": direction["sign"] != 0, "agreement": direction["agreement"],
                           "n_slices": direction["n_slices"]}
    if direction["sign"] == 0:
        rec["reason"] = (f"the direction was not agreed on ({direction['agreement']:.0%} of {direction['n_slices']} "
                         f"slices, needs {float(reader.config['min_agreement']):.0%})")
        return rec
    mm = float(geometry.pixel_spacing[0 if axis == 0 else 1])
    rec.update({"fat_displaced_towards": patient_direction(geometry, axis, direction["sign"]),
                "moved_back_px": round(reader.alpha * size_px, 3), "moved_back_mm": round(reader.alpha * size_px * mm, 3),
                "alpha": reader.alpha, "structures": ["disc", "facet", "foramen"]})
    return rec


class ShiftForRows:
    """Per manifest row, the signed shift and readout axis its study's correction uses: the header's
    size and axis, the direction read from all of that study's rows (one series per study, as the
    phantom writes it). ``shift(row) -> (signed_px, axis) | None`` (None: no header or no agreed
    direction); the training paths apply it as ``analyze`` does."""

    def __init__(self, reader: FatShiftReader, rows: Sequence[dict]) -> None:
        self.reader = reader
        self._rows: dict[str, list[dict]] = {}
        for r in rows:
            self._rows.setdefault(self._key(r), []).append(r)
        self._cache: dict[str, int] = {}

    @staticmethod
    def _key(row: dict) -> str:
        return f"{row.get('_base_dir', '')}::{row.get('study_dir') or row.get('patient_id')}"

    def shift(self, row: dict) -> tuple[float, int] | None:
        from ..manifest import load_axial

        size, axis = _header_shift(row)
        if size is None or axis is None:
            return None
        key = self._key(row)
        if key not in self._cache:
            turned = []
            for r in self._rows.get(key, [row]):
                _, ax = _header_shift(r)
                if ax is not None:
                    turned.append(readout_rows(load_axial(r)[0], ax))
            self._cache[key] = int(self.reader.direction(turned)["sign"])
        sign = self._cache[key]
        return None if sign == 0 else (sign * size, axis)

    def correct_canonical(self, row: dict, labels: np.ndarray) -> np.ndarray:
        """A segmenter's canonical label map (1 sac, 2 disc, 3 facet, 4 foramen, ...) with the disc
        and the regions moved back as :func:`correct_masks` moves them on the stored grid."""
        from ..manifest import axial_view_of

        s = self.shift(row)
        if s is None:
            return labels
        view = axial_view_of(row)
        stored = view.from_canonical(labels)
        move = [0.0, 0.0]
        move[s[1]] = -self.reader.alpha * s[0]
        out = np.where(stored == 1, 1, 0).astype(stored.dtype)
        for v in [int(v) for v in np.unique(stored) if v > 1]:
            m = shift_mask(stored == v, move)
            out[m & (out == 0)] = v
        return view.to_canonical(out)


def _header_shift(row: dict) -> tuple[float | None, int | None]:
    """(size in pixels, stored readout axis) from the row's axial DICOM header."""
    from ..io.acquisition import fat_water_shift_px, readout_index_axis
    from ..manifest import _is_dicom, _path

    p = _path(row, "axial_image", None)
    if not _is_dicom(p):
        return None, None
    import pydicom

    try:
        ds = pydicom.dcmread(p, stop_before_pixels=True)
    except Exception as e:  # noqa: BLE001 - pydicom raises many kinds for damaged files
        raise InputError(p, f"not a readable DICOM file ({type(e).__name__})") from None
    return fat_water_shift_px(ds), readout_index_axis(ds)


# --- training ------------------------------------------------------------------------------------

def _known_sign(row: dict, cache: dict) -> int | None:
    """+1 / -1: the row's fat displacement along the readout in stored indices (``fat_shift_sign``
    column, else the phantom's truth.json); None when unknown."""
    v = str(row.get("fat_shift_sign") or "").strip()
    if v:
        try:
            s = int(float(v))
        except ValueError:
            raise InputError(f"manifest line {row.get('_line')}, column fat_shift_sign", f"{v!r} is not +1 or -1") from None
        if s not in (1, -1):
            raise InputError(f"manifest line {row.get('_line')}, column fat_shift_sign", f"{v!r} is not +1 or -1")
        return s
    from ..manifest import phantom_truth

    truth = phantom_truth(row, cache)
    if truth is None:
        return None
    cs = float((truth.get("mr") or {}).get("chemical_shift_px") or 0.0)
    return None if cs == 0 else (1 if cs > 0 else -1)


def _turned_examples(rows: Sequence[dict]) -> list[tuple[str, np.ndarray, int]]:
    """(study key, slice turned by :func:`readout_rows`, +1/-1 direction along the turned columns)."""
    from ..manifest import load_axial

    cache: dict = {}
    out = []
    for r in rows:
        sign = _known_sign(r, cache)
        _, axis = _header_shift(r)
        if sign is None or axis is None:
            continue
        out.append((ShiftForRows._key(r), readout_rows(load_axial(r)[0], axis), sign))
    return out


def _random_crop(a: np.ndarray, n: int, rng) -> np.ndarray:
    """A random ``n`` x ``n`` crop from the central 70% of ``a`` (padded when ``a`` is small)."""
    h, w = a.shape
    if h < n or w < n:
        return centre_crop(a, n)
    r0 = int(rng.integers(int(h * 0.15), max(int(h * 0.15) + 1, min(int(h * 0.85), h) - n + 1)))
    c0 = int(rng.integers(int(w * 0.15), max(int(w * 0.15) + 1, min(int(w * 0.85), w) - n + 1)))
    r0, c0 = min(r0, h - n), min(c0, w - n)
    return a[r0:r0 + n, c0:c0 + n]


def train_reader(train: list, cfg: dict, log=print):
    """Binary cross-entropy on random crops, each mirrored along the readout at random with its
    label (the network must read the direction from the image, not learn a convention), flipped
    across it at random; AdamW, cosine learning rate. Returns the torch module (eval mode)."""
    import torch

    seed = int(cfg["seed"])
    torch.manual_seed(seed)
    torch.set_num_threads(int(cfg["num_threads"]))
    rng = np.random.default_rng(seed)
    net = build_net(cfg["channels"])
    opt = torch.optim.AdamW(net.parameters(), float(cfg["lr"]), weight_decay=float(cfg["weight_decay"]))
    steps, n, bs = int(cfg["steps"]), int(cfg["crop"]), int(cfg["batch_size"])
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, steps)
    net.train()
    for step in range(steps):
        xs, ys = [], []
        for _ in range(bs):
            _, a, sign = train[int(rng.integers(len(train)))]
            a, y = _random_crop(a, n, rng), 1.0 if sign > 0 else 0.0
            if rng.random() < 0.5:
                a, y = a[:, ::-1], 1.0 - y
            if rng.random() < 0.5:
                a = a[::-1, :]
            xs.append(np.ascontiguousarray(a) * rng.uniform(0.8, 1.2))
            ys.append(y)
        logits = net(torch.from_numpy(np.stack(xs)[:, None].astype(np.float32))).squeeze(1)
        loss = torch.nn.functional.binary_cross_entropy_with_logits(logits, torch.tensor(ys))
        opt.zero_grad()
        loss.backward()
        opt.step()
        sched.step()
        if (step + 1) % 250 == 0 or step + 1 == steps:
            log(f"step {step + 1}/{steps}: loss {float(loss.detach()):.3f}")
    return net.eval()


def accuracy(reader: FatShiftReader, examples: list) -> dict[str, Any]:
    """Slice and series (study) accuracy of ``reader`` on held-out examples, and how many series
    it leaves uncorrected (``sign`` 0)."""
    by_study: dict[str, list] = {}
    for key, a, sign in examples:
        by_study.setdefault(key, []).append((a, sign))
    slices, series, undecided = [], [], 0
    for items in by_study.values():
        turned = [a for a, _ in items]
        truth = items[0][1]
        slices += list(np.sign(reader.scores(turned)) == truth)
        d = reader.direction(turned)
        if d["sign"] == 0:
            undecided += 1
        else:
            series.append(d["sign"] == truth)
    return {"n_slices": len(slices), "slice_accuracy": round(float(np.mean(slices)), 4) if slices else None,
            "n_series": len(by_study), "series_decided": len(series), "series_undecided": undecided,
            "series_accuracy_of_decided": round(float(np.mean(series)), 4) if series else None}


def run_cli(args) -> int:
    """``lumbargrade train fat-shift``: train the direction reader on the train split, report its
    accuracy on the val split; writes config.json, model.safetensors, metrics.json, train.log."""
    from ..manifest import read_manifests, rows_for_split

    cfg = dict(CONFIG_DEFAULTS)
    if args.config:
        try:
            given = json.loads(Path(args.config).read_text())
        except (OSError, ValueError) as e:
            raise InputError(args.config, f"cannot read the config ({e})") from None
        if not isinstance(given, dict):
            raise InputError(args.config, "the config must be a JSON object")
        unknown = sorted(set(given) - set(CONFIG_DEFAULTS))
        if unknown:
            raise InputError(args.config, f"unknown key(s) {', '.join(unknown)} (known: {', '.join(CONFIG_DEFAULTS)})")
        cfg.update(given)
    for item in args.set:
        k, _, v = item.partition("=")
        if k not in CONFIG_DEFAULTS:
            raise InputError("--set", f"unknown key {k!r} (known: {', '.join(CONFIG_DEFAULTS)})")
        try:
            cfg[k] = json.loads(v)
        except ValueError:
            raise InputError("--set", f"{item!r}: the value is not a number or a JSON list") from None
    cfg["seed"] = int(args.seed)
    out = Path(args.out)
    if out.exists() and any(out.iterdir()) and not args.overwrite:
        raise InputError(out, "run folder is not empty (use --overwrite to start afresh)")
    rows = read_manifests(args.data)
    train, val = _turned_examples(rows_for_split(rows, "train")), _turned_examples(rows_for_split(rows, "val"))
    if not train:
        raise InputError(args.data[0] if isinstance(args.data, list) else args.data,
                         "no train-split row with a known fat-shift direction and a DICOM header stating the "
                         "readout (InPlanePhaseEncodingDirection)")
    out.mkdir(parents=True, exist_ok=True)
    with (out / "train.log").open("w") as logf:

        def log(msg: str) -> None:
            print(msg, flush=True)
            logf.write(msg + "\n")
            logf.flush()

        _train_and_write(train, val, cfg, out, log)
    return 0


def _train_and_write(train: list, val: list, cfg: dict, out: Path, log) -> None:
    """Train, then write the run folder's model.safetensors, config.json and metrics.json."""
    from ..runtime import TorchNet
    from ..segmentation.models import save_weights

    log(f"{len(train)} training slices ({len({k for k, _, _ in train})} studies), {len(val)} validation slices")
    t0 = time.perf_counter()
    net = train_reader(train, cfg, log)
    seconds = round(time.perf_counter() - t0, 1)
    reader = FatShiftReader(TorchNet(net), cfg)
    metrics = {"task": "fat_shift_direction", "time_s": seconds, "n_train_slices": len(train),
               "n_val_slices": len(val), "val": accuracy(reader, val) if val else None}
    save_weights(net, out / "model.safetensors")
    (out / "config.json").write_text(json.dumps({"architecture": "fat_shift_cnn", **cfg}, indent=2) + "\n")
    (out / "metrics.json").write_text(json.dumps(metrics, indent=2) + "\n")
    log(f"validation: {metrics['val']}")
