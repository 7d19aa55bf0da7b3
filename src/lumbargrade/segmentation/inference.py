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

A segmenter may carry a dural sac refiner (``Segmenter.refiner``; a network trained with
``role=sac_refiner``, in a model pack the ``sac_refiner`` folder beside ``segmentation``): a second
look at the sac alone on a finer field (0.35 mm) centred on the sac the first look found. Its sac
probability is blended with the first look's, ``refiner_weight`` of it (1: the refiner's outline
replaces the first one's; a model pack sets it in ``pack.json``, ``components.sac_refiner.weight``).

A folder whose ``config.json`` lists ``members`` (member folders inside it, each a run folder as
above, trained with ``lumbargrade train segmentation --ensemble N``) is an ensemble: its
probabilities are the mean of the members' (:attr:`Segmenter.members`); the members must share
the field (``target_spacing``, ``size``, ``margin``), the role and the output classes.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ..errors import InputError
from ..measurements import largest_component  # re-exported: one implementation for every stage

__all__ = ["SegOutput", "Segmenter", "evaluate_rows", "largest_component", "load_segmenter", "predict_rows"]



def torch_device_type(device: str) -> str:
    """'cpu' / 'cuda' / ... of a device string ('cuda:1' -> 'cuda')."""
    return str(device).split(":", 1)[0]


@dataclass
class SegOutput:
    """One slice's segmentation on its own pixel grid.

    labels: uint8 ``[rows, cols]`` network classes (0 background, 1 dural sac, 2 disc and, for a
    network with regions, 3 facet, 4 foramen: sides not yet told apart).
    probs: float32 ``[K, rows, cols]`` structure probabilities (the mean of the two looks).
    quality: numbers the plausibility gate reads: ``sac_confidence`` and ``disc_confidence``
    (mean probability of the winning class inside each predicted structure), ``mirror_dice_sac``
    and ``mirror_dice_disc`` (agreement of the direct and the left-right mirrored look; None
    without the mirrored look), ``centre`` (the field centre used, pixel coordinates) and
    ``located`` (True when the field was placed by a search over the slice).
    """

    labels: np.ndarray
    probs: np.ndarray
    quality: dict

    @property
    def sac(self) -> np.ndarray:
        return self.labels == 1

    @property
    def disc(self) -> np.ndarray:
        return self.labels == 2


