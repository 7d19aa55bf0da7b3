"""The review app's HTTP routes (Starlette). Pages and static files, then the JSON API:

==========================================================  =====================================
``GET  /api/studies``                                       worklist rows
``GET  /api/studies/{id}``                                  the study page's data
``GET  /api/studies/{id}/levels/{L4-L5}/image``             axial slice, float32 little-endian
``GET  /api/studies/{id}/levels/{L4-L5}/labels``            label map, uint8
``PUT  /api/studies/{id}/levels/{L4-L5}/labels``            edited label map (``image/png``) -> regrade
``POST /api/studies/{id}/levels/{L4-L5}/landmark``          ``{"row", "col"}`` -> another axial slice
``PUT  /api/studies/{id}/levels/{L4-L5}/grades``            the reader's grades
``GET  /api/studies/{id}/levels/{L4-L5}/picture``           the overlay picture ``analyze`` drew
``GET  /api/studies/{id}/axial/{SOPInstanceUID}``           any axial slice of the series (float32)
``GET  /api/studies/{id}/sagittal``                         the sagittal slice as displayed (float32)
``POST /api/studies/{id}/signoff``                          ``{"by", "organization"}``
``GET  /api/studies/{id}/files/{name}``                     report.html, report.json, sr.dcm, seg*.dcm
``GET  /api/export.zip``                                    the corrected levels as a training cohort
==========================================================  =====================================

Image responses carry ``X-Rows`` / ``X-Columns``. Changes give the study page's new data. A
change names its reader (``by``); refused input is answered 4xx with ``{"error": "..."}``.
"""

from __future__ import annotations

import json
import threading
from pathlib import Path
from typing import Any

import numpy as np
from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import FileResponse, JSONResponse, RedirectResponse, Response

from ...errors import InputError
from .storage import NotFound, UploadError, check_label_upload, parse_level
from .studies import axial_slice, level_slice, sagittal_pixels, study_detail

__all__ = ["ROUTES"]

STATIC = Path(__file__).with_name("static")
MAX_JSON_BYTES = 64 * 1024


def _error(status: int, message: str) -> JSONResponse:
    return JSONResponse({"error": message}, status_code=status)


class _Locks:
    """One lock per study: a change and the reads of that study do not interleave."""

    def __init__(self) -> None:
        self._locks: dict[str, threading.Lock] = {}
        self._guard = threading.Lock()

    def __call__(self, sid: str) -> threading.Lock:
        with self._guard:
            return self._locks.setdefault(sid, threading.Lock())


LOCKS = _Locks()


async def _guarded(fn, *args) -> Response:
    """Run a blocking ``fn`` in a worker thread; map refusals to HTTP answers."""
    try:
        return await run_in_threadpool(fn, *args)
    except NotFound as e:
        return _error(404, str(e) or "not found")
    except UploadError as e:
        return _error(e.status, e.message)
    except InputError as e:
        return _error(422, e.one_line())


async def _read_body(request: Request, limit: int) -> bytes:
    """The request body, refused (413) when its declared or actual size is over ``limit``."""
    declared = request.headers.get("content-length")
    if declared is not None:
        try:
            size = int(declared)
        except ValueError:
            raise UploadError(400, "bad Content-Length") from None
        if size > limit:
            raise UploadError(413, f"request body of {size} bytes is over the limit of {limit}")
    chunks, size = [], 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            raise UploadError(413, f"request body is over the limit of {limit} bytes")
        chunks.append(chunk)
    return b"".join(chunks)


async def _json_body(request: Request) -> dict[str, Any]:
    if (request.headers.get("content-type") or "").split(";")[0].strip().lower() != "application/json":
        raise UploadError(415, "send application/json")
    body = await _read_body(request, MAX_JSON_BYTES)
    try:
        data = json.loads(body or b"{}")
    except (ValueError, UnicodeDecodeError):
        raise UploadError(400, "the body is not valid JSON") from None
    if not isinstance(data, dict):
        raise UploadError(400, "the body must be a JSON object")
    return data


def _by(value: Any) -> str:
    by = " ".join(str(value or "").split())
    if not by:
        raise UploadError(422, "say who you are: the reader's name ('by') is required")
    if len(by) > 64:
        raise UploadError(422, "the reader's name is longer than 64 characters")
    return by


def _array_response(arr: np.ndarray, dtype: str) -> Response:
    a = np.ascontiguousarray(arr, dtype=np.dtype(dtype).newbyteorder("<"))
    return Response(a.tobytes(), media_type="application/octet-stream",
                    headers={"X-Rows": str(a.shape[0]), "X-Columns": str(a.shape[1]),
                             "X-Dtype": dtype})


# --- pages ---------------------------------------------------------------------------------------

