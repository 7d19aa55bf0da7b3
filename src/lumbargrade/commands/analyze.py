"""``lumbargrade analyze``: grade every disc level of one or many studies."""

from __future__ import annotations

import argparse


def register(sub: argparse._SubParsersAction) -> argparse.ArgumentParser:
    p = sub.add_parser(
        "analyze",
        help="grade every disc level of a study (DICOM folder, .zip or NIfTI)",
        description="Read a study, pick the axial slice of each disc level, segment the dural sac and "
        "disc, measure, place facet/foramen boxes, grade, and write OUT/report.json with label maps. "
        "Several studies (or --batch FOLDER) give one output folder per StudyInstanceUID under OUT.",
    )
    p.add_argument("studies", nargs="*", metavar="STUDY", help="study folder, .zip or NIfTI file")
    p.add_argument("--out", required=True, help="output folder")
    p.add_argument("--models", help="model pack folder (default: the bundled pack)")
    p.add_argument("--batch", metavar="DIR|MANIFEST",
                   help="a folder whose subfolders (or .zip files) are studies, or a manifest: a .csv with a "
                   "study_dir column (the dataset manifest.csv) or a text file with one study path a line")
    p.add_argument("--overwrite", action="store_true", help="replace results already in OUT")
    p.add_argument("--workers", type=int, default=1, help="parallel study readers (threads) in batch mode")
    p.add_argument("--processes", type=int, default=1,
                   help="batch mode: analyze with N processes, each loading the models once (default 1; "
                   "N = the number of cores gives the most studies per minute)")
    p.add_argument("--ray", nargs="?", const="local", default=None, metavar="ADDRESS",
                   help="batch mode on Ray (pip install 'lumbargrade[scale]'): one actor per CPU holds the models; "
                   "without ADDRESS a local Ray with this machine's cores, else the cluster at ADDRESS "
                   "(auto, ray://HOST:10001), whose nodes must see the study and output paths")
    p.add_argument("--ray-actors", type=int, default=None, metavar="N",
                   help="with --ray: number of analysis actors (default: one per CPU of the cluster)")
    p.add_argument("--_list", help=argparse.SUPPRESS)
    p.add_argument("--_part", action="store_true", help=argparse.SUPPRESS)
    p.add_argument("--_ort-threads", type=int, help=argparse.SUPPRESS)
    p.add_argument("--threads", type=int, default=None,
                   help="CPU threads for the networks (default: the cores this process may use, divided among "
                   "--processes, for ONNX Runtime; 1 for PyTorch, whose threads contend with the report writers)")
    p.add_argument("--runtime", choices=["auto", "onnx", "torch"], default=None,
                   help="how the networks run: onnx (ONNX Runtime, fast start), torch, or auto (default: onnx "
                   "where the pack has a current export; also $LUMBARGRADE_RUNTIME)")
    p.add_argument("--outputs", default="seg,sr,html",
                   help="files written beside report.json and the label maps: a comma list of seg, sr, html, "
                   "sc (a DICOM Secondary Capture summary per level), or none (default: seg,sr,html; 'none' is "
                   "fastest for archive runs)")
    p.add_argument("--slice-choice", choices=["landmarks", "block"], default="landmarks",
                   help="how the axial slice of each level is chosen (default: landmarks, falling back to block)")
    p.add_argument("--boxes", choices=["auto", "image", "fitted", "paper"], default="auto",
                   help="how the facet/foramen boxes are placed: image (the segmenter's facet and foramen regions), "
                   "fitted (a rule on the sac and disc masks), paper (the paper's 36 mm squares) or auto (the "
                   "model pack's choice; default)")
    p.add_argument("--no-fat-shift-correction", dest="fat_shift_correction", action="store_false",
                   help="keep the disc and facet/foramen outlines where the segmenter drew them (by default they are "
                   "moved back by the fat-water shift: size and axis from the DICOM header, direction read by the "
                   "pack's fat_shift reader)")
    p.add_argument("--rules", help="JSON file overriding the series role rules")
    p.add_argument("--json", action="store_true", help="print the report as JSON instead of a table")
    return p


def run(args: argparse.Namespace) -> int:
    from ..analysis_runner import run_analyze

    return run_analyze(args)
