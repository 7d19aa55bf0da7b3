"""Pipeline speed: seconds per study, model loading, start-up, peak memory and batch throughput.

Usage::

    python benchmarks/pipeline_speed.py [--studies N] [--out JSON] [--seed S] [--skip-paper]
                                        [--skip-batch] [--skip-one-thread] [--skip-torch] [--profile CONFIG]

Generates ``N`` (default 8) seeded phantom studies (cached in the temp folder, so reruns skip it), then
measures side by side

* ``default``: the bundled model pack (``src/lumbargrade/models/default``) or, while it has no
  ``pack.json`` with a segmentation model, a random-weights pack of the same fast architectures
  (U-Net small + small CNN classifiers, the packaged landmark model when present); its networks
  run with ONNX Runtime where the pack has exports (``--runtime auto``, the default);
* ``default-1thr``: the same with 1 thread for the networks (the other columns use what
  ``lumbargrade analyze`` uses without ``--threads``: all cores for ONNX Runtime, 1 for PyTorch);
* ``default-torch``: the same pack run with PyTorch (``--runtime torch``; bf16 segmentation);
* ``paper``: the paper preset (V-Net per structure + BiT-R50x1, PyTorch), random weights.

For each configuration a child process loads the pack once (model loading time), analyzes the
first study (warm-up, not counted) and then the first 5 studies with models warm (wall time per
study, split by stage from ``report.json`` ``timings_s`` plus each report writer), and reports its
peak resident memory (``VmHWM``). Separately: ``lumbargrade --help`` start-up (best of 5), one
``lumbargrade analyze STUDY`` process per configuration (start-up + model load + analysis + report;
its peak memory through GNU ``time`` when installed), and a batch (``lumbargrade analyze --batch``)
of all ``N`` studies with ``--workers 1`` and ``--workers 2`` (and ``--processes 2`` when the CLI
has it), default pack. Batch throughput includes the process start-up and model loading.

Prints a table and writes JSON (default ``benchmarks/results/pipeline_speed.json``). Random
weights change what the networks output (e.g. how many boxes get a patch), not the cost of a
forward pass; the figures are for timing only. ``classifiers, true masks`` times boxes and
classifiers on the phantom's true masks, so the number of patches (5 central + 20 lateral) is
that of a real study even when the segmentation weights are random.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
STAGES = ("reading_headers", "levels", "reading", "segmentation", "fat_shift", "measurements", "classifiers", "report")
WRITERS = ("write_seg", "write_sr", "write_html", "write_html (prepare, in a thread)")
WARM_STUDIES = 5  # studies timed warm per configuration (the batch uses all of them)


# --------------------------------------------------------------------------- random-weights packs
def make_random_pack(out: str | Path, preset: str = "fast", seed: int = 0, tiny: bool = False,
                     landmarks: str = "auto") -> Path:
    """Write a model pack with untrained weights that :func:`lumbargrade.modelpack.load_pack` reads.

    preset: ``fast`` (unet_small + small_cnn) or ``paper`` (V-Net per structure + BiT-R50x1, 3
    input channels). ``tiny`` shrinks the networks and the segmentation field (tests).
    landmarks: ``auto`` copies the packaged trained landmark model when there is one, else builds
    a random one; ``random`` always builds one; ``none`` leaves the component out.
    """
    import torch

    from lumbargrade.grading.classifier_inference import TASKS, Classifier, save_classifier
    from lumbargrade.grading.classifiers import create_classifier
    from lumbargrade.grading.patches import PatchConfig
    from lumbargrade.grading.tree import PAPER_TREE
    from lumbargrade.modelpack import build_pack
    from lumbargrade.segmentation.models import create_model, save_weights
    from lumbargrade.segmentation.training import SegConfig

    if preset not in ("fast", "paper"):
        raise ValueError(f"preset must be 'fast' or 'paper', got {preset!r}")
    torch.manual_seed(seed)
    out = Path(out)
    runs = Path(tempfile.mkdtemp(prefix="lg-runs-"))
    try:
        comp: dict[str, Path] = {}
        # segmentation
        seg = SegConfig()
        if preset == "paper":
            seg.model, seg.per_structure = "vnet", True
        if tiny:
            seg.model_kwargs = {"channels": [4, 8, 16, 32, 64]}
            seg.size, seg.target_spacing, seg.margin = 96, 1.2, 0
        model = create_model(seg.model, **seg.model_args())
        d = runs / "segmentation"
        d.mkdir()
        save_weights(model, d / "model.safetensors")
        cfg = seg.to_dict()
        cfg["trained_on"] = "nothing: random weights (benchmark)"
        (d / "config.json").write_text(json.dumps(cfg, indent=2) + "\n")
        comp["segmentation"] = d
        # landmarks
        lm_dir = _landmark_folder(runs, landmarks, tiny)
        if lm_dir is not None:
            comp["landmarks"] = lm_dir
            refiner = lm_dir.parent / "landmark_refiner"
            if (refiner / "model.safetensors").is_file():  # the packaged one beside the landmarks
                comp["landmark_refiner"] = refiner
        # tree
        d = runs / "tree"
        d.mkdir()
        (d / "tree.json").write_text(PAPER_TREE.to_json())
        (d / "config.json").write_text(json.dumps({"feature": PAPER_TREE.feature}) + "\n")
        comp["tree"] = d
        # classifiers
        for task, k in TASKS.items():
            name = "bit_r50x1" if preset == "paper" else "small_cnn"
            in_chans = 3 if preset == "paper" else 1
            kw = {"width": 4} if (tiny and name == "small_cnn") else {}
            net = create_classifier(name, k, in_chans=in_chans, **kw)
            cfg = {"task": task, "model": name, "num_classes": k, "in_chans": in_chans, "model_kwargs": kw,
                   "patch": PatchConfig(patch_px=32 if tiny else 64).to_dict(), "threshold": 0.5,
                   "input_mean": 0.5 if preset == "paper" else 0.0, "input_std": 0.5 if preset == "paper" else 1.0,
                   "trained_on": "nothing: random weights (benchmark)"}
            d = runs / f"classifier_{task}"
            save_classifier(Classifier(net, cfg), d)
            comp[f"classifier_{task}"] = d
        build_pack(out, comp, name=f"random-{preset}{'-tiny' if tiny else ''}", version="0",
                   trained_on="nothing: random weights, for timing only", overwrite=True)
    finally:
        shutil.rmtree(runs, ignore_errors=True)
    return out


def _landmark_folder(runs: Path, mode: str, tiny: bool) -> Path | None:
    if mode == "none":
        return None
    try:
        from lumbargrade.levels import landmarks as lm
    except ImportError:
        return None
    trained = lm.default_model_dir()
    if mode == "auto" and (trained / "model.safetensors").is_file() and (trained / "config.json").is_file():
        return trained
    arch = dict(lm.ARCH_DEFAULTS)
    if tiny:
        arch["widths"] = [4, 6, 8, 12, 16, 24]
    kw = dict(arch)
    name = kw.pop("name")
    net = lm.create_model(name, **kw)
    d = runs / "landmarks"
    lm.save_model(net, d, {"arch": arch, "preprocess": dict(lm.PREPROCESS_DEFAULTS),
                           "levels": list(lm.LEVELS), "architecture": name,
                           "trained_on": "nothing: random weights (benchmark)"})
    return d


def default_pack_usable() -> Path | None:
    """The bundled pack when it holds a segmentation model, else None."""
    try:
        from lumbargrade.modelpack import default_pack_path, load_pack

        p = default_pack_path()
        return p if load_pack(p).has("segmentation") else None
    except (ImportError, OSError, ValueError):
        return None
    except Exception as e:  # noqa: BLE001  (an InputError: no usable pack)
        print(f"default pack unusable ({e}); using a random-weights pack", file=sys.stderr)
        return None


# --------------------------------------------------------------------------- phantom studies
def phantom_studies(n: int, seed: int, cache: Path | None = None) -> list[Path]:
    """``n`` phantom study folders (``P####/dicom``), generated once per (n, seed) and cached."""
    from lumbargrade.phantom.cohort import generate_cohort

    root = Path(cache) if cache else Path(tempfile.gettempdir()) / f"lumbargrade-bench-phantom-n{n}-s{seed}"
    done = root / ".complete"
    if not done.is_file():
        if root.exists():
            shutil.rmtree(root)
        generate_cohort(root, n, seed, split=(0, 0, n), progress=False)
        done.write_text("ok\n")
    return sorted(p / "dicom" for p in root.iterdir() if p.is_dir() and (p / "dicom").is_dir())


def batch_folder(studies: list[Path], where: Path) -> Path:
    """A folder whose subfolders link to ``studies`` (what ``analyze --batch`` takes)."""
    where.mkdir(parents=True, exist_ok=True)
    for s in studies:
        link = where / s.parent.name
        if not link.exists():
            link.symlink_to(s, target_is_directory=True)
    return where


# --------------------------------------------------------------------------- child: warm timings
def child_main(pack_path: str, studies: list[str], out_json: str, profile: str | None, threads: int | None,
               runtime: str | None = None) -> None:
    """Run in a fresh process: load the pack, warm up on study 0, then analyze every study warm."""
    t0 = time.perf_counter()
    from lumbargrade import analysis_runner
    from lumbargrade.modelpack import COMPONENTS, load_pack
    from lumbargrade.pipeline import AnalysisConfig
    from lumbargrade.runtime import num_threads, resolve_runtime, set_num_threads

    if threads:
        set_num_threads(int(threads))
    else:  # what `lumbargrade analyze` does without --threads
        from lumbargrade.runtime import default_threads

        set_num_threads(default_threads(), torch_threads=1)
    if resolve_runtime(runtime) == "torch":
        import torch  # noqa: F401  (its import counted with the others, not as model loading)
    t_import = time.perf_counter() - t0
    t0 = time.perf_counter()
    pack = load_pack(pack_path, runtime=runtime)
    per_comp = {}
    for c in COMPONENTS:
        t1 = time.perf_counter()
        pack.get(c)
        per_comp[c] = time.perf_counter() - t1
    t_load = time.perf_counter() - t0

    writer_t: dict[str, float] = {}
    original = analysis_runner._extra_writers

    def timed_writers(*args: Any, **kwargs: Any) -> list:
        out = []
        for w in original(*args, **kwargs):
            def wrapped(*a, _w=w, **k):
                t = time.perf_counter()
                try:
                    return _w(*a, **k)
                finally:
                    writer_t[_w.__name__] = time.perf_counter() - t
            wrapped.__name__ = w.__name__
            if callable(getattr(w, "prepare", None)):  # runs in a thread beside the writers before it
                def prep(*a, _p=w.prepare, _n=w.__name__, **k):
                    t = time.perf_counter()
                    try:
                        return _p(*a, **k)
                    finally:
                        writer_t[f"{_n} (prepare, in a thread)"] = time.perf_counter() - t
                wrapped.prepare = prep
            out.append(wrapped)
        return out

    analysis_runner._extra_writers = timed_writers
    config = AnalysisConfig()
    tmp = Path(tempfile.mkdtemp(prefix="lg-bench-out-"))
    rows = []
    try:
        t1 = time.perf_counter()
        analysis_runner.analyze_one(studies[0], tmp / "warmup", pack, config)
        first = time.perf_counter() - t1
        if profile:
            import cProfile
            import pstats

            prof = cProfile.Profile()
            prof.enable()
            analysis_runner.analyze_one(studies[0], tmp / "profile", pack, config)
            prof.disable()
            pstats.Stats(prof, stream=sys.stderr).sort_stats("cumulative").print_stats(45)
            pstats.Stats(prof, stream=sys.stderr).sort_stats("tottime").print_stats(25)
        for i, s in enumerate(studies):
            writer_t.clear()
            t1 = time.perf_counter()
            rep = analysis_runner.analyze_one(s, tmp / f"s{i}", pack, config)
            wall = time.perf_counter() - t1
            rows.append({"study": Path(s).parent.name, "wall_s": wall, "timings_s": rep.get("timings_s", {}),
                         "writers_s": dict(writer_t), "n_levels": len(rep.get("levels", [])),
                         "n_lateral_probs": sum(1 for lv in rep.get("levels", [])
                                                for f in ("foramen_left", "foramen_right", "facet_left", "facet_right")
                                                if (lv.get(f) or {}).get("probability") is not None)})
        truth = classifiers_on_truth_masks(pack, studies[:3], config)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    res = {
        "pack": pack.label, "pack_path": _portable(pack.path),
        "components": {c: (pack.info(c).get("architecture") if pack.has(c) else None) for c in COMPONENTS},
        "runtimes": pack.runtimes(), "precision": pack.precisions(), "torch_imported": "torch" in sys.modules,
        "imports_s": t_import, "model_load_s": t_load, "model_load_per_component_s": per_comp,
        "first_study_s": first, "studies": rows,
        "threads": {"onnxruntime": num_threads(), "torch": (sys.modules["torch"].get_num_threads()
                                                           if "torch" in sys.modules else None)},
        "classifiers_truth_masks": truth,
        "peak_rss_mb": _peak_rss_mb(),
        "drawing_helper_peak_rss_mb": _helper_peak_rss_mb(),
    }
    Path(out_json).write_text(json.dumps(res, indent=2) + "\n")


def _helper_peak_rss_mb() -> float | None:
    """Peak memory of the picture-drawing helper process (a separate process; not in VmHWM)."""
    try:
        from lumbargrade.report import drawing_process

        proc = drawing_process._PROC
        if proc is None or proc.poll() is not None:
            return None
        for line in Path(f"/proc/{proc.pid}/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024.0
    except (OSError, ImportError, AttributeError):
        return None
    return None


def _peak_rss_mb() -> float:
    """This process's peak resident memory in MB: ``VmHWM`` (per address space, so not inherited
    from the parent across fork + exec as ``ru_maxrss`` is on Linux), else ``ru_maxrss``."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024.0
    except OSError:
        pass
    import resource

    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0


def classifiers_on_truth_masks(pack: Any, studies: list[str], config: Any) -> dict[str, Any]:
    """Boxes and classifiers timed on the phantom's true masks (``P####/labels/<level>.png``).

    Random segmentation weights give empty or meaningless masks, hence few boxes and few patches;
    the true masks give the real number of patches per study (5 central + 20 lateral)."""
    import numpy as np
    from PIL import Image

    from lumbargrade.io import read_study
    from lumbargrade.levels.names import level_dirname
    from lumbargrade.pipeline import analyze_study, grade_levels, measure_and_localize

    times, n_probs = [], []
    for s in studies:
        result = analyze_study(read_study(s), pack, config)
        used = []
        for lv in result.levels:
            f = Path(s).parent / "labels" / f"{level_dirname(lv.level)}.png"
            if not f.is_file():
                continue
            lab = np.asarray(Image.open(f))
            if lab.shape != lv.image.shape:
                continue
            lv.sac_mask, lv.disc_mask, lv.findings, lv.warnings = lab == 1, lab == 2, {}, []
            used.append(lv)
        if not used:
            continue
        t = time.perf_counter()
        for lv in used:
            measure_and_localize(lv, pack)
        grade_levels(used, pack, config)
        times.append(time.perf_counter() - t)
        n_probs.append(sum(1 for lv in used for f in ("foramen_left", "foramen_right", "facet_left", "facet_right")
                           if (lv.findings.get(f) or {}).get("probability") is not None))
    if not times:
        return {}
    return {"median_s": float(np.median(times)), "studies": len(times), "lateral_patches_median": float(np.median(n_probs))}


# --------------------------------------------------------------------------- parent
def _lumbargrade_cmd() -> list[str]:
    exe = shutil.which("lumbargrade")
    return [exe] if exe else [sys.executable, "-m", "lumbargrade"]


def _timed(cmd: list[str], **kw: Any) -> tuple[float, subprocess.CompletedProcess]:
    t = time.perf_counter()
    p = subprocess.run(cmd, capture_output=True, text=True, check=False, **kw)
    return time.perf_counter() - t, p


def help_startup(repeats: int = 5) -> dict[str, Any]:
    times = []
    for _ in range(repeats):
        dt, p = _timed([*_lumbargrade_cmd(), "--help"])
        if p.returncode != 0:
            raise RuntimeError(f"lumbargrade --help failed: {p.stderr[-2000:]}")
        times.append(dt)
    return {"best_s": min(times), "all_s": times}


def _env(threads: int | None) -> dict[str, str] | None:
    """The environment of a child with ``threads`` torch/OpenMP threads (None: torch's default)."""
    if threads is None:
        return None
    return {**os.environ, "OMP_NUM_THREADS": str(threads), "MKL_NUM_THREADS": str(threads)}


def _cli_has(option: str) -> bool:
    """Whether ``lumbargrade analyze`` takes ``option`` (e.g. ``--threads``)."""
    p = subprocess.run([*_lumbargrade_cmd(), "analyze", "--help"], capture_output=True, text=True, check=False)
    return option in p.stdout


def warm_child(pack: Path, studies: list[Path], profile: bool, threads: int | None = None,
               runtime: str | None = None) -> dict[str, Any]:
    with tempfile.TemporaryDirectory(prefix="lg-bench-child-") as td:
        res = Path(td) / "res.json"
        cmd = [sys.executable, str(Path(__file__).resolve()), "--_child", str(pack), "--_res", str(res),
               *(["--_threads", str(threads)] if threads else []),
               *(["--_runtime", runtime] if runtime else []),
               *(["--_profile"] if profile else []), *map(str, studies)]
        p = subprocess.run(cmd, stdout=subprocess.PIPE, stderr=None if profile else subprocess.PIPE, text=True, check=False,
                           env=_env(threads))
        if p.returncode != 0:
            raise RuntimeError(f"benchmark child failed ({pack}):\n{(p.stderr or '')[-4000:]}")
        return json.loads(res.read_text())


def _thread_args(threads: int | None) -> list[str]:
    return ["--threads", str(threads)] if threads and _CLI_THREADS.get("has") else []


_CLI_THREADS: dict[str, bool] = {}


def single_process(pack: Path, study: Path, threads: int | None = None, runtime: str | None = None) -> dict[str, Any]:
    """Wall time of one ``lumbargrade analyze STUDY`` process (and its peak RSS via GNU time, when
    installed)."""
    gnu_time = Path("/usr/bin/time")
    wrap = [str(gnu_time), "-f", "LG_MAXRSS_KB=%M"] if gnu_time.is_file() else []
    with tempfile.TemporaryDirectory(prefix="lg-bench-one-") as td:
        dt, p = _timed([*wrap, *_lumbargrade_cmd(), "analyze", str(study), "--out", str(Path(td) / "o"),
                        "--models", str(pack), *_thread_args(threads),
                        *(["--runtime", runtime] if runtime else [])], env=_env(threads))
        if p.returncode != 0:
            raise RuntimeError(f"lumbargrade analyze failed: {p.stderr[-3000:]}")
        res: dict[str, Any] = {"wall_s": dt}
        for line in p.stderr.splitlines():
            if line.startswith("LG_MAXRSS_KB="):
                res["peak_rss_mb"] = int(line.split("=", 1)[1]) / 1024.0
        return res


def _children_cpu_s() -> float:
    import resource

    r = resource.getrusage(resource.RUSAGE_CHILDREN)
    return r.ru_utime + r.ru_stime


def batch_run(pack: Path, folder: Path, workers: int, threads: int | None = None, processes: int = 1) -> dict[str, Any]:
    cpu0 = _children_cpu_s()
    with tempfile.TemporaryDirectory(prefix="lg-bench-batch-") as td:
        out = Path(td) / "o"
        extra = ["--processes", str(processes)] if processes > 1 else []
        dt, p = _timed([*_lumbargrade_cmd(), "analyze", "--batch", str(folder), "--out", str(out),
                        "--models", str(pack), "--workers", str(workers), *extra, *_thread_args(threads)],
                       env=_env(threads))
        entries = [json.loads(line) for line in (out / "batch_log.jsonl").read_text().splitlines()] \
            if (out / "batch_log.jsonl").is_file() else []
        ok = [e for e in entries if e.get("status") == "ok"]
        n = len(ok)
        # steady state: studies finished after the first one, over the time since it finished
        # (leaves out process start-up and model loading, which a long batch pays once)
        from datetime import datetime

        times = sorted(datetime.fromisoformat(e["finished"]) for e in ok if e.get("finished"))
        span = (times[-1] - times[0]).total_seconds() if len(times) > 1 else 0.0
        return {"workers": workers, "processes": processes, "wall_s": dt, "n_ok": n, "returncode": p.returncode,
                "studies_per_min": 60.0 * n / dt if dt > 0 else None,
                "steady_studies_per_min": 60.0 * (len(times) - 1) / span if span > 0 else None,
                "cpu_s": _children_cpu_s() - cpu0}


def summarise(child: dict[str, Any]) -> dict[str, Any]:
    """Median per stage (and writer) over the warm studies."""
    import statistics as st

    rows = child["studies"]
    for r in rows:  # analyze_one adds "report" after report.json is written: the rest of the wall time
        t = r["timings_s"]
        t["report"] = max(0.0, r["wall_s"] - sum(v for k, v in t.items() if k != "report"))
    stages = {k: st.median(r["timings_s"].get(k, 0.0) for r in rows) for k in STAGES}
    writers = {k: st.median(r["writers_s"].get(k, 0.0) for r in rows) for k in WRITERS}
    analysis = st.median(sum(v for k, v in r["timings_s"].items() if k != "report") for r in rows)
    return {"wall_median_s": st.median(r["wall_s"] for r in rows), "wall_min_s": min(r["wall_s"] for r in rows),
            "analysis_median_s": analysis,
            "stages_median_s": stages, "writers_median_s": writers,
            "levels_median": st.median(r["n_levels"] for r in rows)}


def cpu_line(m: dict[str, Any]) -> str:
    """The CPU the figures were measured on and the flags they depend on (native bf16 decides
    whether the PyTorch path's segmenter runs bf16 or fp32)."""
    flags = "not recorded" if m.get("cpu_flags") is None else " ".join(m["cpu_flags"]) or "not readable"
    bf16 = {True: "yes", False: "no"}.get(m.get("cpu_native_bf16"), "not recorded")
    return f"CPU: {m.get('cpu') or '?'}, {m.get('cpus')} logical CPUs; flags: {flags}; native bf16: {bf16}"


def table(res: dict[str, Any]) -> str:
    confs = list(res["configs"])
    w = 14
    lines = [cpu_line(res.get("machine", {})), f"{'':34s}" + "".join(f"{c:>{w}s}" for c in confs)]

    def row(label: str, f) -> None:
        cells = []
        for c in confs:
            try:
                v = f(res["configs"][c])
                cells.append(f"{v:>{w}.3f}" if isinstance(v, float) else f"{v!s:>{w}s}")
            except (KeyError, TypeError):
                cells.append(f"{'-':>{w}s}")
        lines.append(f"{label:34s}" + "".join(cells))

    row("python loop 1e7 s before (speed)", lambda c: c["python_loop_1e7_s_before"])
    row("runtime", lambda c: "/".join(sorted(set(c["warm"]["runtimes"].values()))) or "-")
    row("threads", lambda c: (c["warm"]["threads"]["onnxruntime"] if "onnx" in c["warm"]["runtimes"].values()
                              else c["warm"]["threads"]["torch"]))
    row("segmentation precision", lambda c: c["warm"]["precision"]["segmentation"])
    row("warm s/study (median)", lambda c: c["summary"]["wall_median_s"])
    row("  analysis without report writing", lambda c: c["summary"]["analysis_median_s"])
    for k in STAGES:
        row(f"  {k}", lambda c, k=k: c["summary"]["stages_median_s"][k])
    for k in WRITERS:
        row(f"    report: {k}", lambda c, k=k: c["summary"]["writers_median_s"][k])
    row("  classifiers, true masks (median)", lambda c: c["warm"]["classifiers_truth_masks"]["median_s"])
    row("imports s (lumbargrade [+ torch])", lambda c: c["warm"]["imports_s"])
    row("model load s", lambda c: c["warm"]["model_load_s"])
    row("single `analyze` process s", lambda c: c["single_process"]["wall_s"])
    row("peak RSS MB (warm child)", lambda c: c["warm"]["peak_rss_mb"])
    row("  + drawing helper process", lambda c: c["warm"]["drawing_helper_peak_rss_mb"])
    row("peak RSS MB (single process)", lambda c: c["single_process"]["peak_rss_mb"])
    for wk in ("1", "2", "processes 2"):
        label = f"batch --{wk}" if wk.startswith("processes") else f"batch --workers {wk}"
        row(f"{label}: studies/min", lambda c, wk=wk: c["batch"][wk]["studies_per_min"])
        row("  after start-up (steady)", lambda c, wk=wk: c["batch"][wk]["steady_studies_per_min"])
        row("  CPU cores busy (CPU s / wall s)", lambda c, wk=wk: c["batch"][wk]["cpu_s"] / c["batch"][wk]["wall_s"])
    lines.append(f"`lumbargrade --help` best of 5: {res['help_startup']['best_s']:.3f} s")
    if "paper_over_default" in res:
        lines.append(f"paper / default warm s per study: {res['paper_over_default']:.1f}x")
    ref = res.get("machine", {}).get("speed_reference")
    if ref:
        lines.append(f"machine speed reference: python loop 1e7 {ref['python_loop_1e7_s']:.2f} s, "
                     f"`import torch` process {ref['import_torch_process_s']:.2f} s")
    if "python_loop_1e7_s_at_end" in res:
        lines.append(f"python loop 1e7 at the end: {res['python_loop_1e7_s_at_end']:.2f} s "
                     "(a run whose loop times differ a lot was disturbed: the VM's speed changed)")
    if "batch_speedup_2_over_1" in res:
        lines.append(f"batch --workers 2 / --workers 1 throughput: {res['batch_speedup_2_over_1']:.2f}x")
    if "batch_speedup_processes2_over_1" in res:
        lines.append(f"batch --processes 2 / --workers 1 throughput: {res['batch_speedup_processes2_over_1']:.2f}x")
    return "\n".join(lines)


def _portable(path: Any) -> str:
    """A path as the results JSON records it (no folder of this machine)."""
    from lumbargrade.provenance import portable_path

    return portable_path(path) or str(path)


def machine() -> dict[str, Any]:
    from lumbargrade.runtime import cpu_info

    ci = cpu_info()
    info: dict[str, Any] = {"cpus": os.cpu_count(), "platform": platform.platform(), "python": platform.python_version(),
                            "cpu": ci["model"], "cpu_flags": ci["flags"], "cpu_native_bf16": ci["native_bf16"]}
    try:
        info["loadavg_at_start"] = os.getloadavg()
    except OSError:
        pass
    try:
        import torch

        info["torch"] = torch.__version__
    except ImportError:
        pass
    info["speed_reference"] = speed_reference()
    return info


def _loop_s() -> float:
    """Seconds for a pure-Python loop of 10**7 additions (best of 2): the machine's speed now."""
    best = float("inf")
    for _ in range(2):
        t = time.perf_counter()
        s = 0
        for i in range(10**7):
            s += i
        best = min(best, time.perf_counter() - t)
    return round(best, 3)


def speed_reference() -> dict[str, float]:
    """Seconds for fixed work (best of 3), so runs on one machine at different times (the same
    VM is not always equally fast) can be compared: a pure-Python loop of 10**7 additions and a
    `python -c "import torch"` process."""
    def loop() -> float:
        t = time.perf_counter()
        s = 0
        for i in range(10**7):
            s += i
        return time.perf_counter() - t

    py = min(loop() for _ in range(3))
    imp = min(_timed([sys.executable, "-c", "import torch"])[0] for _ in range(3))
    return {"python_loop_1e7_s": round(py, 3), "import_torch_process_s": round(imp, 3)}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--studies", type=int, default=8,
                    help="phantom studies (default 8): the batch runs all, warm timings use the first 5")
    ap.add_argument("--seed", type=int, default=2023)
    ap.add_argument("--out", default=str(HERE / "results" / "pipeline_speed.json"))
    ap.add_argument("--skip-paper", action="store_true", help="only the default pack")
    ap.add_argument("--skip-batch", action="store_true")
    ap.add_argument("--skip-one-thread", action="store_true",
                    help="leave out the default pack with 1 thread (the other columns use the CLI's default: "
                    "all cores for ONNX Runtime, 1 for PyTorch)")
    ap.add_argument("--skip-torch", action="store_true",
                    help="leave out the default pack run with PyTorch instead of ONNX Runtime")
    ap.add_argument("--profile", choices=["default", "default-1thr", "default-torch", "paper"],
                    help="print a cProfile of one warm study")
    ap.add_argument("--_child", help=argparse.SUPPRESS)
    ap.add_argument("--_res", help=argparse.SUPPRESS)
    ap.add_argument("--_profile", action="store_true", help=argparse.SUPPRESS)
    ap.add_argument("--_threads", type=int, help=argparse.SUPPRESS)
    ap.add_argument("--_runtime", help=argparse.SUPPRESS)
    ap.add_argument("paths", nargs="*", help=argparse.SUPPRESS)
    a = ap.parse_args(argv)
    if a._child:
        child_main(a._child, a.paths, a._res, "profile" if a._profile else None, a._threads, a._runtime)
        return 0

    t_start = time.perf_counter()
    from lumbargrade.provenance import portable_command

    res: dict[str, Any] = {"machine": machine(),
                           "command": portable_command(["benchmarks/pipeline_speed.py", *(argv or sys.argv[1:])]),
                           "n_studies": a.studies, "seed": a.seed, "configs": {}}
    print(cpu_line(res["machine"]), file=sys.stderr)
    t = time.perf_counter()
    studies = phantom_studies(a.studies, a.seed)
    print(f"{len(studies)} phantom studies ready ({time.perf_counter() - t:.1f} s)", file=sys.stderr)

    work = Path(tempfile.mkdtemp(prefix="lg-bench-"))
    try:
        packs: dict[str, Path] = {}
        dp = default_pack_usable()
        packs["default"] = dp if dp is not None else make_random_pack(work / "pack-fast", "fast")
        res["default_pack_is_random"] = dp is None
        if not a.skip_paper:
            packs["paper"] = make_random_pack(work / "pack-paper", "paper")
        res["help_startup"] = help_startup()
        _CLI_THREADS["has"] = _cli_has("--threads")
        res["cli_has_threads_option"] = _CLI_THREADS["has"]
        runs = [(name, pack, None, None) for name, pack in packs.items()]  # the CLI's default threads
        if not a.skip_torch:
            runs.insert(1, ("default-torch", packs["default"], None, "torch"))
        if not a.skip_one_thread:
            runs.insert(1, ("default-1thr", packs["default"], 1, None))
        for name, pack, threads, runtime in runs:
            print(f"[{name}] warm timings ({pack})", file=sys.stderr)
            c: dict[str, Any] = {"pack_path": _portable(pack), "threads_env": threads, "runtime_requested": runtime or "auto",
                                 "python_loop_1e7_s_before": _loop_s()}
            c["warm"] = warm_child(pack, studies[:WARM_STUDIES], profile=(a.profile == name), threads=threads,
                                   runtime=runtime)
            c["summary"] = summarise(c["warm"])
            print(f"[{name}] single-study analyze process", file=sys.stderr)
            c["single_process"] = single_process(pack, studies[0], threads, runtime)
            res["configs"][name] = c
        if not a.skip_batch:
            bf = batch_folder(studies, work / "batch")
            c = res["configs"]["default"]
            c["batch"] = {"python_loop_1e7_s_before": _loop_s()}
            for wk in (1, 2):
                print(f"[default] batch --workers {wk}", file=sys.stderr)
                c["batch"][str(wk)] = batch_run(packs["default"], bf, wk)
            if _cli_has("--processes"):
                print("[default] batch --processes 2", file=sys.stderr)
                c["batch"]["processes 2"] = batch_run(packs["default"], bf, 1, processes=2)
            b1, b2 = c["batch"]["1"]["studies_per_min"], c["batch"]["2"]["studies_per_min"]
            if b1 and b2:
                res["batch_speedup_2_over_1"] = b2 / b1
            bp = c["batch"].get("processes 2", {}).get("studies_per_min")
            if b1 and bp:
                res["batch_speedup_processes2_over_1"] = bp / b1
        if "paper" in res["configs"]:
            res["paper_over_default"] = (res["configs"]["paper"]["summary"]["wall_median_s"]
                                         / res["configs"]["default"]["summary"]["wall_median_s"])
    finally:
        shutil.rmtree(work, ignore_errors=True)
    res["python_loop_1e7_s_at_end"] = _loop_s()
    res["benchmark_wall_s"] = time.perf_counter() - t_start
    if hasattr(os, "getloadavg"):
        res["machine"]["loadavg_at_end"] = os.getloadavg()  # an idle machine reads well below its cores
    print(table(res))
    out = Path(a.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(res, indent=2) + "\n")
    print(f"results: {out} ({res['benchmark_wall_s']:.0f} s)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
