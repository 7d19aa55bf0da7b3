"""Disc-centre landmarks on the mid-sagittal T2: preprocessing, the DSNT network, inference.

Preprocessing (one recipe for PNGs without spacing and DICOM/NIfTI with spacing, recorded in the
model's ``config.json``): the slice is resampled so that its height maps to ``size`` pixels, the
column axis scaled by the same physical factor (``col_spacing / row_spacing``; 1 without spacing),
centred in a ``size x size`` field (padded with 0, or cropped when wider), pre-smoothed against
aliasing, and its intensity mapped so that the 1st and 99.5th percentiles become 0 and 1.

The network is a small U-Net (stride-2 stem, five downsamplings to 1/64, decoder back to 1/4)
with two coordinate channels at its input, producing one heatmap per level; a spatial softmax
and soft-argmax (:mod:`lumbargrade.levels.dsnt`) give the coordinates.
"""

from __future__ import annotations

import json
import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from .names import LEVELS

__all__ = [
    "ARCH_DEFAULTS",
    "PREPROCESS_DEFAULTS",
    "LandmarkResult",
    "LandmarkSet",
    "check_landmarks",
    "create_model",
    "naming_consistency",
    "default_model_dir",
    "landmarks_for_image",
    "landmarks_for_series",
    "landmarks_for_volume",
    "load_landmark_model",
    "load_model",
    "normalise_intensity",
    "predict_landmarks",
    "preprocess_transform",
    "resample",
    "save_model",
]

PREPROCESS_DEFAULTS: dict[str, Any] = {
    "size": 256,
    "height_fills": True,
    "percentiles": [1.0, 99.5],
    "clip": [-0.2, 1.5],
    "antialias_sigma_per_scale": 0.4,
}

ARCH_DEFAULTS: dict[str, Any] = {
    "name": "dsnt_unet_small",
    "n_points": len(LEVELS),
    "widths": [16, 24, 32, 48, 64, 96],
    "out_stride": 4,
}


# --------------------------------------------------------------------------- preprocessing
def preprocess_transform(
    shape: tuple[int, int],
    pixel_spacing: Sequence[float] | None = None,
    size: int = 256,
    crop_rows: tuple[float, float] | None = None,
) -> np.ndarray:
    """3x3 matrix ``M`` mapping original ``[row, col, 1]`` pixel coordinates to network-input
    ``[row, col, 1]`` coordinates (pixel centres at integers).

    ``crop_rows = (r0, r1)`` (original pixels, end-exclusive) maps only that row range to the
    input height (used for training crops); by default the whole height.
    """
    h, w = shape
    sr, sc = (1.0, 1.0) if pixel_spacing is None else (float(pixel_spacing[0]), float(pixel_spacing[1]))
    r0, r1 = (0.0, float(h)) if crop_rows is None else (float(crop_rows[0]), float(crop_rows[1]))
    s_r = size / (r1 - r0)
    s_c = s_r * sc / sr
    off_c = (size - w * s_c) / 2.0
    m = np.eye(3)
    m[0, 0], m[0, 2] = s_r, (0.5 - r0) * s_r - 0.5
    m[1, 1], m[1, 2] = s_c, 0.5 * s_c - 0.5 + off_c
    return m


def resample(image: np.ndarray, m: np.ndarray, size: int, antialias: float = 0.4) -> np.ndarray:
    """Resample ``image`` (rows, cols) through the 3x3 map ``m`` (original -> output pixels) into a
    ``size x size`` float32 array (linear interpolation, 0 outside); Gaussian pre-smoothing of
    ``antialias / scale`` pixels when shrinking."""
    from scipy import ndimage

    img = np.asarray(image, dtype=np.float32)
    scale = math.sqrt(abs(np.linalg.det(m[:2, :2])))
    if scale < 1.0 and antialias > 0:
        img = ndimage.gaussian_filter(img, sigma=antialias / scale)
    inv = np.linalg.inv(m)
    return ndimage.affine_transform(
        img, inv[:2, :2], offset=inv[:2, 2], output_shape=(size, size), order=1, cval=0.0
    ).astype(np.float32)


