"""Model packs: one folder with ``pack.json`` and each stage's weights.

Layout::

    PACK/
      pack.json                  name, version, components (below), created_by
      segmentation/              config.json, model.safetensors, metrics.json, command.txt
      sac_refiner/               (same; loaded with the segmentation: second look at the dural sac)
      landmarks/                 (same)
      landmark_refiner/          (same; loaded with the landmarks and applied after them)
      tree/                      tree.json, config.json, metrics.json, command.txt
      classifier_central/        (same as segmentation)
      classifier_central_binary/
      classifier_foramen/
      classifier_facet/
      fat_shift/                 reader of the fat-water shift's direction (config.json, model.safetensors)
      box_rule.json              the facet/foramen box rule (``lumbargrade train boxes``)

``pack.json`` records, per component: its folder, the architecture, what it was trained on, the
exact training command and its metrics. Components are optional; the pipeline reports what it
cannot do without them. Weights are only ever read from the pack folder (no downloads).
"""

from __future__ import annotations

import json
import shutil
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .errors import InputError

__all__ = [
    "COMPONENTS",
    "NETWORK_COMPONENTS",
    "ModelPack",
    "build_pack",
    "companion_folder",
    "default_pack_path",
    "export_pack_onnx",
    "load_pack",
    "pack_summary",
    "scrub_pack",
]

#: Component name -> what it does.
COMPONENTS = {
    "segmentation": "dural sac + disc segmentation on the axial T2 slice",
    "sac_refiner": "second look at the dural sac on a finer field centred on it (loaded with the segmentation)",
    "landmarks": "five disc-centre landmarks (DSNT) on the mid-sagittal T2",
    "landmark_refiner": "second look at each disc landmark on a local patch (DSNT, finer)",
    "tree": "decision tree on the dural-sac-to-disc ratio (central canal grade)",
    "classifier_central": "CNN, central canal 4 grades",
    "classifier_central_binary": "CNN, central canal normal/mild vs moderate/severe",
    "classifier_foramen": "CNN, foraminal stenosis normal/mild vs moderate/severe (one model for both sides, left patches mirrored)",
    "classifier_facet": "CNN, facet arthropathy normal/mild vs moderate/severe (one model for both sides, left patches mirrored)",
    "fat_shift": "CNN, direction of the fat-water shift (disc and facet/foramen outlines are moved back by it)",
}

#: Refiner components that are loaded with (and attached to) another component's model.
_LOADED_WITH = {"landmark_refiner": "landmarks", "sac_refiner": "segmentation"}

#: The components that are networks (exported to ONNX by :func:`export_pack_onnx`).
NETWORK_COMPONENTS = tuple(c for c in COMPONENTS if c != "tree")

_RUN_FILES = ("config.json", "model.safetensors", "metrics.json", "command.txt", "tree.json", "README.md")


def companion_entry(stage_folder: str | Path, component: str) -> dict | None:
    """The ``pack.json`` entry of ``component`` in the model pack holding ``stage_folder`` (a dict;
    ``{}`` for a bare listing), or None when ``stage_folder`` is not in a pack or the pack does not
    list it. A malformed ``pack.json`` is an :class:`InputError`."""
    manifest = Path(stage_folder).parent / "pack.json"
    if not manifest.is_file():
        return None
    try:
        comps = json.loads(manifest.read_text()).get("components", {})
        entry = comps.get(component)
    except (json.JSONDecodeError, AttributeError) as e:
        raise InputError(manifest, f"not a valid model pack manifest ({e.__class__.__name__})") from e
    if not entry:
        return None
    return entry if isinstance(entry, dict) else {}


def companion_folder(stage_folder: str | Path, component: str) -> Path | None:
    """The folder of a refiner ``component`` to load with the model in ``stage_folder``, or None.

    Only a model pack's stage folder has one: ``pack.json`` beside it must list ``component``
    (a folder named like a refiner but not in ``pack.json`` is not attached). A listed refiner
    whose folder is missing is an :class:`InputError`.
    """
    stage = Path(stage_folder)
    entry = companion_entry(stage, component)
    if entry is None:
        return None
    folder = stage.parent / str(entry.get("folder", component))
    if not folder.is_dir():
        raise InputError(folder, f"pack.json lists '{component}' but its folder is missing")
    return folder


