"""``lumbargrade regrade``: recompute one level from an edited dural sac / disc mask."""

from __future__ import annotations

import argparse


def register(sub: argparse._SubParsersAction) -> argparse.ArgumentParser:
    p = sub.add_parser(
        "regrade",
        help="recompute a level's measurements, boxes and grades from an edited mask",
        description="Read an edited mask of one level's axial slice (a label-map PNG: 1 dural sac, 2 disc, "
        "the slice's rows x columns, e.g. OUT/levels/L4-L5/labels.png edited; or a DICOM SEG with segments "
        "'L4/L5 dural sac' / 'L4/L5 disc'), recompute that level's measurements, facet/foramen boxes, tree "
        "grade and CNN findings, and rewrite report.json, report.html, the overlays, SEG and SR in OUT. "
        "The previous results are kept in OUT/history/<timestamp>/ and report.json records who and when.",
    )
    p.add_argument("out", metavar="OUT", help="an `lumbargrade analyze` output folder")
    p.add_argument("--level", required=True, help="disc level, e.g. L4/L5 (or L4-L5)")
    src = p.add_mutually_exclusive_group(required=True)
    src.add_argument(
        "--labels", metavar="EDITED.png", help="edited label map (1 dural sac, 2 disc)"
    )
    src.add_argument("--seg", metavar="EDITED_SEG.dcm", help="edited DICOM SEG")
    p.add_argument(
        "--by", required=True, metavar="NAME", help="who edited the mask (recorded in the history)"
    )
    p.add_argument("--reason", help="why (recorded in the history)")
    p.add_argument("--models", help="model pack folder (default: the pack the analysis used)")
    p.add_argument(
        "--json", action="store_true", help="print the new report as JSON instead of a table"
    )
    return p


def run(args: argparse.Namespace) -> int:
    import json
    from pathlib import Path

    from ..regrade import regrade

    report = regrade(
        args.out,
        args.level,
        labels=args.labels,
        seg=args.seg,
        by=args.by,
        models=args.models,
        reason=args.reason,
    )
    if args.json:
        print(json.dumps(report, indent=2))
        return 0
    from ..analysis_runner import format_table

    print(format_table(report))
    h = report["history"][-1]
    print(
        f"\n{h['level']} regraded by {h['by']} at {h['when']}; previous results in "
        f"{Path(args.out) / h['previous']}"
    )
    print(f"html:   {Path(args.out) / 'report.html'}")
    return 0
