"""Batch throughput: ``analyze --batch --processes 2`` against ``--ray`` (local Ray, 2 CPUs).

Usage::

    python benchmarks/scale_batch.py [--studies 8] [--repeats 2] [--outputs seg,sr,html] [--out JSON]

Generates ``--studies`` seeded phantom studies (cached in the temp folder), then runs, alternating
so that a slow minute of a shared machine hits both alike, each of

* ``processes2``: ``lumbargrade analyze --batch DIR --processes 2``,
* ``ray``: ``lumbargrade analyze --batch DIR --ray`` (a local Ray with this machine's cores, one
  actor per core),
* ``ray1``: ``--ray --ray-actors 1`` (one analysing actor, a core left for Ray and reading),

into a fresh output folder, bundled model pack, and reports studies per minute with start-up
(whole command) and after start-up (from the first to the last study's ``finished`` time in the
log), the CPU seconds per study (``--processes 2``: the CPU time of its processes over the
studies, start-up and model loading included), and whether every arm wrote the same results
(report.json without timings and without the UIDs of the new SEG and SR, and the label maps byte
for byte). The machine's model, core count,
load and a speed reference (a 10**7-step Python loop) are recorded beside the figures.
Writes ``benchmarks/results/scale_batch.json``.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

ARMS = {
    "processes2": ["--processes", "2"],
    "ray": ["--ray"],
    "ray1": ["--ray", "--ray-actors", "1"],
}


def make_studies(n: int) -> Path:
    from lumbargrade.phantom.cohort import generate_cohort

    root = Path(tempfile.gettempdir()) / f"lumbargrade-scale-batch-{n}"
    studies = root / "studies"
    if studies.is_dir() and len(list(studies.iterdir())) == n:
        return studies
    shutil.rmtree(root, ignore_errors=True)
    generate_cohort(root / "cohort", n, 4321, split=(0, 0, n), progress=False)
    studies.mkdir(parents=True)
    for p in sorted((root / "cohort").glob("P*/dicom")):
        (studies / p.parent.name).symlink_to(p, target_is_directory=True)
    return studies


def _finished_span(log: Path) -> tuple[int, float | None]:
    entries = [json.loads(x) for x in log.read_text().splitlines() if x.strip()]
    ok = [dt.datetime.fromisoformat(e["finished"]) for e in entries if e.get("status") == "ok"]
    if len(ok) < 2:
        return len(ok), None
    ok.sort()
    return len(ok), (ok[-1] - ok[0]).total_seconds()


def run_arm(name: str, studies: Path, out: Path, outputs: str, tries: int = 2) -> dict:
    cmd = [sys.executable, "-m", "lumbargrade", "analyze", "--batch", str(studies), "--out", str(out),
           "--outputs", outputs, *ARMS[name]]
    for attempt in range(1, tries + 1):
        shutil.rmtree(out, ignore_errors=True)
        before = resource.getrusage(resource.RUSAGE_CHILDREN)
        t0 = time.perf_counter()
        p = subprocess.run(cmd, capture_output=True, text=True, check=False)
        wall = time.perf_counter() - t0
        after = resource.getrusage(resource.RUSAGE_CHILDREN)
        if p.returncode == 0:
            break
        print(f"{name}: attempt {attempt} failed: {p.stderr.strip().splitlines()[-1:]}", file=sys.stderr)
    n_ok, span = _finished_span(out / "batch_log.jsonl") if (out / "batch_log.jsonl").is_file() else (0, None)
    n = len(list(studies.iterdir()))
    shown = " ".join(["lumbargrade", *cmd[3:]]).replace(str(studies), "STUDIES").replace(str(out), f"OUT/{out.name}")
    res = {"arm": name, "command": shown, "exit": p.returncode,
           "attempts": attempt, "studies": n, "ok": n_ok, "wall_s": round(wall, 2),
           "studies_per_min": round(60 * n_ok / wall, 2),
           "studies_per_min_after_first": round(60 * (n_ok - 1) / span, 2) if span else None,
           "child_cpu_s": round((after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime), 2),
           "loadavg_after": os.getloadavg()}
    if name == "processes2" and n_ok:
        res["cpu_s_per_study"] = round(res["child_cpu_s"] / n_ok, 2)
    return res


def _drop_new_uids(d):
    """The report without the UIDs each run generates for its SEG and SR (and without timings)."""
    if isinstance(d, dict):
        return {k: _drop_new_uids(v) for k, v in d.items()
                if k not in ("sop_instance_uid", "series_instance_uid", "timings_s")}
    if isinstance(d, list):
        return [_drop_new_uids(v) for v in d]
    return d


def _comparable(folder: Path) -> dict:
    """Per study: report.json without timings and without the SEG / SR UIDs each run generates
    (``dicom`` part), and the label maps' bytes."""
    out = {}
    for rep in sorted(folder.glob("*/report.json")):
        d = json.loads(rep.read_text())
        d.pop("timings_s", None)
        if "dicom" in d:
            d["dicom"] = _drop_new_uids(d["dicom"])
        labels = {p.parent.name: p.read_bytes() for p in sorted(rep.parent.glob("levels/*/labels.png"))}
        out[rep.parent.name] = (json.dumps(d, sort_keys=True), labels)
    return out


