"""``lumbargrade reproduce``: the paper end to end on the phantom, one resumable command.

Stages (in order; each writes under OUT):

==========================  ===================================================================
``cohort``                  ``OUT/cohort``: phantom cohort (split 150/20/30, scaled to --patients)
``segmentation``            ``OUT/runs/segmentation``: ``lumbargrade train segmentation``
``landmarks``               ``OUT/runs/landmarks``: ``lumbargrade train landmarks`` (phantom +
                            real SPIDER slices when available)
``landmark_refiner``        ``OUT/runs/landmark_refiner``: ``lumbargrade train landmark-refiner``
                            (second look per disc; same data, the landmarks' real hold-out kept)
``box_rule``                ``OUT/runs/box_rule/box_rule.json``: ``lumbargrade train boxes
                            --segmentation``: the facet/foramen box rule fitted on the train
                            split's masks as the trained segmenter predicts them, with the image
                            localiser's calibration (a ``BoxRuleConfig`` dict, read by the
                            pipeline from the pack) and ``box_rule_fit.json`` (IoUs per split and
                            box source)
``tree``                    ``OUT/runs/tree``: ``lumbargrade train tree`` on masks predicted by
                            the trained segmenter (as in the paper)
``classifier_<task>``       ``OUT/runs/classifier_<task>`` for central, central_binary, foramen,
                            facet: ``lumbargrade train classifier``
``pack``                    ``OUT/pack``: :func:`lumbargrade.modelpack.build_pack` (+ box_rule.json, ONNX export)
``evaluate``                ``OUT/evaluation``: the pack on the test split (metrics.json,
                            tables.md, ROC and confusion figures, predictions/); tables.md and
                            metrics.json are copied to OUT
==========================  ===================================================================

Every trainer runs as a subprocess (``python -m lumbargrade train ...``), so an interruption loses
at most the current epoch: each trainer resumes from its own checkpoint. A finished stage is
recorded in ``OUT/stages.json`` (seconds, command, times) and skipped on a rerun. The resolved
plan is ``OUT/reproduce_config.json``; each run folder holds its trainer's resolved ``config.json``
(copied to ``OUT/configs/``). The recorded commands and paths are relative to OUT (run them from
there), the SPIDER folder is ``SPIDER_DIR`` (see :mod:`lumbargrade.provenance`).

Presets: ``fast`` (the CPU defaults of every trainer) and ``paper`` (V-Net segmentation, BiT-R50x1
classifiers; a local BiT-M checkpoint is used only when given with ``--bit-checkpoint``). ``--tiny``
shrinks everything for tests (a few patients, one epoch, small inputs; the tree is then fitted on
the truth masks, since a one-epoch segmenter finds nothing).
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from .errors import InputError

__all__ = ["CLASSIFIER_TASKS", "STAGES", "ReproduceConfig", "default_real_data", "plan_commands", "run_reproduce"]

CLASSIFIER_TASKS = ("central", "central_binary", "foramen", "facet")
#: the segmenter's recipe after its first 20 epochs: two fine-tuning phases on more rendered and
#: fewer domain-randomised images (each starts from the previous phase's best weights)
SEGMENTATION_FINETUNE = (
    ("segmentation_ft1", ["p_synth=0.35", "epochs=6", "lr=0.002"], 1),
    ("segmentation_ft2", ["p_synth=0.2", "epochs=6", "lr=0.001"], 2),
    ("segmentation_ft3", ["p_synth=0.1", "epochs=6", "lr=0.0005"], 3),
)
SEGMENTER_RUN = SEGMENTATION_FINETUNE[-1][0]  # the run the pack, the tree and the classifiers use
STAGES = ("cohort", "segmentation", *(name for name, _, _ in SEGMENTATION_FINETUNE),
          "landmarks", "landmark_refiner", "box_rule", "tree",
          *(f"classifier_{t}" for t in CLASSIFIER_TASKS), "pack", "evaluate")

#: Per-preset trainer settings (``--set`` items / options); epoch-like counts are scaled by
#: ``epochs_scale``.
PRESETS: dict[str, dict[str, Any]] = {
    "fast": {"segmentation_model": None, "classifier_model": None},
    "paper": {"segmentation_model": "vnet", "classifier_model": "bit_r50x1"},
}

def base_budget() -> dict[str, int]:
    """The trainers' own default epoch-like budgets (scaled by ``--epochs-scale``)."""
    from .grading.classifier_training import DEFAULT_CONFIG as CLS
    from .levels.refine import TRAIN_DEFAULTS as RF
    from .levels.training import DEFAULT_CONFIG as LM
    from .segmentation.training import SegConfig

    return {"segmentation.epochs": int(SegConfig().epochs), "landmarks.steps": int(LM["steps"]),
            "landmark_refiner.steps": int(RF["steps"]),
            "classifier.epochs": int(CLS["epochs"])}