async def worklist_page(request: Request) -> Response:
    return FileResponse(STATIC / "worklist.html", media_type="text/html")


async def study_page(request: Request) -> Response:
    ctx = request.app.state.ctx
    try:
        ctx.root.folder(request.path_params["sid"])
    except NotFound:
        return _error(404, "no such study")
    return FileResponse(STATIC / "study.html", media_type="text/html")


async def static_file(request: Request) -> Response:
    name = request.path_params["name"]
    media = {".js": "text/javascript", ".css": "text/css", ".html": "text/html", ".svg": "image/svg+xml"}
    p = STATIC / name
    if "/" in name or name.startswith(".") or p.suffix not in media or not p.is_file():
        return _error(404, "not found")
    return FileResponse(p, media_type=media[p.suffix])


# --- reading -------------------------------------------------------------------------------------

async def list_studies(request: Request) -> Response:
    ctx = request.app.state.ctx

    def work() -> Response:
        rows = []
        for sid in ctx.root.ids():
            try:
                rows.append(ctx.root.summary(sid))
            except NotFound:
                continue
        return JSONResponse({"studies": rows, "root": ctx.root.root.name})

    return await _guarded(work)


async def get_study(request: Request) -> Response:
    ctx, sid = request.app.state.ctx, request.path_params["sid"]

    def work() -> Response:
        with LOCKS(sid):
            return JSONResponse(study_detail(ctx.sources, ctx.root, sid))

    return await _guarded(work)


async def level_image(request: Request) -> Response:
    ctx, sid, level = request.app.state.ctx, request.path_params["sid"], request.path_params["level"]
    return await _guarded(lambda: _array_response(level_slice(ctx.sources, ctx.root, sid, level).pixels(), "float32"))


async def axial_image(request: Request) -> Response:
    ctx, sid, sop = request.app.state.ctx, request.path_params["sid"], request.path_params["sop"]
    return await _guarded(lambda: _array_response(axial_slice(ctx.sources, ctx.root, sid, sop).pixels(), "float32"))


async def sagittal_image(request: Request) -> Response:
    ctx, sid = request.app.state.ctx, request.path_params["sid"]
    return await _guarded(lambda: _array_response(sagittal_pixels(ctx.sources, ctx.root, sid), "float32"))


async def level_picture(request: Request) -> Response:
    from ...levels.names import level_dirname

    ctx, sid = request.app.state.ctx, request.path_params["sid"]

    def work() -> Response:
        level = parse_level(request.path_params["level"])
        p = ctx.root.folder(sid) / "overlays" / f"{level_dirname(level)}.png"
        if not p.is_file():
            raise NotFound("no picture")
        return FileResponse(p, media_type="image/png")

    return await _guarded(work)


async def study_file(request: Request) -> Response:
    ctx, sid, name = request.app.state.ctx, request.path_params["sid"], request.path_params["name"]

    def work() -> Response:
        p, media = ctx.root.served_file(sid, name)
        headers = {}
        if name.endswith(".dcm"):
            headers["Content-Disposition"] = f'attachment; filename="{sid}_{name}"'
        if name == "report.html":  # self-contained: its own inline style and script, sandboxed
            headers["Content-Security-Policy"] = (
                "default-src 'none'; img-src data:; style-src 'unsafe-inline'; "
                "script-src 'unsafe-inline'; sandbox allow-scripts")
        return FileResponse(p, media_type=media, headers=headers)

    return await _guarded(work)


# --- changes -------------------------------------------------------------------------------------

def _change(ctx: Any, sid: str, action) -> Response:
    """Run ``action(folder, load_kwargs)`` under the study's lock with the cached study and pack;
    answer with the study page's new data."""
    folder = ctx.root.folder(sid)
    with LOCKS(sid):
        src, why, config = ctx.sources.locate(folder)
        if src is None:
            raise UploadError(409, f"cannot change this study: {why}")
        load = {"pack": ctx.sources.pack(config), "study": ctx.sources.study(src), "source": src}
        action(folder, load)
        return JSONResponse(study_detail(ctx.sources, ctx.root, sid))


