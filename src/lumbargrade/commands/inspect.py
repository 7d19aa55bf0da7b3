"""``lumbargrade inspect PATH``: the series of a study, their geometry and the role each gets."""

from __future__ import annotations

import argparse


def register(sub: argparse._SubParsersAction) -> argparse.ArgumentParser:
    p = sub.add_parser(
        "inspect",
        help="list a study's series: plane, slices, blocks, size, spacing, role",
        description="Read a study (a folder of DICOM files, a .zip of one, a DICOM file or a NIfTI "
        ".nii/.nii.gz) and print one row per series: description, plane, number of slices and "
        "blocks, rows x columns, pixel spacing (row, col mm), slice thickness (mm) and role.",
    )
    p.add_argument("path", metavar="PATH", help="DICOM folder, .zip, DICOM file or NIfTI file")
    p.add_argument("--json", action="store_true", help="print exactly one JSON object")
    p.add_argument(
        "--rules",
        metavar="FILE",
        default=None,
        help="JSON file overriding the packaged role rules (lumbargrade/data/role_rules.json)",
    )
    return p


def _fmt(v: float | None, nd: int = 3) -> str:
    return "-" if v is None else f"{v:.{nd}g}"


def format_table(d: dict) -> str:
    """The human-readable table of :meth:`Study.to_dict` output."""
    head = [
        "#",
        "description",
        "plane",
        "slices",
        "blocks",
        "size",
        "spacing mm",
        "thick mm",
        "role",
    ]
    rows = []
    for i, s in enumerate(d["series"]):
        ps = s["pixel_spacing_mm"]
        rows.append(
            [
                str(i + 1),
                s["description"] or "(none)",
                s["plane"],
                str(s["n_slices"]),
                str(s["n_blocks"]),
                f"{s['rows']}x{s['columns']}",
                f"{_fmt(ps[0])} x {_fmt(ps[1])}",
                _fmt(s["slice_thickness_mm"]),
                s["role"] or "-",
            ]
        )
    widths = [max(len(r[k]) for r in [head, *rows]) for k in range(len(head))]
    lines = [f"study {d['study_instance_uid'] or '(none)'}"]
    lines += ["  ".join(c.ljust(w) for c, w in zip(r, widths)).rstrip() for r in [head, *rows]]
    if d["warnings"]:
        lines.append(f"warnings ({len(d['warnings'])}):")
        lines += [f"  - {w}" for w in d["warnings"]]
    return "\n".join(lines)


def run(args: argparse.Namespace) -> int:
    import json

    from ..io import read_study

    study = read_study(args.path, rules=args.rules)
    try:
        d = study.to_dict()
    finally:
        study.close()
    if args.json:
        print(json.dumps(d, indent=2))
    else:
        print(format_table(d))
    return 0
