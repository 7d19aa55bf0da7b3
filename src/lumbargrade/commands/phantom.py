"""``lumbargrade phantom``: write a synthetic cohort of lumbar T2 studies (DICOM) with truth."""

from __future__ import annotations

import argparse


def _split(text: str) -> tuple[int, int, int]:
    try:
        parts = tuple(int(v) for v in text.split(","))
    except ValueError:
        parts = ()
    if len(parts) != 3 or min(parts) < 0 or sum(parts) == 0:
        raise argparse.ArgumentTypeError(f"expected TRAIN,VAL,TEST counts such as 150,20,30, got {text!r}")
    return parts  # type: ignore[return-value]


def register(sub: argparse._SubParsersAction) -> argparse.ArgumentParser:
    p = sub.add_parser(
        "phantom",
        help="generate synthetic lumbar T2 FSE studies (DICOM) with ground truth and simulated readers",
        description="Write N synthetic patients into OUT: per patient a DICOM study (sagittal T2 and "
        "per-disc axial T2 blocks), truth.json and label maps, plus OUT/manifest.csv (one row per "
        "patient and level; see docs/dataset-format.md). The same seed gives the same bytes.",
    )
    p.add_argument("--out", required=True, metavar="DIR", help="output folder (must be empty unless --overwrite)")
    p.add_argument("--patients", type=int, default=200, metavar="N", help="number of patients (default 200)")
    p.add_argument("--seed", type=int, default=0, metavar="S", help="random seed (default 0)")
    p.add_argument("--split", type=_split, default=(150, 20, 30), metavar="TRAIN,VAL,TEST",
                   help="patients per split; used as proportions when they do not add up to N "
                   "(default 150,20,30)")
    p.add_argument("--config", metavar="FILE", help="JSON file of PhantomConfig overrides "
                   "(nested: pathology / readers / acquisition)")
    p.add_argument("--preview", action="store_true", help="also write OUT/<patient>/preview.png montages")
    p.add_argument("--workers", type=int, default=1, metavar="K", help="worker processes (default 1)")
    p.add_argument("--overwrite", action="store_true",
                   help="replace an earlier cohort in OUT (removes its patient folders and manifest)")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    return p


def run(args: argparse.Namespace) -> int:
    import json
    from pathlib import Path

    from ..errors import InputError
    from ..phantom.cohort import generate_cohort
    from ..phantom.config import config_from_dict

    if args.preview:  # the montages are drawn with matplotlib
        from ..extras import require

        require("phantom --preview", ("matplotlib",))
    config = None
    if args.config:
        path = Path(args.config)
        try:
            config = config_from_dict(json.loads(path.read_text()))
        except FileNotFoundError:
            raise InputError(path, "file not found") from None
        except (json.JSONDecodeError, ValueError, TypeError) as e:
            raise InputError(path, f"not a valid phantom config: {e}") from None
    res = generate_cohort(args.out, args.patients, args.seed, split=args.split, config=config,
                          preview=args.preview, workers=args.workers, overwrite=args.overwrite,
                          progress=not args.quiet)
    print(f"wrote {res['n_patients']} patients to {args.out} in {res['seconds']:.1f} s "
          f"({res['seconds_per_patient']:.2f} s/patient); manifest: {res['manifest']}")
    return 0
