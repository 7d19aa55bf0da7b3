"""``lumbargrade serve`` from parsed arguments: checks, logging, signals, the node's life."""

from __future__ import annotations

import argparse
import logging
import signal
import sys
from pathlib import Path

from ..errors import InputError
from .addresses import check_ae_title, parse_allow, parse_destination, parse_stow

__all__ = ["config_from_args", "run_serve", "setup_logging"]


def _split(values: list[str]) -> list[str]:
    return [v.strip() for item in values for v in item.split(",") if v.strip()]


def config_from_args(args: argparse.Namespace):
    """A checked :class:`lumbargrade.service.node.NodeConfig`; bad values raise InputError."""
    from ..analysis_runner import parse_outputs
    from .node import NodeConfig

    allow = [parse_allow(a) for a in _split(args.allow)]
    if not allow:
        raise InputError("--allow", "give the callers allowed to send studies, e.g. --allow ORTHANC@10.0.0.5 "
                         "(AE@host; 'AE' alone allows any host)")
    dests = [parse_destination(d) for d in _split(args.send_to)] + [parse_stow(u) for u in _split(args.stow)]
    outputs = parse_outputs(args.outputs)
    for name, value, low in (("--workers", args.workers, 1), ("--max-instances", args.max_instances, 1),
                             ("--max-associations", args.max_associations, 1),
                             ("--send-threads", args.send_threads, 1)):
        if value < low:
            raise InputError(name, f"must be at least {low}, got {value}")
    for name, value in (("--settle-seconds", args.settle_seconds), ("--max-association-mb", args.max_association_mb),
                        ("--disk-quota-gb", args.disk_quota_gb), ("--timeout", args.timeout),
                        ("--retry-max-seconds", args.retry_max_seconds)):
        if not value > 0:
            raise InputError(name, f"must be positive, got {value}")
    if not 0 <= args.port < 65536:
        raise InputError("--port", f"{args.port} is not a TCP port")
    if not 4096 <= args.max_pdu <= 2 ** 31:
        raise InputError("--max-pdu", f"must be between 4096 and 2^31 bytes, got {args.max_pdu}")
    for opt in ("tls_cert", "tls_key", "tls_ca"):
        v = getattr(args, opt)
        if v and not Path(v).is_file():
            raise InputError(v, "file not found (--" + opt.replace("_", "-") + ")")
    store = Path(args.store)
    if store.exists() and not store.is_dir():
        raise InputError(store, "exists and is not a folder")
    return NodeConfig(
        store=str(store), allow=allow, ae_title=check_ae_title(args.ae_title, "--ae-title"), bind=args.bind,
        port=int(args.port), settle_s=float(args.settle_seconds), workers=int(args.workers), destinations=dests,
        outputs=tuple(outputs), models=args.models, runtime=args.runtime, threads=args.threads,
        max_pdu=int(args.max_pdu), max_associations=int(args.max_associations),
        max_association_bytes=int(args.max_association_mb * 2 ** 20), max_instances=int(args.max_instances),
        disk_quota_bytes=int(args.disk_quota_gb * 2 ** 30), tls_cert=args.tls_cert, tls_key=args.tls_key,
        tls_ca=args.tls_ca, keep_instances=bool(args.keep_instances), retry_cap_s=float(args.retry_max_seconds),
        timeout_s=float(args.timeout), send_threads=int(args.send_threads),
    )


def setup_logging(log_file: str | None = None, verbose: bool = False) -> None:
    """Log lines on stderr (and in ``log_file``): time, level, message."""
    fmt = logging.Formatter("%(asctime)s %(levelname)s %(message)s")
    handlers: list[logging.Handler] = [logging.StreamHandler(sys.stderr)]
    if log_file:
        Path(log_file).parent.mkdir(parents=True, exist_ok=True)
        handlers.append(logging.FileHandler(log_file))
    node_log = logging.getLogger("lumbargrade.node")
    node_log.setLevel(logging.INFO)
    node_log.propagate = False
    for h in handlers:
        h.setFormatter(fmt)
        node_log.addHandler(h)
    # pydicom's warnings about a malformed instance may quote its values: the node logs its own line
    import warnings

    warnings.filterwarnings("ignore", category=UserWarning, module=r"pydicom(\.|$)")
    pyd = logging.getLogger("pydicom")
    pyd.setLevel(logging.CRITICAL)
    pyd.propagate = False
    pnd = logging.getLogger("pynetdicom")
    pnd.setLevel(logging.INFO if verbose else logging.CRITICAL)
    pnd.propagate = False
    if verbose:
        for h in handlers:
            pnd.addHandler(h)


def run_serve(args: argparse.Namespace) -> int:
    from .node import Node

    config = config_from_args(args)
    setup_logging(args.log_file, args.verbose)
    node = Node(config)

    def on_signal(signum, frame):  # SIGTERM / SIGINT: stop listening, keep the queue for the next start
        logging.getLogger("lumbargrade.node").info("signal %d: stopping", signum)
        node._stop.set()

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    node.start()
    try:
        node.wait()
    finally:
        node.stop()
    return 0