def normalise_intensity(
    image: np.ndarray, percentiles: Sequence[float] = (1.0, 99.5), clip: Sequence[float] = (-0.2, 1.5)
) -> np.ndarray:
    """Map the given percentiles of the image to 0 and 1 (float32), then clip."""
    a = np.asarray(image, dtype=np.float32)
    lo, hi = np.percentile(a, list(percentiles))
    if hi <= lo:
        hi = lo + 1.0
    return np.clip((a - lo) / (hi - lo), clip[0], clip[1]).astype(np.float32)


def prepare_input(
    image: np.ndarray, pixel_spacing: Sequence[float] | None, pre: dict[str, Any]
) -> tuple[np.ndarray, np.ndarray]:
    """(rows, cols) image -> ((size, size) normalised network input, 3x3 original->input map).

    Intensities are normalised on the original image (so padding does not shift percentiles)."""
    size = int(pre["size"])
    m = preprocess_transform(image.shape, pixel_spacing, size)
    norm = normalise_intensity(image, pre["percentiles"], pre["clip"])
    return resample(norm, m, size, pre.get("antialias_sigma_per_scale", 0.4)), m


# --------------------------------------------------------------------------- network
def _torch():
    import torch

    return torch


def create_model(name: str = "dsnt_unet_small", **kwargs: Any):
    """Model registry: build a landmark network by name (weights are random; see load_model)."""
    if name != "dsnt_unet_small":
        from ..errors import InputError

        raise InputError(name, "unknown landmark architecture (known: dsnt_unet_small)")
    return _build_unet(**kwargs)


def _build_unet(n_points: int = 5, widths: Sequence[int] = (16, 24, 32, 48, 64, 96), out_stride: int = 4):
    import torch
    from torch import nn

    def block(cin: int, cout: int, stride: int = 1, dil: int = 1) -> nn.Sequential:
        return nn.Sequential(
            nn.Conv2d(cin, cout, 3, stride=stride, padding=dil, dilation=dil, bias=False),
            nn.BatchNorm2d(cout),
            nn.ReLU(inplace=True),
            nn.Conv2d(cout, cout, 3, padding=dil, dilation=dil, bias=False),
            nn.BatchNorm2d(cout),
            nn.ReLU(inplace=True),
        )

    class DsntUNet(nn.Module):
        """Encoder (stride 2 .. 64) - decoder (back to ``out_stride``) -> per-level heatmaps."""

        def __init__(self) -> None:
            super().__init__()
            w = list(widths)
            self.n_points = n_points
            self.out_stride = out_stride
            self.enc = nn.ModuleList([block(3, w[0], stride=2)])
            for i in range(1, len(w)):
                self.enc.append(block(w[i - 1], w[i], stride=2))
            self.context = block(w[-1], w[-1], dil=2)
            n_up = len(w) - int(round(math.log2(out_stride)))
            self.up = nn.ModuleList()
            cin = w[-1]
            for k in range(n_up):
                skip = w[len(w) - 2 - k]
                self.up.append(block(cin + skip, skip))
                cin = skip
            self.head = nn.Conv2d(cin, n_points, 1)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            b, _, h, wd = x.shape
            ys = torch.linspace(-1, 1, h, device=x.device, dtype=x.dtype).view(1, 1, h, 1).expand(b, 1, h, wd)
            xs = torch.linspace(-1, 1, wd, device=x.device, dtype=x.dtype).view(1, 1, 1, wd).expand(b, 1, h, wd)
            x = torch.cat([x, ys, xs], dim=1)
            feats = []
            for e in self.enc:
                x = e(x)
                feats.append(x)
            x = self.context(x)
            for k, u in enumerate(self.up):
                skip = feats[len(feats) - 2 - k]
                x = nn.functional.interpolate(x, size=skip.shape[-2:], mode="bilinear", align_corners=False)
                x = u(torch.cat([x, skip], dim=1))
            return self.head(x)  # (B, P, H/out_stride, W/out_stride) logits

    return DsntUNet()