#: Settings of --tiny (tests and smoke runs): a few patients, one epoch, small inputs.
TINY_SETS: dict[str, list[str]] = {
    "segmentation": ["epochs=1", "size=96", "target_spacing=1.2", "batch_size=4", "progress=false",
                     "samples_per_epoch=16", "val_synth_items=8", 'model_kwargs={"channels": [8, 8, 16, 16, 32]}'],
    "landmarks": ["steps=4", "eval_every=4", "batch_size=2"],
    "landmark_refiner": ["steps=4", "batch_size=2"],
    "classifier": ["epochs=1", "batch_size=8", "calibrate=false"],
    "tree": [],
}


def default_real_data() -> Path | None:
    """The SPIDER sagittal set next to the repository (``../shared/data/spider-sagittal``) or
    ``$LUMBARGRADE_SPIDER``, when present."""
    env = os.environ.get("LUMBARGRADE_SPIDER")
    cands = [Path(env)] if env else []
    here = Path(__file__).resolve()
    cands += [p / "shared" / "data" / "spider-sagittal" for p in here.parents[2:5]]
    for c in cands:
        if (c / "images").is_dir() and (c / "masks").is_dir():
            return c
    return None


@dataclass
class ReproduceConfig:
    """Everything ``reproduce`` needs; saved as ``OUT/reproduce_config.json``."""

    out: str
    preset: str = "fast"
    patients: int = 200
    seed: int = 0
    split: tuple[int, int, int] = (150, 20, 30)
    epochs_scale: float = 1.0
    workers: int = 1  # phantom generation processes
    threads: int = 1  # torch / BLAS threads in each trainer
    real: str | None = "auto"  # SPIDER folder for the landmark trainer; "auto", a path or None
    bit_checkpoint: str | None = None
    tiny: bool = False
    n_boot: int = 1000
    sets: dict[str, list[str]] = field(default_factory=dict)  # extra --set items per trainer

    def resolved(self) -> dict[str, Any]:
        d = asdict(self)
        d["split"] = list(self.split)
        return d

    def key(self) -> dict[str, Any]:
        """Settings that must not change between a run and its resumption."""
        return {k: v for k, v in self.resolved().items() if k in ("preset", "patients", "seed", "split", "tiny")}


def _scaled(n: int, scale: float) -> int:
    return max(1, round(n * scale))


def _python_cmd() -> list[str]:
    return [sys.executable, "-m", "lumbargrade"]