def main(argv: list[str] | None = None) -> int:
    from pipeline_speed import speed_reference

    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--studies", type=int, default=8)
    ap.add_argument("--repeats", type=int, default=2)
    ap.add_argument("--arms", default="processes2,ray,ray1")
    ap.add_argument("--outputs", default="seg,sr,html")
    ap.add_argument("--out", default=str(HERE / "results" / "scale_batch.json"))
    a = ap.parse_args(argv)
    studies = make_studies(a.studies)
    work = Path(tempfile.mkdtemp(prefix="lumbargrade-scale-out-"))
    runs = []
    arms = a.arms.split(",")
    for r in range(a.repeats):
        for name in arms:
            ref = speed_reference()
            res = run_arm(name, studies, work / f"{name}-{r}", a.outputs)
            res["repeat"], res["speed_reference_before"] = r, ref
            runs.append(res)
            print(json.dumps(res), file=sys.stderr)
    res = summarize(runs, arms, work, a.studies, a.outputs)
    Path(a.out).parent.mkdir(parents=True, exist_ok=True)
    Path(a.out).write_text(json.dumps(res, indent=2) + "\n")
    print(json.dumps({"summary": res["summary"], "identical_outputs": res["identical_outputs"],
                      "cpu_s_per_study": res["cpu_s_per_study_processes2"]}, indent=2))
    shutil.rmtree(work, ignore_errors=True)
    return 0


def summarize(runs: list[dict], arms: list[str], work: Path, studies: int, outputs: str) -> dict:
    """Medians per arm, the Ray / processes ratio, identical-output check (the first repeat of each
    arm that finished against the first arm's)."""
    from pipeline_speed import machine

    base = _comparable(work / f"{arms[0]}-0")
    same = {name: (_comparable(work / f"{name}-0") == base) if (work / f"{name}-0" / "batch_log.jsonl").is_file()
            and any(r["arm"] == name and r["repeat"] == 0 and r["exit"] == 0 for r in runs) else None
            for name in arms[1:]}
    summary = {}
    for name in arms:
        rs = [x for x in runs if x["arm"] == name and x["exit"] == 0]
        if rs:
            summary[name] = {
                "studies_per_min_median": sorted(x["studies_per_min"] for x in rs)[len(rs) // 2],
                "studies_per_min_after_first_median": sorted(x["studies_per_min_after_first"] or 0 for x in rs)[len(rs) // 2],
                "runs_ok": len(rs)}
    if "processes2" in summary and "ray" in summary:
        summary["ray_over_processes2"] = round(summary["ray"]["studies_per_min_median"]
                                               / summary["processes2"]["studies_per_min_median"], 3)
        summary["ray_over_processes2_after_first"] = round(
            summary["ray"]["studies_per_min_after_first_median"]
            / max(summary["processes2"]["studies_per_min_after_first_median"], 1e-9), 3)
    cpu = [x["cpu_s_per_study"] for x in runs if "cpu_s_per_study" in x]
    return {"date": time.strftime("%Y-%m-%d %H:%M:%S"), "studies": studies, "outputs": outputs,
            "summary": summary, "identical_outputs": same,
            "cpu_s_per_study_processes2": sorted(cpu)[len(cpu) // 2] if cpu else None,
            "runs": runs, "machine": machine()}


if __name__ == "__main__":
    sys.exit(main())
