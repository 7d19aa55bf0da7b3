"""The DICOM node over loopback, with a real Orthanc: studies per minute received, analyzed and
returned with 1 and 2 workers, against ``lumbargrade analyze --processes 2`` on the same studies,
and the round trip per study (last instance received -> SEG and SR stored in Orthanc).

    python benchmarks/pacs_node.py                   # 8 phantom studies, about 5 minutes
    python benchmarks/pacs_node.py --studies 16 --settle 5

Needs the Debian ``orthanc`` package and the ``pacs`` extra. Writes a table and
``benchmarks/results/pacs_node.json`` (with the CPU model, flags and load averages: the figures
depend on them).

How each figure is measured:

* **stream**: every study is sent by Orthanc (REST ``/modalities/lumbargrade/store``, one study
  after the other, as fast as Orthanc sends) to a node with warm workers. *Studies per minute* =
  (N - 1) / (time of the last delivery - time of the first delivery) -- the steady rate, start-up
  and the settle wait of the first study excluded, the same definition as ``analyze``'s
  "after the first study" below. *End to end* = N / (last delivery - first instance sent), settle
  and everything included.
* **analyze --processes 2**: ``lumbargrade analyze --batch DIR --processes 2 --outputs seg,sr``
  (the node makes SEG and SR); per minute after the first study from ``batch_log.jsonl``, and for
  the whole command (start-up and model loading included).
* **round trip**: one study at a time (the node otherwise idle): the time from the study's last
  instance received to its SEG and SR stored in Orthanc (the node's delivery record is written
  after Orthanc answered every C-STORE with success), minus the settle time. Also given for the
  stream, where it includes the wait behind the studies ahead in the queue.
* **CPU seconds per study** (Linux ``/proc``): over the stream, of Orthanc, of the node's own
  process and of its analysis workers; for ``analyze``, of every process the command started
  (model loading included). On 2 cores, what Orthanc and the node spend beside the analysis is
  what the network costs.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests"))

from orthanc_server import NodeProcess, Orthanc, free_port, orthanc_binary, phantom_studies
from proc_cpu import child_pids, cpu_seconds


def machine() -> dict[str, Any]:
    cpu, flags = "?", []
    try:
        text = Path("/proc/cpuinfo").read_text()
        for line in text.splitlines():
            if line.startswith("model name") and cpu == "?":
                cpu = line.split(":", 1)[1].strip()
            if line.startswith("flags") and not flags:
                have = set(line.split(":", 1)[1].split())
                flags = [f for f in ("sse4_2", "avx", "avx2", "fma", "avx512f", "avx512_vnni", "amx_tile") if f in have]
    except OSError:
        pass
    return {"cpu": cpu, "flags": flags, "cores": len(os.sched_getaffinity(0)), "python": platform.python_version(),
            "load_average": list(os.getloadavg())}


def cpu_snapshot(orthanc_pid: int, node_pid: int) -> dict[str, float]:
    kids = child_pids(node_pid)
    return {"orthanc": cpu_seconds(orthanc_pid), "node": cpu_seconds(node_pid),
            "workers": sum(cpu_seconds(k) for k in kids)}


def run_analyze_baseline(studies: list[Path], work: Path) -> dict[str, Any]:
    """``analyze --processes 2`` on ``studies``; its CPU seconds per study are those of every
    process it started (start-up and model loading included)."""
    import resource

    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    batch = work / "batch"
    batch.mkdir(parents=True, exist_ok=True)
    for s in studies:
        link = batch / s.name
        if not link.exists():
            link.symlink_to(s.resolve(), target_is_directory=True)
    out = work / "analyze-out"
    if out.exists():
        import shutil

        shutil.rmtree(out)
    cmd = [sys.executable, "-m", "lumbargrade", "analyze", "--batch", str(batch), "--out", str(out),
           "--processes", "2", "--outputs", "seg,sr"]
    t0 = time.perf_counter()
    subprocess.run(cmd, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    wall = time.perf_counter() - t0
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu = (after.ru_utime + after.ru_stime) - (before.ru_utime + before.ru_stime)
    import datetime as dt

    times = sorted(dt.datetime.fromisoformat(json.loads(line)["finished"]).timestamp()
                   for line in (out / "batch_log.jsonl").read_text().splitlines() if line.strip())
    n = len(studies)
    return {"studies": n, "wall_s": round(wall, 2), "per_minute_whole_command": round(60 * n / wall, 1),
            "per_minute_after_first": round(60 * (n - 1) / (times[-1] - times[0]), 1) if n > 1 else None,
            "cpu_s_per_study_with_start_up": round(cpu / n, 3)}


def run_node(studies: list[tuple[Path, str]], work: Path, workers: int, settle: float, isolated: int) -> dict[str, Any]:
    node_port = free_port()
    orthanc = Orthanc(work / f"orthanc-w{workers}", {"lumbargrade": ("LUMBARGRADE", "127.0.0.1", node_port)}).start()
    node = NodeProcess(work / f"store-w{workers}", port=node_port, allow="ORTHANC@127.0.0.1", settle_s=settle,
                       workers=workers, send_to=[f"ORTHANC@127.0.0.1:{orthanc.dicom_port}"])
    try:
        ids = {uid: orthanc.upload_folder(folder) for folder, uid in studies}
        node.start()
        node.wait_for_log("worker(s) ready", timeout_s=180)
        # one study at a time: the round trip of an idle node
        rt_isolated = []
        for folder, uid in studies[:isolated]:
            orthanc.send_study("lumbargrade", ids[uid])
            st = node.wait_state(uid, "delivered", timeout_s=300)
            rt_isolated.append(st["times"]["delivered"] - st["times"]["last_received"] - settle)
        rest = studies[isolated:]
        cpu0 = cpu_snapshot(orthanc.proc.pid, node.proc.pid)
        t_send = time.time()
        for folder, uid in rest:  # the stream: Orthanc sends them one after the other
            orthanc.send_study("lumbargrade", ids[uid])
        sts = [node.wait_state(uid, "delivered", timeout_s=900) for _, uid in rest]
        cpu1 = cpu_snapshot(orthanc.proc.pid, node.proc.pid)
        for _, uid in studies:  # every result is in Orthanc
            got = orthanc.instances_by_modality(uid)
            assert len(got.get("SR", [])) == 1 and got.get("SEG"), (uid, got)
        delivered = sorted(s["times"]["delivered"] for s in sts)
        rt_stream = [s["times"]["delivered"] - s["times"]["last_received"] - settle for s in sts]
        analysis = [float(line.split("analyzed in ")[1].split(" s")[0]) for line in node.log().splitlines()
                    if "analyzed in " in line]
        n = len(rest)
        return {
            "workers": workers,
            "stream_studies": n,
            "per_minute_after_first": round(60 * (n - 1) / (delivered[-1] - delivered[0]), 1) if n > 1 else None,
            "per_minute_end_to_end": round(60 * n / (delivered[-1] - t_send), 1),
            "round_trip_isolated_s": [round(x, 2) for x in rt_isolated],
            "round_trip_isolated_median_s": round(statistics.median(rt_isolated), 2) if rt_isolated else None,
            "round_trip_stream_median_s": round(statistics.median(rt_stream), 2),
            "round_trip_stream_max_s": round(max(rt_stream), 2),
            "analysis_in_worker_median_s": round(statistics.median(analysis), 2) if analysis else None,
            # CPU seconds per study of the stream, by process: Orthanc (sending the instances, storing
            # the results), the node (receiving, scheduling, sending), its analysis workers
            "cpu_s_per_study": {k: round((cpu1[k] - cpu0[k]) / len(rest), 3) for k in cpu0},
        }
    finally:
        node.stop()
        node.cleanup_group()
        orthanc.stop()


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--studies", type=int, default=8, help="phantom studies in the stream (default 8)")
    ap.add_argument("--isolated", type=int, default=3, help="studies sent one at a time first (default 3)")
    ap.add_argument("--settle", type=float, default=5.0, help="the node's --settle-seconds (default 5)")
    ap.add_argument("--work", default=None, help="working folder (default: a temporary one)")
    ap.add_argument("--out", default=str(ROOT / "benchmarks" / "results" / "pacs_node.json"))
    args = ap.parse_args(argv)
    if orthanc_binary() is None:
        print("Orthanc is not installed (apt-get install orthanc)", file=sys.stderr)
        return 2
    import tempfile

    with tempfile.TemporaryDirectory(prefix="lg-pacs-bench-") as td:
        work = Path(args.work or td)
        data = phantom_studies(work / "data", args.studies + args.isolated, seed=7)
        before = machine()
        baseline = run_analyze_baseline([f for f, _ in data[args.isolated:]], work)
        nodes = [run_node(data, work / f"w{w}", w, args.settle, args.isolated) for w in (1, 2)]
        # the baseline again at the end: the machine's speed drifts (shared VM)
        baseline2 = run_analyze_baseline([f for f, _ in data[args.isolated:]], work)
    res = {"date": time.strftime("%Y-%m-%d %H:%M"), "machine": before, "load_average_end": list(os.getloadavg()),
           "settle_s": args.settle, "analyze_processes_2": [baseline, baseline2], "node": nodes}
    ref = statistics.mean(b["per_minute_after_first"] for b in (baseline, baseline2))
    for r in nodes:
        r["vs_analyze_processes_2"] = round(r["per_minute_after_first"] / ref, 2)
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(res, indent=2) + "\n")
    m = res["machine"]
    print(f"{m['cpu']} ({m['cores']} cores; {', '.join(m['flags'])}); load average {m['load_average'][0]:.1f} "
          f"-> {res['load_average_end'][0]:.1f}; settle {args.settle:.0f} s")
    print(f"analyze --processes 2 ({baseline['studies']} studies): {baseline['per_minute_after_first']} / "
          f"{baseline2['per_minute_after_first']} per minute after the first study (before / after the node runs); "
          f"whole command {baseline['per_minute_whole_command']} / {baseline2['per_minute_whole_command']}")
    for r in nodes:
        print(f"node, {r['workers']} worker(s): {r['per_minute_after_first']} studies/min received, analyzed and "
              f"returned ({r['vs_analyze_processes_2']:.2f}x analyze --processes 2), end to end "
              f"{r['per_minute_end_to_end']}/min; round trip minus settle: one at a time "
              f"{r['round_trip_isolated_s']} s, in the stream median {r['round_trip_stream_median_s']} s, "
              f"max {r['round_trip_stream_max_s']} s; analysis in the worker {r['analysis_in_worker_median_s']} s")
    print(f"written {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
