"""``lumbargrade train {segmentation,landmarks,tree,classifier}``: train one stage on a manifest.

Every trainer writes into RUN_DIR: ``config.json`` (the resolved config), ``model.safetensors``
(best weights; the tree writes ``tree.json``), ``metrics.json`` (validation metrics of the best
epoch), ``train.log``, and ``checkpoint.pt`` (state to resume from).
"""

from __future__ import annotations

import argparse
import importlib

# task -> "module:function"; the function takes the parsed args and returns an exit status.
_TRAINERS = {
    "segmentation": "lumbargrade.segmentation.training:run_cli",
    "landmarks": "lumbargrade.levels.training:run_cli",
    "landmark-refiner": "lumbargrade.levels.refine:run_cli",
    "tree": "lumbargrade.grading.tree_training:run_cli",
    "classifier": "lumbargrade.grading.classifier_training:run_cli",
    "boxes": "lumbargrade.boxes.training:run_cli",
    "fat-shift": "lumbargrade.segmentation.fat_shift:run_cli",
}

# task -> the modules of the training extra it imports (the box rule is numpy only)
_NEEDS = {
    "segmentation": ("torch", "monai", "safetensors"),
    "landmarks": ("torch", "safetensors"),
    "landmark-refiner": ("torch", "safetensors"),
    "tree": ("sklearn",),
    "classifier": ("torch", "timm", "safetensors"),
    "boxes": (),
    "fat-shift": ("torch", "safetensors"),
}


def _common(p: argparse.ArgumentParser, pooled: bool = False) -> None:
    if pooled:
        p.add_argument("--data", required=True, action="append", metavar="DATA",
                       help="manifest.csv (or a phantom cohort folder holding one); repeat it to pool several "
                       "cohorts (their rows together, each row in its own split)")
    else:
        p.add_argument("--data", required=True, help="manifest.csv (or a phantom cohort folder holding one)")
    p.add_argument("--out", required=True, help="run folder (created; resumes if it holds a checkpoint)")
    p.add_argument("--config", help="JSON file of config overrides")
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                   help="override one config value (repeatable), e.g. --set epochs=5")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--overwrite", action="store_true", help="start afresh in a run folder that holds results")


def _data_parallel(p: argparse.ArgumentParser) -> None:
    p.add_argument("--workers", type=int, default=1, metavar="N",
                   help="data-parallel training in N processes (PyTorch DDP, gloo; each takes batch_size/N "
                   "of every batch, the same model as one process up to rounding)")
    p.add_argument("--ray", nargs="?", const="local", default=None, metavar="ADDRESS",
                   help="with --workers: run them as Ray Train workers (pip install 'lumbargrade[scale]'), "
                   "on the cluster at ADDRESS or a local Ray")