class Segmenter:
    """A loaded segmentation network plus its preprocessing config (see :class:`SegConfig`).

    ``model``: a torch module (run on ``device``; channels-last and, per ``cfg.bf16``, bf16
    autocast on the CPU) or a :class:`lumbargrade.runtime.OnnxNet` (fp32).

    Images are expected in the canonical axial view (:mod:`lumbargrade.io.orientation`: anterior
    at the top, patient left on the right), as the network was trained.
    """

    def __init__(self, model, cfg, device: str = "cpu", batch_size: int = 16,
                 members: Sequence[Segmenter] | None = None) -> None:
        from ..runtime import OnnxNet

        self.cfg = cfg
        self.device = device
        self.batch_size = batch_size
        self.memory_format = None
        self.refiner: Segmenter | None = None  # a role="sac_refiner" Segmenter, applied after predict
        #: share of the refiner in the dural sac probability (the rest is the first look's), in (0, 1]
        self.refiner_weight: float = 1.0
        #: an ensemble's members (their probabilities are averaged; ``model`` is then the first's)
        self.members: list[Segmenter] | None = list(members) if members else None
        if self.members:
            first = self.members[0]
            self.model, self.net, self.memory_format = first.model, first.net, first.memory_format
            return
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
    def sac_refiner_weight(self) -> float | None:
        """The refiner's share of the dural sac probability as applied, None without a refiner
        (recorded beside every output)."""
        return float(self.refiner_weight) if self.refiner is not None else None

    @property
    def runtime(self) -> str:
        return self.net.runtime

    @property
    def classes(self) -> tuple[str, ...]:
        return self.cfg.classes

    def _probs_fields(self, fields: list[np.ndarray]) -> list[np.ndarray]:
        from .losses import structure_probs_np

        if self.members:  # an ensemble: the mean of the members' structure probabilities
            each = [m._probs_fields(fields) for m in self.members]
            return [np.mean(ps, axis=0, dtype=np.float32) for ps in zip(*each)]
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

    def _window_centres(self, shape, spacing) -> list[tuple[float, float]]:
        """Field centres (pixel coordinates) that tile the slice with half-field overlap; one
        (the centre) when the slice is not much larger than the field."""
        side_mm = self.cfg.size * self.cfg.target_spacing
        centres_1d = []
        for n, sp in zip(shape, spacing):
            extent = n * sp
            if extent <= 1.25 * side_mm:
                centres_1d.append([(n - 1) / 2.0])
                continue
            k = int(np.ceil((extent - side_mm) / (side_mm / 2))) + 1
            lo, hi = side_mm / 2 / sp - 0.5, n - 0.5 - side_mm / 2 / sp
            centres_1d.append(list(np.linspace(lo, hi, k)))
        return [(float(a), float(b)) for a in centres_1d[0] for b in centres_1d[1]]

    def locate(self, image: np.ndarray, spacing: tuple[float, float]) -> tuple[float, float] | None:
        """Where the dural sac is on a slice larger than the network's field: the centroid (pixel
        coordinates) of the most confident sac over windows that tile the slice; None when the
        slice fits one field or no window finds a sac."""
        from .losses import probs_to_labels

        centres = self._window_centres(np.shape(image), spacing)
        if len(centres) == 1:
            return None
        prepared = [self._prepare(image, spacing, c) for c in centres]
        probs = self._probs_fields([f for f, _ in prepared])
        best, best_score = None, 0.0
        for p, (_, g) in zip(probs, prepared):
            lab = probs_to_labels(p, self.cfg.per_structure)
            sac = lab == 1
            if self.cfg.largest_component:
                sac = largest_component(sac)
            if not sac.any():
                continue
            # a sac next to a disc, confidently predicted, wins
            score = float(p[0][sac].sum()) * (1.5 if (lab == 2).any() else 1.0)
            if score > best_score:
                ii, jj = np.nonzero(sac)
                best_score = score
                best = tuple(float(v) for v in g.field_to_image(ii.mean(), jj.mean()))
        return best

    def _looks(self, fields: list[np.ndarray]) -> tuple[list[np.ndarray], list[np.ndarray | None]]:
        """Probabilities of each field, averaged with the left-right mirrored look when
        ``mirror_tta``; also the mirrored look alone (None without it)."""
        if not self.cfg.mirror_tta:
            return self._probs_fields(fields), [None] * len(fields)
        both = self._probs_fields(fields + [np.ascontiguousarray(f[:, ::-1]) for f in fields])
        n = len(fields)
        direct, mirrored = both[:n], [p[..., ::-1] for p in both[n:]]
        return [0.5 * (a + b) for a, b in zip(direct, mirrored)], list(zip(direct, mirrored))

    def predict(
        self,
        items: Sequence[tuple[np.ndarray, tuple[float, float]]],
        centres: Sequence[tuple[float, float] | None] | None = None,
    ) -> list[SegOutput]:
        """``[(image [rows, cols], (row_mm, col_mm)), ...]`` -> one :class:`SegOutput` per item.

        ``centres``: per item, where to centre the network's field (pixel coordinates, e.g. the
        disc-centre landmark projected onto the slice); None: the sac is located by a search over
        the slice when it is larger than the field, else the image centre is used.
        """
        from .losses import probs_to_labels
        from .preprocessing import from_field

        items = list(items)
        centres = list(centres) if centres is not None else [None] * len(items)
        located = [False] * len(items)
        for k, (im, sp) in enumerate(items):
            if centres[k] is None:
                c = self.locate(im, sp)
                if c is not None:
                    centres[k], located[k] = c, True
        prepared = [self._prepare(im, sp, c) for (im, sp), c in zip(items, centres)]
        probs, looks = self._looks([f for f, _ in prepared])
        grids = [g for _, g in prepared]
        if self.cfg.recentre_mm > 0:
            redo = []
            for k, (p, g) in enumerate(zip(probs, grids)):
                lab = probs_to_labels(p[:2], self.cfg.per_structure)
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
                new, new_looks = self._looks([f for f, _ in again])
                for (k, centre), p, lk, (_, g) in zip(redo, new, new_looks, again):
                    probs[k], looks[k], grids[k], centres[k] = p, lk, g, centre
        out = []
        for p, lk, g, c, loc in zip(probs, looks, grids, centres, located):
            full = from_field(p, g, order=1, cval=0.0)
            lab = probs_to_labels(full, self.cfg.per_structure)
            if self.cfg.largest_component:
                for k in (1, 2):
                    m = lab == k
                    if m.any():
                        lab[m & ~largest_component(m)] = 0
            out.append(SegOutput(lab, full, self._quality(full, lab, lk, g, c, loc)))
        if self.refiner is not None:
            out = self._refine_sac(items, out)
        return out

    def _refine_sac(self, items: list, outs: list[SegOutput]) -> list[SegOutput]:
        """The refiner's second look at each slice's dural sac, its field centred on the sac of the
        first look: the sac probability becomes ``refiner_weight`` x the refiner's + the rest x the
        first look's, the sac mask where that exceeds 0.5 (largest component); pixels the first
        look called sac and the blend does not take the most likely other class. The other classes
        are kept. ``quality`` gains ``sac_refined`` and ``refiner_dice_sac`` (Dice of the refiner's
        sac and the first look's). Slices where the first look found no sac are left as they are."""
        from .losses import probs_to_labels
        from .preprocessing import from_field_within

        ref = self.refiner
        todo = [k for k, o in enumerate(outs) if o.sac.any()]
        if ref is None or not todo:
            return outs
        centres = []
        for k in todo:
            ii, jj = np.nonzero(outs[k].sac)
            centres.append((float(ii.mean()), float(jj.mean())))
        prepared = [ref._prepare(items[k][0], items[k][1], c) for k, c in zip(todo, centres)]
        probs, _ = ref._looks([f for f, _ in prepared])
        for k, p, (_, g) in zip(todo, probs, prepared):
            o = outs[k]
            ref_p = from_field_within(p[0], g, order=1, cval=0.0)
            w = float(self.refiner_weight)
            sac_p = ref_p if w >= 1.0 else (w * ref_p + (1.0 - w) * o.probs[0]).astype(np.float32)
            sac = sac_p > 0.5
            if ref.cfg.largest_component and sac.any():
                sac = largest_component(sac)
            full = o.probs.copy()
            full[0] = 0.0  # the most likely other class where the first look's sac is dropped
            alt = probs_to_labels(full, self.cfg.per_structure)
            lab = o.labels.copy()
            was = lab == 1
            lab[was & ~sac] = alt[was & ~sac]
            lab[sac] = 1
            full[0] = sac_p
            q = dict(o.quality)
            q["sac_refined"] = True
            alone = ref_p > 0.5
            q["refiner_dice_sac"] = round(float(2 * (was & alone).sum() / max(was.sum() + alone.sum(), 1)), 4)
            outs[k] = SegOutput(lab, full, q)
        return outs

    def _quality(self, probs, lab, looks, grid, centre, located) -> dict:
        from .losses import dice_score, probs_to_labels

        q: dict = {"centre": None if centre is None else [round(float(v), 2) for v in centre],
                   "located": bool(located)}
        for k, name in ((1, "sac"), (2, "disc")):
            m = lab == k
            q[f"{name}_confidence"] = round(float(probs[k - 1][m].mean()), 4) if m.any() else None
        if looks is not None:
            a = probs_to_labels(looks[0], self.cfg.per_structure)
            b = probs_to_labels(looks[1], self.cfg.per_structure)
            q["mirror_dice_sac"] = round(dice_score(a == 1, b == 1), 4)
            q["mirror_dice_disc"] = round(dice_score(a == 2, b == 2), 4)
        else:
            q["mirror_dice_sac"] = q["mirror_dice_disc"] = None
        return q

    def predict_probs_batch(
        self, items: Sequence[tuple[np.ndarray, tuple[float, float]]]
    ) -> list[np.ndarray]:
        """``[(image, spacing), ...]`` -> per item ``[K, rows, cols]`` float32 structure
        probabilities on the original pixel grid."""
        return [o.probs for o in self.predict(items)]

    def segment_batch(
        self, items: Sequence[tuple[np.ndarray, tuple[float, float]]], centres=None
    ) -> list[tuple[np.ndarray, np.ndarray]]:
        """``[(image [rows, cols], (row_mm, col_mm)), ...]`` -> ``[(sac_mask, disc_mask), ...]``
        (boolean, each the shape of its image)."""
        return [(o.sac, o.disc) for o in self.predict(items, centres)]

    def segment(
        self, image: np.ndarray, spacing: tuple[float, float]
    ) -> tuple[np.ndarray, np.ndarray]:
        """One axial slice ``[rows, cols]`` with spacing ``(row_mm, col_mm)`` ->
        ``(dural_sac_mask, disc_mask)``, boolean ``[rows, cols]``."""
        return self.segment_batch([(image, spacing)])[0]


