"""``lumbargrade pull``: download a study from a DICOMweb archive (needs the ``pacs`` extra)."""

from __future__ import annotations

import argparse


def register(sub: argparse._SubParsersAction) -> argparse.ArgumentParser:
    p = sub.add_parser(
        "pull",
        help="download a study from a DICOMweb archive (QIDO-RS / WADO-RS) for `analyze`",
        description="List the series of a study by QIDO-RS and retrieve them by WADO-RS into "
        "OUT/<SeriesInstanceUID>/<SOPInstanceUID>.dcm, ready for `lumbargrade analyze OUT`. Only MR series "
        "by default. Needs the 'pacs' extra: pip install 'lumbargrade[pacs]'.",
    )
    p.add_argument("--dicomweb", required=True, metavar="URL", help="DICOMweb service root, e.g. http://pacs:8042/dicom-web")
    p.add_argument("--study", required=True, metavar="UID", help="StudyInstanceUID")
    p.add_argument("--out", required=True, help="folder to write the study into")
    p.add_argument("--modality", action="append", default=None,
                   help="series modality to download (repeatable; default MR; 'all' for every series)")
    p.add_argument("--header", action="append", default=[], metavar="NAME:VALUE",
                   help="HTTP header sent with every request, e.g. 'Authorization: Bearer ...' (repeatable)")
    p.add_argument("--timeout", type=float, default=60.0, help="seconds per HTTP request (default 60)")
    p.add_argument("--overwrite", action="store_true", help="replace OUT when it is not empty")
    return p


def run(args: argparse.Namespace) -> int:
    from ..errors import InputError
    from ..service import require_pacs

    require_pacs("lumbargrade pull", ("dicomweb_client",))
    from ..service.pull import pull_study

    headers = {}
    for h in args.header:
        name, sep, value = h.partition(":")
        if not sep or not name.strip():
            raise InputError("--header", f"{h!r}: expected NAME:VALUE")
        headers[name.strip()] = value.strip()
    mods = None if args.modality and any(m.lower() == "all" for m in args.modality) else \
        tuple(m.upper() for m in (args.modality or ["MR"]))
    res = pull_study(args.dicomweb, args.study, args.out, modalities=mods, headers=headers,
                     overwrite=args.overwrite, timeout_s=args.timeout)
    print(f"{res['instances']} instances in {res['series']} series ({res['bytes'] / 2**20:.1f} MB) written to "
          f"{args.out}" + (f"; {res['skipped_series']} other series skipped" if res["skipped_series"] else ""))
    return 0
