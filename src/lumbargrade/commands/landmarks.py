"""``lumbargrade landmarks INPUT``: the five disc-centre landmarks on the mid-sagittal T2."""

from __future__ import annotations

import argparse

_IMAGE_SUFFIXES = (".png", ".npy", ".jpg", ".jpeg", ".tif", ".tiff", ".bmp")


def register(sub: argparse._SubParsersAction) -> argparse.ArgumentParser:
    p = sub.add_parser(
        "landmarks",
        help="find the five lumbar disc centres (L1/L2..L5/S1) on the mid-sagittal T2",
        description="Find the disc centres L1/L2..L5/S1 on the mid-sagittal T2 slice with the DSNT "
        "landmark network. INPUT is a study or sagittal series (DICOM folder, .zip, DICOM file), a "
        "NIfTI volume, or one 2D image (.png/.npy, shown head-up with anterior on the left; no "
        "spacing, so patient_mm is null). The mid-sagittal slice is chosen automatically (mirror "
        "symmetry) unless --slice is given. Low-confidence or implausible results are flagged.",
    )
    p.add_argument("input", metavar="INPUT", help="DICOM folder/.zip/file, NIfTI file, or a 2D .png/.npy image")
    p.add_argument("--json", action="store_true", help="print exactly one JSON object")
    p.add_argument("--slice", type=int, default=None, metavar="K",
                   help="use sagittal slice K (index along the slice normal) instead of the automatic choice")
    p.add_argument("--models", metavar="PATH", default=None,
                   help="landmark model folder or model pack (default: the packaged model)")
    p.add_argument("--rules", metavar="FILE", default=None, help="JSON file overriding the series role rules")
    return p


def _sagittal_series(study, where: str):
    from ..errors import InputError

    s = study.find("sagittal_t2")
    if s is None:
        cands = [x for x in study.series if x.plane == "sagittal" and not getattr(x, "is_localizer", False)]
        if not cands:
            raise InputError(where, "no sagittal series found (see `lumbargrade inspect`)")
        s = max(cands, key=lambda x: x.n_slices)
    return s


def run(args: argparse.Namespace) -> int:
    import json
    from pathlib import Path

    from ..errors import InputError
    from ..levels.landmarks import landmarks_for_image, landmarks_for_series, load_model

    path = Path(args.input)
    if not path.exists():
        raise InputError(path, "no such file or folder")
    model = load_model(args.models)
    warnings: list[str] = []
    if path.is_file() and path.suffix.lower() in _IMAGE_SUFFIXES:
        from ..manifest import load_image_file

        if args.slice is not None:
            warnings.append("--slice ignored for a 2D image")
        lm = landmarks_for_image(model, load_image_file(path))
    else:
        from ..io import read_study

        study = read_study(path, rules=args.rules)
        try:
            series = _sagittal_series(study, str(path))
            lm = landmarks_for_series(model, series, slice_index=args.slice)
        finally:
            study.close()
    lm.warnings[:0] = warnings
    d = lm.to_dict()
    if args.json:
        print(json.dumps(d))
        return 0
    where = f"slice {d['slice_index']} ({d.get('slice_choice')})" if d["slice_index"] is not None else "2D image"
    print(f"landmarks on {where}{'  [FLAGGED]' if d['flagged'] else ''}")
    for lv, v in d["landmarks"].items():
        mm = "" if v["patient_mm"] is None else "  LPS mm " + ", ".join(f"{x:.1f}" for x in v["patient_mm"])
        print(f"  {lv:6s} row {v['row']:7.1f}  col {v['col']:7.1f}  confidence {v['confidence']:.2f}{mm}")
    for w in d["warnings"]:
        print(f"warning: {w}")
    return 0