def load_segmenter(
    path: str | Path, device: str = "cpu", threads: int | None = None, runtime: str | None = None,
    refiner: str | Path | bool | None = None, refiner_weight: float | None = None, **overrides,
) -> Segmenter:
    """Load a segmenter from a folder holding ``config.json`` and ``model.safetensors`` (and
    ``model.onnx``, used per ``runtime`` on the CPU; see :mod:`lumbargrade.runtime`).

    ``threads`` sets the networks' CPU threads (None leaves them); ``overrides`` replace config
    values used at inference (e.g. ``largest_component=False``, ``recentre_mm=0``). ``refiner``:
    a dural sac refiner folder to attach (``role=sac_refiner``); None attaches the pack's
    ``sac_refiner`` when ``path`` is the ``segmentation`` folder of a model pack that lists one; False none.
    ``refiner_weight``: the refiner's share of the dural sac probability, in (0, 1]; None takes the
    pack's (``pack.json`` ``components.sac_refiner.weight``), 1 where it names none.
    A folder whose config lists ``members`` loads as an ensemble (see the module docstring).
    """
    from ..runtime import load_onnx_net, resolve_runtime
    from .training import SegConfig

    p = Path(path)
    cfg_path, w_path = p / "config.json", p / "model.safetensors"
    if not p.is_dir():
        raise InputError(p, "segmentation model folder not found")
    if not cfg_path.is_file():
        raise InputError(p, "needs config.json and model.safetensors (a segmentation run or model-pack folder)")
    try:
        d = json.loads(cfg_path.read_text())
    except json.JSONDecodeError as e:
        raise InputError(cfg_path, f"not valid JSON ({e})") from e
    if isinstance(d, dict) and "members" in d:
        seg = _load_ensemble(p, d, device, threads, runtime, overrides)
        return _attach_refiner(seg, p, device, runtime, refiner, refiner_weight)
    if not w_path.is_file():
        raise InputError(p, "needs config.json and model.safetensors (a segmentation run or model-pack folder)")
    known = set(SegConfig.__dataclass_fields__)
    d = {k: v for k, v in d.items() if k in known}
    d.setdefault("regions", False)  # networks trained before regions existed: sac and disc only
    d.setdefault("mirror_tta", False)
    d.setdefault("model_kwargs", {})
    cfg = SegConfig.from_dict(d, str(cfg_path))
    cfg.update(overrides, "load_segmenter")
    if threads:
        from ..runtime import set_num_threads

        set_num_threads(threads)
    net = load_onnx_net(p, resolve_runtime(runtime)) if torch_device_type(device) == "cpu" else None
    if net is not None:
        seg = Segmenter(net, cfg, device=device)
    else:
        from .models import create_model, load_weights

        try:
            model = create_model(cfg.model, **cfg.model_args())
        except KeyError as e:
            raise InputError(cfg_path, str(e)) from e
        load_weights(model, w_path)
        model.to(device)
        seg = Segmenter(model, cfg, device=device)
    return _attach_refiner(seg, p, device, runtime, refiner, refiner_weight)


