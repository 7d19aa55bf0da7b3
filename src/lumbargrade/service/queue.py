"""The node's persistent queue: one folder per study on disk, with its state in ``state.json``.

A study moves ``receiving -> complete -> analyzed -> delivered`` (or ``failed`` when the analysis
cannot be done, e.g. no axial T2 series). Every change of state is written to disk (atomically:
a temporary file renamed over the old one) before the node acts on it, so a node killed at any
moment resumes, on restart, every study it had received and not yet delivered:

* ``receiving``: the settle clock starts again at restart; the instances on disk are kept.
* ``complete``: analyzed again, unless its result folder (renamed into place only when whole)
  is already there, in which case it is taken as ``analyzed`` without a second analysis.
* ``analyzed``: the destinations not yet recorded as done are sent to again. The result's SEG and
  SR UIDs are a function of the study, the model pack and the set of instances analyzed, so a
  re-sent or re-made result has the same SOP Instance UIDs and an archive does not store it twice.

Layout under the store folder::

    studies/<key>/state.json                      key: a hash of the StudyInstanceUID
    studies/<key>/g<N>/instances/<hash>.dcm        one file per SOP Instance UID (generation N)
    studies/<key>/g<N>/result-<seed>/              the analysis output (analyze's folder layout)

A generation is one round of receive -> deliver; an instance arriving for a study already
delivered opens the next generation (the PACS sending the study again, or a series added). If the
new generation holds only instances already analyzed, nothing is analyzed or sent again.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import threading
import time
from collections.abc import Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

__all__ = ["STATES", "StudyQueue", "StudyRecord", "uid_seed"]

STATES = ("receiving", "complete", "analyzed", "delivered", "failed")


def _hash(text: str, n: int = 16) -> str:
    return hashlib.sha256(text.encode()).hexdigest()[:n]


def uid_seed(study_uid: str, pack_label: str, sop_uids: list[str], outputs: tuple[str, ...]) -> str:
    """The seed the result's SEG/SR UIDs are derived from: the same study, model pack, outputs
    and set of instances give the same UIDs."""
    h = hashlib.sha256()
    for part in (study_uid, pack_label, ",".join(outputs), *sorted(sop_uids)):
        h.update(part.encode())
        h.update(b"\0")
    return h.hexdigest()[:32]


@dataclass
class StudyRecord:
    """What ``state.json`` holds for one study (times are Unix epoch seconds)."""

    key: str
    study_uid: str
    state: str = "receiving"
    generation: int = 1
    revision: int = 0  # bumped when new instances reopen a study: stale analyses are ignored
    sop_uids: list[str] = field(default_factory=list)  # the instances of the analysis (at completion)
    delivered_sop_uids: list[str] = field(default_factory=list)  # inputs of the last delivered result
    seed: str | None = None
    outputs: dict[str, str] = field(default_factory=dict)  # result file -> its SOP Instance UID
    deliveries: dict[str, bool] = field(default_factory=dict)  # destination name -> done
    attempts: int = 0
    next_attempt: float = 0.0
    last_error: str | None = None
    analyses: int = 0  # finished analyses of this study, all generations
    sends: int = 0  # finished deliveries to every destination, all generations
    times: dict[str, float] = field(default_factory=dict)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> StudyRecord:
        known = set(cls.__dataclass_fields__)
        return cls(**{k: v for k, v in d.items() if k in known})


class StudyQueue:
    """The on-disk queue of one node. Thread-safe: every method takes the queue's lock.

    In memory it keeps, per study, the record, the SOP Instance UIDs of the current generation
    and the time of the last instance (for the settle rule)."""

    def __init__(self, root: str | Path) -> None:
        self.root = Path(root)
        self.studies_dir = self.root / "studies"
        self.studies_dir.mkdir(parents=True, exist_ok=True)
        self.lock = threading.RLock()
        self.records: dict[str, StudyRecord] = {}
        self.instances: dict[str, set[str]] = {}  # key -> SOP UIDs on disk in the current generation
        self.last_received: dict[str, float] = {}  # key -> monotonic time of the last instance
        self.bytes_used = 0
        self._load()

    # -- paths ---------------------------------------------------------------------------------
    @staticmethod
    def key_of(study_uid: str) -> str:
        return _hash(study_uid)

    def study_dir(self, key: str) -> Path:
        return self.studies_dir / key

    def generation_dir(self, rec: StudyRecord) -> Path:
        return self.study_dir(rec.key) / f"g{rec.generation}"

    def instances_dir(self, rec: StudyRecord) -> Path:
        return self.generation_dir(rec) / "instances"

    def result_dir(self, rec: StudyRecord) -> Path:
        if not rec.seed:
            raise ValueError("study has no seed yet")
        return self.generation_dir(rec) / f"result-{rec.seed[:16]}"

    # -- persistence ---------------------------------------------------------------------------
    def save(self, rec: StudyRecord) -> None:
        """Write ``state.json`` atomically (and durably: fsync before the rename)."""
        d = self.study_dir(rec.key)
        d.mkdir(parents=True, exist_ok=True)
        tmp = d / f".state.json.tmp-{os.getpid()}-{threading.get_ident()}"
        with open(tmp, "w") as f:
            json.dump(asdict(rec), f, indent=1)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, d / "state.json")

    def _load(self) -> None:
        """Read every study's state after a (re)start; see the module docstring for what each
        state becomes."""
        now = time.monotonic()
        for d in sorted(self.studies_dir.iterdir()):
            state = d / "state.json"
            if not d.is_dir():
                continue
            for junk in d.glob(".state.json.tmp-*"):
                junk.unlink(missing_ok=True)
            if not state.is_file():
                continue
            try:
                rec = StudyRecord.from_dict(json.loads(state.read_text()))
            except (ValueError, TypeError):
                continue  # an unreadable record is left for a person to look at
            self.records[rec.key] = rec
            inst = self.instances_dir(rec)
            uids: set[str] = set()
            if inst.is_dir():
                for f in inst.glob("*.tmp"):
                    f.unlink(missing_ok=True)
                for f in inst.glob("*.dcm"):
                    self.bytes_used += f.stat().st_size
                uids = set(_read_index(inst))
            self.instances[rec.key] = uids
            if rec.state == "receiving":
                self.last_received[rec.key] = now

    def iter_records(self) -> Iterator[StudyRecord]:
        with self.lock:
            yield from list(self.records.values())

    # -- receiving -----------------------------------------------------------------------------
    def add_instance(self, study_uid: str, sop_uid: str, data: bytes) -> tuple[str, StudyRecord, str]:
        """Store one instance (the encoded dataset with its file meta). Returns
        ``(what happened, record, state before)``: ``"stored"``, ``"duplicate"`` (an instance this study
        already holds, or one already analyzed: acknowledged, not stored again), ``"reopened"``
        (a new instance for a study past ``receiving``: the study goes back to receiving)."""
        key = self.key_of(study_uid)
        with self.lock:
            rec = self.records.get(key)
            what = "stored"
            if rec is None:
                rec = StudyRecord(key=key, study_uid=study_uid, times={"first_received": time.time()})
                self.records[key] = rec
                self.instances[key] = set()
                self.save(rec)  # the record exists on disk before its first instance does
            before = rec.state
            have = self.instances.setdefault(key, set())
            if sop_uid in have:
                if rec.state == "receiving":
                    self.last_received[key] = time.monotonic()
                return "duplicate", rec, before
            if rec.state == "delivered":
                # the study sent again (or a series added): a new generation; whether it holds
                # anything new is decided when it is complete (mark_complete)
                self._next_generation(rec)
                have = self.instances[key]
                what = "reopened"
            elif rec.state in ("complete", "analyzed", "failed"):  # more instances: analyze all again
                rec.state = "receiving"
                rec.revision += 1
                rec.seed = None
                rec.outputs = {}
                rec.deliveries = {}
                self.save(rec)
                what = "reopened"
            inst = self.instances_dir(rec)
            inst.mkdir(parents=True, exist_ok=True)
            name = _hash(sop_uid, 24) + ".dcm"
            tmp = inst / (name + ".tmp")
            tmp.write_bytes(data)
            os.replace(tmp, inst / name)
            _append_index(inst, sop_uid)
            have.add(sop_uid)
            self.bytes_used += len(data)
            self.last_received[key] = time.monotonic()
            rec.times["last_received"] = time.time()
            return what, rec, before

    def _next_generation(self, rec: StudyRecord) -> None:
        rec.generation += 1
        rec.revision += 1
        rec.state = "receiving"
        rec.seed = None
        rec.sop_uids = []
        rec.outputs = {}
        rec.deliveries = {}
        rec.attempts = 0
        rec.last_error = None
        rec.times = {"first_received": time.time()}
        self.instances[rec.key] = set()
        self.save(rec)

    def instance_count(self, key: str) -> int:
        with self.lock:
            return len(self.instances.get(key, ()))

    # -- settle ---------------------------------------------------------------------------------
    def settled(self, settle_s: float) -> list[StudyRecord]:
        """Studies in ``receiving`` whose last instance came ``settle_s`` seconds ago or more."""
        now = time.monotonic()
        with self.lock:
            return [r for r in self.records.values() if r.state == "receiving"
                    and now - self.last_received.get(r.key, now) >= settle_s]

    def mark_complete(self, rec: StudyRecord, seed_fn) -> str:
        """``receiving -> complete`` (returns ``"complete"``); when this generation holds only
        instances already analyzed and delivered, back to ``delivered`` with its instances removed
        (returns ``"already delivered"``); ``failed`` when no instance was stored (returns
        ``"empty"``). ``seed_fn(study_uid, sop_uids)`` gives the UID seed."""
        with self.lock:
            uids = sorted(self.instances.get(rec.key, ()))
            if not uids and not rec.delivered_sop_uids:  # killed before its first instance was stored
                rec.state = "failed"
                rec.last_error = "no instance was stored"
                self.last_received.pop(rec.key, None)
                self.save(rec)
                return "empty"
            if rec.delivered_sop_uids and set(uids) <= set(rec.delivered_sop_uids):
                self._drop_generation(rec)
                rec.state = "delivered"
                self.save(rec)
                return "already delivered"
            rec.sop_uids = uids
            rec.seed = seed_fn(rec.study_uid, uids)
            rec.state = "complete"
            rec.times["complete"] = time.time()
            self.last_received.pop(rec.key, None)
            self.save(rec)
            return "complete"

    def _drop_generation(self, rec: StudyRecord) -> None:
        g = self.generation_dir(rec)
        freed = sum(f.stat().st_size for f in g.glob("instances/*.dcm")) if g.is_dir() else 0
        shutil.rmtree(g, ignore_errors=True)
        self.bytes_used = max(0, self.bytes_used - freed)
        self.instances[rec.key] = set()
        self.last_received.pop(rec.key, None)

    # -- analysis ---------------------------------------------------------------------------------
    def existing_result(self, rec: StudyRecord) -> Path | None:
        """The finished result folder of this study's current inputs, if a run before a restart
        already wrote it."""
        if not rec.seed:
            return None
        d = self.result_dir(rec)
        return d if (d / "report.json").is_file() else None

    def mark_analyzed(self, rec: StudyRecord, revision: int, outputs: dict[str, str]) -> bool:
        """``complete -> analyzed`` with the result files to send; False (nothing changed) when new
        instances reopened the study meanwhile."""
        with self.lock:
            if rec.revision != revision or rec.state != "complete":
                return False
            rec.state = "analyzed"
            rec.outputs = dict(outputs)
            rec.analyses += 1
            rec.times["analyzed"] = time.time()
            rec.attempts = 0
            rec.next_attempt = 0.0
            self.save(rec)
            return True

    def mark_failed(self, rec: StudyRecord, revision: int, error: str) -> bool:
        with self.lock:
            if rec.revision != revision or rec.state != "complete":
                return False
            rec.state = "failed"
            rec.last_error = error[:500]
            rec.times["failed"] = time.time()
            self.save(rec)
            return True

    # -- delivery ---------------------------------------------------------------------------------
    def due_for_delivery(self) -> list[StudyRecord]:
        now = time.time()
        with self.lock:
            due = [r for r in self.records.values() if r.state == "analyzed" and r.next_attempt <= now]
        return sorted(due, key=lambda r: r.times.get("analyzed", 0.0))

    def next_delivery_time(self) -> float | None:
        with self.lock:
            t = [r.next_attempt for r in self.records.values() if r.state == "analyzed"]
        return min(t) if t else None

    def mark_destination_done(self, rec: StudyRecord, revision: int, destination: str) -> None:
        with self.lock:
            if rec.revision != revision:
                return
            rec.deliveries[destination] = True
            self.save(rec)

    def mark_attempt_failed(self, rec: StudyRecord, revision: int, error: str, backoff_s: float) -> None:
        with self.lock:
            if rec.revision != revision:
                return
            rec.attempts += 1
            rec.last_error = error[:500]
            rec.next_attempt = time.time() + backoff_s
            self.save(rec)

    def mark_delivered(self, rec: StudyRecord, revision: int, keep_instances: bool) -> bool:
        with self.lock:
            if rec.revision != revision or rec.state != "analyzed":
                return False
            rec.state = "delivered"
            rec.sends += 1
            rec.delivered_sop_uids = sorted(set(rec.delivered_sop_uids) | set(rec.sop_uids))
            rec.times["delivered"] = time.time()
            rec.last_error = None
            self.save(rec)
            if not keep_instances:
                inst = self.instances_dir(rec)
                freed = sum(f.stat().st_size for f in inst.glob("*.dcm")) if inst.is_dir() else 0
                shutil.rmtree(inst, ignore_errors=True)
                self.bytes_used = max(0, self.bytes_used - freed)
                self.instances[rec.key] = set()
            return True

    def counts(self) -> dict[str, int]:
        with self.lock:
            c = {s: 0 for s in STATES}
            for r in self.records.values():
                c[r.state] = c.get(r.state, 0) + 1
            return c


# The SOP Instance UIDs of a generation, one a line, appended as instances arrive (the file names
# are hashes, and reading every file's header at restart would be slow).
_INDEX = "index.txt"


def _append_index(inst: Path, sop_uid: str) -> None:
    with open(inst / _INDEX, "a") as f:
        f.write(sop_uid + "\n")


def _read_index(inst: Path) -> list[str]:
    """The SOP UIDs whose file is on disk (an index line whose file is missing, e.g. written
    just before a kill, is dropped)."""
    p = inst / _INDEX
    if not p.is_file():
        return []
    out = []
    for line in p.read_text().splitlines():
        uid = line.strip()
        if uid and (inst / (_hash(uid, 24) + ".dcm")).is_file():
            out.append(uid)
    return list(dict.fromkeys(out))
