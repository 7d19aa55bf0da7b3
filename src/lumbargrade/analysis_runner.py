"""Running ``analyze`` from the command line: one study, or many in one process (models loaded
once, one output folder per StudyInstanceUID, finished studies skipped, errors logged per study)."""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path
from typing import Any

from .errors import InputError, OutputError
from .grading.names import LATERAL_FINDINGS as _FINDINGS

__all__ = ["analyze_one", "format_table", "read_batch_manifest", "run_analyze"]

#: The optional writers beside report.json and the label maps (``--outputs``). ``sc`` (a DICOM
#: Secondary Capture summary per level) is not written unless asked for.
OUTPUTS = ("seg", "sr", "html", "sc")
DEFAULT_OUTPUTS = ("seg", "sr", "html")


def _load_rules(path: str | None) -> Any:
    if not path:
        return None
    p = Path(path)
    if not p.is_file():
        raise InputError(p, "rules file not found")
    try:
        return json.loads(p.read_text())
    except json.JSONDecodeError as e:
        raise InputError(p, f"not valid JSON ({e.msg} at line {e.lineno})") from e


def analyze_one(study_path: str | Path, out: str | Path, pack: Any, config: Any, overwrite: bool = False,
                rules: Any = None, study: Any = None, outputs: Any = DEFAULT_OUTPUTS,
                uid_seed: str | None = None) -> dict[str, Any]:
    """Read (unless ``study`` is given), analyze and write one study; returns the report dict.

    ``outputs``: which of :data:`OUTPUTS` to write beside report.json (default seg, sr, html).
    ``uid_seed``: derive the SEG and SR UIDs from this text (the same seed gives the same
    SOP Instance UIDs); None: new random UIDs."""
    from .io import read_study
    from .pipeline import analyze_study
    from .report import write_outputs
    from .report.json_report import check_output_folder

    check_output_folder(Path(out), overwrite)
    t0 = time.perf_counter()
    if study is None:
        study = read_study(study_path, rules=rules)
    t_read = time.perf_counter() - t0
    result = analyze_study(study, pack, config)
    result.uid_seed = uid_seed
    result.timings_s = {"reading_headers": t_read, **result.timings_s}
    resolved = {"analysis": config.to_dict(), "model_pack": str(pack.path), "input": str(study_path),
                "runtime": _runtime_record(pack)}
    t0 = time.perf_counter()
    writers = _extra_writers(outputs)
    write_outputs(result, out, pack, resolved, overwrite=overwrite, extra_writers=writers)
    result.timings_s["report"] = time.perf_counter() - t0
    return json.loads((Path(out) / "report.json").read_text())


def _runtime_record(pack: Any) -> dict[str, Any]:
    """How the networks ran (config.json ``runtime``): runtime and precision per component, the
    CPU's native bf16 support that decided the precision of torch networks, threads, and the dural
    sac refiner's share of the sac probability (None without a refiner)."""
    from .runtime import cpu_native_bf16, num_threads

    seg = pack.get("segmentation") if hasattr(pack, "get") else None
    return {"requested": getattr(pack, "runtime", None),
            "components": pack.runtimes() if hasattr(pack, "runtimes") else {},
            "precision": pack.precisions() if hasattr(pack, "precisions") else {},
            "cpu_native_bf16": cpu_native_bf16(),
            "onnxruntime_threads": num_threads(),
            "sac_refiner_weight": getattr(seg, "sac_refiner_weight", None)}


def _extra_writers(outputs: Any = DEFAULT_OUTPUTS) -> list:
    """The writers that run beside report.json: DICOM SEG, DICOM SR, HTML, Secondary Capture
    (those in ``outputs``)."""
    writers = []
    # order matters: the SR references the SEG, the HTML lists both
    if "seg" in outputs:
        from .report.dicom_seg import write_seg

        writers.append(write_seg)
    if "sr" in outputs:
        from .report.dicom_sr import write_sr

        writers.append(write_sr)
    if "html" in outputs:
        from .report.html_report import write_html

        writers.append(write_html)
    if "sc" in outputs:
        from .report.dicom_sc import write_sc

        writers.append(write_sc)
    return writers