def default_model_dir() -> Path:
    """The packaged landmark model: ``lumbargrade/models/default/landmarks``."""
    return Path(__file__).resolve().parent.parent / "models" / "default" / "landmarks"


def save_model(model, folder: str | Path, config: dict[str, Any]) -> None:
    """Write ``model.safetensors`` and ``config.json`` (arch + preprocess + training record)."""
    from safetensors.torch import save_file

    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    state = {k: v.detach().cpu().contiguous() for k, v in model.state_dict().items()}
    save_file(state, str(folder / "model.safetensors"))
    (folder / "config.json").write_text(json.dumps(config, indent=2) + "\n")


@dataclass
class LoadedLandmarkModel:
    """A landmark network in eval mode with its config (``arch``, ``preprocess``, ``levels``...)."""

    net: Any
    config: dict[str, Any]
    folder: Path
    refiner: Any = None  # a lumbargrade.levels.refine.LoadedRefiner, applied after the coarse pass


def load_model(folder: str | Path | None = None, runtime: str | None = None) -> LoadedLandmarkModel:
    """Load a landmark model folder (``config.json`` + ``model.safetensors``); default: packaged.

    A pack root resolves to its ``landmarks`` folder. A ``landmark_refiner`` folder beside the
    landmark folder (the pack layout) is loaded too and applied by :func:`predict_landmarks`.
    ``runtime``: see :mod:`lumbargrade.runtime` (``net`` is then an ONNX session or a torch module)."""
    from ..errors import InputError
    from ..runtime import load_onnx_net, resolve_runtime

    folder = Path(folder) if folder is not None else default_model_dir()
    if (folder / "landmarks" / "config.json").is_file():  # a model pack root
        folder = folder / "landmarks"
    cfg_p, w_p = folder / "config.json", folder / "model.safetensors"
    if not cfg_p.is_file() or not w_p.is_file():
        raise InputError(folder, "not a landmark model folder (needs config.json and model.safetensors)")
    runtime = resolve_runtime(runtime)
    config = json.loads(cfg_p.read_text())
    net = load_onnx_net(folder, runtime)
    if net is None:
        from safetensors.torch import load_file

        arch = dict(ARCH_DEFAULTS, **config.get("arch", {}))
        name = arch.pop("name")
        net = create_model(name, **arch)
        try:
            net.load_state_dict(load_file(str(w_p)))
        except (RuntimeError, OSError) as e:
            raise InputError(w_p, f"weights do not fit the architecture in config.json ({e.__class__.__name__})") from e
        net.eval()
    model = LoadedLandmarkModel(net, config, folder)
    from ..modelpack import companion_folder

    sibling = companion_folder(folder, "landmark_refiner")  # a model pack's refiner, when it lists one
    if sibling is not None:
        from .refine import load_refiner

        model.refiner = load_refiner(sibling, runtime)
    return model


# --------------------------------------------------------------------------- inference
@dataclass
class LandmarkResult:
    """Landmarks in the original image's pixels.

    rows, cols: (5,) pixel coordinates (L1/L2..L5/S1); confidence: (5,) heatmap concentration
    in [0, 1]; warnings: plausibility problems (empty when plausible); flagged: any warning.
    """

    rows: np.ndarray
    cols: np.ndarray
    confidence: np.ndarray
    warnings: list[str] = field(default_factory=list)
    flagged: bool = False
    refined: bool = False  # the landmark refiner was applied
    levels: tuple[str, ...] = LEVELS


