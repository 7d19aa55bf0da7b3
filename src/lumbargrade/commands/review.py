"""``lumbargrade review ROOT``: the review web app; ``lumbargrade review export ROOT --out DIR``:
the corrected levels as a training cohort."""

from __future__ import annotations

import argparse

EXTRA_HINT = 'the review app needs the [review] extra: pip install "lumbargrade[review]"'


def register(sub: argparse._SubParsersAction) -> argparse.ArgumentParser:
    p = sub.add_parser(
        "review",
        help="review, correct and sign off analyze outputs in the browser; export corrections",
        usage="lumbargrade review ROOT [--port 8765] [--host 127.0.0.1] [--token T] [--sources DIR]\n"
        "       lumbargrade review export ROOT --out DIR [--signed] [--images dicom|npy]",
        description="`lumbargrade review ROOT` serves a local web app over ROOT, a folder of `analyze` "
        "outputs (one folder per study, as `analyze --batch` writes them): a worklist, and per study the "
        "grades, measurements and pictures, with a brush and eraser to correct the dural sac, disc and "
        "facet / foramen regions, the landmark to drag to another axial slice, the reader's grades and the "
        "sign-off (a new, verified DICOM SR). Every change is recomputed by the same code as `regrade` and "
        "kept in each study's history/. The app listens on 127.0.0.1 and answers only requests carrying "
        "its access token (random at start unless --token or LUMBARGRADE_REVIEW_TOKEN), printed once in "
        "the address to open. `lumbargrade review export ROOT --out DIR` writes the levels readers "
        "corrected as DIR/manifest.csv with images and label maps, ready for `lumbargrade train`.",
    )
    p.add_argument("target", metavar="ROOT", help="folder of analyze outputs (or the word export)")
    p.add_argument("export_root", nargs="?", metavar="ROOT", help=argparse.SUPPRESS)
    p.add_argument("--port", type=int, default=8765, help="port to listen on (default 8765; 0: any free port)")
    p.add_argument("--host", default="127.0.0.1",
                   help="address to listen on (default 127.0.0.1, this machine only)")
    p.add_argument("--token", help="access token (default: $LUMBARGRADE_REVIEW_TOKEN, else random)")
    p.add_argument("--sources", metavar="DIR",
                   help="folder holding the analyzed studies, when they moved since the analysis "
                   "(each is looked up by its folder or file name)")
    p.add_argument("--models", metavar="PACK", help="model pack to regrade with (default: each analysis' own)")
    p.add_argument("--max-upload-mb", type=float, default=4.0, help="largest label-map upload (default 4 MB)")
    ex = p.add_argument_group("export")
    ex.add_argument("--out", metavar="DIR", help="export: the cohort folder to write")
    ex.add_argument("--signed", action="store_true",
                    help="export: also every level of signed studies, not only the corrected ones")
    ex.add_argument("--images", choices=("dicom", "npy"), default="dicom",
                    help="export: axial slices as the study's DICOM files (default) or as NPY pixels")
    ex.add_argument("--val-fraction", type=float, default=0.2, help="export: share of patients in val")
    ex.add_argument("--test-fraction", type=float, default=0.0, help="export: share of patients in test")
    ex.add_argument("--overwrite", action="store_true", help="export: replace a non-empty --out folder")
    return p


def run(args: argparse.Namespace) -> int:
    import os

    from ..errors import InputError

    if args.target == "export" and args.export_root:
        return _export(args)
    if args.target == "export":
        raise InputError("review export", "give the folder of analyze outputs: review export ROOT --out DIR")
    if args.export_root:
        raise InputError(args.export_root, "unexpected argument (did you mean `lumbargrade review export ROOT`?)")
    if args.out:
        raise InputError("--out", "only for `lumbargrade review export ROOT --out DIR`")
    try:
        import starlette  # noqa: F401
        import uvicorn  # noqa: F401
    except ImportError:
        raise InputError("review", EXTRA_HINT) from None
    from ..service.review.app import serve

    token = args.token or os.environ.get("LUMBARGRADE_REVIEW_TOKEN") or None
    if token is not None and len(token) < 16:
        raise InputError("--token", "must have at least 16 characters")
    if args.max_upload_mb <= 0:
        raise InputError("--max-upload-mb", "must be positive")
    if args.host not in ("127.0.0.1", "localhost", "::1"):
        print(f"warning: listening on {args.host}, not only this machine: anyone who can reach it and "
              "has the token can change results", flush=True)
    try:
        serve(args.target, host=args.host, port=args.port, token=token, sources=args.sources,
              models=args.models, max_upload_bytes=int(args.max_upload_mb * 1024 * 1024),
              on_ready=lambda text: print(text, flush=True))
    except KeyboardInterrupt:
        pass
    return 0


def _export(args: argparse.Namespace) -> int:
    from ..errors import InputError
    from ..service.review.export import export_cohort

    if not args.out:
        raise InputError("--out", "required: the folder to write the cohort into")
    s = export_cohort(args.export_root, args.out, include_signed=args.signed, images=args.images,
                      overwrite=args.overwrite, sources=args.sources, val_fraction=args.val_fraction,
                      test_fraction=args.test_fraction)
    sp = s["splits"]
    print(f"{s['levels']} levels of {s['studies']} studies ({s['patients']} patients: "
          f"{sp['train']} train, {sp['val']} val, {sp['test']} test rows) -> {s['manifest']}")
    for item in s["skipped"]:
        where = item["study"] + (f" {item['level']}" if item.get("level") else "")
        print(f"skipped {where}: {item['why']}")
    if not s["levels"]:
        print("nothing to export: no level was corrected (and --signed adds the levels of signed studies)")
    return 0