def default_pack_path() -> Path:
    """The model pack shipped inside the package."""
    return Path(__file__).resolve().parent / "models" / "default"


@dataclass
class ModelPack:
    """A loaded ``pack.json`` and lazily loaded models."""

    path: Path
    manifest: dict[str, Any]
    runtime: str = "auto"  # see lumbargrade.runtime: auto | onnx | torch
    _cache: dict[str, Any] = field(default_factory=dict, repr=False)

    @property
    def name(self) -> str:
        return str(self.manifest.get("name", self.path.name))

    @property
    def version(self) -> str:
        return str(self.manifest.get("version", "0"))

    @property
    def label(self) -> str:
        """'name version' for provenance fields."""
        return f"{self.name} {self.version}"

    @property
    def fingerprint(self) -> str:
        """The first 16 hex digits of a SHA-256 over every file of the pack but its documentation
        (relative path and bytes, in path order; ``*.md`` files are left out, so editing a README
        does not change it): tells apart two packs with the same name and version (a retrained
        component, a changed rule). Computed once per loaded pack (about 0.1 s for the bundled one)."""
        fp = self._cache.get("__fingerprint__")
        if fp is None:
            import hashlib

            h = hashlib.sha256()
            for f in sorted(q for q in self.path.rglob("*") if q.is_file() and q.suffix != ".md"):
                h.update(f.relative_to(self.path).as_posix().encode() + b"\0")
                h.update(f.read_bytes())
            fp = self._cache["__fingerprint__"] = h.hexdigest()[:16]
        return fp

    def has(self, component: str) -> bool:
        c = self.manifest.get("components", {}).get(component)
        return bool(c) and (self.path / c["folder"]).is_dir()

    def folder(self, component: str) -> Path:
        if not self.has(component):
            raise InputError(self.path, f"model pack has no '{component}' model")
        return self.path / self.manifest["components"][component]["folder"]

    def network_folders(self, component: str) -> list[Path]:
        """The folders that hold a network component's weights (``model.safetensors``, and
        ``model.onnx`` once exported): the component's folder, or each member's of a classifier
        ensemble."""
        folder = self.folder(component)
        return _member_folders(folder) or [folder]

    def info(self, component: str) -> dict[str, Any]:
        return dict(self.manifest.get("components", {}).get(component, {}))

    def _loaded(self, component: str) -> Any:
        """The loaded model of a component, including the refiners loaded with another one."""
        m = self._cache.get(component)
        if m is None and component in _LOADED_WITH:  # a refiner loaded with its stage (pack layout)
            m = getattr(self._cache.get(_LOADED_WITH[component]), "refiner", None)
        return m

    def runtime_of(self, component: str) -> str | None:
        """``onnx`` or ``torch``: how a loaded network component runs (None: not a loaded network)."""
        m = self._loaded(component)
        if m is None or component == "tree":
            return None
        return getattr(m, "runtime", None) or getattr(getattr(m, "net", None), "runtime", None) or "torch"

    def runtimes(self) -> dict[str, str]:
        """Component -> runtime of every loaded network component."""
        out = {c: self.runtime_of(c) for c in COMPONENTS}
        return {c: r for c, r in out.items() if r is not None}

    def precisions(self) -> dict[str, str]:
        """Component -> ``fp32`` or ``bf16``: the arithmetic each loaded network ran with (ONNX
        Runtime: fp32; PyTorch: bf16 autocast only where asked and the CPU has native bf16)."""
        out = {}
        for comp in self.runtimes():
            m = self._loaded(comp)
            net = getattr(m, "net", None)
            out[comp] = str(getattr(net, "precision", None) or getattr(getattr(m, "model", None), "precision", None)
                            or "fp32")
        return out

    def get(self, component: str) -> Any:
        """The loaded model of a component (cached), or None when the pack lacks it."""
        if component in self._cache:
            return self._cache[component]
        if not self.has(component):
            self._cache[component] = None
            return None
        folder = self.folder(component)
        if component == "segmentation":
            from .segmentation.inference import load_segmenter

            model = load_segmenter(folder, runtime=self.runtime)  # attaches PACK/sac_refiner when present
        elif component == "sac_refiner":
            from .segmentation.inference import load_segmenter

            model = load_segmenter(folder, runtime=self.runtime, refiner=False)
        elif component == "landmarks":
            from .levels.landmarks import load_landmark_model

            model = load_landmark_model(folder, self.runtime)  # attaches PACK/landmark_refiner when present
        elif component == "landmark_refiner":
            from .levels.refine import load_refiner

            model = load_refiner(folder, self.runtime)
        elif component == "tree":
            from .grading.tree import RatioTree

            model = RatioTree.from_json((folder / "tree.json").read_text())
        elif component.startswith("classifier_"):
            from .grading.classifier_inference import load_classifier

            model = load_classifier(folder, runtime=self.runtime)
        elif component == "fat_shift":
            from .segmentation.fat_shift import load_fat_shift_reader

            model = load_fat_shift_reader(folder, self.runtime)
        else:
            raise InputError(self.path, f"unknown component '{component}'")
        self._cache[component] = model
        return model