#: Config fields every member of a segmentation ensemble must share (the field and the outputs).
_ENSEMBLE_SHARED = ("role", "target_spacing", "size", "margin", "per_structure", "regions")


def check_members_share(folders: Sequence[Path], cfgs: Sequence) -> None:
    """Raise :class:`InputError` naming the first member folder whose config differs from the first
    member's in any of :data:`_ENSEMBLE_SHARED` (the field and the outputs)."""
    first = cfgs[0].to_dict()
    for f, c in zip(folders[1:], cfgs[1:]):
        d = c.to_dict()
        diff = [k for k in _ENSEMBLE_SHARED if json.dumps(d.get(k)) != json.dumps(first.get(k))]
        if diff:
            raise InputError(f, f"ensemble members must share {', '.join(diff)}")


def _load_ensemble(p: Path, d: dict, device, threads, runtime, overrides) -> Segmenter:
    """An ensemble folder (``config.json`` with ``members``) -> a :class:`Segmenter` averaging its
    members' probabilities; the inference options (``largest_component``, ``recentre_mm``,
    ``mirror_tta``...) are the ensemble config's."""
    from ..grading.classifier_inference import member_folders
    from .training import SegConfig

    folders = member_folders(p, d)
    members = []
    for f in folders:
        if not (f / "config.json").is_file():
            raise InputError(f, "ensemble member folder not found (named in config.json 'members')")
        try:
            if "members" in json.loads((f / "config.json").read_text()):
                raise InputError(f, "an ensemble member cannot itself be an ensemble")
        except json.JSONDecodeError as e:
            raise InputError(f / "config.json", f"not valid JSON ({e})") from e
        members.append(load_segmenter(f, device=device, threads=threads, runtime=runtime, refiner=False))
    check_members_share(folders, [m.cfg for m in members])
    first = members[0].cfg.to_dict()
    known = set(SegConfig.__dataclass_fields__)
    merged = dict(first, **{k: v for k, v in d.items() if k in known})
    for k in _ENSEMBLE_SHARED:  # the members decide what the field and the outputs are
        merged[k] = first.get(k)
    cfg = SegConfig.from_dict(merged, str(p / "config.json"))
    cfg.update(overrides, "load_segmenter")
    return Segmenter(None, cfg, device=device, members=members)


