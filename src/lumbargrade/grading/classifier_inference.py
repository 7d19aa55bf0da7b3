"""Run trained patch classifiers: load a run folder / model-pack subfolder and grade one level.

A classifier folder holds ``config.json`` (task, architecture, patch settings, calibration:
``logit_bias`` and ``temperature``, the binary operating ``threshold``) and ``model.safetensors``.
Probabilities are calibrated: ``softmax((logits + logit_bias) / temperature)``.

An ensemble folder (``lumbargrade train classifier --ensemble N``) holds a ``config.json`` with
``"members": ["members/seed0", ...]`` (member folders, each a classifier folder as above, all with
the same task and patch settings) and the ensemble's own ``threshold``; its probability is the mean
of the members' calibrated probabilities (:class:`ClassifierEnsemble`).
torch is imported lazily (inside the functions).
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np

from .calibration import positive_probability, softmax
from .patches import LATERAL_FINDINGS, PatchConfig, level_patches, normalise_context, normalise_slice

__all__ = [
    "BINARY_LABELS",
    "CENTRAL_GRADES",
    "TASKS",
    "Classifier",
    "ClassifierEnsemble",
    "forward_logits",
    "grade_level",
    "grade_levels",
    "load_classifier",
    "save_classifier",
]

from .names import BINARY_LABELS, CENTRAL_GRADES

#: task -> number of classes
TASKS = {"central": 4, "central_binary": 2, "foramen": 2, "facet": 2}


def _pick_device(device: str | None):
    import torch

    if device in (None, "auto"):
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(device)


def forward_logits(model, patches: np.ndarray, in_chans: int = 1, batch_size: int = 64, device=None,
                   input_mean: float = 0.0, input_std: float = 1.0) -> np.ndarray:
    """Raw logits ``[n, k]`` (float64) of ``model`` for patches ``[n, h, w]`` (or context stacks
    ``[n, c, h, w]``), batched, eval mode.

    The network sees ``(patch - input_mean) / input_std``, a single-channel patch repeated to
    ``in_chans`` channels.
    """
    import torch

    x = np.asarray(patches, dtype=np.float32)
    if x.ndim == 2:
        x = x[None]
    if x.ndim not in (3, 4):
        raise ValueError(f"patches must be [n, h, w] or [n, c, h, w], got shape {x.shape}")
    dev = device or next(model.parameters()).device
    was_training = model.training
    model.eval()
    out = []
    try:
        with torch.inference_mode():
            for i in range(0, len(x), batch_size):
                xb = torch.from_numpy(x[i : i + batch_size]).to(dev)
                if xb.ndim == 3:
                    xb = xb[:, None]
                if input_mean != 0.0 or input_std != 1.0:
                    xb = (xb - input_mean) / input_std
                if in_chans != 1:
                    xb = xb.expand(-1, in_chans, -1, -1)
                out.append(model(xb).float().cpu().numpy())
    finally:
        model.train(was_training)
    if not out:
        return np.zeros((0, getattr(model, "num_classes", 0)), dtype=np.float64)
    return np.concatenate(out).astype(np.float64)


class Classifier:
    """A trained patch classifier with its calibration and operating threshold.

    Attributes: ``task`` (central | central_binary | foramen | facet), ``num_classes``,
    ``temperature``, ``logit_bias`` ([k]), ``threshold`` (on the probability of
    moderate/severe), ``patch`` (:class:`PatchConfig`), ``config`` (the saved dict).
    """

    def __init__(self, model, config: Mapping, device=None, batch_size: int = 64) -> None:
        self.model = model
        self.config = dict(config)
        self.task = str(config["task"])
        self.num_classes = int(config["num_classes"])
        self.in_chans = int(config.get("in_chans", 1))
        self.context_slices = int(config.get("context_slices", 0) or 0)  # lumbargrade.grading.context
        self.temperature = float(config.get("temperature", 1.0))
        bias = config.get("logit_bias")
        self.logit_bias = np.zeros(self.num_classes) if bias is None else np.asarray(bias, np.float64)
        self.threshold = float(config.get("threshold", 0.5))
        self.patch = PatchConfig.from_dict(config.get("patch", {}))
        self.input_mean = float(config.get("input_mean", 0.0))
        self.input_std = float(config.get("input_std", 1.0))
        self.batch_size = int(batch_size)
        self.device = device
        if hasattr(self.model, "eval"):
            self.model.eval()

    @property
    def runtime(self) -> str:
        return getattr(self.model, "runtime", "torch")

    def logits(self, patches: np.ndarray) -> np.ndarray:
        """Raw (uncalibrated) logits ``[n, k]`` for patches ``[n, h, w]`` (context stacks:
        ``[n, c, h, w]``)."""
        if self.runtime == "onnx":
            x = np.asarray(patches, dtype=np.float32)
            x = x[None] if x.ndim == 2 else x
            x = x[:, None] if x.ndim == 3 else x
            if self.input_mean != 0.0 or self.input_std != 1.0:
                x = (x - np.float32(self.input_mean)) / np.float32(self.input_std)
            if x.shape[1] != self.in_chans:
                x = np.repeat(x, self.in_chans, axis=1)
            out = [self.model(x[i : i + self.batch_size]) for i in range(0, len(x), self.batch_size)]
            return (np.concatenate(out) if out else np.zeros((0, self.num_classes))).astype(np.float64)
        return forward_logits(self.model, patches, self.in_chans, self.batch_size, self.device,
                              self.input_mean, self.input_std)

    def predict(self, patches: np.ndarray) -> np.ndarray:
        """Calibrated class probabilities ``[n, k]`` for patches ``[n, h, w]`` (float64)."""
        z = self.logits(patches)
        return softmax(z + self.logit_bias[None, :], self.temperature)

    def positive_probability(self, patches: np.ndarray) -> np.ndarray:
        """Calibrated probability of moderate/severe ``[n]``."""
        return positive_probability(self.predict(patches))

    def __repr__(self) -> str:
        return (f"Classifier(task={self.task!r}, model={self.config.get('model')!r}, "
                f"T={self.temperature:.3f}, threshold={self.threshold:.3f})")


class ClassifierEnsemble:
    """Several classifiers of one task on the same patches; the probability is the mean of their
    calibrated probabilities and the label compares it with the ensemble's own ``threshold``
    (chosen on validation for the mean, not taken from a member).

    Same interface as :class:`Classifier` (``task``, ``num_classes``, ``threshold``, ``patch``,
    ``config``, ``predict``, ``positive_probability``); ``members`` holds the classifiers.
    """

    def __init__(self, members: Sequence[Classifier], config: Mapping) -> None:
        if not members:
            raise ValueError("an ensemble needs at least one member")
        self.members = list(members)
        self.config = dict(config)
        first = self.members[0]
        self.task = first.task
        self.num_classes = first.num_classes
        self.in_chans = first.in_chans
        self.context_slices = first.context_slices
        self.patch = first.patch
        self.threshold = float(config.get("threshold", first.threshold))

    @property
    def runtime(self) -> str:
        return self.members[0].runtime

    @property
    def model(self):
        """The first member's network (what precision reports look at)."""
        return self.members[0].model

    def predict(self, patches: np.ndarray) -> np.ndarray:
        """Mean calibrated class probabilities ``[n, k]`` of the members (float64)."""
        return np.mean([m.predict(patches) for m in self.members], axis=0)

    def positive_probability(self, patches: np.ndarray) -> np.ndarray:
        """Mean calibrated probability of moderate/severe ``[n]``."""
        return positive_probability(self.predict(patches))

    def __repr__(self) -> str:
        return (f"ClassifierEnsemble(task={self.task!r}, members={len(self.members)}, "
                f"threshold={self.threshold:.3f})")