def load_pack(path: str | Path | None = None, runtime: str | None = None) -> ModelPack:
    """Read a model pack folder (default: the packaged one). ``runtime`` (``auto``, ``onnx``,
    ``torch``; default ``$LUMBARGRADE_RUNTIME`` or ``auto``) says how its networks run."""
    from .runtime import resolve_runtime

    runtime = resolve_runtime(runtime)
    p = Path(path) if path is not None else default_pack_path()
    if not p.is_dir():
        raise InputError(p, "model pack folder not found")
    mf = p / "pack.json"
    if not mf.is_file():
        raise InputError(p, "not a model pack (no pack.json)")
    try:
        manifest = json.loads(mf.read_text())
    except json.JSONDecodeError as e:
        raise InputError(mf, f"pack.json is not valid JSON ({e.msg} at line {e.lineno})") from e
    return ModelPack(path=p, manifest=manifest, runtime=runtime)


def pack_summary(path: str | Path | None = None) -> str:
    """One line: 'name version (components...)' or why it is unavailable."""
    try:
        pack = load_pack(path)
    except InputError as e:
        return f"unavailable: {e.one_line()}"
    have = [c for c in COMPONENTS if pack.has(c)]
    return f"{pack.label} at {pack.path} ({', '.join(have) or 'no models'})"