def plan_commands(cfg: ReproduceConfig) -> dict[str, list[str]]:
    """The ``lumbargrade train`` argument lists of the trainer stages (without the interpreter)."""
    out = Path(cfg.out)
    cohort = str(out / "cohort")
    runs = out / "runs"
    preset = PRESETS[cfg.preset]
    seed = ["--seed", str(cfg.seed)]

    def sets(trainer: str, base: list[str]) -> list[str]:
        items = list(base) + (TINY_SETS[trainer] if cfg.tiny else []) + list(cfg.sets.get(trainer, []))
        return [x for it in items for x in ("--set", it)]

    cmds: dict[str, list[str]] = {}
    # the segmenter trains on the cohort's slice bank (every axial slice with its tissue map:
    # domain randomisation); the other trainers on its manifest
    seg = ["train", "segmentation", "--data", str(out / "cohort" / "slices.csv"), "--out",
           str(runs / "segmentation"), *seed]
    if preset["segmentation_model"]:
        seg += ["--model", preset["segmentation_model"]]
    budget = base_budget()
    scale = [] if cfg.epochs_scale == 1.0 else [f"epochs={_scaled(budget['segmentation.epochs'], cfg.epochs_scale)}"]
    cmds["segmentation"] = seg + sets("segmentation", scale + [f"num_threads={cfg.threads}", "progress=false"])
    prev = runs / "segmentation"
    for name, items, seed_offset in SEGMENTATION_FINETUNE:
        ft = ["train", "segmentation", "--data", str(out / "cohort" / "slices.csv"), "--out", str(runs / name),
              "--seed", str(cfg.seed + seed_offset)]
        if preset["segmentation_model"]:
            ft += ["--model", preset["segmentation_model"]]
        ft_items = [f"init_from={prev}", *items]
        if cfg.epochs_scale != 1.0:
            n = int(next(i for i in items if i.startswith("epochs=")).split("=")[1])
            ft_items = [i for i in ft_items if not i.startswith("epochs=")] + [f"epochs={_scaled(n, cfg.epochs_scale)}"]
        cmds[name] = ft + sets("segmentation", ft_items + [f"num_threads={cfg.threads}", "progress=false"])
        prev = runs / name
    steps = _scaled(budget["landmarks.steps"], cfg.epochs_scale)
    lm = ["train", "landmarks", "--data", cohort, "--out", str(runs / "landmarks"), *seed]
    real = cfg.real
    if real == "auto":
        r = default_real_data()
        real = str(r) if r else None
    if real:
        lm += ["--real", real]
    scale = [] if cfg.epochs_scale == 1.0 else [f"steps={steps}", f"eval_every={min(200, steps)}"]
    cmds["landmarks"] = lm + sets("landmarks", scale + [f"threads={cfg.threads}"])
    rf = ["train", "landmark-refiner", "--data", cohort, "--out", str(runs / "landmark_refiner"),
          "--landmarks", str(runs / "landmarks"), "--overwrite", *seed]
    if real:
        rf += ["--real", real]
    scale = [] if cfg.epochs_scale == 1.0 else [f"steps={_scaled(budget['landmark_refiner.steps'], cfg.epochs_scale)}"]
    cmds["landmark_refiner"] = rf + sets("landmark_refiner", scale + [f"threads={cfg.threads}"])
    # the paper fits the tree on the trained segmenter's masks; --tiny's one-epoch segmenter finds
    # nothing, so there the tree is fitted on the truth masks
    masks = ["--truth-masks"] if cfg.tiny else ["--segmentation", str(runs / SEGMENTER_RUN)]
    cmds["tree"] = ["train", "tree", "--data", cohort, "--out", str(runs / "tree"), *masks,
                    "--overwrite", *seed] + sets("tree", [])
    for task in CLASSIFIER_TASKS:
        c = ["train", "classifier", "--task", task, "--data", cohort, "--out", str(runs / f"classifier_{task}"), *seed]
        if not cfg.tiny:  # patches placed as analyze places them: the trained segmenter and box rule
            c += ["--segmentation", str(runs / SEGMENTER_RUN), "--box-rule", str(runs / "box_rule" / "box_rule.json")]
        if preset["classifier_model"]:
            c += ["--model", preset["classifier_model"]]
        if cfg.bit_checkpoint:
            c += ["--checkpoint", cfg.bit_checkpoint]
        scale = [] if cfg.epochs_scale == 1.0 else [f"epochs={_scaled(budget['classifier.epochs'], cfg.epochs_scale)}"]
        # the recipe's one-slice foramen classifier learns from the rendered patches only (with one
        # slice, tied on validation with the domain-randomised copies, and better on stenotic upper
        # levels; the bundled pack's three-slice one has three-slice copies since pack 0.4.2)
        own = ["synth_copies=0"] if task == "foramen" else []
        cmds[f"classifier_{task}"] = c + sets("classifier", scale + [f"num_threads={cfg.threads}"] + own)
    return cmds


