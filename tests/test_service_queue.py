"""The node's pieces without a network: addresses, back-off, the on-disk queue across restarts,
deterministic SEG/SR UIDs, and the one-line error without the ``pacs`` extra."""

from __future__ import annotations

import json
import random
import shutil
import subprocess
import sys

import pytest

from lumbargrade.errors import InputError
from lumbargrade.service.addresses import parse_allow, parse_destination, parse_stow, tag
from lumbargrade.service.queue import StudyQueue, uid_seed
from lumbargrade.service.sender import backoff_seconds


def test_allow_rules_and_destinations():
    r = parse_allow("ORTHANC@127.0.0.1")
    assert r.matches("ORTHANC", "127.0.0.1") and r.matches("ORTHANC  ", "127.0.0.1")
    assert not r.matches("ORTHANC", "10.0.0.1") and not r.matches("OTHER", "127.0.0.1")
    assert parse_allow("PACS").matches("PACS", "10.1.2.3")
    assert parse_allow("*@127.0.0.1").matches("ANY", "127.0.0.1")
    d = parse_destination("ORTHANC@pacs.example.org:4242")
    assert (d.ae_title, d.host, d.port) == ("ORTHANC", "pacs.example.org", 4242)
    for bad in ("ORTHANC@host", "host:4242", "TOO_LONG_AE_TITLE_X@h:1", "A@h:99999"):
        with pytest.raises(InputError):
            parse_destination(bad)
    with pytest.raises(InputError):
        parse_stow("ftp://x")
    assert parse_stow("http://u:secret@pacs:8042/dicom-web/").name == "stow:http://pacs:8042/dicom-web"


def test_tag_hides_the_uid():
    uid = "1.2.826.0.1.3680043.8.498.123"
    assert tag(uid) == tag(uid) and len(tag(uid)) == 10 and "1.2" not in tag(uid) and tag(uid) != tag(uid + "4")


def test_backoff_grows_and_is_capped():
    rng = random.Random(0)
    waits = [backoff_seconds(n, 2.0, 60.0, rng) for n in range(1, 12)]
    assert 1.6 <= waits[0] <= 2.4 and 3.2 <= waits[1] <= 4.8
    assert max(waits) <= 72.0 and waits[-1] >= 48.0


def _seed(study, sops):
    return uid_seed(study, "pack 1", sops, ("seg", "sr"))


def test_queue_states_survive_a_restart(tmp_path):
    q = StudyQueue(tmp_path)
    for i in range(3):
        what, rec, _ = q.add_instance("1.2.3", f"1.2.3.{i}", b"x" * 10)
        assert what == "stored"
    assert q.add_instance("1.2.3", "1.2.3.0", b"x" * 10)[0] == "duplicate"
    assert q.settled(3600) == [] and q.settled(0) == [rec]
    # killed while receiving: the instances and the record are found again
    q2 = StudyQueue(tmp_path)
    rec2 = q2.records[rec.key]
    assert rec2.state == "receiving" and q2.instance_count(rec.key) == 3 and q2.bytes_used == 30
    assert q2.mark_complete(rec2, _seed) == "complete"
    seed = rec2.seed
    assert seed == _seed("1.2.3", ["1.2.3.0", "1.2.3.1", "1.2.3.2"])
    # killed during the analysis: still complete; a result folder written whole counts as done
    q3 = StudyQueue(tmp_path)
    rec3 = q3.records[rec.key]
    assert rec3.state == "complete" and q3.existing_result(rec3) is None
    out = q3.result_dir(rec3)
    out.mkdir(parents=True)
    (out / "report.json").write_text("{}")
    assert q3.existing_result(rec3) == out
    assert q3.mark_analyzed(rec3, rec3.revision, {"sr.dcm": "9.9"})
    q3.mark_attempt_failed(rec3, rec3.revision, "refused", 5.0)
    assert q3.due_for_delivery() == []
    q4 = StudyQueue(tmp_path)
    rec4 = q4.records[rec.key]
    assert rec4.state == "analyzed" and rec4.attempts == 1 and rec4.outputs == {"sr.dcm": "9.9"}
    q4.mark_destination_done(rec4, rec4.revision, "dimse:A@h:1")
    assert q4.mark_delivered(rec4, rec4.revision, keep_instances=False)
    assert not q4.instances_dir(rec4).exists() and q4.bytes_used == 0
    assert json.loads((tmp_path / "studies" / rec.key / "state.json").read_text())["state"] == "delivered"


