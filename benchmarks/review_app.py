"""Review app speed: time to open a study page, and to apply an edit (save -> regraded page).

Usage::

    python benchmarks/review_app.py [--studies N] [--edits K] [--seed S] [--out JSON]

Generates ``N`` (default 3) seeded phantom studies and analyzes them with the bundled pack (both
cached in the temp folder, so reruns skip it), copies the outputs to a fresh folder, starts
``lumbargrade review`` on it as a separate process, waits for its warm-up, and drives the system's
Chromium (Debian ``chromium``) with Playwright, headless:

* **open**: from navigation to the study page until its L4/L5 pictures are drawn (the page's
  ``data-level`` mark), per study the first time (the server reads the study's DICOM headers) and
  again (cached);
* **edit**: a brush stroke along the dural sac of L4/L5, then from the click on "Save and regrade"
  until the page shows the regraded level (measurements, boxes, grades recomputed, SEG, SR and HTML
  rewritten, the old version moved to history/), ``K`` (default 3) edits per study; also the PUT
  request alone (the server's share), from the browser's resource timing.

Besides wall times, the CPU seconds (user + system, from ``/proc``) that the server and its drawing
process used, and that everything started here used (server, Chromium, the Playwright driver): on
a busy machine (or under ``nice``) the wall times mostly measure waiting for a core, the CPU
seconds much less so; on an idle machine the wall time is about the CPU time of the whole chain.

Prints a table and writes JSON (default ``benchmarks/results/review_app.json``) with the CPU model,
core count, load average before and after, and a pure-Python reference loop (the same VM is not
equally fast from minute to minute; compare runs by it).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

from proc_cpu import tree_cpu_s

ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
        "--disable-component-update", "--disable-sync", "--no-first-run"]
TOKEN = "benchmark-token-0123456789abcdef"


def machine() -> dict[str, Any]:
    info: dict[str, Any] = {"cpus": os.cpu_count(), "platform": platform.platform(),
                            "python": platform.python_version()}
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                info["cpu"] = line.split(":", 1)[1].strip()
            elif line.startswith("flags") and "cpu_flags" not in info:
                flags = line.split(":", 1)[1].split()
                info["cpu_flags"] = [f for f in ("avx", "avx2", "avx512f", "fma", "sse4_2") if f in flags]
    except OSError:
        pass
    info["loadavg_at_start"] = [round(v, 2) for v in os.getloadavg()]
    info["python_loop_1e7_s"] = loop_s()
    return info


def loop_s() -> float:
    """Seconds for a pure-Python loop of 10**7 additions (best of 3): the machine's speed now."""
    best = float("inf")
    for _ in range(3):
        t = time.perf_counter()
        s = 0
        for i in range(10**7):
            s += i
        best = min(best, time.perf_counter() - t)
    return round(best, 3)


def cohort(n: int, seed: int) -> Path:
    """Analyzed phantom studies (cached): the ``analyze --batch`` output folder."""
    base = Path(tempfile.gettempdir()) / f"lumbargrade-bench-review-{n}-{seed}"
    out = base / "outputs"
    if (base / "done").is_file():
        return out
    shutil.rmtree(base, ignore_errors=True)
    lg = [sys.executable, "-m", "lumbargrade"]
    subprocess.run([*lg, "phantom", "--out", str(base / "studies"), "--patients", str(n), "--seed", str(seed)],
                   check=True, stdout=subprocess.DEVNULL)
    subprocess.run([*lg, "analyze", "--batch", str(base / "studies"), "--out", str(out)], check=True,
                   stdout=subprocess.DEVNULL)
    (base / "done").write_text("ok")
    return out


