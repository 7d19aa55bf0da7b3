"""A helper process for the report's pictures.

Drawing the overlays and encoding them as PNG holds the GIL for much of its time; run in a thread
it slows the DICOM writers beside it. In a separate process it runs beside them on another core.
One helper (``python -m lumbargrade.report.drawing_process``, fed pickled calls on its stdin)
serves every study of this process; it starts on first use, or early with :func:`start` so that
its start-up overlaps model loading. A plain subprocess, not ``multiprocessing``, so a caller's
unguarded script is never re-imported. Where it cannot start or breaks, the work runs in the
calling thread. ``LUMBARGRADE_DRAWING_PROCESS=0`` turns the helper off.
"""

from __future__ import annotations

import atexit
import os
import pickle
import struct
import sys
import threading
from collections.abc import Callable
from typing import Any

__all__ = ["call", "enabled", "shutdown", "start"]

_LOCK = threading.Lock()
_PROC: Any = None
_DISABLED = False
_HEADER = struct.Struct("<Q")


def enabled() -> bool:
    """Whether pictures are drawn in the helper process (False: in the calling thread)."""
    if _DISABLED:
        return False
    return os.environ.get("LUMBARGRADE_DRAWING_PROCESS", "1").strip().lower() not in ("0", "false", "no", "off")


atexit.register(lambda: shutdown())  # once per process, whatever helpers were started


def _send(stream: Any, obj: Any) -> None:
    data = pickle.dumps(obj, protocol=pickle.HIGHEST_PROTOCOL)
    stream.write(_HEADER.pack(len(data)))
    stream.write(data)
    stream.flush()


def _recv(stream: Any) -> Any:
    head = stream.read(_HEADER.size)
    if len(head) < _HEADER.size:
        raise EOFError("drawing process closed its output")
    n = _HEADER.unpack(head)[0]
    data = stream.read(n)
    if len(data) < n:
        raise EOFError("drawing process output cut short")
    return pickle.loads(data)


def _process() -> Any:
    """The running helper (started here when needed), or None."""
    global _PROC, _DISABLED
    if _PROC is not None and _PROC.poll() is None:
        return _PROC
    if not enabled():
        return None
    import subprocess

    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(p for p in sys.path if p)  # the same lumbargrade as ours
    try:
        _PROC = subprocess.Popen(
            [sys.executable, "-m", "lumbargrade.report.drawing_process"],
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, env=env,
        )
    except OSError:
        _DISABLED = True
        _PROC = None
        return None
    return _PROC


def start() -> None:
    """Start the helper now (its start-up then overlaps whatever the caller does next)."""
    with _LOCK:
        _process()


def call(fn: Callable, *args: Any) -> Any:
    """``fn(*args)`` in the helper process (``fn`` a module-level function of this package,
    arguments picklable), or in this thread when the helper is off or fails. An exception raised
    by ``fn`` itself is raised here (as ``RuntimeError`` with the helper's message)."""
    global _DISABLED
    with _LOCK:
        proc = _process()
        if proc is not None:
            try:
                _send(proc.stdin, (fn.__module__, fn.__qualname__, args))
                status, value = _recv(proc.stdout)
            except (OSError, EOFError, pickle.PickleError, ValueError):
                _DISABLED = True  # a broken helper: draw here from now on
                _stop(proc)
            else:
                if status == "ok":
                    return value
                raise RuntimeError(f"drawing process: {value}")
    return fn(*args)


def _stop(proc: Any) -> None:
    try:
        proc.stdin.close()
    except Exception:
        pass
    try:
        proc.wait(timeout=2)
    except Exception:
        proc.kill()


def shutdown() -> None:
    """Stop the helper (at exit; a later call starts a new one unless disabled)."""
    global _PROC
    proc, _PROC = _PROC, None
    if proc is not None and proc.poll() is None:
        _stop(proc)


def _serve() -> int:
    """The helper's loop: read ``(module, name, args)`` calls on stdin, answer on stdout."""
    import importlib

    importlib.import_module("lumbargrade.report.html_report")  # ready before the first call
    stdin, stdout = sys.stdin.buffer, sys.stdout.buffer
    sys.stdout = sys.stderr  # anything printed must not corrupt the answers
    while True:
        try:
            module, name, args = _recv(stdin)
        except EOFError:
            return 0
        try:
            fn = getattr(importlib.import_module(module), name)
            answer = ("ok", fn(*args))
        except Exception as e:
            answer = ("error", f"{type(e).__name__}: {e}")
        _send(stdout, answer)


if __name__ == "__main__":
    sys.exit(_serve())
