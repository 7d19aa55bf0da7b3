"""``lumbargrade serve``: a DICOM node that receives studies, analyzes them and sends the SEG and
SR back (needs the ``pacs`` extra)."""

from __future__ import annotations

import argparse


def register(sub: argparse._SubParsersAction) -> argparse.ArgumentParser:
    p = sub.add_parser(
        "serve",
        help="run a DICOM node: receive studies (C-STORE), analyze them, send SEG + SR to a PACS",
        description="A DICOM storage node (C-ECHO, C-STORE of MR images). A study is complete when no "
        "instance has arrived for --settle-seconds; it is then analyzed like `lumbargrade analyze` and its "
        "DICOM SEG and SR are sent by C-STORE (--send-to) and/or DICOMweb STOW-RS (--stow), retried with "
        "back-off until they are stored. Every study's state is kept in --store, so a node that is stopped "
        "or killed resumes where it was. Needs the 'pacs' extra: pip install 'lumbargrade[pacs]'.",
    )
    p.add_argument("--store", required=True, help="folder for the queue: received instances, results, state")
    p.add_argument("--ae-title", default="LUMBARGRADE", help="this node's AE title (default LUMBARGRADE)")
    p.add_argument("--port", type=int, default=11112, help="DICOM port to listen on (default 11112)")
    p.add_argument("--bind", default="0.0.0.0", help="address to listen on (default 0.0.0.0: every interface)")
    p.add_argument("--allow", action="append", default=[], metavar="AE@HOST",
                   help="a calling AE title allowed to connect, from a host (AE@10.0.0.5; AE alone: any host; "
                   "*@HOST: any AE title from HOST); repeat or separate with commas. Others are rejected "
                   "at association. Required.")
    p.add_argument("--settle-seconds", type=float, default=30.0,
                   help="a study is complete when no new instance has arrived for this long (default 30)")
    p.add_argument("--workers", type=int, default=1, help="analysis processes, each loading the models (default 1)")
    p.add_argument("--threads", type=int, default=None,
                   help="CPU threads per worker for the networks (default: the cores divided among the workers)")
    p.add_argument("--send-to", action="append", default=[], metavar="AE@HOST:PORT",
                   help="send results by C-STORE to this storage SCP (repeatable)")
    p.add_argument("--stow", action="append", default=[], metavar="URL",
                   help="send results by DICOMweb STOW-RS to this service root, e.g. http://pacs:8042/dicom-web "
                   "(repeatable)")
    p.add_argument("--send-threads", type=int, default=4,
                   help="studies whose results are sent at the same time, one association each (default 4)")
    p.add_argument("--outputs", default="seg,sr",
                   help="what is made per study: a comma list of seg, sr, sc, html (default seg,sr). The DICOM "
                   "objects (SEG, SR, and with sc a Secondary Capture summary per level) are sent; report.html "
                   "stays in the store")
    p.add_argument("--models", help="model pack folder (default: the bundled pack)")
    p.add_argument("--runtime", choices=["auto", "onnx", "torch"], default=None, help="how the networks run")
    p.add_argument("--max-pdu", type=int, default=262144, help="largest PDU accepted, bytes (default 262144)")
    p.add_argument("--max-associations", type=int, default=10, help="simultaneous associations (default 10)")
    p.add_argument("--max-association-mb", type=float, default=4096,
                   help="data accepted over one association, MB (default 4096); beyond it instances are refused")
    p.add_argument("--max-instances", type=int, default=5000, help="instances accepted per study (default 5000)")
    p.add_argument("--disk-quota-gb", type=float, default=50,
                   help="received instances held in the store, GB (default 50); beyond it instances are refused")
    p.add_argument("--keep-instances", action="store_true",
                   help="keep received instances after the results were delivered (default: remove them)")
    p.add_argument("--tls-cert", help="PEM certificate: accept associations over TLS only")
    p.add_argument("--tls-key", help="PEM private key of --tls-cert")
    p.add_argument("--tls-ca", help="PEM CA certificates: callers must present a certificate signed by one")
    p.add_argument("--retry-max-seconds", type=float, default=600,
                   help="longest wait between two delivery attempts (default 600; the first retry is after ~2 s)")
    p.add_argument("--timeout", type=float, default=30, help="network timeouts, seconds (default 30)")
    p.add_argument("--log-file", help="also append the log to this file")
    p.add_argument("--verbose", action="store_true", help="log pynetdicom's own messages too")
    return p


def run(args: argparse.Namespace) -> int:
    from ..service import require_pacs

    require_pacs("lumbargrade serve")
    from ..service.serve import run_serve

    return run_serve(args)