def parse_outputs(text: str | None) -> tuple[str, ...]:
    """``"seg,sr,html"`` -> a tuple of :data:`OUTPUTS` (``"none"`` or empty: only report.json)."""
    if text is None:
        return DEFAULT_OUTPUTS
    items = tuple(t.strip().lower() for t in text.split(",") if t.strip())
    if items in ((), ("none",)):
        return ()
    bad = [t for t in items if t not in OUTPUTS]
    if bad:
        raise InputError("--outputs", f"unknown output {bad[0]!r}; choose from {', '.join(OUTPUTS)} or none")
    return items


def format_table(report: dict[str, Any]) -> str:
    """A plain-text grade table: one row per level."""
    head = f"{'level':7s} {'central':9s} {'ratio':>7s} {'sac mm2':>8s} " + " ".join(f"{f:>14s}" for f in _FINDINGS)
    lines = [head, "-" * len(head)]
    for lv in report.get("levels", []):
        c = lv.get("central_canal", {}) or {}
        tree = c.get("tree") or {}
        ratio = tree.get("ratio")
        sac = (lv.get("measurements") or {}).get("dural_sac_area_mm2")
        cells = []
        for f in _FINDINGS:
            v = lv.get(f)
            if v and v.get("probability") is not None:
                tag = "mod/sev" if v.get("label") == "moderate/severe" else "norm/mild"
                cells.append(f"{tag} {v['probability']:.2f}")
            else:
                cells.append("-")
        lines.append(
            f"{lv['level']:7s} {c.get('grade') or '-'!s:9s} "
            f"{(f'{ratio:.3f}' if ratio is not None else '-'):>7s} "
            f"{(f'{sac:.0f}' if sac is not None else '-'):>8s} " + " ".join(f"{x:>14s}" for x in cells)
            + ("  NEEDS REVIEW" if lv.get("needs_review") else "")
        )
    flagged = [lv for lv in report.get("levels", []) if lv.get("needs_review")]
    for lv in flagged:
        lines.append(f"{lv['level']}: needs review: " + "; ".join(lv.get("review_reasons") or []))
    return "\n".join(lines)


def _collect_studies(args: argparse.Namespace) -> list[Path]:
    studies = [Path(s) for s in args.studies]
    if getattr(args, "_list", None):  # a --processes part: its share of the studies, one path a line
        studies += [Path(line) for line in Path(args._list).read_text().splitlines() if line.strip()]
    if args.batch:
        root = Path(args.batch)
        if root.is_file():
            studies += read_batch_manifest(root)
        elif not root.is_dir():
            raise InputError(root, "batch folder or manifest not found")
        else:
            studies += sorted(p for p in root.iterdir() if p.is_dir() or p.suffix.lower() == ".zip")
        if not studies:
            raise InputError(root, "batch folder holds no study folders or .zip files")
    if not studies:
        raise InputError(None, "give a STUDY path or --batch FOLDER")
    for s in studies:
        if not s.exists():
            raise InputError(s, "no such file or folder")
    return studies


def read_batch_manifest(path: Path) -> list[Path]:
    """The studies a ``--batch`` manifest lists: a ``.csv`` with a ``study_dir`` (or ``study``)
    column, such as the dataset ``manifest.csv`` (one row per level: each study once), or a text
    file with one study path a line (``#`` starts a comment). Relative paths are relative to the
    manifest's folder."""
    import csv

    base = path.parent
    try:
        text = path.read_text(encoding="utf-8-sig")
    except (OSError, UnicodeDecodeError) as e:
        raise InputError(path, f"cannot read the batch manifest ({e})") from None
    if path.suffix.lower() == ".csv":
        rows = list(csv.DictReader(text.splitlines()))
        col = next((c for c in ("study_dir", "study") if rows and c in rows[0]), None)
        if col is None:
            raise InputError(path, "batch manifest needs a study_dir (or study) column")
        items = [r[col].strip() for r in rows if (r.get(col) or "").strip()]
    else:
        items = [line.split("#", 1)[0].strip() for line in text.splitlines()]
        items = [i for i in items if i]
    seen: dict[Path, None] = {}
    for i in items:
        p = Path(i)
        seen.setdefault(p if p.is_absolute() else base / p, None)
    return list(seen)


