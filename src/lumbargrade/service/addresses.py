"""Parsing the node's command-line addresses (``AE@host``, ``AE@host:port``) and the short,
anonymous study tags used in log lines."""

from __future__ import annotations

import hashlib
from dataclasses import dataclass

from ..errors import InputError

__all__ = ["AllowRule", "Destination", "check_ae_title", "parse_allow", "parse_destination", "tag"]


def tag(uid: str | None) -> str:
    """A 10-character hash of a UID for log lines: the same study always gets the same tag, and
    the tag does not reveal the UID (no patient data in the log)."""
    if not uid:
        return "-" * 10
    return hashlib.sha256(str(uid).encode()).hexdigest()[:10]


def check_ae_title(text: str, what: str) -> str:
    """An AE title: 1-16 characters of printable ASCII without backslash, not all spaces."""
    t = text.strip()
    if not t or len(t) > 16 or any(ord(c) < 32 or ord(c) > 126 or c == "\\" for c in t):
        raise InputError(what, f"{text!r} is not a valid AE title (1-16 printable ASCII characters, no backslash)")
    return t


@dataclass(frozen=True)
class AllowRule:
    """A calling AE title (``*``: any) allowed from a host (``*``: any)."""

    ae_title: str
    host: str

    def matches(self, ae_title: str, host: str) -> bool:
        return (self.ae_title == "*" or self.ae_title == ae_title.strip()) and (
            self.host == "*" or self.host == host
        )

    def __str__(self) -> str:
        return f"{self.ae_title}@{self.host}"


def parse_allow(text: str) -> AllowRule:
    """``AE@host``, ``AE`` (any host), ``*@host`` (any AE title from that host)."""
    import ipaddress
    import socket

    ae, _, host = text.strip().partition("@")
    ae = "*" if ae.strip() == "*" else check_ae_title(ae, "--allow")
    host = host.strip() or "*"
    if host != "*":
        try:
            host = str(ipaddress.ip_address(host))
        except ValueError:
            try:
                host = socket.gethostbyname(host)
            except OSError as e:
                raise InputError("--allow", f"{text!r}: cannot resolve host {host!r} ({e.strerror or e})") from e
    return AllowRule(ae, host)


@dataclass(frozen=True)
class Destination:
    """Where results go: a DICOM C-STORE SCP (``AE@host:port``) or a DICOMweb STOW-RS URL."""

    kind: str  # "dimse" or "stow"
    ae_title: str = ""
    host: str = ""
    port: int = 0
    url: str = ""

    @property
    def name(self) -> str:
        """A stable key for the delivery records (no credentials)."""
        if self.kind == "dimse":
            return f"dimse:{self.ae_title}@{self.host}:{self.port}"
        from urllib.parse import urlsplit

        u = urlsplit(self.url)
        return f"stow:{u.scheme}://{u.hostname}{':' + str(u.port) if u.port else ''}{u.path}"


def parse_destination(text: str) -> Destination:
    """``AE@host:port`` -> a C-STORE destination."""
    ae, sep, rest = text.strip().partition("@")
    host, sep2, port = rest.rpartition(":")
    if not sep or not sep2 or not host or not port.isdigit() or not (0 < int(port) < 65536):
        raise InputError("--send-to", f"{text!r}: expected AE@host:port, e.g. ORTHANC@pacs.example.org:4242")
    return Destination("dimse", ae_title=check_ae_title(ae, "--send-to"), host=host.strip("[]"), port=int(port))


def parse_stow(url: str) -> Destination:
    from urllib.parse import urlsplit

    u = urlsplit(url.strip())
    if u.scheme not in ("http", "https") or not u.hostname:
        raise InputError("--stow", f"{url!r}: expected an http(s) URL of a DICOMweb service, e.g. http://pacs:8042/dicom-web")
    return Destination("stow", url=url.strip().rstrip("/"))
