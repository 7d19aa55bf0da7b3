"""``lumbargrade segment``: dural sac and disc masks on every axial slice, with a plausibility check."""

from __future__ import annotations

import argparse


def register(sub: argparse._SubParsersAction) -> argparse.ArgumentParser:
    p = sub.add_parser(
        "segment",
        help="segment the dural sac and disc on every axial slice of a DICOM series, NIfTI or image",
        description="Segment every axial slice of INPUT (a DICOM folder or .zip: every slice of every axial "
        "series; a NIfTI file: slices along its most axial axis; or one PNG/NPY image with --spacing). Writes "
        "OUT/segment.json (per slice: areas in mm2, plausible, warnings) and OUT/labels/<name>.png, each in "
        "its slice's own pixel grid (0 background, 1 dural sac, 2 disc; 3-6 facet and foramen regions "
        "left/right when the model has them).",
    )
    p.add_argument("input", metavar="INPUT", help="DICOM folder, .zip, NIfTI file, or a PNG/NPY image")
    p.add_argument("--out", required=True, metavar="DIR", help="output folder")
    p.add_argument("--series", metavar="UID", help="only this SeriesInstanceUID (DICOM input)")
    p.add_argument("--spacing", metavar="ROW_MM,COL_MM", help="pixel spacing of a PNG/NPY image")
    p.add_argument("--models", help="model pack folder (default: the bundled pack)")
    p.add_argument("--runtime", choices=["auto", "onnx", "torch"], default=None,
                   help="how the network runs (default auto: ONNX Runtime where the pack has a current export)")
    p.add_argument("--no-fat-shift-correction", dest="fat_shift_correction", action="store_false",
                   help="keep the disc and facet/foramen outlines where the segmenter drew them (default: moved back "
                   "by the fat-water shift where the header states it, as analyze does)")
    p.add_argument("--overwrite", action="store_true", help="replace results already in OUT")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    return p


def run(args: argparse.Namespace) -> int:
    from ..segment_runner import run_segment

    return run_segment(args)