def register(sub: argparse._SubParsersAction) -> argparse.ArgumentParser:
    p = sub.add_parser("train", help="train one stage (segmentation, landmarks, tree, classifier, boxes, fat-shift)")
    tsub = p.add_subparsers(dest="task", metavar="TASK", required=True)
    s = tsub.add_parser("segmentation", help="dural sac + disc segmentation network (or, with --set "
                        "role=sac_refiner, the second look at the dural sac)")
    _common(s, pooled=True)
    _data_parallel(s)
    s.add_argument("--model", help="architecture from the registry (default: config's)")
    s.add_argument("--ensemble", type=int, default=1, metavar="N",
                   help="train N members (seeds SEED..SEED+N-1, a finished member is kept) into "
                   "OUT/members/seed<k>; the network is the mean of their probabilities (default 1)")
    l_ = tsub.add_parser("landmarks", help="DSNT disc-centre landmarks on the mid-sagittal T2")
    _common(l_)
    l_.add_argument("--real", help="folder of real labelled sagittal slices (SPIDER PNG layout: images/, masks/)")
    lr_ = tsub.add_parser("landmark-refiner", help="second-look refinement of each disc landmark on a local patch")
    _common(lr_)
    lr_.add_argument("--real", help="folder of real labelled sagittal slices (SPIDER PNG layout: images/, masks/)")
    lr_.add_argument("--landmarks", help="coarse landmark model folder or pack (default: the packaged one); "
                     "its held-out real studies stay out of training")
    _data_parallel(l_)
    _data_parallel(lr_)
    t = tsub.add_parser("tree", help="decision tree on the dural-sac-to-disc ratio (central canal)")
    _common(t, pooled=True)
    t.add_argument("--segmentation", help="segmentation run folder or model pack whose masks the tree is fitted on")
    t.add_argument("--truth-masks", action="store_true", help="fit on ground-truth masks instead")
    bx = tsub.add_parser("boxes", help="fit the facet/foramen box rule on truth masks and boxes")
    bx.add_argument("--data", required=True, help="manifest.csv (or a phantom cohort folder holding one)")
    bx.add_argument("--out", required=True, help="run folder (writes box_rule.json, metrics.json, config.json)")
    bx.add_argument("--segmentation", help="segmentation run folder or model pack: fit on the masks it "
                    "predicts (as the pipeline applies the rule) instead of the truth's")
    bx.add_argument("--fat-shift", metavar="DIR", help="fat-shift reader (a `train fat-shift` run or PACK/fat_shift): "
                    "the predicted disc and regions are moved back as analyze moves them")
    bx.add_argument("--overwrite", action="store_true")
    fs = tsub.add_parser("fat-shift", help="reader of the fat-water shift's direction on axial T2 slices")
    _common(fs, pooled=True)
    c = tsub.add_parser("classifier", help="CNN patch classifier")
    _common(c, pooled=True)
    c.add_argument("--task", dest="cls_task", required=True,
                   choices=["central", "central_binary", "foramen", "facet"])
    c.add_argument("--model", help="architecture from the registry (default: config's)")
    c.add_argument("--checkpoint", help="local pretrained checkpoint file for the backbone (never downloaded)")
    c.add_argument("--segmentation", help="segmentation run folder or model pack: the patches are placed as "
                   "analyze places them (its masks and facet/foramen regions)")
    c.add_argument("--box-rule", help="box_rule.json of the fitted rule (where a region is missing; default: the "
                   "pack's, or the shipped coefficients)")
    c.add_argument("--fat-shift", metavar="DIR", help="fat-shift reader (a `train fat-shift` run or PACK/fat_shift): "
                   "with --segmentation, the predicted disc and regions are moved back as analyze moves them")
    c.add_argument("--ensemble", type=int, default=1, metavar="N",
                   help="train N members (seeds SEED..SEED+N-1) on the same patches into OUT/members/seed<k>; "
                   "the classifier is their mean calibrated probability, its threshold chosen for that mean "
                   "on the validation split (default 1: one network)")
    _data_parallel(c)
    return p


def run(args: argparse.Namespace) -> int:
    from ..extras import require

    require("train", _NEEDS[args.task])
    target = _TRAINERS[args.task]
    module, func = target.split(":")
    try:
        mod = importlib.import_module(module)
    except ModuleNotFoundError as e:
        if e.name and e.name.startswith("lumbargrade"):
            from ..errors import InputError

            raise InputError(f"train {args.task}", "this trainer is not available in this build") from e
        raise
    status = int(getattr(mod, func)(args) or 0)
    if status == 0:
        _record_command(args)
    return status


def _record_command(args: argparse.Namespace) -> None:
    """Write RUN_DIR/command.txt: the command that produced the run (for the model pack), its
    paths as placeholders (``--data COHORT/manifest.csv --out runs/segmentation``; see
    :mod:`lumbargrade.provenance`)."""
    import sys
    from pathlib import Path

    from ..provenance import portable_command

    out = Path(args.out)
    if out.is_dir():
        prog = Path(sys.argv[0]).name if sys.argv else ""
        from_cli = prog == "lumbargrade" or (prog == "__main__.py" and Path(sys.argv[0]).parent.name == "lumbargrade")
        argv = ["lumbargrade", *sys.argv[1:]] if from_cli else None
        if argv is None:
            from ..manifest import data_paths

            argv = ["lumbargrade", "train", args.task, *(x for d in data_paths(args.data) for x in ("--data", d)),
                    "--out", str(args.out)]
        (out / "command.txt").write_text(portable_command(argv) + "\n")