def build_pack(
    out: str | Path,
    runs: dict[str, str | Path],
    name: str | None = None,
    version: str | None = None,
    trained_on: str | None = None,
    extra: dict[str, Any] | None = None,
    overwrite: bool = False,
    box_rule: str | Path | None = None,
    box_source: str | None = None,
    sac_refiner_weight: float | None = None,
    base: str | Path | None = None,
) -> Path:
    """Assemble a pack from run folders written by ``lumbargrade train`` (and the box rule fitted
    by ``lumbargrade train boxes``, copied to ``PACK/box_rule.json``).

    ``runs`` maps component names (see :data:`COMPONENTS`) to run folders. Only the files a pack
    needs are copied (no optimizer checkpoints), so packs stay small. ``box_source``: how
    ``analyze`` places the facet/foramen boxes with this pack (``image``, ``fitted``, ``paper``;
    default ``image`` when the segmenter has facet/foramen regions, else ``fitted``).
    ``sac_refiner_weight``: the dural sac refiner's share of the sac probability, in (0, 1]
    (``components.sac_refiner.weight``; None: 1, its outline replaces the segmenter's).

    ``base``: an existing pack to start from (one component retrained, the rest kept): every
    component not in ``runs`` is copied from it with its ``pack.json`` record, and so are its box
    rule, box source, refiner weight, name, version and ``trained_on`` where not given. Without
    it, name and version default to ``lumbargrade-default`` and ``0.1.0``.
    """
    out = Path(out)
    base_pack = None
    if base is not None:
        base_pack = load_pack(base)
        if out.resolve() == base_pack.path.resolve():
            raise InputError(out, "is the base pack itself; write the new pack to another folder")
    if sac_refiner_weight is not None:
        from .segmentation.inference import check_refiner_weight

        if "sac_refiner" not in runs and not (base_pack is not None and base_pack.has("sac_refiner")):
            raise InputError("--sac-refiner-weight", "needs a dural sac refiner (--sac-refiner RUN_DIR)")
        sac_refiner_weight = check_refiner_weight(sac_refiner_weight, "--sac-refiner-weight")
    if out.exists() and any(out.iterdir()) and not overwrite:
        raise InputError(out, "already holds files; pass --overwrite to replace the pack")
    out.mkdir(parents=True, exist_ok=True)
    components: dict[str, Any] = {}
    inherited: dict[str, Any] = {}
    if base_pack is not None:
        bm = base_pack.manifest
        name = bm.get("name") if name is None else name
        version = bm.get("version") if version is None else version
        trained_on = bm.get("trained_on", "") if trained_on is None else trained_on
        box_source = bm.get("box_source") if box_source is None else box_source
        base_refiner = dict(bm.get("components", {}).get("sac_refiner") or {})
        if sac_refiner_weight is None and "weight" in base_refiner:
            sac_refiner_weight = base_refiner["weight"]
        inherited = _copy_from_base(base_pack, out, runs, copy_box_rule=box_rule is None)
    name = "lumbargrade-default" if name is None else name
    version = "0.1.0" if version is None else version
    trained_on = "" if trained_on is None else trained_on
    for comp, run in runs.items():
        if comp not in COMPONENTS:
            raise InputError(comp, f"unknown component; expected one of {', '.join(COMPONENTS)}")
        run = Path(run)
        if not run.is_dir():
            raise InputError(run, "run folder not found")
        dest = out / comp
        if dest.exists():
            shutil.rmtree(dest)
        dest.mkdir(parents=True)
        for f in _RUN_FILES:
            if (run / f).is_file():
                shutil.copy2(run / f, dest / f)
        for member in _member_folders(run, strict=True):  # a classifier ensemble: each member's files too
            rel = member.relative_to(run)
            (dest / rel).mkdir(parents=True, exist_ok=True)
            for f in _RUN_FILES:
                if (member / f).is_file():
                    shutil.copy2(member / f, dest / rel / f)
        cfg = json.loads((run / "config.json").read_text()) if (run / "config.json").is_file() else {}
        metrics = json.loads((run / "metrics.json").read_text()) if (run / "metrics.json").is_file() else {}
        command = (run / "command.txt").read_text().strip() if (run / "command.txt").is_file() else None
        arch = cfg.get("model") or cfg.get("architecture")
        if comp == "tree" and (run / "tree.json").is_file():
            tree = json.loads((run / "tree.json").read_text())
            arch = f"decision tree on {', '.join(tree.get('feature_names', [])) or cfg.get('feature')}"
        components[comp] = {
            "folder": comp,
            "description": COMPONENTS[comp],
            "architecture": arch,
            "training_command": command,
            "trained_on": cfg.get("trained_on") or trained_on,
            "metrics": metrics,
        }
    for comp, entry in inherited.items():
        if comp in COMPONENTS:
            components[comp] = entry
    components = {c: components[c] for c in COMPONENTS if c in components}
    if "sac_refiner" in components and sac_refiner_weight is not None:
        components["sac_refiner"]["weight"] = sac_refiner_weight
    if box_rule is not None:
        src = Path(box_rule)
        src = src / "box_rule.json" if src.is_dir() else src
        if not src.is_file():
            raise InputError(src, "box rule file not found")
        shutil.copy2(src, out / "box_rule.json")
        fit, cmd = src.parent / "metrics.json", src.parent / "command.txt"
        components_extra = {"box_rule": {"file": "box_rule.json",
                                         "metrics": json.loads(fit.read_text()) if fit.is_file() else {}}}
        if cmd.is_file():
            components_extra["box_rule"]["training_command"] = (
                _portable_command_line(cmd.read_text()) or cmd.read_text().strip())
    else:
        components_extra = {"box_rule": inherited["box_rule"]} if "box_rule" in inherited else {}
    if box_source is None:
        seg_cfg = out / "segmentation" / "config.json" if "segmentation" in components else None
        regions = bool(json.loads(seg_cfg.read_text()).get("regions")) if seg_cfg and seg_cfg.is_file() else False
        box_source = "image" if regions else "fitted"
    if box_source not in ("image", "fitted", "paper"):
        raise InputError("--box-source", f"{box_source!r} is not image, fitted or paper")
    manifest = {
        "name": name,
        "version": version,
        "trained_on": trained_on,
        "box_source": box_source,
        "components": components,
        **components_extra,
        **(extra or {}),
    }
    (out / "pack.json").write_text(json.dumps(manifest, indent=2) + "\n")
    scrub_pack(out, runs)
    return out