def start_server(root: Path) -> tuple[subprocess.Popen, str, float]:
    t0 = time.perf_counter()
    proc = subprocess.Popen([sys.executable, "-m", "lumbargrade", "review", str(root), "--port", "0",
                             "--token", TOKEN], stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    while True:
        line = proc.stdout.readline()
        if not line:
            raise RuntimeError("lumbargrade review stopped before printing its address")
        if line.startswith("open http://"):
            return proc, line.split()[1].split("/?")[0], time.perf_counter() - t0


STROKE = """() => {
  const a = window.lgReview.axial, lab = a.labels, w = a.cols;
  let r1 = -1, c0 = 1e9, c1 = -1;
  for (let i = 0; i < lab.length; i++) if (lab[i] === 1) {
    const r = Math.floor(i / w), c = i % w; r1 = Math.max(r1, r); c0 = Math.min(c0, c); c1 = Math.max(c1, c); }
  const b = a.canvas.getBoundingClientRect(), v = a.view;
  const xy = (r, c) => [b.left + v.ox + (c + 0.5) * v.s, b.top + v.oy + (r + 0.5) * v.s * a.aspect];
  return [xy(r1 + 1, c0 + 1), xy(r1 + 1, c1 - 1)];
}"""

PUT_TIME = """() => { const e = performance.getEntriesByType('resource').filter(x => x.name.includes('/labels?by='));
  const x = e[e.length - 1]; return x ? (x.responseEnd - x.startTime) / 1000 : null; }"""


def run(args: argparse.Namespace) -> dict[str, Any]:
    from playwright.sync_api import sync_playwright

    info = machine()
    src = cohort(args.studies, args.seed)
    work = Path(tempfile.mkdtemp(prefix="lumbargrade-bench-review-"))
    root = work / "root"
    shutil.copytree(src, root, ignore=shutil.ignore_patterns("batch_log.jsonl"))
    proc, base, t_start = start_server(root)
    res: dict[str, Any] = {"machine": info, "studies": args.studies, "edits_per_study": args.edits,
                           "server_start_s": round(t_start, 3), "open_first_s": [], "open_again_s": [],
                           "edit_s": [], "edit_put_s": [], "edit_server_cpu_s": [], "open_server_cpu_s": [],
                           "edit_all_cpu_s": [], "open_all_cpu_s": [],
                           "first_edit_s": None}
    chromium = shutil.which("chromium") or "/usr/bin/chromium"
    try:
        time.sleep(args.warm_up_s)  # let the server's warm-up (models, writers) finish, as it would in use
        with sync_playwright() as p:
            browser = p.chromium.launch(executable_path=chromium, args=ARGS)
            page = browser.new_page(viewport={"width": 1400, "height": 1700})
            page.set_default_timeout(300_000)
            page.goto(f"{base}/?token={TOKEN}")
            page.wait_for_selector("body[data-ready='1']")
            page.fill("#reader", "Benchmark")
            page.dispatch_event("#reader", "change")
            ids = [r.get_attribute("data-id") for r in page.locator("#worklist tbody tr").all()]
            for key in ("open_first_s", "open_again_s"):
                for sid in ids:
                    c, call = tree_cpu_s(proc.pid), tree_cpu_s(os.getpid())
                    t = time.perf_counter()
                    page.goto(f"{base}/study/{sid}#L4-L5")
                    page.wait_for_selector("body[data-level='L4/L5']")
                    res[key].append(round(time.perf_counter() - t, 3))
                    res["open_server_cpu_s"].append(round(tree_cpu_s(proc.pid) - c, 3))
                    res["open_all_cpu_s"].append(round(tree_cpu_s(os.getpid()) - call, 3))
            for sid in ids:
                page.goto(f"{base}/study/{sid}#L4-L5")
                page.wait_for_selector("body[data-level='L4/L5']")
                page.click("[data-tool=brush]")
                page.select_option("#label", "1")
                for _ in range(args.edits):
                    a, b = page.evaluate(STROKE)
                    page.mouse.move(*a)
                    page.mouse.down()
                    page.mouse.move(*b, steps=8)
                    page.mouse.up()
                    c, call = tree_cpu_s(proc.pid), tree_cpu_s(os.getpid())
                    t = time.perf_counter()
                    page.click("#save")
                    page.wait_for_selector("#messages .msg:has-text('saved and regraded')")
                    page.wait_for_selector("body[data-level='L4/L5']")
                    dt = round(time.perf_counter() - t, 3)
                    if res["first_edit_s"] is None:
                        res["first_edit_s"] = dt
                    else:
                        res["edit_s"].append(dt)
                        res["edit_put_s"].append(round(page.evaluate(PUT_TIME), 3))
                        res["edit_server_cpu_s"].append(round(tree_cpu_s(proc.pid) - c, 3))
                        res["edit_all_cpu_s"].append(round(tree_cpu_s(os.getpid()) - call, 3))
                    page.evaluate("document.getElementById('messages').replaceChildren()")
            browser.close()
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            proc.kill()
        shutil.rmtree(work, ignore_errors=True)
    for key in ("open_first_s", "open_again_s", "edit_s", "edit_put_s", "edit_server_cpu_s", "open_server_cpu_s",
                "edit_all_cpu_s", "open_all_cpu_s"):
        vals = res[key]
        res[key[: -len("_s")] + "_median_s"] = round(statistics.median(vals), 3) if vals else None
    info["loadavg_at_end"] = [round(v, 2) for v in os.getloadavg()]
    info["python_loop_1e7_s_at_end"] = loop_s()
    return res


def table(res: dict[str, Any]) -> str:
    m = res["machine"]
    lines = [
        f"CPU: {m.get('cpu', '?')} ({m['cpus']} cores; {', '.join(m.get('cpu_flags', []))}); load average "
        f"{m['loadavg_at_start'][0]} -> {m['loadavg_at_end'][0]}; 10**7-step Python loop "
        f"{m['python_loop_1e7_s']} s -> {m['python_loop_1e7_s_at_end']} s",
        f"{res['studies']} phantom studies, {res['edits_per_study']} edits each; server start to address: {res['server_start_s']} s",
        f"open a study page, first time (median): {res['open_first_median_s']} s   (target 1 s)",
        f"open a study page, again (median):      {res['open_again_median_s']} s",
        f"first edit after start (save -> regraded page): {res['first_edit_s']} s",
        f"edit, save -> regraded page (median):   {res['edit_median_s']} s   (target 2 s)",
        f"  of which the PUT request (server):    {res['edit_put_median_s']} s",
        f"server CPU time (user + system, with its drawing process): per edit {res['edit_server_cpu_median_s']} s, "
        f"per page opened {res['open_server_cpu_median_s']} s",
        f"CPU time of server, browser and driver together: per edit {res['edit_all_cpu_median_s']} s, "
        f"per page opened {res['open_all_cpu_median_s']} s (about the wall time on an idle machine)",
    ]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--studies", type=int, default=3)
    ap.add_argument("--edits", type=int, default=3, help="edits per study (default 3)")
    ap.add_argument("--seed", type=int, default=7)
    ap.add_argument("--warm-up-s", type=float, default=20.0,
                    help="seconds to wait after the server starts (its warm-up loads the models)")
    ap.add_argument("--out", default=str(HERE / "results" / "review_app.json"))
    args = ap.parse_args(argv)
    res = run(args)
    print(table(res))
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(res, indent=2) + "\n")
    print(f"written: {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
