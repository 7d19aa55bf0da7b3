"""Sending results: DICOM C-STORE (pynetdicom) and DICOMweb STOW-RS (dicomweb-client), with the
back-off the node waits between failed attempts."""

from __future__ import annotations

import random
from pathlib import Path
from typing import Any

from .addresses import Destination

__all__ = ["SendError", "backoff_seconds", "send", "send_dimse", "send_stow"]

#: C-STORE response statuses that mean "stored": success, the storage warnings, and 0x0111
#: "duplicate SOP instance" (the node's results keep their UIDs when re-sent, so the archive's
#: copy is this result).
STORED = {0x0000, 0xB000, 0xB006, 0xB007, 0x0107, 0x0116, 0x0111}
_DUPLICATE = 0x0111


class SendError(Exception):
    """A delivery attempt failed; the message is one line without patient data."""


def backoff_seconds(attempts: int, base_s: float = 2.0, cap_s: float = 600.0, rng: Any = random) -> float:
    """Seconds to wait after the ``attempts``-th failure in a row: ``base_s * 2**(attempts-1)``,
    at most ``cap_s``, with +-20% jitter (so that many nodes do not retry in step)."""
    n = max(1, int(attempts))
    t = min(cap_s, base_s * (2.0 ** min(n - 1, 30)))
    return t * (0.8 + 0.4 * rng.random())


def send(dest: Destination, files: list[Path], calling_ae: str, timeout_s: float = 30.0,
         ssl_context: Any = None) -> None:
    """Send ``files`` (DICOM files) to ``dest``; raises :class:`SendError` unless every one was stored."""
    if dest.kind == "dimse":
        send_dimse(dest, files, calling_ae, timeout_s, ssl_context)
    else:
        send_stow(dest, files, timeout_s)


def send_dimse(dest: Destination, files: list[Path], calling_ae: str, timeout_s: float = 30.0,
               ssl_context: Any = None) -> None:
    """One association, one C-STORE per file, in the files' own transfer syntax."""
    from pydicom.filereader import read_file_meta_info
    from pydicom.uid import ExplicitVRLittleEndian, ImplicitVRLittleEndian
    from pynetdicom import AE

    ae = AE(ae_title=calling_ae)
    ae.acse_timeout = ae.network_timeout = ae.dimse_timeout = timeout_s
    ae.connection_timeout = timeout_s
    contexts: dict[str, set[str]] = {}
    for f in files:
        meta = read_file_meta_info(f)
        ts = contexts.setdefault(str(meta.MediaStorageSOPClassUID), {ExplicitVRLittleEndian, ImplicitVRLittleEndian})
        ts.add(str(meta.TransferSyntaxUID))
    for sop_class, syntaxes in contexts.items():
        ae.add_requested_context(sop_class, sorted(syntaxes))
    tls = (ssl_context, dest.host) if ssl_context is not None else None
    try:
        assoc = ae.associate(dest.host, dest.port, ae_title=dest.ae_title, tls_args=tls)
    except OSError as e:
        raise SendError(f"{dest.name}: cannot connect ({e})") from e
    if not assoc.is_established:
        why = "rejected" if assoc.is_rejected else "aborted" if assoc.is_aborted else "not established"
        raise SendError(f"{dest.name}: association {why}")
    try:
        for f in files:
            status = assoc.send_c_store(f)
            code = int(getattr(status, "Status", -1)) if status else -1
            if code not in STORED:
                raise SendError(f"{dest.name}: C-STORE of {f.name} answered "
                                + (f"status 0x{code:04X}" if code >= 0 else "nothing (connection lost or timed out)"))
    finally:
        if assoc.is_established:
            assoc.release()
        ae.shutdown()


def send_stow(dest: Destination, files: list[Path], timeout_s: float = 30.0) -> None:
    """One STOW-RS request with every file."""
    import pydicom
    import requests
    from dicomweb_client.api import DICOMwebClient

    class _Session(requests.Session):  # dicomweb-client sets no timeout of its own
        def request(self, *args: Any, **kwargs: Any) -> Any:
            kwargs.setdefault("timeout", timeout_s)
            return super().request(*args, **kwargs)

    client = DICOMwebClient(url=dest.url, session=_Session())
    datasets = [pydicom.dcmread(f) for f in files]
    try:
        response = client.store_instances(datasets)
    except requests.HTTPError as e:
        code = getattr(e.response, "status_code", "?")
        raise SendError(f"{dest.name}: STOW-RS answered HTTP {code}") from e
    except requests.RequestException as e:
        raise SendError(f"{dest.name}: STOW-RS failed ({type(e).__name__})") from e
    failed = response.get("FailedSOPSequence") if response is not None else None
    if failed and any(int(getattr(item, "FailureReason", -1)) != _DUPLICATE for item in failed):
        raise SendError(f"{dest.name}: STOW-RS refused {len(failed)} of {len(datasets)} instances")