def _read_config(p: Path) -> dict:
    from ..errors import InputError

    cfg_path = p / "config.json"
    if not cfg_path.is_file():
        raise InputError(p, "no config.json here (expected a classifier run folder or model-pack subfolder)")
    try:
        cfg = json.loads(cfg_path.read_text())
    except (OSError, ValueError) as e:
        raise InputError(cfg_path, f"cannot read JSON ({e})") from e
    if not isinstance(cfg, dict):
        raise InputError(cfg_path, "not a classifier config (expected a JSON object)")
    return cfg


def member_names(path: str | Path, members: Sequence[str | Path]) -> list[str]:
    """The member folders as an ensemble's ``config.json`` names them: relative to the ensemble
    folder ``path`` (POSIX). Raises :class:`lumbargrade.errors.InputError` for one outside it."""
    from ..errors import InputError

    out = Path(path)
    names = []
    for m in members:
        q = Path(m)
        try:
            names.append(q.resolve().relative_to(out.resolve()).as_posix())
        except ValueError:
            raise InputError(q, f"ensemble members must lie inside {out}") from None
    return names


def member_folders(path: str | Path, config: Mapping | None = None) -> list[Path] | None:
    """The member folders of an ensemble folder (None: ``path`` is a single classifier).
    ``config``: the folder's config.json when already read.

    Raises :class:`lumbargrade.errors.InputError` when the list is malformed or leaves the folder.
    """
    from ..errors import InputError

    p = Path(path)
    cfg = _read_config(p) if config is None else config
    members = cfg.get("members")
    if members is None:
        return None
    if not isinstance(members, list) or not members or not all(isinstance(m, str) and m for m in members):
        raise InputError(p / "config.json", "'members' must be a non-empty list of member folder names")
    out = []
    for m in members:
        q = (p / m).resolve()
        if p.resolve() not in q.parents:
            raise InputError(p / "config.json", f"member folder {m!r} lies outside the ensemble folder")
        out.append(p / m)
    return out


