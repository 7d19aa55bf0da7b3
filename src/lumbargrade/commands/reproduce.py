"""``lumbargrade reproduce``: generate the phantom cohort, train every stage, evaluate on test."""

from __future__ import annotations

import argparse


def register(sub: argparse._SubParsersAction) -> argparse.ArgumentParser:
    p = sub.add_parser(
        "reproduce",
        help="reproduce the paper end to end on the phantom (cohort, every model, tables, figures)",
        description="Generate a phantom cohort (split 150/20/30, scaled), train segmentation, landmarks, "
        "the landmark refiner, the box rule, the decision tree and the four CNN classifiers, build a model pack and evaluate it "
        "on the test split. Resumable: finished stages (OUT/stages.json) are skipped on a rerun and "
        "every trainer resumes from its checkpoint.",
    )
    p.add_argument("--out", required=True, help="output folder")
    p.add_argument("--preset", choices=["fast", "paper"], default="fast",
                   help="fast: the CPU defaults; paper: V-Net segmentation and BiT-R50x1 classifiers")
    p.add_argument("--patients", type=int, default=200, help="cohort size (default 200)")
    p.add_argument("--seed", type=int, default=0, help="cohort and training seed")
    p.add_argument("--split", default="150,20,30", help="train,val,test counts or proportions (default 150,20,30)")
    p.add_argument("--epochs-scale", type=float, default=1.0,
                   help="multiply every trainer's epochs (landmark steps) by this factor")
    p.add_argument("--workers", type=int, default=1, help="processes for the phantom generation")
    p.add_argument("--threads", type=int, default=1, help="torch threads per trainer (default 1)")
    p.add_argument("--real", default="auto",
                   help="SPIDER-layout folder of real sagittal slices for the landmark model "
                   "('auto': ../shared/data/spider-sagittal or $LUMBARGRADE_SPIDER when present; 'none')")
    p.add_argument("--bit-checkpoint", help="local BiT-M R50x1 checkpoint for --preset paper (never downloaded)")
    p.add_argument("--n-boot", type=int, default=1000, help="bootstrap resamples of the evaluation")
    p.add_argument("--set", action="append", default=[], metavar="TRAINER.KEY=VALUE",
                   help="extra config override for one trainer (segmentation, landmarks, landmark_refiner, tree, classifier), "
                   "e.g. --set classifier.batch_size=16 (repeatable)")
    p.add_argument("--tiny", action="store_true", help="smoke-test sizes: one epoch, small inputs (for tests)")
    p.add_argument("--stop-after", metavar="STAGE", help="stop after this stage (a later rerun continues)")
    return p


def run(args: argparse.Namespace) -> int:
    import json

    from ..errors import InputError
    from ..extras import TRAIN_MODULES, require
    from ..reproduce import ReproduceConfig, run_reproduce

    require("reproduce", TRAIN_MODULES)

    try:
        split = tuple(int(x) for x in args.split.split(","))
    except ValueError:
        split = ()
    if len(split) != 3 or min(split) < 0:
        raise InputError("--split", f"{args.split!r} is not three counts train,val,test")
    sets: dict[str, list[str]] = {}
    for item in args.set:
        trainer, _, rest = item.partition(".")
        if trainer not in ("segmentation", "landmarks", "landmark_refiner", "tree", "classifier") or "=" not in rest:
            raise InputError("--set", f"{item!r} is not TRAINER.KEY=VALUE with TRAINER one of segmentation, "
                             "landmarks, landmark_refiner, tree, classifier")
        sets.setdefault(trainer, []).append(rest)
    cfg = ReproduceConfig(out=args.out, preset=args.preset, patients=args.patients, seed=args.seed, split=split,
                          epochs_scale=args.epochs_scale, workers=args.workers, threads=args.threads,
                          real=None if str(args.real).lower() == "none" else args.real,
                          bit_checkpoint=args.bit_checkpoint, tiny=args.tiny, n_boot=args.n_boot, sets=sets)
    doc = run_reproduce(cfg, stop_after=args.stop_after)
    print(json.dumps({k: v.get("seconds") for k, v in doc["stages"].items()}, indent=2))
    print(f"total {doc.get('total_seconds', 0):.0f} s; stages: {args.out}/stages.json")
    return 0