def run_analyze(args: argparse.Namespace) -> int:
    from .modelpack import load_pack
    from .pipeline import AnalysisConfig

    studies = _collect_studies(args)
    rules = _load_rules(args.rules)
    outputs = parse_outputs(getattr(args, "outputs", None))
    processes = int(getattr(args, "processes", 1) or 1)
    if processes < 1:
        raise InputError("--processes", f"must be at least 1, got {processes}")
    part = getattr(args, "_part", False)
    if getattr(args, "ray", None) is not None and not part:
        if processes > 1:
            raise InputError("--ray", "give --ray or --processes, not both")
        from .ray_runner import run_ray

        return run_ray(studies, Path(args.out), args, outputs, rules)
    if processes > 1 and not part and (len(studies) > 1 or args.batch):
        return _run_processes(studies, Path(args.out), processes, args)
    threads = getattr(args, "threads", None)
    from .runtime import default_threads, set_num_threads

    if threads is not None:
        if int(threads) < 1:
            raise InputError("--threads", f"must be at least 1, got {threads}")
        set_num_threads(int(threads))
    else:  # ONNX Runtime: this process's share of the cores; PyTorch: 1 (its threads spin and
        # contend with the report writers on a small machine; see docs/performance.md)
        share = getattr(args, "_ort_threads", None) or default_threads(processes)
        set_num_threads(share, torch_threads=1)
    if "html" in outputs:  # start the picture-drawing process now: its start-up overlaps model loading
        from .report import drawing_process

        drawing_process.start()
    pack = load_pack(args.models, runtime=getattr(args, "runtime", None))
    config = AnalysisConfig(slice_choice=args.slice_choice, boxes=getattr(args, "boxes", None) or "auto",
                            fat_shift_correction=getattr(args, "fat_shift_correction", True))
    out = Path(args.out)
    if len(studies) == 1 and not args.batch and not part:
        report = analyze_one(studies[0], out, pack, config, overwrite=args.overwrite, rules=rules, outputs=outputs)
        if args.json:
            print(json.dumps(report, indent=2))
        else:
            print(format_table(report))
            for w in report.get("warnings", []):
                print(f"warning: {w}", file=sys.stderr)
            html = out / "report.html"
            print(f"\nreport: {out / 'report.json'}" + (f"\nhtml:   {html}" if html.is_file() else ""))
        return 0
    return _run_batch(studies, out, pack, config, rules, args, outputs)


def _run_batch(studies: list[Path], out: Path, pack: Any, config: Any, rules: Any, args: argparse.Namespace,
               outputs: Any = OUTPUTS) -> int:
    """Many studies, models loaded once; resumable (a study whose folder holds report.json is done)."""
    import datetime as _dt
    from concurrent.futures import ThreadPoolExecutor

    from tqdm import tqdm

    from .io import read_study
    from .ray_runner import analyze_study_entry

    out.mkdir(parents=True, exist_ok=True)
    _clean_stale_temporaries(out)
    log = out / "batch_log.jsonl"
    n_ok = n_skip = n_err = 0
    if getattr(args, "_part", False):
        _exit_with_parent()

    def read(path: Path) -> tuple[Path, Any, str | None]:
        try:
            return path, read_study(path, rules=rules), None
        except InputError as e:
            return path, None, e.one_line()
        except Exception as e:  # one bad study must not stop the batch
            return path, None, f"{path}: {type(e).__name__}: {e}"

    workers = max(1, int(args.workers))
    with ThreadPoolExecutor(max_workers=workers) as pool, log.open("a") as logf:
        bar = tqdm(total=len(studies), desc="studies", unit="study", file=sys.stderr,
                   disable=bool(getattr(args, "_part", False)))  # a part's parent shows the bar
        for path, study, err in pool.map(read, studies):
            entry = analyze_study_entry(path, out, pack, config, rules, outputs, args.overwrite, study, err)
            n_ok += entry["status"] == "ok"
            n_skip += entry["status"] == "skipped (done)"
            if entry["status"] == "error":
                n_err += 1
                print(f"lumbargrade: error: {entry['error']}", file=sys.stderr)
            entry["finished"] = _dt.datetime.now(_dt.UTC).isoformat(timespec="milliseconds")
            logf.write(json.dumps(entry) + "\n")
            logf.flush()
            bar.update(1)
        bar.close()
    print(f"{n_ok} analyzed, {n_skip} already done, {n_err} failed; outputs in {out} (log: {log})")
    return 0 if n_err == 0 else 1