def _copy_from_base(base: ModelPack, out: Path, runs: Mapping[str, Any], copy_box_rule: bool) -> dict[str, Any]:
    """Copy into ``out`` every component of the pack ``base`` that ``runs`` does not replace (and
    its box rule with ``copy_box_rule``); returns their ``pack.json`` records (``"box_rule"`` for
    the rule), for :func:`build_pack` ``base``."""
    records: dict[str, Any] = {}
    for comp in COMPONENTS:
        if comp in runs or not base.has(comp):
            continue
        dest = out / comp
        if dest.exists():
            shutil.rmtree(dest)
        shutil.copytree(base.folder(comp), dest)
        records[comp] = dict(base.info(comp), folder=comp)
    if copy_box_rule and (base.path / "box_rule.json").is_file():
        shutil.copy2(base.path / "box_rule.json", out / "box_rule.json")
        records["box_rule"] = dict(base.manifest.get("box_rule") or {"file": "box_rule.json"})
    return records


def _member_folders(folder: Path, strict: bool = False) -> list[Path]:
    """The member folders of a classifier ensemble folder (``config.json`` ``members``); [] otherwise.
    ``strict``: a malformed member list or a missing member folder raises :class:`InputError`."""
    if not (folder / "config.json").is_file():
        return []
    from .grading.classifier_inference import member_folders

    try:
        found = member_folders(folder) or []
    except (InputError, ValueError):
        if strict:
            raise
        return []
    if strict:
        for m in found:
            if not (m / "config.json").is_file():
                raise InputError(m, "ensemble member folder not found (named in config.json 'members')")
    return found


#: Text files of a pack that record paths (weights and ONNX files are never touched).
_RECORD_FILES = ("config.json", "metrics.json", "command.txt", "tree.json", "README.md")


def _component_placeholders(folder: Path, run: str | Path | None = None) -> dict[str, str]:
    """Path -> placeholder for a component's records: the paths of its training command
    (``--data`` -> ``COHORT``, ``--real`` -> ``SPIDER_DIR``, ``--out`` -> ``runs/<name>``...),
    those its trainer recorded under ``data`` / ``manifest`` / ``real`` / ``segmentation``, and the
    run folder it was copied from."""
    import shlex

    from .provenance import command_placeholders

    known: dict[str, str] = {}
    cmd_p = folder / "command.txt"
    if cmd_p.is_file():
        try:
            known.update(command_placeholders(shlex.split(cmd_p.read_text().strip())))
        except ValueError:
            pass
    try:
        cfg = json.loads((folder / "config.json").read_text()) if (folder / "config.json").is_file() else {}
    except ValueError:
        cfg = {}
    data = cfg.get("data") if isinstance(cfg, dict) else None
    if isinstance(data, dict):
        pairs = [("--data", data.get("manifest")), ("--real", data.get("real"))]
    else:  # one manifest, or several pooled (COHORT, COHORT_2, ... in order, as on the command line)
        pairs = [("--data", d) for d in (data if isinstance(data, list) else [data])]
    pairs.append(("--segmentation", cfg.get("segmentation") if isinstance(cfg, dict) else None))
    if run is not None:
        pairs.append(("--out", str(run)))
    argv = [a for opt, value in pairs if isinstance(value, str) and value for a in (opt, value)]
    for k, v in command_placeholders(argv).items():
        known.setdefault(k, v)
    return known