def predict_landmarks(
    model: LoadedLandmarkModel,
    image: np.ndarray,
    pixel_spacing: Sequence[float] | None = None,
    flip_tta: bool = True,
    refine: bool = True,
    check_views: bool = True,
) -> LandmarkResult:
    """Predict the five disc centres on one 2D sagittal slice ``(rows, cols)``.

    With ``refine`` and a refiner attached to the model (a pack's ``landmark_refiner``), each
    coarse landmark is refined on a local patch (:mod:`lumbargrade.levels.refine`).

    ``pixel_spacing`` (row, col) mm, when known, is used to keep the aspect ratio and for the
    anatomical spacing check; ``flip_tta`` averages with the left-right mirrored image;
    ``check_views`` flags a result whose level naming changes with the field of view
    (:func:`naming_consistency`).
    """
    from ..runtime import run_net
    from .heatmaps import decode_heatmaps, normalized_to_pixel

    pre = dict(PREPROCESS_DEFAULTS, **model.config.get("preprocess", {}))
    img = np.asarray(image, dtype=np.float32)
    if img.ndim != 2:
        raise ValueError(f"expected a 2D image, got shape {img.shape}")
    x, m = prepare_input(img, pixel_spacing, pre)
    size = int(pre["size"])
    batch = [x, x[:, ::-1].copy()] if flip_tta else [x]
    xy, conf = decode_heatmaps(run_net(model.net, np.stack(batch)[:, None]))
    if flip_tta:
        xy[1, :, 0] = -xy[1, :, 0]
        xy_m = xy.mean(axis=0)
        conf_m = conf.mean(axis=0)
        # disagreement between the two passes lowers confidence
        disagree = np.linalg.norm(xy[0] - xy[1], axis=-1) * size / 2.0  # input px
        conf_m = conf_m * np.exp(-np.maximum(disagree - 2.0, 0.0) / 8.0)
    else:
        xy_m, conf_m = xy[0], conf[0]
    rc_in = normalized_to_pixel(xy_m, size, size)
    inv = np.linalg.inv(m)
    rc = (np.c_[rc_in, np.ones(len(rc_in))] @ inv.T)[:, :2]
    refined, repairs = False, []
    if refine and model.refiner is not None:
        from .refine import refine_landmarks, repair_skipped_discs

        rc = refine_landmarks(model.refiner, img, rc, pixel_spacing)
        rc, repairs = repair_skipped_discs(model.refiner, img, rc, pixel_spacing)
        refined = True
    res = LandmarkResult(rows=rc[:, 0], cols=rc[:, 1], confidence=np.asarray(conf_m, dtype=float))
    min_conf = float(model.config.get("min_confidence", 0.25))
    res.warnings = check_landmarks(rc, pixel_spacing, res.confidence, min_confidence=min_conf)
    if check_views:
        res.warnings += naming_consistency(model, img, pixel_spacing, rc)
    res.flagged = bool(res.warnings)
    res.warnings = res.warnings + repairs  # reported, not flagged: the repaired set passed the checks
    res.refined = refined
    return res


def naming_consistency(
    model: LoadedLandmarkModel,
    image: np.ndarray,
    pixel_spacing: Sequence[float] | None,
    rc: np.ndarray,
    crop_frac: float = 0.15,
    max_shift: float = 0.75,
) -> list[str]:
    """Warnings when the level names depend on the field of view.

    The coarse network looks again at the slice with its top cut off (``crop_frac`` of the
    height, never past L1/L2) and with its bottom cut off (never past L5/S1); a network that
    names the discs from the anatomy (the sacrum, the disc shapes) puts every level on the same
    disc, one that counts from an edge of the image does not. A level that moves by more than
    ``max_shift`` times the median disc spacing in either view is reported: its name (and so
    every level's) is not reliable.
    """
    from ..runtime import run_net
    from .heatmaps import decode_heatmaps, normalized_to_pixel

    pre = dict(PREPROCESS_DEFAULTS, **model.config.get("preprocess", {}))
    size = int(pre["size"])
    img = np.asarray(image, dtype=np.float32)
    h = img.shape[0]
    rc = np.asarray(rc, dtype=float)
    gap = float(np.median(np.hypot(*np.diff(rc, axis=0).T)))
    if not gap > 0:
        return []
    crops = []
    top = min(crop_frac * h, rc[0, 0] - 0.7 * gap)
    if top > 0.03 * h:
        crops.append(("top", (top, float(h))))
    bottom = max(h - crop_frac * h, rc[-1, 0] + 0.7 * gap)
    if bottom < 0.97 * h:
        crops.append(("bottom", (0.0, bottom)))
    if not crops:
        return []
    norm = normalise_intensity(img, pre["percentiles"], pre["clip"])
    mats = [preprocess_transform(img.shape, pixel_spacing, size, c) for _, c in crops]
    x = np.stack([resample(norm, m, size, pre.get("antialias_sigma_per_scale", 0.4)) for m in mats])[:, None]
    xy, _ = decode_heatmaps(run_net(model.net, x))
    out = []
    for (name, _), m, v in zip(crops, mats, xy):
        back = (np.c_[normalized_to_pixel(v, size, size), np.ones(len(v))] @ np.linalg.inv(m).T)[:, :2]
        shift = np.hypot(*(back - rc).T) / gap
        moved = [lv for lv, d in zip(LEVELS, shift) if d > max_shift]
        if moved:
            out.append(f"level naming unstable: with the image's {name} cut off, {', '.join(moved)} "
                       f"move{'s' if len(moved) == 1 else ''} to another place (up to {shift.max():.1f} disc spacings)")
    return out


