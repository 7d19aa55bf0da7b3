"""Write an analysis result to a folder: ``report.json``, ``levels/<L4-L5>/labels.png``,
``config.json`` (the resolved configuration). Writes go to a temporary folder that is renamed
into place, so a half-written result is never taken for a finished one.

An output that cannot be written (the DICOM SEG or SR, the HTML page, a file of the folder) is an
error, :class:`lumbargrade.errors.OutputError`, naming the output and the cause: the folder is then
left as it was (no ``report.json``), so a batch analyzes the study again on its next run."""

from __future__ import annotations

import contextlib
import json
import os
import shutil
from pathlib import Path
from typing import Any

import numpy as np

from .. import __version__
from ..errors import InputError, OutputError
from ..levels.names import level_dirname
from ..numbers import json_safe

__all__ = ["call_writer", "check_output_folder", "move_into_place", "report_dict", "write_outputs"]

DONE_MARKER = "report.json"


def check_output_folder(out: Path, overwrite: bool) -> None:
    """Refuse to write over a folder holding results unless ``overwrite``."""
    if out.exists() and not out.is_dir():
        raise InputError(out, "exists and is not a folder")
    if out.is_dir() and any(out.iterdir()) and not overwrite:
        raise InputError(out, "already holds results; pass --overwrite to replace them")


def report_dict(result: Any, pack: Any, config: dict[str, Any]) -> dict[str, Any]:
    levels = []
    for lv in result.levels:
        levels.append(lv.to_record(f"levels/{level_dirname(lv.level)}/labels.png"))
    return json_safe({
        "study_instance_uid": result.study_instance_uid,
        "software": {
            "name": "lumbargrade",
            "version": __version__,
            "model_pack": pack.label if pack is not None else None,
            "model_pack_sha256": getattr(pack, "fingerprint", None) if pack is not None else None,
            "model_pack_trained_on": (pack.manifest.get("trained_on") if pack is not None else None),
            "runtime": (pack.runtimes() if hasattr(pack, "runtimes") else None),
        },
        "definitions": _definitions(),
        "levels": levels,
        "sagittal": result.sagittal,
        "timings_s": {k: round(v, 4) for k, v in result.timings_s.items()},
        "warnings": list(result.warnings),
    })


def _definitions() -> dict[str, str]:
    try:
        from ..measurements import RATIO_DEFINITIONS

        return dict(RATIO_DEFINITIONS)
    except ImportError:  # pragma: no cover
        return {}


def call_writer(writer: Any, final: str | Path, *args: Any, _step: Any = None, **kwargs: Any) -> Any:
    """``writer(*args, **kwargs)`` (or ``_step(*args, **kwargs)``, a step of that writer); any
    failure but a user's input error becomes an :class:`OutputError` naming the output it was
    writing (``final / writer.output``, in the folder the result goes to) and the cause."""
    try:
        return (_step or writer)(*args, **kwargs)
    except (InputError, OutputError):
        raise
    except Exception as e:
        name = getattr(writer, "output", None) or getattr(writer, "__name__", "output")
        what = getattr(writer, "what", None) or name
        raise OutputError(Path(final) / name, f"cannot write the {what} ({type(e).__name__}: {e})") from e


def _run_writers(writers: list, result: Any, folder: Path, report: dict[str, Any], final: Path | None = None) -> None:
    """Call ``writer(result, folder, report)`` in order (failures: see :func:`call_writer`; ``final``
    is the folder the result goes to, named in errors). A writer with a ``prepare`` attribute
    (drawing and PNG encoding for the HTML page, which release the GIL) has it run in a thread
    from the start, beside the writers before it, and then gets its result as ``prepared``."""
    final = Path(final) if final is not None else Path(folder)
    staged = [w for w in writers if callable(getattr(w, "prepare", None))]
    if not staged:
        for writer in writers:
            call_writer(writer, final, result, folder, report)
        return
    from concurrent.futures import ThreadPoolExecutor

    with ThreadPoolExecutor(max_workers=len(staged)) as pool:
        futures = {id(w): pool.submit(w.prepare, result, folder, report) for w in staged}
        for writer in writers:
            if id(writer) in futures:
                prepared = call_writer(writer, final, _step=futures[id(writer)].result)
                call_writer(writer, final, result, folder, report, prepared=prepared)
            else:
                call_writer(writer, final, result, folder, report)


def write_outputs(result: Any, out: str | Path, pack: Any, config: dict[str, Any], overwrite: bool = False,
                  extra_writers: list | None = None) -> Path:
    """Write the result into ``out`` atomically (temporary sibling folder, then rename)."""
    from PIL import Image

    out = Path(out)
    check_output_folder(out, overwrite)
    tmp = out.parent / f".{out.name}.tmp-{os.getpid()}"
    if tmp.exists():
        shutil.rmtree(tmp)
    try:
        tmp.mkdir(parents=True)
    except OSError as e:
        raise OutputError(out, f"cannot create the output folder ({e.strerror or e})") from e
    try:
        for lv in result.levels:
            d = tmp / "levels" / level_dirname(lv.level)
            d.mkdir(parents=True, exist_ok=True)
            Image.fromarray(lv.label_map().astype(np.uint8), mode="L").save(d / "labels.png")
        (tmp / "config.json").write_text(json.dumps(config, indent=2, default=str) + "\n")
        report = report_dict(result, pack, config)
        _run_writers(extra_writers or [], result, tmp, report, final=out)
        (tmp / DONE_MARKER).write_text(json.dumps(report, indent=2, default=_json_default) + "\n")
        move_into_place(tmp, out)
    except OSError as e:  # labels.png, config.json, report.json, the renames: disk full, permissions
        where = e.filename if isinstance(getattr(e, "filename", None), str) else out
        raise OutputError(str(where).replace(str(tmp), str(out)), f"cannot write ({e.strerror or e})") from e
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)
    return out


def move_into_place(tmp: Path, out: Path) -> None:
    """Rename the finished folder ``tmp`` to ``out``; an earlier ``out`` is replaced only once the
    new one is in place."""
    if out.exists():
        old = out.parent / f".{out.name}.old-{os.getpid()}"
        out.rename(old)
        tmp.rename(out)
        shutil.rmtree(old, ignore_errors=True)
    else:
        out.parent.mkdir(parents=True, exist_ok=True)
        tmp.rename(out)


@contextlib.contextmanager
def atomic_output(out: str | Path, overwrite: bool = False):
    """A temporary sibling folder to write into; renamed to ``out`` when the block ends without an
    error (an earlier ``out`` replaced only with ``overwrite``), removed otherwise."""
    out = Path(out)
    check_output_folder(out, overwrite)
    tmp = out.parent / f".{out.name}.tmp-{os.getpid()}"
    if tmp.exists():
        shutil.rmtree(tmp)
    tmp.mkdir(parents=True)
    try:
        yield tmp
        move_into_place(tmp, out)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)


def _json_default(o: Any) -> Any:
    if isinstance(o, (np.floating,)):
        return None if not np.isfinite(o) else float(o)
    if isinstance(o, np.integer):
        return int(o)
    if isinstance(o, np.ndarray):
        return o.tolist()
    raise TypeError(f"not JSON serialisable: {type(o).__name__}")