def load_classifier(path: str | Path, device: str | None = "cpu",
                    runtime: str | None = None) -> Classifier | ClassifierEnsemble:
    """Load a classifier from a run folder or model-pack subfolder (config.json + model.safetensors;
    ``model.onnx`` per ``runtime`` on the CPU, see :mod:`lumbargrade.runtime`), or an ensemble
    (config.json with ``members``; see :class:`ClassifierEnsemble`).

    Raises :class:`lumbargrade.errors.InputError` when the folder or its files are missing or
    inconsistent.
    """
    from ..errors import InputError
    from ..runtime import load_onnx_net, resolve_runtime

    p = Path(path)
    cfg = _read_config(p)
    folders = member_folders(p, cfg)
    if folders is not None:
        members = [load_classifier(f, device, runtime) for f in folders]
        for f, m in zip(folders, members):
            if isinstance(m, ClassifierEnsemble):
                raise InputError(f, "an ensemble member cannot itself be an ensemble")
            if (m.task != members[0].task or m.patch.to_dict() != members[0].patch.to_dict()
                    or m.context_slices != members[0].context_slices):
                raise InputError(f, "ensemble members must share the task, the patch settings and context_slices")
        if "task" in cfg and cfg["task"] != members[0].task:
            raise InputError(p / "config.json", f"task {cfg['task']!r} differs from the members' {members[0].task!r}")
        return ClassifierEnsemble(members, cfg)
    cfg_path = p / "config.json"
    w_path = p / "model.safetensors"
    if not w_path.is_file():
        raise InputError(p, "no model.safetensors here (has the training finished?)")
    for key in ("task", "model", "num_classes"):
        if key not in cfg:
            raise InputError(cfg_path, f"missing key {key!r}; not a classifier config")
    if device in (None, "auto", "cpu"):
        net = load_onnx_net(p, resolve_runtime(runtime))
        if net is not None:
            return Classifier(net, cfg, device="cpu")
    from safetensors.torch import load_file

    from .classifiers import create_classifier

    try:
        model = create_classifier(cfg["model"], int(cfg["num_classes"]), in_chans=int(cfg.get("in_chans", 1)),
                                  **dict(cfg.get("model_kwargs") or {}))
    except KeyError as e:
        raise InputError(cfg_path, str(e)) from e
    dev = _pick_device(device)
    try:
        state = load_file(str(w_path))
        model.load_state_dict(state, strict=True)
    except Exception as e:
        raise InputError(w_path, f"cannot load weights into {cfg['model']} ({e.__class__.__name__}: {e})") from e
    model.to(dev).eval()
    return Classifier(model, cfg, device=dev)


def save_classifier(clf: Classifier, folder: str | Path) -> Path:
    """Write ``clf`` as ``folder/config.json`` + ``folder/model.safetensors`` (what load_classifier reads)."""
    from safetensors.torch import save_file

    out = Path(folder)
    out.mkdir(parents=True, exist_ok=True)
    cfg = dict(clf.config)
    cfg.update(task=clf.task, num_classes=clf.num_classes, in_chans=clf.in_chans,
               temperature=clf.temperature, logit_bias=[float(v) for v in clf.logit_bias],
               threshold=clf.threshold, patch=clf.patch.to_dict(), weights="model.safetensors")
    state = {k: v.detach().cpu().contiguous() for k, v in clf.model.state_dict().items()}
    save_file(state, str(out / "model.safetensors"))
    (out / "config.json").write_text(json.dumps(cfg, indent=2) + "\n")
    return out


def _finding_task(finding: str) -> str:
    return finding.split("_")[0]  # foramen_left -> foramen