def recorded_command(args: list[str], out: str | Path) -> list[str]:
    """A trainer command as recorded in OUT's JSON files: paths inside OUT relative to it (also
    in ``--set KEY=PATH``, e.g. a fine-tune's ``init_from``), other path options as placeholders
    (``--real SPIDER_DIR``), any other absolute path made portable."""
    from .provenance import PLACEHOLDERS, portable_path, scrub_text

    rec: list[str] = ["lumbargrade"]
    prev = None
    for a in args:
        key, eq, val = a.partition("=")
        if prev in PLACEHOLDERS and not a.startswith("-"):
            ph = None if PLACEHOLDERS[prev] == "runs" else PLACEHOLDERS[prev]
            rec.append(portable_path(a, base=out, placeholder=ph) or a)
        elif prev == "--set" and eq and Path(val).is_absolute():
            rec.append(f"{key}={portable_path(val, base=out) or val}")
        else:
            rec.append(scrub_text(a))
        prev = a
    return rec


def _recorded_config(cfg: ReproduceConfig) -> dict[str, Any]:
    from .provenance import portable_path

    d = cfg.resolved()
    d["out"] = "."  # the folder this record is in
    if d.get("real") not in (None, "auto"):
        d["real"] = portable_path(d["real"], placeholder="SPIDER_DIR")
    if d.get("bit_checkpoint"):
        d["bit_checkpoint"] = portable_path(d["bit_checkpoint"], placeholder="CHECKPOINT_DIR")
    return d


# --------------------------------------------------------------------------- stage bookkeeping
class _Stages:
    def __init__(self, out: Path, cfg: ReproduceConfig) -> None:
        self.path = out / "stages.json"
        if self.path.is_file():
            try:
                self.doc = json.loads(self.path.read_text())
            except json.JSONDecodeError as e:
                raise InputError(self.path, f"not valid JSON ({e.msg}); delete it to start afresh") from e
            old = self.doc.get("settings", {})
            if old and old != cfg.key():
                diff = sorted(k for k in set(old) | set(cfg.key()) if old.get(k) != cfg.key().get(k))
                raise InputError(out, f"holds a reproduction with other settings ({', '.join(diff)}); "
                                      "use another --out or the same settings to resume")
        else:
            self.doc = {"settings": cfg.key(), "stages": {}}
        self.doc["settings"] = cfg.key()

    def done(self, name: str) -> bool:
        return self.doc["stages"].get(name, {}).get("status") == "done"

    def record(self, name: str, seconds: float, started: str, **extra: Any) -> None:
        self.doc["stages"][name] = {"status": "done", "seconds": round(seconds, 1), "started": started,
                                    "finished": time.strftime("%Y-%m-%dT%H:%M:%S"), **extra}
        self.doc["total_seconds"] = round(sum(s.get("seconds", 0) for s in self.doc["stages"].values()), 1)
        self.save()

    def save(self) -> None:
        tmp = self.path.with_suffix(".json.tmp")
        tmp.write_text(json.dumps(self.doc, indent=2) + "\n")
        tmp.replace(self.path)


