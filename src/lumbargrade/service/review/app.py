"""The review application: routes (:mod:`.api`) behind an access token, and the server.

Every request must carry the token: as the ``token`` query parameter, as ``Authorization: Bearer
TOKEN``, or as the cookie the app sets when a page is opened with ``?token=`` (HttpOnly,
SameSite=Strict; the page is then reloaded without the token in its address). Anything else is
answered 401. Changes (any method but GET/HEAD) from another origin are refused (403). Responses
carry a strict Content-Security-Policy (scripts and styles from the app only), no caching of API
answers, and no referrer.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
from dataclasses import dataclass
from http.cookies import SimpleCookie
from pathlib import Path
from typing import Any
from urllib.parse import parse_qsl, urlencode

from .storage import StudyRoot
from .studies import Sources

__all__ = ["ReviewContext", "create_app", "new_token", "serve", "warm_up"]

DEFAULT_MAX_UPLOAD = 4 * 1024 * 1024
_SECURITY_HEADERS = [
    (b"content-security-policy",
     b"default-src 'self'; img-src 'self' data: blob:; script-src 'self'; style-src 'self'; "
     b"connect-src 'self'; frame-ancestors 'none'; base-uri 'none'; form-action 'self'"),
    (b"x-content-type-options", b"nosniff"),
    (b"referrer-policy", b"no-referrer"),
    (b"x-frame-options", b"DENY"),
]


def new_token() -> str:
    """A random access token (URL-safe, 256 bits)."""
    return secrets.token_urlsafe(32)


@dataclass
class ReviewContext:
    root: StudyRoot
    sources: Sources
    max_upload_bytes: int = DEFAULT_MAX_UPLOAD


class TokenGate:
    """ASGI middleware: the token check, the same-origin check for changes, security headers."""

    def __init__(self, app: Any, token: str) -> None:
        if len(token) < 16:
            raise ValueError("the access token must have at least 16 characters")
        self.app = app
        self.token = token
        self.cookie = "lumbargrade_review_" + hashlib.sha256(token.encode()).hexdigest()[:12]

    def _ok(self, value: str | None) -> bool:
        return bool(value) and hmac.compare_digest(value.encode(), self.token.encode())

    async def __call__(self, scope: dict, receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        headers = {k.decode("latin-1").lower(): v.decode("latin-1") for k, v in scope.get("headers", [])}
        query = parse_qsl(scope.get("query_string", b"").decode("latin-1"), keep_blank_values=True)
        from_query = next((v for k, v in query if k == "token"), None)
        auth = headers.get("authorization", "")
        bearer = auth[7:].strip() if auth[:7].lower() == "bearer " else None
        cookie = None
        if "cookie" in headers:
            jar: SimpleCookie = SimpleCookie()
            try:
                jar.load(headers["cookie"])
            except Exception:  # a malformed cookie header is just no cookie
                jar = SimpleCookie()
            if self.cookie in jar:
                cookie = jar[self.cookie].value
        if not (self._ok(from_query) or self._ok(bearer) or self._ok(cookie)):
            return await _plain(send, 401, "401: this review app needs its access token; open the "
                                           "address it printed when it started (.../?token=...)",
                                extra=[(b"www-authenticate", b'Bearer realm="lumbargrade review"')])
        method = scope.get("method", "GET")
        if method not in ("GET", "HEAD"):
            origin = headers.get("origin")
            host = headers.get("host", "")
            if origin and origin.split("://", 1)[-1] != host:
                return await _plain(send, 403, "403: changes are accepted from this app's own pages only")
        if self._ok(from_query) and method == "GET" and not scope["path"].startswith("/api/"):
            # a page opened from the printed address: keep the token in a cookie, drop it from the URL
            rest = urlencode([(k, v) for k, v in query if k != "token"])
            location = scope["path"] + (f"?{rest}" if rest else "")
            cookie_hdr = f"{self.cookie}={self.token}; Path=/; HttpOnly; SameSite=Strict"
            return await _plain(send, 303, "", extra=[(b"location", location.encode("latin-1")),
                                                      (b"set-cookie", cookie_hdr.encode("latin-1"))])

        async def send_with_headers(message: dict) -> None:
            if message["type"] == "http.response.start":
                hdrs = list(message.get("headers", []))
                names = {k.lower() for k, _ in hdrs}
                hdrs += [h for h in _SECURITY_HEADERS if h[0] not in names]
                if scope["path"].startswith("/api/") and b"cache-control" not in names:
                    hdrs.append((b"cache-control", b"no-store"))
                elif b"cache-control" not in names:
                    hdrs.append((b"cache-control", b"no-cache"))
                message = {**message, "headers": hdrs}
            await send(message)

        return await self.app(scope, receive, send_with_headers)


async def _plain(send: Any, status: int, text: str, extra: list | None = None) -> None:
    body = text.encode("utf-8")
    await send({"type": "http.response.start", "status": status,
                "headers": [(b"content-type", b"text/plain; charset=utf-8"),
                            (b"content-length", str(len(body)).encode()),
                            (b"cache-control", b"no-store"), *_SECURITY_HEADERS, *(extra or [])]})
    await send({"type": "http.response.body", "body": body})


def create_app(root: str | Path, token: str, *, sources: str | Path | None = None,
               models: str | Path | None = None, max_upload_bytes: int = DEFAULT_MAX_UPLOAD) -> Any:
    """The ASGI application over the study folders in ``root``, answering only requests that
    carry ``token``. ``sources``: where to look for analyzed studies that moved; ``models``: a
    model pack to regrade with instead of each analysis' own."""
    from starlette.applications import Starlette

    from . import api

    ctx = ReviewContext(root=StudyRoot(root), sources=Sources(sources, models),
                        max_upload_bytes=int(max_upload_bytes))
    inner = Starlette(routes=api.routes())
    inner.state.ctx = ctx
    gate = TokenGate(inner, token)
    gate.state = inner.state  # tests and the server reach the context through the outer app
    return gate