def scrub_pack(path: str | Path, runs: dict[str, str | Path] | None = None) -> list[Path]:
    """Rewrite a pack's records in place without this machine's paths (see
    :mod:`lumbargrade.provenance`): each component's ``command.txt`` (placeholders per option),
    ``config.json``, ``metrics.json``, ``tree.json`` and ``README.md``, the pack's
    ``box_rule.json`` and ``README.md``, then ``pack.json`` (its training commands taken from the
    clean ``command.txt`` files). ``runs``: the run folders the components were copied from
    (:func:`build_pack`). Returns the files that changed; weights are never touched."""
    from .provenance import scrub_file, scrub_json

    path = Path(path)
    changed: list[Path] = []
    known_all: dict[str, str] = {}
    for comp in COMPONENTS:
        folder = path / comp
        if not folder.is_dir():
            continue
        known = _component_placeholders(folder, (runs or {}).get(comp))
        for k, v in known.items():
            known_all.setdefault(k, v)
        cmd_p = folder / "command.txt"
        if cmd_p.is_file():
            text = cmd_p.read_text()
            line = _portable_command_line(text)
            new = text if line is None else line + "\n"
            if new != text:
                cmd_p.write_text(new)
                changed.append(cmd_p)
        for sub in (folder, *_member_folders(folder)):
            for name in _RECORD_FILES:
                if name != "command.txt" and (sub / name).is_file() and scrub_file(sub / name, known):
                    changed.append(sub / name)
    for name in ("box_rule.json", "README.md"):
        if (path / name).is_file() and scrub_file(path / name, known_all):
            changed.append(path / name)
    mf = path / "pack.json"
    if mf.is_file():
        text = mf.read_text()
        manifest = json.loads(text)
        for comp, entry in (manifest.get("components") or {}).items():
            cmd_p = path / str(entry.get("folder", comp)) / "command.txt" if isinstance(entry, dict) else None
            if cmd_p is not None and cmd_p.is_file() and entry.get("training_command"):
                entry["training_command"] = cmd_p.read_text().strip()
        new = json.dumps(scrub_json(manifest, known_all), indent=2) + "\n"
        if new != text:
            mf.write_text(new)
            changed.append(mf)
    return changed


def _portable_command_line(text: str) -> str | None:
    """A recorded command line (``command.txt``) with its paths made portable
    (:func:`lumbargrade.provenance.portable_command`); None when it does not parse."""
    import shlex

    from .provenance import portable_command

    try:
        return portable_command(shlex.split(text.strip()))
    except ValueError:
        return None


def _example_input(component: str, model: Any, rng: Any) -> tuple[Any, Any]:
    """(torch module, a float32 test input ``[2, c, h, w]``) of a component loaded with torch."""
    import numpy as np

    if component in ("segmentation", "sac_refiner"):
        n = int(model.cfg.size)
        return model.model, rng.normal(0, 1, (2, 1, n, n)).astype(np.float32)
    if component == "landmarks":
        from .levels.landmarks import PREPROCESS_DEFAULTS

        n = int(dict(PREPROCESS_DEFAULTS, **model.config.get("preprocess", {}))["size"])
        return model.net, rng.uniform(0, 1, (2, 1, n, n)).astype(np.float32)
    if component == "landmark_refiner":
        n = int(model.params["size"])
        return model.net, rng.uniform(0, 1, (2, 1, n, n)).astype(np.float32)
    if component == "fat_shift":
        n = int(model.config["crop"])
        return model.net.module, rng.uniform(0, 1, (2, 1, n, n)).astype(np.float32)
    n = int(model.patch.patch_px)
    return model.model, rng.uniform(0, 1, (2, model.in_chans, n, n)).astype(np.float32)


def export_pack_onnx(path: str | Path, components: Any = None, atol: float = 1e-3) -> dict[str, Any]:
    """Write ``model.onnx`` + ``onnx.json`` (see :func:`lumbargrade.runtime.export_onnx`) into
    each network component's folder of the pack at ``path``. Returns component -> the record, or
    ``{"error": ...}`` where the export failed (that component then runs with torch)."""
    import numpy as np

    from .runtime import export_onnx

    pack = load_pack(path, runtime="torch")
    rng = np.random.default_rng(0)
    out: dict[str, Any] = {}
    for comp in components or NETWORK_COMPONENTS:
        if not pack.has(comp):
            continue
        folder = pack.folder(comp)
        if comp == "landmark_refiner":
            from .levels.refine import load_refiner

            model = load_refiner(folder, "torch")
        elif comp == "landmarks":
            from .levels.landmarks import load_landmark_model

            model = load_landmark_model(folder, "torch")
        else:
            model = pack.get(comp)
        members = getattr(model, "members", None)
        if members is not None:  # a classifier ensemble: one ONNX file per member, in its folder
            recs = []
            for sub, member in zip(_member_folders(folder), members):
                module, example = _example_input(comp, member, rng)
                try:
                    recs.append(export_onnx(module, example, sub, atol=atol))
                except Exception as e:
                    recs.append({"error": f"{type(e).__name__}: {e}"})
            out[comp] = {"members": recs}
            continue
        module, example = _example_input(comp, model, rng)
        try:
            out[comp] = export_onnx(module, example, folder, atol=atol)
        except Exception as e:  # an architecture the exporter cannot trace: it stays on torch
            out[comp] = {"error": f"{type(e).__name__}: {e}"}
    return out