def _run_trainer(args: list[str], log_path: Path, threads: int) -> None:
    env = dict(os.environ)
    for k in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS"):
        env[k] = str(threads)
    env.setdefault("HF_HUB_OFFLINE", "1")
    cmd = _python_cmd() + args
    with open(log_path, "a") as log:
        log.write(f"\n$ {' '.join(cmd)}\n")
        log.flush()
        proc = subprocess.run(cmd, stdout=log, stderr=subprocess.STDOUT, env=env, check=False)
    if proc.returncode != 0:
        tail = "".join(log_path.read_text().splitlines(keepends=True)[-8:])
        raise InputError(f"reproduce stage {args[1]}",
                         f"`lumbargrade {' '.join(args)}` failed with status {proc.returncode}; "
                         f"see {log_path}. Last lines: {tail.strip()}")


# --------------------------------------------------------------------------- in-process stages
def _stage_cohort(cfg: ReproduceConfig, out: Path) -> dict:
    from .phantom.cohort import generate_cohort

    cohort = out / "cohort"
    r = generate_cohort(cohort, cfg.patients, seed=cfg.seed, split=cfg.split, workers=cfg.workers,
                        overwrite=cohort.exists(), progress=True)
    from .provenance import portable_path

    return {"n_patients": r["n_patients"], "manifest": portable_path(r["manifest"], base=out)}


def _stage_box_rule(cfg: ReproduceConfig, out: Path) -> dict:
    """``train boxes`` as the bundled pack's recipe runs it: the rule fitted on the masks the trained
    segmenter predicts, with the image localiser's calibration (``--tiny``: on the truth masks,
    its one-epoch segmenter finds nothing)."""
    from .boxes.training import fit_box_rule_from_manifest
    from .provenance import portable_path

    segmenter = None
    if not cfg.tiny:
        from .segmentation.inference import load_segmenter

        segmenter = load_segmenter(out / "runs" / SEGMENTER_RUN)
    rule, report = fit_box_rule_from_manifest(out / "cohort" / "manifest.csv", split="train", segmenter=segmenter)
    report["fitted_on"]["manifest"] = portable_path(out / "cohort" / "manifest.csv", base=out)
    d = out / "runs" / "box_rule"
    d.mkdir(parents=True, exist_ok=True)
    # box_rule.json is what the pipeline reads from a pack (BoxRuleConfig.from_dict); the fit's
    # figures go beside it
    (d / "box_rule.json").write_text(json.dumps(rule.to_dict(), indent=2) + "\n")
    (d / "box_rule_fit.json").write_text(json.dumps(report, indent=2) + "\n")
    key = "mean_iou_predicted_masks" if segmenter is not None else "mean_iou_truth_masks"
    return {"masks": report["fitted_on"]["masks"], "mean_iou": report.get(key)}


def _stage_pack(cfg: ReproduceConfig, out: Path) -> dict:
    from .modelpack import build_pack

    runs = out / "runs"
    comps = {c: runs / c for c in ("landmarks", "landmark_refiner", "tree",
                                   *(f"classifier_{t}" for t in CLASSIFIER_TASKS))}
    comps["segmentation"] = runs / SEGMENTER_RUN
    fit = json.loads((runs / "box_rule" / "box_rule_fit.json").read_text())
    pack = build_pack(out / "pack", comps, name=f"lumbargrade-reproduce-{cfg.preset}", version="0",
                      trained_on=f"phantom cohort, {cfg.patients} patients, seed {cfg.seed}, split "
                                 f"{'/'.join(map(str, cfg.split))}",
                      extra={"box_rule": fit, "reproduce": _recorded_config(cfg)}, overwrite=True)
    shutil.copy2(runs / "box_rule" / "box_rule.json", pack / "box_rule.json")
    from .modelpack import export_pack_onnx

    onnx = export_pack_onnx(pack)  # the evaluation then runs the pack as `analyze` would
    return {"pack": "pack", "onnx": {c: ("error" not in r) for c, r in onnx.items()}}