def _attach_refiner(seg: Segmenter, p: Path, device, runtime, refiner, weight: float | None = None) -> Segmenter:
    """Attach the dural sac refiner to a first-look segmenter, with its weight (see
    :func:`load_segmenter`)."""
    cfg = seg.cfg
    if cfg.role == "segmenter" and refiner is not False:
        from ..modelpack import companion_entry, companion_folder

        if refiner is None or refiner is True:
            ref_path = companion_folder(p, "sac_refiner")  # a model pack's refiner, when it lists one
            if refiner is True and ref_path is None:
                raise InputError(p, "no sac_refiner folder beside this model pack's segmentation")
        else:
            ref_path = Path(refiner)
        if ref_path is not None:
            seg.refiner = load_segmenter(ref_path, device=device, runtime=runtime, refiner=False)
            if seg.refiner.cfg.role != "sac_refiner":
                raise InputError(ref_path, f"not a dural sac refiner (config role {seg.refiner.cfg.role!r})")
            where = "refiner_weight"
            if weight is None:
                where = f"{p.parent / 'pack.json'} (components.sac_refiner.weight)"
                weight = (companion_entry(p, "sac_refiner") or {}).get("weight", 1.0)
            seg.refiner_weight = check_refiner_weight(weight, where)
    return seg


