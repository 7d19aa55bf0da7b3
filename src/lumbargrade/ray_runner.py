"""``analyze --batch ... --ray [ADDRESS]``: the batch on a Ray cluster (the ``[scale]`` extra).

One actor per CPU slot (``--ray-actors`` to choose) loads the model pack once and keeps it; each
study is one actor call that runs exactly what one ``--processes`` part runs for it
(:func:`analyze_study_entry`: read the study, skip it when its folder already holds
``report.json``, analyze, write the same per-study folder through a temporary folder). The driver
hands out studies as actors free up and is the only writer of ``OUT/batch_log.jsonl``, one line per
study as it finishes, so a killed driver loses only the studies in flight: a rerun skips what is
done. A study that fails is logged and the batch goes on; an actor that dies is restarted and its
study logged as failed.

Without ADDRESS a local Ray is started (``ray.init``) with this machine's cores and shut down at
the end; with ADDRESS (``auto``, ``ray://host:10001`` or ``host:6379``) the driver joins that
cluster, whose nodes must have lumbargrade installed and see the study and output paths (shared
storage). Ray itself is imported only here.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path
from typing import Any

from .errors import InputError, OutputError

__all__ = ["analyze_study_entry", "run_ray"]


def _import_ray():
    try:
        import ray
    except ImportError:
        raise InputError("--ray", "needs Ray, which is not installed: pip install 'lumbargrade[scale]'") from None
    return ray


def analyze_study_entry(path: Path, out: Path, pack: Any, config: Any, rules: Any, outputs: Any,
                        overwrite: bool, study: Any = None, err: str | None = None) -> dict[str, Any]:
    """Read (unless ``study`` or its reading error ``err`` is given), skip-if-done or analyze one
    study of a batch; returns its ``batch_log.jsonl`` entry (without the ``finished`` time). Every
    batch runner (one process, ``--processes``, ``--ray``) calls this for each study."""
    from .analysis_runner import _safe, analyze_one
    from .io import read_study

    entry: dict[str, Any] = {"input": str(path)}
    if study is None and err is None:
        try:
            study = read_study(path, rules=rules)
        except InputError as e:
            err = e.one_line()
        except Exception as e:  # one bad study must not stop the batch
            err = f"{path}: {type(e).__name__}: {e}"
    if study is not None:
        try:
            uid = study.study_instance_uid or Path(path).stem
            dest = Path(out) / _safe(uid)
            entry["study_instance_uid"] = uid
            if (dest / "report.json").is_file() and not overwrite:
                entry["status"] = "skipped (done)"
            else:
                try:
                    analyze_one(path, dest, pack, config, overwrite=True, study=study, outputs=outputs)
                    entry["status"] = "ok"
                except InputError as e:
                    err = e.one_line()
                except OutputError as e:  # no report.json: analyzed again on the next run
                    err = f"{path}: {e.one_line()}"
                except Exception as e:
                    err = f"{path}: {type(e).__name__}: {e}"
        finally:
            study.close()
    if err is not None:
        entry["status"] = "error"
        entry["error"] = err
    return entry


class _Analyzer:
    """A Ray actor body: the model pack loaded once, one study per call."""

    def __init__(self, settings: dict[str, Any]) -> None:
        from .modelpack import load_pack
        from .pipeline import AnalysisConfig
        from .runtime import set_num_threads

        self.s = settings
        set_num_threads(settings["threads"], torch_threads=1 if settings["threads_default"] else settings["threads"])
        if "html" in settings["outputs"]:
            from .report import drawing_process

            drawing_process.start()
        self.pack = load_pack(settings["models"], runtime=settings["runtime"])
        self.config = AnalysisConfig(slice_choice=settings["slice_choice"])

    def ready(self) -> int:
        return os.getpid()

    def analyze(self, path: str, shown: str) -> dict[str, Any]:
        """Study ``path`` (absolute); ``shown`` is how the user gave it (the log's ``input``)."""
        t0 = time.perf_counter()
        s = self.s
        entry = analyze_study_entry(Path(path), Path(s["out"]), self.pack, self.config, s["rules"],
                                    s["outputs"], s["overwrite"])
        entry["input"] = shown
        entry["seconds"] = round(time.perf_counter() - t0, 3)
        entry["worker_pid"] = os.getpid()
        return entry


def _init_ray(ray: Any, address: str | None, cpus: int | None) -> bool:
    """Start a local Ray (returns True: this driver owns it) or join ``address``."""
    import logging

    kw: dict[str, Any] = {"logging_level": logging.ERROR, "log_to_driver": False,
                          "configure_logging": True}
    if address in (None, "", "local"):
        for attempt in (1, 2):  # on a busy machine Ray's own 30 s start-up limit can pass once
            before = _ray_processes()
            t0 = time.time()
            try:
                ray.init(num_cpus=cpus or os.cpu_count() or 1, include_dashboard=False, **kw)
                return True
            except Exception as e:
                try:  # what did start must not outlive us
                    ray.shutdown()
                except Exception:
                    pass
                _kill([p for p in _ray_processes() if p not in before and p.create_time() >= t0 - 1])
                if attempt == 2:
                    raise InputError("--ray", f"cannot start a local Ray ({type(e).__name__}: {e}; Ray gives "
                                     "its processes 30 s to start: on a busy machine, retry when it is less "
                                     "loaded)") from None
                print("lumbargrade: Ray did not start in time; trying once more", file=sys.stderr)
    try:
        ray.init(address=address, **kw)
    except Exception as e:
        raise InputError("--ray", f"cannot connect to the Ray cluster at {address} ({type(e).__name__}: "
                         f"{' '.join(str(e).split())[:200]})") from None
    return False


def _ray_processes() -> list:
    """This user's Ray processes on this machine (raylet, gcs_server, ``ray::`` workers and agents)."""
    try:
        import psutil
    except ImportError:
        return []
    out = []
    for p in psutil.process_iter(["name", "cmdline", "uids"]):
        try:
            name = p.info["name"] or ""
            cmd = " ".join(p.info["cmdline"] or [])
            if p.info["uids"] and p.info["uids"].real != os.getuid():
                continue
            if name in ("raylet", "gcs_server") or cmd.startswith("ray::") or "/ray/" in cmd and (
                    "dashboard" in cmd or "log_monitor" in cmd or "runtime_env" in cmd or "monitor.py" in cmd):
                out.append(p)
        except Exception:
            continue
    return out


def _kill(procs: list) -> None:
    try:
        import psutil
    except ImportError:
        return
    for p in procs:
        try:
            p.terminate()
        except psutil.Error:
            pass
    _, alive = psutil.wait_procs(procs, timeout=5)
    for p in alive:
        try:
            p.kill()
        except psutil.Error:
            pass


_REAPER = """
import signal, sys, time
import ray  # noqa: F401 - puts Ray's bundled psutil on sys.path
import psutil
procs = []
for item in sys.argv[1:]:
    pid, created = item.split(":")
    try:
        p = psutil.Process(int(pid))
        if abs(p.create_time() - float(created)) < 1e-3:
            procs.append(p)
    except psutil.Error:
        pass
signal.signal(signal.SIGINT, signal.SIG_IGN)
sys.stdin.buffer.read()  # returns when the driver closes the pipe or dies
time.sleep(1.0)
alive = [p for p in procs if p.is_running()]
for p in alive:
    try:
        p.terminate()
    except psutil.Error:
        pass
gone, alive = psutil.wait_procs(alive, timeout=5)
for p in alive:
    try:
        p.kill()
    except psutil.Error:
        pass
"""


def _start_reaper(ray: Any) -> Any:
    """A small process that ends the local Ray's processes once this driver is gone, however it
    ends (a SIGKILLed driver leaves Ray's agents running otherwise). None if it cannot start."""
    import subprocess

    try:
        import psutil

        node = ray._private.worker._global_node
        roots = [info.process.pid for infos in node.all_processes.values() for info in infos]
        procs = []
        for pid in roots:
            p = psutil.Process(pid)
            procs += [p, *p.children(recursive=True)]
        args = [f"{p.pid}:{p.create_time()!r}" for p in procs]
        return subprocess.Popen([sys.executable, "-c", _REAPER, *args], stdin=subprocess.PIPE,
                                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    except Exception:  # private API moved: ray.shutdown() still runs on a normal end
        return None


def _done_from_log(log: Path, out: Path) -> dict[str, str]:
    """``input -> StudyInstanceUID`` of the studies the log shows finished whose folder still holds
    report.json (so a rerun of a large batch does not read them again to learn their UID)."""
    from .analysis_runner import _safe

    done: dict[str, str] = {}
    if not log.is_file():
        return done
    with log.open(encoding="utf-8", errors="replace") as f:
        for line in f:
            try:
                e = json.loads(line)
            except ValueError:
                continue
            uid = e.get("study_instance_uid")
            if e.get("status") in ("ok", "skipped (done)") and uid and (out / _safe(uid) / "report.json").is_file():
                done[e["input"]] = uid
    return done


def run_ray(studies: list[Path], out: Path, args: argparse.Namespace, outputs: Any, rules: Any) -> int:
    """The batch on Ray (see the module doc); returns the exit status (1 when a study failed)."""
    import datetime as _dt
    from collections import deque

    from tqdm import tqdm

    from .analysis_runner import _clean_stale_temporaries
    from .runtime import default_threads

    ray = _import_ray()
    out.mkdir(parents=True, exist_ok=True)
    _clean_stale_temporaries(out)
    log = out / "batch_log.jsonl"
    address = getattr(args, "ray", None)
    local = address in (None, "", "local")
    owns = _init_ray(ray, address, None)
    reaper = _start_reaper(ray) if owns else None
    try:
        slots = int(ray.cluster_resources().get("CPU", 1))
        n_actors = int(getattr(args, "ray_actors", None) or slots)
        if n_actors < 1:
            raise InputError("--ray-actors", f"must be at least 1, got {n_actors}")
        done = {} if args.overwrite else _done_from_log(log, out)
        queue = deque((str(p.absolute()), str(p)) for p in studies if str(p) not in done)
        pending: dict[Any, tuple[int, str]] = {}
        counts = {"ok": 0, "skipped (done)": 0, "error": 0}
        with log.open("a") as logf:  # studies the log shows done are not read again
            for p in studies:
                if str(p) in done:
                    entry = {"input": str(p), "study_instance_uid": done[str(p)], "status": "skipped (done)",
                             "finished": _dt.datetime.now(_dt.UTC).isoformat(timespec="milliseconds")}
                    logf.write(json.dumps(entry) + "\n")
                    counts["skipped (done)"] += 1
        n_actors = max(1, min(n_actors, len(queue)))
        threads_default = args.threads is None
        threads = int(args.threads) if args.threads is not None else (
            default_threads(n_actors) if local else 1)
        settings = {"out": str(out.resolve()), "models": args.models, "runtime": getattr(args, "runtime", None),
                    "slice_choice": args.slice_choice, "rules": rules, "outputs": tuple(outputs),
                    "overwrite": bool(args.overwrite), "threads": threads, "threads_default": threads_default}
        if not queue:
            n_actors = 0
            print(f"0 analyzed, {counts['skipped (done)']} already done, 0 failed; outputs in {out} (log: {log})")
            return 0
        Actor = ray.remote(num_cpus=1, max_restarts=3)(_Analyzer)
        actors = [Actor.remote(settings) for _ in range(n_actors)]
        try:
            ray.get([a.ready.remote() for a in actors])
        except Exception as e:
            raise InputError("--ray", f"the analysis actors did not start ({type(e).__name__}: "
                             f"{' '.join(str(e).split())[:300]})") from None

        def submit(k: int) -> None:
            if queue:
                path, shown = queue.popleft()
                pending[actors[k].analyze.remote(path, shown)] = (k, shown)

        for k in range(n_actors):  # two calls in flight per actor: no idle gap between studies
            submit(k)
            submit(k)
        bar = tqdm(total=len(studies), initial=len(studies) - len(queue), desc=f"studies (Ray, {n_actors} actors)",
                   unit="study", file=sys.stderr)
        with log.open("a") as logf:
            while pending:
                done, _ = ray.wait(list(pending), num_returns=1)
                ref = done[0]
                k, path = pending.pop(ref)
                try:
                    entry = ray.get(ref)
                except Exception as e:  # the actor died (killed, out of memory): it is restarted
                    entry = {"input": path, "status": "error",
                             "error": f"{path}: analysis worker failed ({type(e).__name__}: "
                                      f"{' '.join(str(e).split())[:200]})"}
                if entry.get("status") == "error":
                    print(f"lumbargrade: error: {entry['error']}", file=sys.stderr)
                counts[entry["status"]] = counts.get(entry["status"], 0) + 1
                entry["finished"] = _dt.datetime.now(_dt.UTC).isoformat(timespec="milliseconds")
                logf.write(json.dumps(entry) + "\n")
                logf.flush()
                bar.update(1)
                submit(k)
        bar.close()
    finally:
        if owns or ray.is_initialized():
            ray.shutdown()
        if reaper is not None:
            reaper.stdin.close()  # the reaper ends whatever ray.shutdown() left
            try:
                reaper.wait(timeout=15)
            except Exception:
                pass
    print(f"{counts['ok']} analyzed, {counts['skipped (done)']} already done, {counts['error']} failed "
          f"(Ray, {n_actors} actors); outputs in {out} (log: {log})")
    return 0 if counts["error"] == 0 else 1