async def labels(request: Request) -> Response:
    ctx, sid = request.app.state.ctx, request.path_params["sid"]
    if request.method == "GET":
        def read() -> Response:
            from PIL import Image

            level = parse_level(request.path_params["level"])
            report = ctx.root.report(sid)
            rec = next((r for r in report.get("levels", []) if r.get("level") == level), None)
            if rec is None:
                raise NotFound("no such level in this study")
            p = ctx.root.folder(sid) / rec.get("label_map", "")
            if not p.is_file() or ctx.root.folder(sid) not in p.resolve().parents:
                raise NotFound("no label map")
            return _array_response(np.asarray(Image.open(p)), "uint8")

        return await _guarded(read)

    try:
        body = await _read_body(request, ctx.max_upload_bytes)
        by = _by(request.query_params.get("by"))
    except UploadError as e:
        return _error(e.status, e.message)
    regions = request.query_params.get("regions", "recompute")
    reason = (request.query_params.get("reason") or "")[:200] or None

    def work() -> Response:
        from ...regrade import regrade

        level = parse_level(request.path_params["level"])
        shape = level_slice(ctx.sources, ctx.root, sid, level).pixels().shape
        lab = check_label_upload(body, request.headers.get("content-type"), shape, ctx.max_upload_bytes)
        if regions not in ("recompute", "reader"):
            raise UploadError(422, "regions must be 'recompute' or 'reader'")
        return _change(ctx, sid, lambda folder, load: regrade(
            folder, level, labels=lab, by=by, regions=regions, reason=reason,
            via="label map edited in the review app", **load))

    return await _guarded(work)


async def landmark(request: Request) -> Response:
    ctx, sid = request.app.state.ctx, request.path_params["sid"]
    try:
        data = await _json_body(request)
        by = _by(data.get("by"))
    except UploadError as e:
        return _error(e.status, e.message)

    def work() -> Response:
        from ...regrade import reslice

        level = parse_level(request.path_params["level"])
        return _change(ctx, sid, lambda folder, load: reslice(
            folder, level, row=data.get("row"), col=data.get("col"), by=by, **load))

    return await _guarded(work)


async def grades(request: Request) -> Response:
    ctx, sid = request.app.state.ctx, request.path_params["sid"]
    try:
        data = await _json_body(request)
        by = _by(data.get("by"))
    except UploadError as e:
        return _error(e.status, e.message)

    def work() -> Response:
        from ...signoff import set_reader_grades

        level = parse_level(request.path_params["level"])
        return _change(ctx, sid, lambda folder, load: set_reader_grades(
            folder, level, data.get("grades"), by=by, **load))

    return await _guarded(work)


async def signoff(request: Request) -> Response:
    ctx, sid = request.app.state.ctx, request.path_params["sid"]
    try:
        data = await _json_body(request)
        by = _by(data.get("by"))
    except UploadError as e:
        return _error(e.status, e.message)

    def work() -> Response:
        from ...signoff import sign_off

        return _change(ctx, sid, lambda folder, load: sign_off(
            folder, by=by, organization=str(data.get("organization") or ""), **load))

    return await _guarded(work)


async def export_zip(request: Request) -> Response:
    ctx = request.app.state.ctx
    include_signed = request.query_params.get("signed") in ("1", "true", "yes")

    def work() -> Response:
        import io
        import tempfile
        import zipfile

        from .export import export_cohort

        with tempfile.TemporaryDirectory(prefix="lumbargrade-export-") as td:
            out = Path(td) / "cohort"
            summary = export_cohort(ctx.root.root, out, include_signed=include_signed,
                                    sources=ctx.sources.sources, studies=ctx.sources)
            buf = io.BytesIO()
            with zipfile.ZipFile(buf, "w", zipfile.ZIP_DEFLATED) as zf:
                for p in sorted(out.rglob("*")):
                    if p.is_file():
                        zf.write(p, Path("lumbargrade-cohort") / p.relative_to(out))
        return Response(buf.getvalue(), media_type="application/zip", headers={
            "Content-Disposition": 'attachment; filename="lumbargrade-cohort.zip"',
            "X-Levels": str(summary["levels"])})

    return await _guarded(work)


async def no_icon(request: Request) -> Response:
    return Response(status_code=204)


async def root_redirect(request: Request) -> Response:
    return RedirectResponse("/", status_code=303)


def routes() -> list:
    from starlette.routing import Route

    s = "/api/studies/{sid}"
    lv = s + "/levels/{level}"
    return [
        Route("/", worklist_page),
        Route("/index.html", root_redirect),
        Route("/favicon.ico", no_icon),
        Route("/study/{sid}", study_page),
        Route("/static/{name}", static_file),
        Route("/api/studies", list_studies),
        Route(s, get_study),
        Route(lv + "/image", level_image),
        Route(lv + "/labels", labels, methods=["GET", "PUT"]),
        Route(lv + "/landmark", landmark, methods=["POST"]),
        Route(lv + "/grades", grades, methods=["PUT"]),
        Route(lv + "/picture", level_picture),
        Route(s + "/axial/{sop}", axial_image),
        Route(s + "/sagittal", sagittal_image),
        Route(s + "/signoff", signoff, methods=["POST"]),
        Route(s + "/files/{name}", study_file),
        Route("/api/export.zip", export_zip),
    ]


ROUTES = routes
