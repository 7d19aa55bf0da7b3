"""The DICOM node: a storage SCP (pynetdicom) that receives MR studies, analyzes each complete
study in a pool of worker processes (the same code as ``lumbargrade analyze``) and sends the SEG
and SR to the configured destinations, with the state of every study on disk
(:mod:`lumbargrade.service.queue`).

Threads: pynetdicom's server (one thread per association) stores instances; the scheduler
thread marks settled studies complete, hands them to the workers and records their results; the
sender thread delivers analyzed studies, retrying failures with back-off. Log lines name studies
by a hash of their UID (:func:`lumbargrade.service.addresses.tag`), never by patient data.
"""

from __future__ import annotations

import json
import logging
import os
import threading
import time
from collections import deque
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from ..errors import InputError
from .addresses import AllowRule, Destination, tag

__all__ = ["STORAGE_CLASSES", "Node", "NodeConfig"]

LOG = logging.getLogger("lumbargrade.node")

#: The storage SOP classes accepted: MR Image, Enhanced MR Image, Enhanced MR Color Image,
#: Legacy Converted Enhanced MR Image.
STORAGE_CLASSES = {
    "1.2.840.10008.5.1.4.1.1.4": "MR Image Storage",
    "1.2.840.10008.5.1.4.1.1.4.1": "Enhanced MR Image Storage",
    "1.2.840.10008.5.1.4.1.1.4.3": "Enhanced MR Color Image Storage",
    "1.2.840.10008.5.1.4.1.1.4.4": "Legacy Converted Enhanced MR Image Storage",
}
#: Transfer syntaxes accepted (senders such as Orthanc transcode others to one of these):
#: Explicit VR Little Endian, Implicit VR Little Endian, Deflated Explicit VR Little Endian,
#: RLE Lossless (decoded by pydicom itself).
TRANSFER_SYNTAXES = ["1.2.840.10008.1.2.1", "1.2.840.10008.1.2", "1.2.840.10008.1.2.1.99", "1.2.840.10008.1.2.5"]

_GIB = 1024 ** 3


@dataclass
class NodeConfig:
    """Settings of :class:`Node` (saved as ``node.json`` in the store folder at every start)."""

    store: str
    allow: list[AllowRule]
    ae_title: str = "LUMBARGRADE"
    bind: str = "0.0.0.0"
    port: int = 11112
    settle_s: float = 30.0  # a study is complete when no instance arrived for this long
    workers: int = 1
    destinations: list[Destination] = field(default_factory=list)
    outputs: tuple[str, ...] = ("seg", "sr")
    models: str | None = None
    runtime: str | None = None
    threads: int | None = None  # per worker (default: the cores divided among the workers)
    max_pdu: int = 262144  # bytes; the largest PDU this node accepts
    max_associations: int = 10
    max_association_bytes: int = 4 * _GIB  # per association, all instances together
    max_instances: int = 5000  # per study
    disk_quota_bytes: int = 50 * _GIB  # received instances not yet delivered, all studies
    tls_cert: str | None = None
    tls_key: str | None = None
    tls_ca: str | None = None  # given: callers must present a certificate signed by it
    keep_instances: bool = False  # keep received instances after delivery
    retry_base_s: float = 2.0
    retry_cap_s: float = 600.0
    timeout_s: float = 30.0  # network timeouts (association, DIMSE, HTTP)
    send_threads: int = 4  # studies delivered at the same time (one association each)

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["allow"] = [str(a) for a in self.allow]
        d["destinations"] = [x.name for x in self.destinations]
        return d