def _run_processes(studies: list[Path], out: Path, processes: int, args: argparse.Namespace) -> int:
    """``--processes N``: the studies dealt round-robin to N ``lumbargrade analyze`` processes (each
    loads the models once and runs the batch loop on its share, all into ``out``); one progress bar
    here, from the shared log. Resuming, skipping and per-study errors work as in one process."""
    import subprocess
    import tempfile
    import time

    from tqdm import tqdm

    out.mkdir(parents=True, exist_ok=True)
    _clean_stale_temporaries(out)
    log = out / "batch_log.jsonl"
    start = log.stat().st_size if log.is_file() else 0
    n = min(processes, len(studies))
    shares = [studies[k::n] for k in range(n)]
    passthrough = ["--out", str(out), "--workers", str(args.workers), "--outputs", str(args.outputs),
                   "--slice-choice", str(args.slice_choice), "--_part"]
    for opt in ("models", "rules", "runtime", "boxes"):
        v = getattr(args, opt, None)
        if v is not None:
            passthrough += [f"--{opt}", str(v)]
    if args.threads is not None:
        passthrough += ["--threads", str(args.threads)]
    else:  # each part its share of the cores (PyTorch keeps 1)
        from .runtime import default_threads

        passthrough += ["--_ort-threads", str(default_threads(n))]
    if args.overwrite:
        passthrough.append("--overwrite")
    procs = []
    with tempfile.TemporaryDirectory(prefix="lumbargrade-parts-") as td:
        for k, share in enumerate(shares):
            lst = Path(td) / f"part{k}.txt"
            lst.write_text("\n".join(str(p) for p in share) + "\n")
            cmd = [sys.executable, "-m", "lumbargrade", "analyze", "--_list", str(lst), *passthrough]
            procs.append(subprocess.Popen(cmd, stdout=subprocess.DEVNULL))
        bar = tqdm(total=len(studies), desc=f"studies ({n} processes)", unit="study", file=sys.stderr)
        try:
            while any(p.poll() is None for p in procs):
                time.sleep(0.5)
                bar.n = _log_lines_since(log, start)
                bar.refresh()
        except KeyboardInterrupt:
            for p in procs:
                p.terminate()
            raise
        bar.n = _log_lines_since(log, start)
        bar.close()
    counts = {"ok": 0, "skipped (done)": 0, "error": 0}
    if log.is_file():
        with log.open("rb") as f:
            f.seek(start)
            for line in f.read().decode("utf-8", "replace").splitlines():
                try:
                    status = json.loads(line).get("status")
                except ValueError:
                    continue
                counts[status] = counts.get(status, 0) + 1
    print(f"{counts['ok']} analyzed, {counts['skipped (done)']} already done, {counts['error']} failed "
          f"({n} processes); outputs in {out} (log: {log})")
    failed = any(p.returncode not in (0, 1) for p in procs)
    return 1 if counts["error"] or failed else 0


def _exit_with_parent(poll_s: float = 0.5) -> None:
    """A ``--processes`` part stops when the process that started it is gone (killed or crashed):
    no orphan keeps writing into the output folder. A study it was writing stays a hidden
    temporary folder, never taken as done."""
    import os
    import threading
    import time

    parent = os.getppid()

    def watch() -> None:
        while True:
            time.sleep(poll_s)
            if os.getppid() != parent:
                os._exit(3)

    threading.Thread(target=watch, name="lumbargrade-parent-watch", daemon=True).start()


def _log_lines_since(log: Path, start: int) -> int:
    if not log.is_file():
        return 0
    with log.open("rb") as f:
        f.seek(start)
        return f.read().count(b"\n")


def _clean_stale_temporaries(out: Path) -> None:
    """Remove ``.<name>.tmp-<pid>`` / ``.<name>.old-<pid>`` folders left by a crashed run (their
    process is gone); they never count as done, this only frees the space."""
    import os
    import re
    import shutil

    for p in out.glob(".*"):
        m = re.fullmatch(r"\..+\.(?:tmp|old)-(\d+)", p.name)
        if not m or not p.is_dir():
            continue
        pid = int(m.group(1))
        if pid != os.getpid():
            try:
                os.kill(pid, 0)
                continue  # still running (another batch writing here)
            except ProcessLookupError:
                pass
            except PermissionError:
                continue
        shutil.rmtree(p, ignore_errors=True)


def _safe(uid: str) -> str:
    return "".join(ch if ch.isalnum() or ch in ".-_" else "_" for ch in uid)