def test_queue_study_sent_again_and_new_instances(tmp_path):
    q = StudyQueue(tmp_path)
    for i in range(2):
        q.add_instance("7.7", f"7.7.{i}", b"y")
    rec = q.records[q.key_of("7.7")]
    q.mark_complete(rec, _seed)
    q.mark_analyzed(rec, rec.revision, {})
    q.mark_delivered(rec, rec.revision, keep_instances=False)
    # the same instances again: a new generation that turns out to hold nothing new
    assert q.add_instance("7.7", "7.7.0", b"y")[0] == "reopened"
    assert q.add_instance("7.7", "7.7.1", b"y")[0] == "stored"
    assert q.mark_complete(rec, _seed) == "already delivered" and rec.state == "delivered"
    # a new instance: analyzed again, with the whole new set (and so new UIDs)
    q.add_instance("7.7", "7.7.0", b"y")
    q.add_instance("7.7", "7.7.2", b"y")
    assert q.mark_complete(rec, _seed) == "complete" and rec.sop_uids == ["7.7.0", "7.7.2"]
    # an instance arriving during the analysis reopens the study: the running analysis is dropped
    rev = rec.revision
    assert q.add_instance("7.7", "7.7.3", b"y")[0] == "reopened" and rec.state == "receiving"
    assert not q.mark_analyzed(rec, rev, {"sr.dcm": "1"})


def test_same_seed_gives_the_same_seg_sr_and_sc_uids(tmp_path):
    """Re-analysing a study with the same seed writes SEG, SR and SC with the same SOP Instance UIDs
    (what makes a re-sent result not a duplicate); another seed gives other UIDs."""
    import pydicom

    from lumbargrade.analysis_runner import analyze_one
    from lumbargrade.modelpack import load_pack
    from lumbargrade.phantom.cohort import generate_cohort
    from lumbargrade.pipeline import AnalysisConfig

    generate_cohort(tmp_path / "cohort", 1, 3, split=(0, 0, 1), progress=False)
    study = next((tmp_path / "cohort").glob("P*/dicom"))
    pack, cfg = load_pack(), AnalysisConfig()
    uids = []
    for i, seed in enumerate(("seed-a", "seed-a", "seed-b")):
        out = tmp_path / f"out{i}"
        analyze_one(study, out, pack, cfg, outputs=("seg", "sr", "sc"), uid_seed=seed)
        files = sorted(out.glob("seg*.dcm")) + [out / "sr.dcm"] + sorted(out.glob("sc_*.dcm"))
        uids.append([(str(d.SOPInstanceUID), str(d.SeriesInstanceUID))
                     for d in (pydicom.dcmread(f, stop_before_pixels=True) for f in files)])
    assert uids[0] == uids[1]
    assert not set(uids[0]) & set(uids[2])
    assert len({u for u, _ in uids[0]}) == len(uids[0])
    # the Secondary Capture summary: one RGB picture per level, in the study, with burned-in grades
    report = json.loads((tmp_path / "out0" / "report.json").read_text())
    scs = sorted((tmp_path / "out0").glob("sc_*.dcm"))
    assert len(scs) == len(report["levels"]) == len(report["dicom"]["sc"]["instances"])
    src = pydicom.dcmread(next(study.rglob("*.dcm")), stop_before_pixels=True)
    for f in scs:
        ds = pydicom.dcmread(f)
        assert ds.SOPClassUID == "1.2.840.10008.5.1.4.1.1.7" and ds.StudyInstanceUID == src.StudyInstanceUID
        assert ds.PhotometricInterpretation == "RGB" and ds.pixel_array.shape[2] == 3
        assert ds.BurnedInAnnotation == "YES" and list(ds.PatientOrientation) == ["L", "P"]
        assert ds.pixel_array.std() > 5  # a picture, not a blank
    if shutil.which("dciodvfy"):
        res = subprocess.run(["dciodvfy", str(scs[0])], capture_output=True, text=True, timeout=60)
        errors = [ln for ln in (res.stdout + res.stderr).splitlines() if ln.startswith("Error")]
        assert not errors, errors[:5]


