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
    p.add_argument("--axial-layout", default=None, metavar="LAYOUT",
                   help="how the axial series is stored: standard (the radiological display), mixed (one of the "
                   "8 rotations/flips at random per patient: prone, feet first, transposed...), or one of "
                   "+x+y, -x+y, +x-y, -x-y, +y+x, -y+x, +y-x, -y-x (the patient axes the row and column "
                   "cosines follow; write those starting with '-' as --axial-layout=-x+y)")
    p.add_argument("--lumbarised-s1", type=float, default=None, metavar="RATE",
                   help="share of patients (0-1) with a lumbarised S1 (a lumbosacral transitional vertebra: "
                   "a mobile S1/S2 disc below L5/S1; default 0); truth.json says which")
    p.add_argument("--sacralised-l5", type=float, default=None, metavar="RATE",
                   help="share of patients (0-1) with a sacralised L5 (a thin, rudimentary L5/S1 disc; "
                   "default 0); with --lumbarised-s1 the two shares add up to at most 1")
    p.add_argument("--no-slice-bank", action="store_true",
                   help="do not write the slice bank (tissue and label maps of every slice: the segmenter's "
                   "domain-randomised training data) nor OUT/slices.csv")
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
    rates = {}
    for flag, rate, key in (("--lumbarised-s1", args.lumbarised_s1, "lumbarised_s1_rate"),
                            ("--sacralised-l5", args.sacralised_l5, "sacralised_l5_rate")):
        if rate is not None:
            if not 0.0 <= rate <= 1.0:
                raise InputError(flag, f"{rate} is not a share between 0 and 1")
            rates[key] = rate
    if sum(rates.values()) > 1.0:
        raise InputError("--lumbarised-s1/--sacralised-l5", "the two shares add up to more than 1")
    if args.axial_layout is not None or args.no_slice_bank or rates:
        import dataclasses

        from ..phantom.acquisition import INPLANE_VARIANTS
        from ..phantom.config import PhantomConfig

        config = config or PhantomConfig()
        if args.axial_layout is not None:
            if args.axial_layout not in ("standard", "mixed", *INPLANE_VARIANTS):
                raise InputError("--axial-layout", f"{args.axial_layout!r} is not standard, mixed or one of "
                                 f"{', '.join(INPLANE_VARIANTS)}")
            config = dataclasses.replace(config, acquisition=dataclasses.replace(config.acquisition,
                                                                                 ax_inplane=args.axial_layout))
        if args.no_slice_bank:
            config = dataclasses.replace(config, slice_bank=False)
        if rates:
            config = dataclasses.replace(config, anatomy={**(config.anatomy or {}), **rates})
    res = generate_cohort(args.out, args.patients, args.seed, split=args.split, config=config,
                          preview=args.preview, workers=args.workers, overwrite=args.overwrite,
                          progress=not args.quiet)
    print(f"wrote {res['n_patients']} patients to {args.out} in {res['seconds']:.1f} s "
          f"({res['seconds_per_patient']:.2f} s/patient); manifest: {res['manifest']}")
    return 0
