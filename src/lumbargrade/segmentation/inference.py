"""Dural sac and disc masks for axial slices from a trained network.

``load_segmenter(path)`` reads ``config.json`` + ``model.safetensors`` from a training run folder
or a model-pack subfolder (weights only from that explicit path; nothing is downloaded).
``Segmenter.segment(image, spacing)`` resamples the slice to the network's field
(``target_spacing`` mm), predicts, maps the (sac, disc) probabilities back onto the original pixel
grid by bilinear interpolation and decides there, so masks have the slice's ``[rows, cols]``.

Options (from the config, overridable): ``largest_component`` keeps only the largest 8-connected
component of each structure; ``recentre_mm``: when the predicted structures' centroid lies more
than this many mm from the field centre (a spine far from the image centre), the slice is
predicted again with the field centred on them (0 disables).
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from ..errors import InputError

__all__ = ["Segmenter", "evaluate_rows", "largest_component", "load_segmenter"]


def largest_component(mask: np.ndarray) -> np.ndarray:
    """The largest 8-connected component of a boolean mask (empty stays empty)."""
    from scipy import ndimage

    m = np.asarray(mask, bool)
    lab, n = ndimage.label(m, structure=np.ones((3, 3), bool))
    if n <= 1:
        return m
    sizes = np.bincount(lab.ravel())
    sizes[0] = 0
    return lab == int(np.argmax(sizes))


def torch_device_type(device: str) -> str:
    """'cpu' / 'cuda' / ... of a device string ('cuda:1' -> 'cuda')."""
    return str(device).split(":", 1)[0]


class Segmenter:
    """A loaded segmentation network plus its preprocessing config (see :class:`SegConfig`).

    ``model``: a torch module (run on ``device``; channels-last and, per ``cfg.bf16``, bf16
    autocast on the CPU) or a :class:`lumbargrade.runtime.OnnxNet` (fp32)."""

    def __init__(self, model, cfg, device: str = "cpu", batch_size: int = 8) -> None:
        from ..runtime import OnnxNet

        self.cfg = cfg
        self.device = device
        self.batch_size = batch_size
        self.memory_format = None
        if isinstance(model, OnnxNet):
            self.model, self.net = model, model
            return
        import torch

        from ..runtime import TorchNet

        self.model = model.eval()
        if torch_device_type(device) == "cpu":
            # channels-last: faster oneDNN convolutions on CPU (same results up to float rounding)
            self.net = TorchNet(self.model, bf16=bool(cfg.bf16), channels_last=True)
            self.model, self.memory_format = self.net.module, torch.channels_last
        else:
            self.net = TorchNet(self.model, bf16=bool(cfg.bf16))

    @property
    def runtime(self) -> str:
        return self.net.runtime

    def _probs_fields(self, fields: list[np.ndarray]) -> list[np.ndarray]:
        from .losses import structure_probs_np

        out = []
        for s in range(0, len(fields), self.batch_size):
            logits = self.net(np.stack(fields[s : s + self.batch_size])[:, None])
            out.extend(structure_probs_np(logits, self.cfg.per_structure))
        return out

    def _prepare(self, image, spacing, centre=None):
        from .augment import centre_crop
        from .preprocessing import make_grid, preprocess

        img = np.asarray(image, dtype=np.float32)
        if img.ndim != 2:
            raise InputError(None, f"expected a 2D axial image, got shape {img.shape}")
        c = self.cfg
        m = int(c.margin)
        field, _ = preprocess(
            img, spacing, c.target_spacing, (c.size + 2 * m, c.size + 2 * m), centre
        )
        grid = make_grid(img.shape, spacing, c.target_spacing, (c.size, c.size), centre)
        return np.ascontiguousarray(centre_crop(field, (c.size, c.size))), grid

    def predict_probs_batch(
        self, items: Sequence[tuple[np.ndarray, tuple[float, float]]]
    ) -> list[np.ndarray]:
        """``[(image, spacing), ...]`` -> per item ``[2, rows, cols]`` float32 (sac, disc) probabilities
        on the original pixel grid."""
        from .losses import probs_to_labels
        from .preprocessing import from_field

        prepared = [self._prepare(im, sp) for im, sp in items]
        probs = self._probs_fields([f for f, _ in prepared])
        grids = [g for _, g in prepared]
        if self.cfg.recentre_mm > 0:
            redo = []
            for k, (p, g) in enumerate(zip(probs, grids)):
                lab = probs_to_labels(p, self.cfg.per_structure)
                if not lab.any():
                    continue
                ii, jj = np.nonzero(lab)
                ci, cj = ii.mean(), jj.mean()
                off_mm = (
                    np.hypot(ci - (g.size[0] - 1) / 2, cj - (g.size[1] - 1) / 2) * g.target_spacing
                )
                if off_mm > self.cfg.recentre_mm:
                    r, c = g.field_to_image(ci, cj)
                    redo.append((k, (float(r), float(c))))
            if redo:
                again = [self._prepare(items[k][0], items[k][1], centre) for k, centre in redo]
                new = self._probs_fields([f for f, _ in again])
                for (k, _), p, (_, g) in zip(redo, new, again):
                    probs[k], grids[k] = p, g
        return [from_field(p, g, order=1, cval=0.0) for p, g in zip(probs, grids)]

    def segment_batch(
        self, items: Sequence[tuple[np.ndarray, tuple[float, float]]]
    ) -> list[tuple[np.ndarray, np.ndarray]]:
        """``[(image [rows, cols], (row_mm, col_mm)), ...]`` -> ``[(sac_mask, disc_mask), ...]``
        (boolean, each the shape of its image)."""
        from .losses import probs_to_labels

        out = []
        for p in self.predict_probs_batch(items):
            lab = probs_to_labels(p, self.cfg.per_structure)
            sac, disc = lab == 1, lab == 2
            if self.cfg.largest_component:
                sac, disc = largest_component(sac), largest_component(disc)
            out.append((sac, disc))
        return out

    def segment(
        self, image: np.ndarray, spacing: tuple[float, float]
    ) -> tuple[np.ndarray, np.ndarray]:
        """One axial slice ``[rows, cols]`` with spacing ``(row_mm, col_mm)`` ->
        ``(dural_sac_mask, disc_mask)``, boolean ``[rows, cols]``."""
        return self.segment_batch([(image, spacing)])[0]


def load_segmenter(
    path: str | Path, device: str = "cpu", threads: int | None = None, runtime: str | None = None,
    **overrides,
) -> Segmenter:
    """Load a segmenter from a folder holding ``config.json`` and ``model.safetensors`` (and
    ``model.onnx``, used per ``runtime`` on the CPU; see :mod:`lumbargrade.runtime`).

    ``threads`` sets the networks' CPU threads (None leaves them); ``overrides`` replace config
    values used at inference (e.g. ``largest_component=False``, ``recentre_mm=0``).
    """
    from ..runtime import load_onnx_net, resolve_runtime
    from .training import SegConfig

    p = Path(path)
    cfg_path, w_path = p / "config.json", p / "model.safetensors"
    if not p.is_dir():
        raise InputError(p, "segmentation model folder not found")
    if not cfg_path.is_file() or not w_path.is_file():
        raise InputError(
            p, "needs config.json and model.safetensors (a segmentation run or model-pack folder)"
        )
    try:
        d = json.loads(cfg_path.read_text())
    except json.JSONDecodeError as e:
        raise InputError(cfg_path, f"not valid JSON ({e})") from e
    known = set(SegConfig.__dataclass_fields__)
    cfg = SegConfig.from_dict({k: v for k, v in d.items() if k in known}, str(cfg_path))
    cfg.update(overrides, "load_segmenter")
    if threads:
        from ..runtime import set_num_threads

        set_num_threads(threads)
    net = load_onnx_net(p, resolve_runtime(runtime)) if torch_device_type(device) == "cpu" else None
    if net is not None:
        return Segmenter(net, cfg, device=device)
    from .models import create_model, load_weights

    try:
        model = create_model(cfg.model, per_structure=cfg.per_structure, **cfg.model_kwargs)
    except KeyError as e:
        raise InputError(cfg_path, str(e)) from e
    load_weights(model, w_path)
    model.to(device)
    return Segmenter(model, cfg, device=device)


def evaluate_rows(
    segmenter: Segmenter, rows: Sequence[dict], batch_size: int = 8, progress: bool = False
) -> list[dict]:
    """Dice of the segmenter against each manifest row's label map, on the original pixel grid.

    Returns one dict per row: ``patient_id``, ``level``, ``dural_sac``, ``disc`` (Dice; 1.0 where
    truth and prediction are both empty).
    """
    from ..manifest import load_axial, load_label_map
    from .losses import dice_score

    out = []
    chunks = range(0, len(rows), batch_size)
    if progress:
        from tqdm import tqdm

        chunks = tqdm(chunks, desc="segment", leave=False)
    for s in chunks:
        part = rows[s : s + batch_size]
        items = [load_axial(r) for r in part]
        for r, (sac, disc) in zip(part, segmenter.segment_batch(items)):
            lab = load_label_map(r)
            out.append(
                {
                    "patient_id": r.get("patient_id"),
                    "level": r.get("level"),
                    "dural_sac": dice_score(sac, lab == 1),
                    "disc": dice_score(disc, lab == 2),
                }
            )
    return out