def grade_level(
    image: np.ndarray,
    spacing: Sequence[float],
    sac_mask: np.ndarray | None,
    boxes: Mapping[str, Sequence[float] | None] | None,
    classifiers: Mapping[str, Classifier | None],
) -> dict:
    """CNN findings of one level, as report fields; image, mask and boxes in the slice's canonical
    view (:mod:`lumbargrade.io.orientation`).

    ``classifiers`` maps task (``central``, ``central_binary``, ``foramen``, ``facet``) to a
    :class:`Classifier`; tasks without one (missing or None) are left out. Returns

    * ``"central_canal_cnn"``: ``{"grade", "probabilities": [4], "binary_probability"}`` (grade and
      probabilities from ``central``; the binary probability from ``central_binary`` when given,
      else ``p(moderate) + p(severe)`` of ``central``; fields that cannot be computed are None);
    * ``"foramen_left"`` .. ``"facet_right"``: ``{"probability", "label"}`` where ``probability``
      is the calibrated probability of moderate/severe and ``label`` compares it with the
      classifier's stored threshold (``>=`` is moderate/severe). A side without a box gives
      ``{"probability": None, "label": None}``.

    The central fields need a non-empty ``sac_mask``; otherwise they are None as well.
    """
    return grade_levels([(image, spacing, sac_mask, boxes)], classifiers)[0]


def grade_levels(levels: Sequence[Sequence], classifiers: Mapping[str, Classifier | None]) -> list[dict]:
    """:func:`grade_level` for several levels, one batched forward pass per classifier.

    ``levels``: tuples ``(image, spacing, sac_mask, boxes)`` in the canonical view, optionally with
    a fifth item ``(caudal, cranial)``: the neighbouring slices (canonical view, None where there
    is none) that a classifier with ``context_slices`` sees as extra channels
    (:mod:`lumbargrade.grading.context`); without it such a classifier sees the graded slice in
    every channel.
    """
    clfs = {k: v for k, v in classifiers.items() if v is not None}
    items = [tuple(lv[:4]) for lv in levels]
    contexts = [(lv[4] if len(lv) > 4 and lv[4] is not None else (None, None)) for lv in levels]

    norm_cache: dict[tuple, np.ndarray] = {}
    patch_cache: dict[tuple, dict[str, np.ndarray]] = {}

    def patches_for(i: int, clf: Classifier, names: Sequence[str]) -> dict[str, np.ndarray]:
        """Patches of level i for clf's patch settings (shared by classifiers with equal settings)."""
        image, spacing, sac_mask, boxes = items[i]
        ctx = int(getattr(clf, "context_slices", 0) or 0)
        pkey = (i, json.dumps(clf.patch.to_dict(), sort_keys=True), tuple(names), ctx)
        if pkey not in patch_cache:
            key = (i, *clf.patch.percentiles, ctx)
            if key not in norm_cache:
                norm_cache[key] = (normalise_context(image, *contexts[i], percentiles=clf.patch.percentiles) if ctx
                                   else normalise_slice(image, clf.patch.percentiles))
            patch_cache[pkey] = level_patches(
                norm_cache[key], spacing, sac_mask, boxes, clf.patch, normalised=True, which=names)
        return patch_cache[pkey]

    def run(clf: Classifier, names: Sequence[str]) -> list[dict[str, np.ndarray]]:
        """Calibrated probabilities per level for the named patches (one batch)."""
        keys, batch = [], []
        for i in range(len(items)):
            pts = patches_for(i, clf, names)
            for n in names:
                if n in pts:
                    keys.append((i, n))
                    batch.append(pts[n])
        res: list[dict[str, np.ndarray]] = [{} for _ in items]
        if batch:
            probs = clf.predict(np.stack(batch))
            for (i, n), p in zip(keys, probs):
                res[i][n] = p
        return res

    out: list[dict] = [{} for _ in items]
    central, central_bin = clfs.get("central"), clfs.get("central_binary")
    if central is not None or central_bin is not None:
        for o in out:
            o["central_canal_cnn"] = {"grade": None, "probabilities": None, "binary_probability": None}
        if central is not None:
            for o, r in zip(out, run(central, ["central"])):
                if "central" in r:
                    prob = r["central"]
                    o["central_canal_cnn"].update(
                        grade=CENTRAL_GRADES[int(np.argmax(prob))],
                        probabilities=[float(v) for v in prob],
                        binary_probability=float(prob[2] + prob[3]),
                    )
        if central_bin is not None:
            for o, r in zip(out, run(central_bin, ["central"])):
                if "central" in r:
                    o["central_canal_cnn"]["binary_probability"] = float(r["central"][1])

    for task in ("foramen", "facet"):
        clf = clfs.get(task)
        if clf is None:
            continue
        names = [f for f in LATERAL_FINDINGS if _finding_task(f) == task]
        for o, r in zip(out, run(clf, names)):
            for f in names:
                if f in r:
                    p = float(positive_probability(r[f][None])[0])
                    o[f] = {"probability": p, "label": BINARY_LABELS[int(p >= clf.threshold)]}
                else:
                    o[f] = {"probability": None, "label": None}
    return out