def test_missing_extra_message(monkeypatch, capsys):
    import importlib.util

    from lumbargrade.cli import main

    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec",
                        lambda name, *a: None if name in ("pynetdicom", "dicomweb_client") else real(name, *a))
    assert main(["pull", "--dicomweb", "http://x", "--study", "1.2", "--out", "o"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "lumbargrade[pacs]" in err[0]


def test_serve_bad_arguments_one_line(tmp_path):
    r = subprocess.run([sys.executable, "-m", "lumbargrade", "serve", "--store", str(tmp_path / "s")],
                       capture_output=True, text=True, timeout=60)
    assert r.returncode == 2 and "--allow" in r.stderr and len(r.stderr.strip().splitlines()) == 1
    r = subprocess.run([sys.executable, "-m", "lumbargrade", "serve", "--store", str(tmp_path / "s"), "--allow", "A",
                        "--send-to", "nohost"], capture_output=True, text=True, timeout=60)
    assert r.returncode == 2 and "AE@host:port" in r.stderr and "Traceback" not in r.stderr


def test_help_does_not_import_the_network_libraries():
    code = ("import sys; from lumbargrade.cli import build_parser; build_parser(); "
            "print(any(m.split('.')[0] in ('pynetdicom', 'dicomweb_client', 'requests') for m in sys.modules))")
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert r.stdout.strip() == "False"


def test_two_nodes_cannot_share_a_store(tmp_path):
    from lumbargrade.service.node import Node, NodeConfig

    cfg = NodeConfig(store=str(tmp_path / "store"), allow=[parse_allow("A")])
    first = Node(cfg)
    with pytest.raises(InputError, match="another lumbargrade node"):
        Node(cfg)
    first._lockfile.close()
    Node(cfg)._lockfile.close()  # free again once the first one is gone


@pytest.mark.parametrize("send_threads", [1, 3])
def test_sender_overlaps_deliveries_one_thread_per_study(tmp_path, monkeypatch, send_threads):
    """An archive answers each C-STORE after its own storage latency: the node delivers up to
    ``send_threads`` studies at once, never one study twice at the same time, each exactly once."""
    import threading
    import time

    from lumbargrade.service import sender as sender_mod
    from lumbargrade.service.node import Node, NodeConfig

    cfg = NodeConfig(store=str(tmp_path / "store"), allow=[parse_allow("A")],
                     destinations=[parse_destination("PACS@127.0.0.1:104")], send_threads=send_threads)
    node = Node(cfg)
    recs = []
    for i in range(6):
        _, rec, _ = node.queue.add_instance(f"1.2.{i}", f"1.2.{i}.1", b"x")
        assert node.queue.mark_complete(rec, _seed) == "complete"
        out = node.queue.result_dir(rec)
        out.mkdir(parents=True)
        (out / "sr.dcm").write_bytes(b"sr")
        assert node.queue.mark_analyzed(rec, rec.revision, {"sr.dcm": f"9.{i}"})
        recs.append(rec)
    lock = threading.Lock()
    now = {"n": 0, "max": 0}
    per_study: dict[str, int] = {}

    def slow_send(dest, files, calling_ae, timeout_s=30.0, ssl_context=None):
        with lock:
            now["n"] += 1
            now["max"] = max(now["max"], now["n"])
            key = files[0].parent.parent.parent.name
            per_study[key] = per_study.get(key, 0) + 1
        time.sleep(0.3)
        with lock:
            now["n"] -= 1

    monkeypatch.setattr(sender_mod, "send", slow_send)
    t = threading.Thread(target=node._sender, daemon=True)
    t0 = time.monotonic()
    t.start()
    try:
        while any(r.state != "delivered" for r in recs) and time.monotonic() - t0 < 30:
            time.sleep(0.02)
        took = time.monotonic() - t0
    finally:
        node._stop.set()
        node._wake_sender.set()
        t.join(timeout=10)
        node._lockfile.close()
    assert all(r.state == "delivered" and r.sends == 1 for r in recs)
    assert sorted(per_study.values()) == [1] * 6
    assert now["max"] == send_threads
    assert took < 6 * 0.3 / send_threads + 1.0


def test_worker_warm_up_runs_the_whole_analysis(monkeypatch):
    """The node's workers analyze a small synthetic study at start (so that the first received
    study does not pay for first runs and imports); the warm-up reaches the SEG and SR writers."""
    from lumbargrade.modelpack import load_pack
    from lumbargrade.pipeline import AnalysisConfig
    from lumbargrade.service import worker

    monkeypatch.setattr(worker, "_STATE", {"pack": load_pack(None), "config": AnalysisConfig(),
                                           "outputs": ("seg", "sr")})
    assert worker.warm_up() is None
