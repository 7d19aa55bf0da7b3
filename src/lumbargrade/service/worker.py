"""The node's analysis workers: processes that each load the model pack once and run the same
code as ``lumbargrade analyze`` (:func:`lumbargrade.analysis_runner.analyze_one`) on one
received study at a time."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

__all__ = ["analyze_received", "init_worker", "result_files", "warm"]

_STATE: dict[str, Any] = {}


def init_worker(models: str | None, runtime: str | None, threads: int, outputs: tuple[str, ...]) -> None:
    """Process-pool initializer: stop with the node, set the threads, load the pack."""
    import signal

    from ..analysis_runner import _exit_with_parent
    from ..modelpack import load_pack
    from ..pipeline import AnalysisConfig
    from ..runtime import set_num_threads

    signal.signal(signal.SIGINT, signal.SIG_IGN)  # the node decides when its workers stop
    _die_with_parent()
    _exit_with_parent()  # a node killed with -9 leaves no worker behind (the portable fallback)
    set_num_threads(max(1, int(threads)), torch_threads=1)
    if "html" in outputs:
        from ..report import drawing_process

        drawing_process.start()
    pack = load_pack(models, runtime=runtime)
    _STATE.update(pack=pack, config=AnalysisConfig(), outputs=tuple(outputs))
    # load every model and the writers' libraries now, not during the first study
    from ..modelpack import COMPONENTS

    for component in COMPONENTS:
        pack.get(component)
    from ..analysis_runner import _extra_writers
    from ..io import read_study  # noqa: F401

    _extra_writers(outputs)
    _STATE["warm_up"] = warm_up()


def warm_up() -> str | None:
    """Analyze a small synthetic study once (in a temporary folder, nothing kept), so that the
    first received study does not pay for the first run of every network and the lazy imports of
    the readers and writers (1-2 s on 2 cores). Returns None, or why it failed (the worker works
    all the same, only its first study is slower)."""
    import tempfile

    from ..analysis_runner import analyze_one

    try:
        from ..io.testing import new_uid, write_example_study

        with tempfile.TemporaryDirectory(prefix="lumbargrade-warm-up-") as td:
            study = Path(td) / "study"
            # a frame of reference, so that the SEG writer runs too
            write_example_study(study, junk=False, frame_of_reference_uid=new_uid())
            report = analyze_one(study, Path(td) / "out", _STATE["pack"], _STATE["config"], overwrite=True,
                                 outputs=_STATE["outputs"])
    except Exception as e:  # never stops the worker
        return f"{type(e).__name__}: {e}"[:200]
    dicom = report.get("dicom") or {}
    missing = [o for o in ("seg", "sr") if o in _STATE["outputs"] and not dicom.get(o)]
    if missing:
        return f"no {' or '.join(m.upper() for m in missing)} written" + (
            f" ({dicom['warnings'][0]})" if dicom.get("warnings") else "")
    return None


def _die_with_parent() -> None:
    """Linux: the kernel kills this worker the moment the node dies (an analysis of a killed node
    must not finish and write a result after it)."""
    import ctypes
    import os
    import sys

    if not sys.platform.startswith("linux"):
        return
    parent = os.getppid()
    try:
        ctypes.CDLL(None, use_errno=True).prctl(1, 9, 0, 0, 0)  # PR_SET_PDEATHSIG, SIGKILL
    except (OSError, AttributeError):
        return
    if os.getppid() != parent:  # the node died before the call
        os._exit(3)


def warm() -> str | None:
    """A no-op task that makes the pool start a worker (load the pack, warm it up) before the
    first study. Returns why the warm-up failed, or None."""
    return _STATE.get("warm_up")


def result_files(report: dict[str, Any]) -> dict[str, str]:
    """``{file name: SOP Instance UID}`` of the DICOM objects in a result (SEG instances, SR,
    Secondary Capture summaries)."""
    dicom = report.get("dicom") or {}
    files = {i["file"]: i["sop_instance_uid"] for i in (dicom.get("seg") or {}).get("instances", [])}
    sr = dicom.get("sr")
    if sr:
        files[sr["file"]] = sr["sop_instance_uid"]
    files.update({i["file"]: i["sop_instance_uid"] for i in (dicom.get("sc") or {}).get("instances", [])})
    return files


def analyze_received(instances: str, out: str, seed: str) -> dict[str, Any]:
    """Analyze the study in folder ``instances`` into ``out`` (written whole or not at all), with
    SEG/SR UIDs derived from ``seed``. Returns ``{"ok", "outputs", "levels", "seconds",
    "error", "warnings"}``; never raises for a bad study."""
    from ..analysis_runner import analyze_one
    from ..errors import InputError

    t0 = time.perf_counter()
    try:
        report = analyze_one(instances, out, _STATE["pack"], _STATE["config"], overwrite=True,
                             outputs=_STATE["outputs"], uid_seed=seed)
    except InputError as e:
        return {"ok": False, "error": _scrub(e.one_line(), instances), "seconds": time.perf_counter() - t0}
    except Exception as e:  # one bad study must not stop the node
        return {"ok": False, "error": _scrub(f"{type(e).__name__}: {e}", instances),
                "seconds": time.perf_counter() - t0}
    files = result_files(report)
    errors = (report.get("dicom") or {}).get("errors") or []
    if not files and any(o in _STATE["outputs"] for o in ("seg", "sr", "sc")):
        return {"ok": False, "error": "no DICOM object could be written" + (f" ({errors[0]})" if errors else ""),
                "seconds": time.perf_counter() - t0}
    return {"ok": True, "outputs": files, "levels": len(report.get("levels", [])),
            "warnings": len(report.get("warnings", [])), "seconds": time.perf_counter() - t0,
            "errors": errors}


def _scrub(text: str, folder: str) -> str:
    """An error line without the store's path (it is long; the study tag says which study)."""
    return " ".join(text.replace(str(Path(folder)), "<study>").split())[:300]