class Node:
    """One running node. :meth:`start` returns once it listens; :meth:`stop` ends it."""

    def __init__(self, config: NodeConfig) -> None:
        from .queue import StudyQueue

        self.config = config
        self.store = Path(config.store)
        self.pack_label = _pack_label(config.models)
        self._lockfile: Any = None
        self._take_store_lock()  # before reading the queue: it tidies half-written files
        self.queue = StudyQueue(self.store)
        self._stop = threading.Event()
        self._wake_sender = threading.Event()
        self._wake_scheduler = threading.Event()
        self._pending: deque[str] = deque()
        self._in_flight: dict[Any, tuple[Any, int, float]] = {}
        self._crashes: dict[str, int] = {}
        self._assoc: dict[int, dict[str, Any]] = {}
        self._assoc_lock = threading.Lock()
        self._threads: list[threading.Thread] = []
        self._server: Any = None
        self._ae: Any = None
        self._pool: Any = None
        self._limit_logged: set[str] = set()

    # -- life cycle ----------------------------------------------------------------------------
    def start(self) -> None:
        from pynetdicom import AE, evt
        from pynetdicom.sop_class import Verification

        cfg = self.config
        (self.store / "node.json").write_text(json.dumps(cfg.to_dict(), indent=2, default=str) + "\n")
        ssl_context = self._server_ssl_context()
        self._start_pool()
        self._resume()
        ae = AE(ae_title=cfg.ae_title)
        ae.maximum_pdu_size = int(cfg.max_pdu)
        ae.maximum_associations = int(cfg.max_associations)
        ae.acse_timeout = ae.network_timeout = ae.dimse_timeout = cfg.timeout_s
        ae.add_supported_context(Verification)
        for uid in STORAGE_CLASSES:
            ae.add_supported_context(uid, TRANSFER_SYNTAXES)
        handlers = [
            (evt.EVT_REQUESTED, self._on_requested),
            (evt.EVT_C_ECHO, lambda event: 0x0000),
            (evt.EVT_C_STORE, self._on_store),
            (evt.EVT_CONN_CLOSE, self._on_close),
        ]
        try:
            self._server = ae.start_server((cfg.bind, int(cfg.port)), block=False, evt_handlers=handlers,
                                           ssl_context=ssl_context)
        except OSError as e:
            self._stop_pool()
            raise InputError("--port", f"cannot listen on {cfg.bind}:{cfg.port} ({e.strerror or e})") from e
        self._ae = ae
        for name, target in (("scheduler", self._scheduler), ("sender", self._sender)):
            t = threading.Thread(target=target, name=f"lumbargrade-{name}", daemon=True)
            t.start()
            self._threads.append(t)
        dests = ", ".join(d.name for d in cfg.destinations) or "none (results stay in the store)"
        LOG.info("node %s listening on %s:%d%s; %d worker(s), pack %s; settle %.0f s; allowed callers: %s; "
                 "results to: %s", cfg.ae_title, cfg.bind, self.port, " (TLS)" if ssl_context else "",
                 cfg.workers, self.pack_label, cfg.settle_s, ", ".join(str(a) for a in cfg.allow), dests)

    @property
    def port(self) -> int:
        if self._server is not None:
            return int(self._server.server_address[1])
        return int(self.config.port)

    def wait(self) -> None:
        """Block until :meth:`stop` is called (from a signal handler or another thread)."""
        while not self._stop.wait(0.5):
            pass

    def stop(self) -> None:
        if self._stop.is_set() and self._server is None:
            return
        self._stop.set()
        self._wake_sender.set()
        if self._server is not None:
            self._server.shutdown()
            self._server = None
        for t in self._threads:
            t.join(timeout=10)
        self._stop_pool()
        if self._lockfile is not None:
            self._lockfile.close()
            self._lockfile = None
        c = self.queue.counts()
        LOG.info("node stopped; studies: %s", ", ".join(f"{k} {v}" for k, v in c.items() if v))

    # -- set-up helpers ---------------------------------------------------------------------------
    def _take_store_lock(self) -> None:
        import fcntl

        self.store.mkdir(parents=True, exist_ok=True)
        f = open(self.store / "node.lock", "a+")
        try:
            fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            f.close()
            raise InputError(self.store, "another lumbargrade node is using this store folder") from None
        f.seek(0)
        f.truncate()
        f.write(f"{os.getpid()}\n")
        f.flush()
        self._lockfile = f

    def _server_ssl_context(self) -> Any:
        cfg = self.config
        if not (cfg.tls_cert or cfg.tls_key):
            return None
        import ssl

        if not (cfg.tls_cert and cfg.tls_key):
            raise InputError("--tls-cert/--tls-key", "TLS needs both a certificate and its private key")
        ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        try:
            ctx.load_cert_chain(cfg.tls_cert, cfg.tls_key)
        except (OSError, ssl.SSLError) as e:
            raise InputError(cfg.tls_cert, f"cannot load the TLS certificate and key ({e})") from e
        if cfg.tls_ca:
            try:
                ctx.load_verify_locations(cfg.tls_ca)
            except (OSError, ssl.SSLError) as e:
                raise InputError(cfg.tls_ca, f"cannot load the CA certificates ({e})") from e
            ctx.verify_mode = ssl.CERT_REQUIRED
        return ctx

    def _start_pool(self) -> None:
        import multiprocessing as mp
        from concurrent.futures import ProcessPoolExecutor

        from ..runtime import default_threads
        from .worker import init_worker, warm

        cfg = self.config
        threads = cfg.threads or default_threads(cfg.workers)
        self._pool = ProcessPoolExecutor(
            max_workers=cfg.workers, mp_context=mp.get_context("spawn"), initializer=init_worker,
            initargs=(cfg.models, cfg.runtime, threads, tuple(cfg.outputs)),
        )
        # start every worker now: model loading overlaps the first study
        self._warm = [self._pool.submit(warm) for _ in range(cfg.workers)]
        self._warm_t0 = time.monotonic()

    def _stop_pool(self) -> None:
        pool, self._pool = self._pool, None
        if pool is None:
            return
        procs = list((getattr(pool, "_processes", None) or {}).values())
        pool.shutdown(wait=False, cancel_futures=True)
        for p in procs:  # an analysis in progress is abandoned: it is redone at the next start
            if p.is_alive():
                p.terminate()
        for p in procs:
            p.join(timeout=5)

    def _resume(self) -> None:
        """After a restart: studies complete but not analyzed go back to the analysis queue (in the
        order they were complete); analyzed ones are picked up by the sender."""
        from ..analysis_runner import _clean_stale_temporaries

        todo = []
        for rec in self.queue.iter_records():
            g = self.queue.generation_dir(rec)
            if g.is_dir():
                _clean_stale_temporaries(g)
            if rec.state == "complete":
                todo.append(rec)
            elif rec.state == "receiving":
                LOG.info("study %s: resumed while receiving (%d instances); settle clock restarted",
                         tag(rec.study_uid), self.queue.instance_count(rec.key))
        for rec in sorted(todo, key=lambda r: r.times.get("complete", 0.0)):
            self._pending.append(rec.key)
        n_sending = sum(1 for r in self.queue.iter_records() if r.state == "analyzed")
        if todo or n_sending:
            LOG.info("resuming: %d studies to analyze, %d to deliver", len(todo), n_sending)

    # -- association handlers (pynetdicom threads) ------------------------------------------------
    def _on_requested(self, event: Any) -> None:
        assoc = event.assoc
        calling = str(assoc.requestor.primitive.calling_ae_title).strip()
        host = str(assoc.requestor.address)
        if not any(rule.matches(calling, host) for rule in self.config.allow):
            LOG.warning("association from %s@%s rejected: calling AE title and host not in the allowed list",
                        calling, host)
            assoc.acse.send_reject(0x01, 0x01, 0x03)  # permanent, service user, calling AE not recognised
            return
        with self._assoc_lock:
            self._assoc[id(assoc)] = {"caller": f"{calling}@{host}", "bytes": 0, "stored": 0, "duplicates": 0,
                                      "refused": 0, "studies": set(), "t0": time.monotonic()}

    def _stats(self, event: Any) -> dict[str, Any]:
        with self._assoc_lock:
            return self._assoc.setdefault(id(event.assoc), {
                "caller": "?", "bytes": 0, "stored": 0, "duplicates": 0, "refused": 0, "studies": set(),
                "t0": time.monotonic()})

    def _on_store(self, event: Any) -> int:
        st = self._stats(event)
        caller = st["caller"]
        raw = event.request.DataSet
        size = len(raw.getvalue()) if hasattr(raw, "getvalue") else 0
        st["bytes"] += size
        if st["bytes"] > self.config.max_association_bytes:
            st["refused"] += 1
            if not st.get("size_logged"):
                st["size_logged"] = True
                LOG.warning("association from %s: more than %s received: further instances refused "
                            "(status 0xA700)", caller, _size(self.config.max_association_bytes))
            return 0xA700
        try:
            ds = event.dataset
            study_uid = str(ds.StudyInstanceUID).strip()
            sop_uid = str(ds.SOPInstanceUID).strip()
            sop_class = str(ds.SOPClassUID).strip()
        except Exception as e:  # undecodable or without the identifying attributes
            st["refused"] += 1
            what = _short_error(e)
            LOG.warning("association from %s: instance %s refused (status 0xC210): it cannot be decoded or "
                        "lacks StudyInstanceUID/SOPInstanceUID/SOPClassUID (%s); the association continues",
                        caller, tag(str(event.request.AffectedSOPInstanceUID)), what)
            return 0xC210
        if not study_uid or sop_uid != str(event.request.AffectedSOPInstanceUID).strip() or (
                sop_class != str(event.request.AffectedSOPClassUID).strip()):
            st["refused"] += 1
            LOG.warning("association from %s: instance %s refused (status 0xA900): its SOP class/instance UID "
                        "does not match the C-STORE request, or it has no StudyInstanceUID; the association "
                        "continues", caller, tag(sop_uid))
            return 0xA900
        key = self.queue.key_of(study_uid)
        if self.queue.instance_count(key) >= self.config.max_instances:
            st["refused"] += 1
            self._log_limit(f"n:{key}", "study %s: more than %d instances: further instances refused (status "
                            "0xA700)", tag(study_uid), self.config.max_instances)
            return 0xA700
        if self.queue.bytes_used + size > self.config.disk_quota_bytes:
            st["refused"] += 1
            self._log_limit("quota", "disk quota of %s reached: instance of study %s refused (status "
                            "0xA700)", _size(self.config.disk_quota_bytes), tag(study_uid))
            return 0xA700
        self._limit_logged.discard("quota")
        try:
            data = event.encoded_dataset()
            what, rec, before = self.queue.add_instance(study_uid, sop_uid, data)
        except OSError as e:
            st["refused"] += 1
            LOG.error("study %s: instance %s could not be stored (%s): refused (status 0xA700)",
                      tag(study_uid), tag(sop_uid), e.strerror or e)
            return 0xA700
        if what == "duplicate":
            st["duplicates"] += 1
        else:
            st["stored"] += 1
        if study_uid not in st["studies"]:
            st["studies"].add(study_uid)
            if what == "reopened":
                LOG.info("study %s: new instances after it was %s: receiving again (generation %d)",
                         tag(study_uid), before, rec.generation)
            else:
                LOG.info("study %s: receiving from %s", tag(study_uid), caller)
        return 0x0000

    def _on_close(self, event: Any) -> None:
        with self._assoc_lock:
            st = self._assoc.pop(id(event.assoc), None)
        if not st or not (st["stored"] or st["duplicates"] or st["refused"]):
            return
        LOG.info("association from %s closed: %d instances stored, %d duplicates, %d refused, %.1f MB, "
                 "%d studies (%.1f s)", st["caller"], st["stored"], st["duplicates"], st["refused"],
                 st["bytes"] / 2 ** 20, len(st["studies"]), time.monotonic() - st["t0"])

    def _log_limit(self, key: str, msg: str, *args: Any) -> None:
        if key not in self._limit_logged:
            self._limit_logged.add(key)
            LOG.warning(msg, *args)

    # -- scheduler thread ---------------------------------------------------------------------------
    def _seed(self, study_uid: str, sop_uids: list[str]) -> str:
        from .queue import uid_seed

        return uid_seed(study_uid, self.pack_label, sop_uids, tuple(self.config.outputs))

    def _scheduler(self) -> None:
        while not self._stop.is_set():
            try:
                self._schedule_once()
            except Exception:  # the node keeps running; the traceback names no patient data
                LOG.exception("scheduler error")
            # a finished analysis wakes it at once (the next study starts without a polling gap);
            # otherwise it looks for settled studies 5 times a second
            self._wake_scheduler.wait(0.2)
            self._wake_scheduler.clear()

    def _schedule_once(self) -> None:
        warm = getattr(self, "_warm", None)
        if warm and all(f.done() for f in warm):
            self._warm = None
            bad = [f for f in warm if f.exception() is not None]
            if bad:
                LOG.error("analysis workers could not start: %s", _short_error(bad[0].exception()))
            else:
                LOG.info("%d analysis worker(s) ready (models loaded and warmed up in %.1f s)", len(warm),
                         time.monotonic() - self._warm_t0)
                why = next((f.result() for f in warm if f.result()), None)
                if why:
                    LOG.warning("the warm-up analysis failed (%s): the first study of a worker takes longer", why)
        for rec in self.queue.settled(self.config.settle_s):
            n = self.queue.instance_count(rec.key)
            what = self.queue.mark_complete(rec, self._seed)
            if what == "complete":
                LOG.info("study %s: complete (%d instances, no new instance for %.0f s); queued for analysis",
                         tag(rec.study_uid), n, self.config.settle_s)
                self._pending.append(rec.key)
            elif what == "empty":
                LOG.warning("study %s: no instance of it was stored; nothing to analyze", tag(rec.study_uid))
            else:
                LOG.info("study %s: received again with no new instance (%d): already analyzed and delivered, "
                         "not analyzed or sent again", tag(rec.study_uid), n)
        self._collect_finished()
        while self._pending and len(self._in_flight) < self.config.workers and self._pool is not None:
            self._dispatch(self._pending.popleft())

    def _dispatch(self, key: str) -> None:
        from .worker import analyze_received, result_files

        rec = self.queue.records.get(key)
        if rec is None or rec.state != "complete":
            return
        done = self.queue.existing_result(rec)
        if done is not None:  # finished before a restart: not analyzed twice
            report = json.loads((done / "report.json").read_text())
            if self.queue.mark_analyzed(rec, rec.revision, result_files(report)):
                LOG.info("study %s: its analysis had finished before the restart; not analyzed again",
                         tag(rec.study_uid))
                self._wake_sender.set()
            return
        out = self.queue.result_dir(rec)
        future = self._pool.submit(analyze_received, str(self.queue.instances_dir(rec)), str(out), rec.seed)
        self._in_flight[future] = (rec, rec.revision, time.monotonic())
        future.add_done_callback(lambda _: self._wake_scheduler.set())
        LOG.info("study %s: analysis started", tag(rec.study_uid))

    def _collect_finished(self) -> None:
        from concurrent.futures.process import BrokenProcessPool

        for future in [f for f in self._in_flight if f.done()]:
            rec, revision, t0 = self._in_flight.pop(future)
            try:
                res = future.result()
            except BrokenProcessPool:
                n = self._crashes[rec.key] = self._crashes.get(rec.key, 0) + 1
                LOG.error("study %s: the analysis worker died (out of memory?); attempt %d", tag(rec.study_uid), n)
                if n >= 3:
                    self.queue.mark_failed(rec, revision, "the analysis worker died 3 times")
                else:
                    self._pending.appendleft(rec.key)
                self._restart_pool()
                return
            except Exception as e:  # cancelled at shutdown or an unpicklable result
                LOG.error("study %s: analysis did not finish (%s)", tag(rec.study_uid), _short_error(e))
                self._pending.appendleft(rec.key)
                continue
            if res.get("ok"):
                if self.queue.mark_analyzed(rec, revision, res["outputs"]):
                    LOG.info("study %s: analyzed in %.1f s (%d levels, %d warnings): %s", tag(rec.study_uid),
                             res["seconds"], res["levels"], res["warnings"], ", ".join(sorted(res["outputs"])))
                    self._wake_sender.set()
                else:
                    LOG.info("study %s: analysis result dropped: new instances arrived meanwhile", tag(rec.study_uid))
            else:
                if self.queue.mark_failed(rec, revision, res["error"]):
                    LOG.error("study %s: analysis failed: %s", tag(rec.study_uid), res["error"])

    def _restart_pool(self) -> None:
        for future, (rec, _, _) in list(self._in_flight.items()):  # their workers went down with the pool
            self._in_flight.pop(future)
            self._pending.appendleft(rec.key)
        self._stop_pool()
        if not self._stop.is_set():
            self._start_pool()

    # -- sender thread --------------------------------------------------------------------------------
    def _sender(self) -> None:
        """Hands due deliveries to up to ``send_threads`` threads, one study per thread at a time:
        an archive's storage latency (tens of ms per instance), not this node's CPU, bounds
        one association, so deliveries overlap."""
        from concurrent.futures import ThreadPoolExecutor

        n = max(1, int(self.config.send_threads))
        busy: dict[str, Any] = {}
        with ThreadPoolExecutor(n, thread_name_prefix="lumbargrade-send") as pool:
            while not self._stop.is_set():
                try:
                    for key in [k for k, f in busy.items() if f.done()]:
                        busy.pop(key)
                    for rec in self.queue.due_for_delivery():
                        if self._stop.is_set() or len(busy) >= n:
                            break
                        if rec.key in busy:
                            continue
                        future = pool.submit(self._deliver_logged, rec)
                        busy[rec.key] = future
                        future.add_done_callback(lambda _: self._wake_sender.set())
                except Exception:
                    LOG.exception("sender error")
                nxt = self.queue.next_delivery_time()
                wait = 1.0 if nxt is None or len(busy) >= n else min(1.0, max(0.05, nxt - time.time()))
                self._wake_sender.wait(wait)
                self._wake_sender.clear()

    def _deliver_logged(self, rec: Any) -> None:
        try:
            self._deliver(rec)
        except Exception:
            LOG.exception("sender error")

    def _deliver(self, rec: Any) -> None:
        from .sender import SendError, backoff_seconds, send

        revision = rec.revision
        folder = self.queue.result_dir(rec)
        files = [folder / name for name in sorted(rec.outputs)]
        missing = [f.name for f in files if not f.is_file()]
        if missing:
            with self.queue.lock:
                rec.state = "complete"  # its result folder went away: analyze again
                rec.revision += 1
                self.queue.save(rec)
            LOG.error("study %s: result files missing (%s): analyzing again", tag(rec.study_uid), ", ".join(missing))
            self._pending.append(rec.key)
            return
        for dest in self.config.destinations:
            if rec.deliveries.get(dest.name):
                continue
            t0 = time.monotonic()
            try:
                send(dest, files, self.config.ae_title, self.config.timeout_s)
            except SendError as e:
                delay = backoff_seconds(rec.attempts + 1, self.config.retry_base_s, self.config.retry_cap_s)
                self.queue.mark_attempt_failed(rec, revision, str(e), delay)
                LOG.warning("study %s: sending failed (attempt %d): %s; next attempt in %.0f s",
                            tag(rec.study_uid), rec.attempts, e, delay)
                return
            self.queue.mark_destination_done(rec, revision, dest.name)
            LOG.info("study %s: %d files sent to %s (%.2f s)", tag(rec.study_uid), len(files), dest.name,
                     time.monotonic() - t0)
        if self.queue.mark_delivered(rec, revision, self.config.keep_instances):
            since = rec.times.get("delivered", time.time()) - rec.times.get("last_received", time.time())
            LOG.info("study %s: delivered (%.1f s after its last instance, settle time included)",
                     tag(rec.study_uid), since)


def _pack_label(models: str | None) -> str:
    """``name version`` of the model pack, from its pack.json (the workers load the models)."""
    from ..modelpack import default_pack_path

    p = Path(models) if models else default_pack_path()
    mf = p / "pack.json"
    if not mf.is_file():
        raise InputError(p, "not a model pack (no pack.json)")
    try:
        m = json.loads(mf.read_text())
    except ValueError as e:
        raise InputError(mf, f"pack.json is not valid JSON ({e})") from e
    return f"{m.get('name', p.name)} {m.get('version', '0')}"


def _size(n: float) -> str:
    """Bytes in words: ``1.5 GB``, ``420.0 MB``, ``96.0 kB``."""
    for unit, scale in (("GB", _GIB), ("MB", 2 ** 20), ("kB", 2 ** 10)):
        if n >= scale:
            return f"{n / scale:.1f} {unit}"
    return f"{int(n)} bytes"


def _short_error(e: BaseException) -> str:
    return " ".join(f"{type(e).__name__}: {e}".split())[:200]