def check_refiner_weight(weight, where: str) -> float:
    """``weight`` as a float in (0, 1], else an :class:`InputError` naming ``where``."""
    from ..numbers import is_finite_number

    if not is_finite_number(weight) or not 0.0 < float(weight) <= 1.0:
        raise InputError(where, f"the dural sac refiner's weight must be a number in (0, 1], got {weight!r}")
    return float(weight)


def evaluate_rows(
    segmenter: Segmenter, rows: Sequence[dict], batch_size: int = 8, progress: bool = False
) -> list[dict]:
    """Dice of the segmenter against each manifest row's label map (both in the slice's canonical
    view; Dice does not depend on the pixel layout).

    Returns one dict per row: ``patient_id``, ``level``, ``dural_sac``, ``disc`` (Dice; 1.0 where
    truth and prediction are both empty).
    """
    from ..manifest import axial_view_of, load_label_map
    from .losses import dice_score

    out = []
    chunks = range(0, len(rows), batch_size)
    if progress:
        from tqdm import tqdm

        chunks = tqdm(chunks, desc="segment", leave=False)
    for s in chunks:
        part = rows[s : s + batch_size]
        for r, o in zip(part, predict_rows(segmenter, part, batch_size)):
            lab = axial_view_of(r).to_canonical(load_label_map(r))
            sac, disc = o.labels == 1, o.labels == 2
            out.append(
                {
                    "patient_id": r.get("patient_id"),
                    "level": r.get("level"),
                    "dural_sac": dice_score(sac, lab == 1),
                    "disc": dice_score(disc, lab == 2),
                }
            )
    return out


def predict_rows(segmenter: Segmenter, rows: Sequence[dict], batch_size: int = 16,
                 centre_on_label_map: bool = True, fat_shift_reader=None) -> list[SegOutput]:
    """The segmenter on manifest rows' axial slices, each in its canonical view
    (:func:`lumbargrade.manifest.axial_view_of`); outputs are canonical too.

    ``centre_on_label_map``: centre the network's field on the dural sac of the row's label map
    when it has one (as ``analyze`` centres it near the disc-centre landmark; no search over the
    slice), else the sac is located by a search. ``fat_shift_reader``
    (:class:`lumbargrade.segmentation.fat_shift.FatShiftReader`): the disc and regions of each
    output are moved back by the fat-water shift as ``analyze`` moves them (direction per study)."""
    from dataclasses import replace

    from ..manifest import axial_view_of, load_axial, load_label_map

    fix = None
    if fat_shift_reader is not None:
        from .fat_shift import ShiftForRows

        fix = ShiftForRows(fat_shift_reader, rows)
    out: list[SegOutput] = []
    for s in range(0, len(rows), batch_size):
        items, centres = [], []
        for r in rows[s : s + batch_size]:
            img, sp = load_axial(r)
            v = axial_view_of(r)
            items.append((v.to_canonical(img), v.canonical_spacing(sp)))
            c = None
            if centre_on_label_map and r.get("label_map"):
                sac = v.to_canonical(load_label_map(r)) == 1
                if sac.any():
                    ii, jj = np.nonzero(sac)
                    c = (float(ii.mean()), float(jj.mean()))
            centres.append(c)
        outs = segmenter.predict(items, centres)
        if fix is not None:
            outs = [replace(o, labels=fix.correct_canonical(r, o.labels)) for r, o in zip(rows[s : s + batch_size], outs)]
        out.extend(outs)
    return out