def check_landmarks(
    rc: np.ndarray,
    pixel_spacing: Sequence[float] | None,
    confidence: np.ndarray | None = None,
    min_confidence: float = 0.25,
    gap_mm: tuple[float, float] = (25.0, 55.0),
    gap_ratio: tuple[float, float] = (0.5, 1.8),
) -> list[str]:
    """Plausibility of five landmarks ``rc`` (5, 2) [row, col] listed L1/L2..L5/S1, the image's
    rows running head to foot. Returns warnings (empty when plausible).

    Checks: confidence >= ``min_confidence``; rows strictly increasing (cranio-caudal order);
    consecutive disc distances within ``gap_mm`` when spacing is known, otherwise each within
    ``gap_ratio`` times their median.
    """
    rc = np.asarray(rc, dtype=float)
    warn: list[str] = []
    if confidence is not None:
        for lv, c in zip(LEVELS, confidence):
            if c < min_confidence:
                warn.append(f"{lv}: low confidence {c:.2f} (< {min_confidence:.2f})")
    if np.any(np.diff(rc[:, 0]) <= 0):
        warn.append("landmarks are not in cranio-caudal order (rows not increasing L1/L2 -> L5/S1)")
    if pixel_spacing is not None:
        d = np.hypot(np.diff(rc[:, 0]) * float(pixel_spacing[0]), np.diff(rc[:, 1]) * float(pixel_spacing[1]))
        for k, g in enumerate(d):
            if not gap_mm[0] <= g <= gap_mm[1]:
                warn.append(f"{LEVELS[k]} to {LEVELS[k + 1]}: {g:.1f} mm apart, outside the anatomical "
                            f"{gap_mm[0]:.0f}-{gap_mm[1]:.0f} mm")
    else:
        d = np.hypot(*np.diff(rc, axis=0).T)
        med = float(np.median(d))
        for k, g in enumerate(d):
            if med <= 0 or not gap_ratio[0] * med <= g <= gap_ratio[1] * med:
                warn.append(f"{LEVELS[k]} to {LEVELS[k + 1]}: spacing {g:.1f} px is irregular "
                            f"(median {med:.1f} px)")
    return warn


def load_landmark_model(folder: str | Path | None = None, runtime: str | None = None) -> LoadedLandmarkModel:
    """Alias of :func:`load_model` (the name model packs use)."""
    return load_model(folder, runtime)