def warm_up(ctx: ReviewContext) -> None:
    """Make the first save as quick as the later ones (run in a background thread at start): load
    each analysis' model pack with its networks, start the report's drawing process, and regrade
    one level of a throwaway copy of a study, unchanged, which loads every module and code table
    the writers use on first call (about 2 s on a 2-core machine). Nothing under ROOT changes."""
    import json
    import shutil
    import tempfile

    import numpy as np
    from PIL import Image

    from ...modelpack import COMPONENTS
    from ...regrade import regrade
    from ...report import drawing_process

    drawing_process.start()
    seen, sample = set(), None
    for sid in ctx.root.ids():
        try:
            folder = ctx.root.folder(sid)
            config = json.loads((folder / "config.json").read_text())
            key = str(ctx.sources.models or config.get("model_pack"))
            if sample is None and ctx.sources.locate(folder)[0] is not None:
                sample = folder
            if key in seen:
                continue
            seen.add(key)
            pack = ctx.sources.pack(config)
            for name in COMPONENTS:
                if pack.has(name) and not name.startswith("landmark"):  # landmarks are not rerun
                    pack.get(name)
        except Exception:  # a study whose pack cannot load says so when it is changed
            continue
    if sample is None:
        return
    try:
        src, _, config = ctx.sources.locate(sample)
        report = json.loads((sample / "report.json").read_text())
        rec = report["levels"][0]
        with tempfile.TemporaryDirectory(prefix="lumbargrade-review-warm-up-") as td:
            copy = Path(td) / "study"
            shutil.copytree(sample, copy, ignore=shutil.ignore_patterns("history"))
            lab = np.asarray(Image.open(copy / rec["label_map"]))
            regrade(copy, rec["level"], labels=lab, by="warm-up", pack=ctx.sources.pack(config),
                    study=ctx.sources.study(src), source=src)
    except Exception:  # only a warm-up: a real save reports any problem
        return


def serve(root: str | Path, *, host: str = "127.0.0.1", port: int = 8765, token: str | None = None,
          sources: str | Path | None = None, models: str | Path | None = None,
          max_upload_bytes: int = DEFAULT_MAX_UPLOAD, on_ready: Any = print) -> None:
    """Run the app with uvicorn until interrupted. The port is bound and listening first
    (``port=0``: any free one); then ``on_ready`` gets the address with the token, once (printed
    by default)."""
    import socket

    import uvicorn

    from ...errors import InputError

    token = token or new_token()
    app = create_app(root, token, sources=sources, models=models, max_upload_bytes=max_upload_bytes)
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind((host, int(port)))
    except OSError as e:
        sock.close()
        raise InputError(f"{host}:{port}", f"cannot listen there ({e.strerror or e})") from None
    port = sock.getsockname()[1]
    shown = f"[{host}]" if ":" in host else host
    config = uvicorn.Config(app, log_level="warning", access_log=False, server_header=False,
                            lifespan="off")
    # listen before the address is shown: a browser opened at once is queued, not refused
    sock.listen(config.backlog)
    server = uvicorn.Server(config)
    n = len(app.state.ctx.root.ids())
    import threading

    threading.Thread(target=warm_up, args=(app.state.ctx,), name="lumbargrade-review-warm-up",
                     daemon=True).start()
    on_ready(f"lumbargrade review: {n} studies in {app.state.ctx.root.root}\n"
             f"open http://{shown}:{port}/?token={token}\n(Ctrl+C to stop)")
    try:
        server.run(sockets=[sock])
    finally:
        sock.close()