def _stage_evaluate(cfg: ReproduceConfig, out: Path) -> dict:
    from .commands.evaluate import run_pipeline
    from .evaluation import evaluate_predictions, load_truth
    from .modelpack import load_pack

    try:
        import torch

        torch.set_num_threads(max(1, cfg.threads))
    except ImportError:  # pragma: no cover
        pass
    ev = out / "evaluation"
    pack = load_pack(out / "pack")
    truth = load_truth(out / "cohort", "test")
    t0 = time.perf_counter()
    failures = run_pipeline(truth, pack, ev / "predictions")
    t_run = time.perf_counter() - t0
    m = evaluate_predictions(out / "cohort", ev / "predictions", ev, split="test", n_boot=cfg.n_boot,
                             seed=cfg.seed, tree_model=pack.get("tree"),
                             extra={"data": "cohort", "model_pack": "pack", "predictions": "evaluation/predictions",
                                    "paths_relative_to": "the reproduce output folder",
                                    "pipeline_failures": failures,
                                    "pipeline_seconds": round(t_run, 1)})
    for f in ("tables.md", "metrics.json"):
        shutil.copy2(ev / f, out / f)
    return {"pipeline_failures": len(failures), "n_levels": m["n_levels"]}


def _collect_configs(out: Path) -> None:
    dest = out / "configs"
    dest.mkdir(exist_ok=True)
    for run in sorted((out / "runs").glob("*")):
        for f in ("config.json", "box_rule.json"):
            if (run / f).is_file():
                shutil.copy2(run / f, dest / f"{run.name}.json")


def run_reproduce(cfg: ReproduceConfig, stop_after: str | None = None, log=print) -> dict:
    """Run (or resume) every stage; returns the ``stages.json`` document."""
    if cfg.preset not in PRESETS:
        raise InputError("--preset", f"{cfg.preset!r} is not one of {', '.join(PRESETS)}")
    if stop_after is not None and stop_after not in STAGES:
        raise InputError("--stop-after", f"{stop_after!r} is not a stage ({', '.join(STAGES)})")
    if cfg.patients < 3:
        raise InputError("--patients", "need at least 3 patients (train, val and test)")
    if cfg.epochs_scale <= 0:
        raise InputError("--epochs-scale", "must be positive")
    if cfg.bit_checkpoint and not Path(cfg.bit_checkpoint).is_file():
        raise InputError(cfg.bit_checkpoint, "BiT checkpoint file not found")
    out = Path(cfg.out)
    out.mkdir(parents=True, exist_ok=True)
    stages = _Stages(out, cfg)
    cmds = plan_commands(cfg)
    (out / "reproduce_config.json").write_text(json.dumps(
        {**_recorded_config(cfg), "stages": list(STAGES),
         "commands": {k: recorded_command(v, out) for k, v in cmds.items()}},
        indent=2) + "\n")
    stages.save()
    (out / "logs").mkdir(exist_ok=True)
    in_process = {"cohort": _stage_cohort, "box_rule": _stage_box_rule, "pack": _stage_pack,
                  "evaluate": _stage_evaluate}
    for name in STAGES:
        if stages.done(name):
            log(f"[reproduce] {name}: done earlier ({stages.doc['stages'][name]['seconds']} s), skipped")
        else:
            started = time.strftime("%Y-%m-%dT%H:%M:%S")
            log(f"[reproduce] {name}: started {started}")
            t0 = time.perf_counter()
            if name in in_process:
                info = in_process[name](cfg, out)
                extra = {"result": info}
            else:
                _run_trainer(cmds[name], out / "logs" / f"{name}.log", cfg.threads)
                extra = {"command": recorded_command(cmds[name], out)}
                metrics = out / "runs" / name / "metrics.json"
                if metrics.is_file():
                    extra["metrics_file"] = str(metrics.relative_to(out))
            dt = time.perf_counter() - t0
            stages.record(name, dt, started, **extra)
            log(f"[reproduce] {name}: done in {dt:.0f} s")
            if name in ("tree", "pack") or name.startswith("classifier_"):
                _collect_configs(out)
        if name == stop_after:
            log(f"[reproduce] stopping after {name} (--stop-after)")
            break
    _collect_configs(out)
    return stages.doc