# --------------------------------------------------------------------------- study-level API
@dataclass
class LandmarkSet:
    """Landmarks of one sagittal slice (or 2D image), ready for JSON and for slice choice.

    ``landmarks[level] = {"row", "col", "patient_mm": [x, y, z] | None, "confidence"}`` with
    row/col in the slice's own pixels as stored; ``slice_index`` is the index of the slice within
    its block (sorted along the normal), None for a 2D image.
    """

    landmarks: dict[str, dict[str, Any]]
    warnings: list[str]
    flagged: bool
    slice_index: int | None = None
    series_instance_uid: str | None = None
    slice_choice: str | None = None  # 'automatic' or 'given'
    refined: bool = False  # each landmark refined on a local patch (the pack's landmark_refiner)

    def patient_mm(self, level: str) -> np.ndarray | None:
        """LPS mm of a level's landmark, or None (no geometry)."""
        p = self.landmarks.get(level, {}).get("patient_mm")
        return None if p is None else np.asarray(p, dtype=float)

    def rc(self) -> np.ndarray:
        """(5, 2) [row, col] in LEVELS order."""
        return np.array([[self.landmarks[lv]["row"], self.landmarks[lv]["col"]] for lv in LEVELS])

    def to_dict(self) -> dict[str, Any]:
        d: dict[str, Any] = {
            "landmarks": self.landmarks,
            "warnings": list(self.warnings),
            "flagged": bool(self.flagged),
            "slice_index": self.slice_index,
            "refined": bool(self.refined),
        }
        if self.series_instance_uid is not None:
            d["series_instance_uid"] = self.series_instance_uid
        if self.slice_choice is not None:
            d["slice_choice"] = self.slice_choice
        return d


def _landmark_set(res: LandmarkResult, rc: np.ndarray, geometry: Any = None, **kw: Any) -> LandmarkSet:
    pts = geometry.pixel_to_patient(rc) if geometry is not None else None
    lm = {}
    for k, lv in enumerate(LEVELS):
        lm[lv] = {
            "row": round(float(rc[k, 0]), 2),
            "col": round(float(rc[k, 1]), 2),
            "patient_mm": None if pts is None else [round(float(v), 2) for v in pts[k]],
            "confidence": round(float(res.confidence[k]), 3),
        }
    return LandmarkSet(lm, list(res.warnings), bool(res.flagged), refined=bool(res.refined), **kw)


def landmarks_for_image(model: LoadedLandmarkModel, image: np.ndarray,
                        pixel_spacing: Sequence[float] | None = None) -> LandmarkSet:
    """Landmarks on a 2D sagittal image shown head-up, anterior left (PNG/NPY: no geometry)."""
    res = predict_landmarks(model, image, pixel_spacing)
    return _landmark_set(res, np.stack([res.rows, res.cols], axis=1))


def landmarks_for_volume(model: LoadedLandmarkModel, volume: Any, slice_index: int | None = None,
                         series_instance_uid: str | None = None) -> LandmarkSet:
    """Landmarks on the mid-sagittal slice of a sagittal :class:`geometry.Volume`.

    The slice (``slice_index`` or :func:`mid_sagittal.mid_sagittal_index`) is shown head-up,
    anterior left, for the network; results are mapped back to its stored pixels and to LPS mm.
    """
    from ..errors import InputError
    from .mid_sagittal import display_transform, from_display, mid_sagittal_index, to_display

    arr = np.asarray(volume.array)
    n = arr.shape[0]
    if slice_index is None:
        k = mid_sagittal_index(arr, slice_spacing_mm=volume.spacing[0])
        how = "automatic"
    else:
        if not -n <= int(slice_index) < n:
            raise InputError(series_instance_uid or "sagittal series", f"--slice {slice_index} out of range 0..{n - 1}")
        k = int(slice_index) % n
        how = "given"
    geom = volume.slice_geometry(k)
    t = display_transform(geom.row_cosine, geom.col_cosine)
    img = to_display(arr[k], t)
    sp = geom.pixel_spacing[::-1] if t[0] else geom.pixel_spacing
    res = predict_landmarks(model, img, sp)
    rc = from_display(np.stack([res.rows, res.cols], axis=1), arr[k].shape, t)
    return _landmark_set(res, rc, geom, slice_index=k, series_instance_uid=series_instance_uid, slice_choice=how)


def landmarks_for_series(model: LoadedLandmarkModel, series: Any, slice_index: int | None = None) -> LandmarkSet:
    """Landmarks for a sagittal :class:`lumbargrade.io.Series` (its largest block)."""
    from ..errors import InputError

    if not getattr(series, "blocks", None):
        raise InputError(getattr(series, "series_instance_uid", "sagittal series"), "series has no slices")
    block = max(series.blocks, key=len)
    return landmarks_for_volume(model, block.volume(), slice_index, getattr(series, "series_instance_uid", None))
