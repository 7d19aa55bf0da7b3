"""``lumbargrade serve`` against a real Orthanc (the Debian ``orthanc`` and ``orthanc-dicomweb``
packages, installed by .ci/run), both on loopback with temporary storage and random ports.

Orthanc sends phantom studies to the node (REST ``/modalities/lumbargrade/store``), the node
analyzes them with the bundled model pack and sends the SEG and SR back; the tests read them from
Orthanc with highdicom. Also: a rejected AE title, a malformed instance, a study sent twice, a
kill -9 in the middle of an analysis, STOW-RS delivery, TLS, and `lumbargrade pull` (DICOMweb).
"""

from __future__ import annotations

import io
import os
import random
import subprocess
import sys
import time
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent))
from orthanc_server import (
    NodeProcess,
    Orthanc,
    dicomweb_plugin,
    free_port,
    orthanc_binary,
    phantom_studies,
    send_with_pynetdicom,
)

pytest.importorskip("pynetdicom", reason="needs the 'pacs' extra (pip install -e '.[pacs]')")

if orthanc_binary() is None:
    if os.environ.get("CI"):
        pytest.fail("Orthanc is not installed, but .ci/run installs it (apt-get install orthanc orthanc-dicomweb): "
                    "the DICOM node tests must run in CI", pytrace=False)
    pytest.skip("Orthanc is not installed on this machine (apt-get install orthanc orthanc-dicomweb; .ci/run "
                "installs it, so these tests run in CI)", allow_module_level=True)


@pytest.fixture(scope="module")
def env(tmp_path_factory):
    root = tmp_path_factory.mktemp("pacs")
    studies = phantom_studies(root, 5)
    node_port = free_port()
    orthanc = Orthanc(root / "orthanc", {"lumbargrade": ("LUMBARGRADE", "127.0.0.1", node_port)}).start()
    node = NodeProcess(root / "store", port=node_port, allow="ORTHANC@127.0.0.1,TESTSCU,HOSTONLY@127.0.0.2", settle_s=1.5,
                       send_to=[f"ORTHANC@127.0.0.1:{orthanc.dicom_port}"])
    try:
        node.start()
        yield {"root": root, "studies": studies, "orthanc": orthanc, "node": node}
    finally:
        node.stop()
        node.cleanup_group()
        orthanc.stop()


def _read_instance(orthanc: Orthanc, instance_id: str):
    import pydicom

    return pydicom.dcmread(io.BytesIO(orthanc.get_bytes(f"/instances/{instance_id}/file")))


def _study_sops(folder: Path) -> set[str]:
    import pydicom

    return {str(pydicom.dcmread(f, stop_before_pixels=True).SOPInstanceUID) for f in folder.rglob("*") if f.is_file()}


def test_study_round_trip_seg_and_sr_stored_in_orthanc(env):
    import highdicom as hd
    import pydicom

    orthanc, node = env["orthanc"], env["node"]
    folder, study_uid = env["studies"][0]
    sid = orthanc.upload_folder(folder)
    orthanc.send_study("lumbargrade", sid)
    got = orthanc.wait_for_results(study_uid, timeout_s=120)
    assert len(got["SR"]) == 1
    sops = _study_sops(folder)
    segs = [_read_instance(orthanc, i) for i in got["SEG"]]
    sr_ds = _read_instance(orthanc, got["SR"][0])
    for ds in segs:
        seg = hd.seg.Segmentation.from_dataset(ds)
        assert seg.StudyInstanceUID == study_uid
        refs = {str(r.ReferencedSOPInstanceUID) for s in seg.ReferencedSeriesSequence for r in s.ReferencedInstanceSequence}
        assert refs and refs <= sops  # the SEG is drawn on this study's axial images
        assert seg.number_of_segments == 6 * len({lab.split(" ")[0] for lab in
                                                  (d.SegmentLabel for d in seg.SegmentSequence)})
    sr = hd.sr.Comprehensive3DSR.from_dataset(sr_ds)
    assert sr.StudyInstanceUID == study_uid
    evidence = {str(i.ReferencedSOPInstanceUID) for s in sr.CurrentRequestedProcedureEvidenceSequence
                for se in s.ReferencedSeriesSequence for i in se.ReferencedSOPSequence}
    seg_uids = {str(ds.SOPInstanceUID) for ds in segs}
    assert seg_uids <= evidence and (evidence - seg_uids) <= sops
    groups = sr.content.get_planar_roi_measurement_groups() + sr.content.get_volumetric_roi_measurement_groups()
    assert groups  # per level and structure, referencing the SEG's segments
    # what the node recorded is what Orthanc holds
    state = node.wait_state(study_uid, "delivered")
    assert state["analyses"] == 1
    assert set(state["outputs"].values()) == seg_uids | {str(sr_ds.SOPInstanceUID)}
    # no patient data in the log: no UIDs, names or IDs of the study
    first = pydicom.dcmread(next(f for f in folder.rglob("*") if f.is_file()), stop_before_pixels=True)
    log = node.log()
    for secret in (study_uid, str(first.PatientName), str(first.PatientID), *list(sops)[:3]):
        assert secret and secret not in log


def test_rejected_ae_title(env):
    node = env["node"]
    folder, _ = env["studies"][4]
    files = sorted(f for f in folder.rglob("*") if f.is_file())[:2]
    assert send_with_pynetdicom(files, node.port, calling_ae="INTRUDER") is None
    node.wait_for_log("association from INTRUDER@127.0.0.1 rejected", timeout_s=10)
    # an allowed AE title from a host not in the list: HOSTONLY is allowed from 127.0.0.2 only
    assert send_with_pynetdicom(files, node.port, calling_ae="HOSTONLY") is None
    node.wait_for_log("association from HOSTONLY@127.0.0.1 rejected", timeout_s=10)
    assert send_with_pynetdicom([], node.port, calling_ae="TESTSCU") == []  # TESTSCU: any host


def test_malformed_instance_is_refused_and_the_association_continues(env, tmp_path):
    import pydicom

    node = env["node"]
    folder, study_uid = env["studies"][3]
    files = sorted(f for f in folder.rglob("*") if f.is_file())
    good = files[0]
    ds = pydicom.dcmread(good)
    # valid file meta and SOP Class/Instance UIDs (so that pynetdicom sends it), then bytes that are
    # no DICOM data set: an element whose length runs past the end, followed by noise
    head = pydicom.Dataset()
    head.SOPClassUID, head.SOPInstanceUID = ds.SOPClassUID, pydicom.uid.generate_uid()
    head.file_meta = pydicom.dataset.FileMetaDataset(ds.file_meta)
    head.file_meta.MediaStorageSOPInstanceUID = head.SOPInstanceUID
    bad = tmp_path / "bad.dcm"
    pydicom.dcmwrite(bad, head, enforce_file_format=True)
    bad.write_bytes(bad.read_bytes() + b"\x10\x00\x10\x00PN\xf0\xff" + bytes(range(256)) * 4)
    statuses = send_with_pynetdicom([files[0], bad, *files[1:]], node.port)
    assert statuses is not None
    assert statuses[1] == 0xC210
    assert statuses[0] == 0 and all(s == 0 for s in statuses[2:]), statuses
    log = node.wait_for_log("refused (status 0xC210)", timeout_s=10)
    line = next(l for l in log.splitlines() if "0xC210" in l)
    assert "cannot be decoded" in line and "the association continues" in line
    # the rest of the study arrived and is analyzed and delivered
    env["orthanc"].wait_for_results(study_uid, timeout_s=120)


def test_study_sent_twice_is_analyzed_and_delivered_once(env):
    orthanc, node = env["orthanc"], env["node"]
    folder, study_uid = env["studies"][1]
    sid = orthanc.upload_folder(folder)
    orthanc.send_study("lumbargrade", sid)
    orthanc.wait_for_results(study_uid, timeout_s=120)
    first = node.wait_state(study_uid, "delivered")
    orthanc.send_study("lumbargrade", sid)  # the PACS routes the same study again
    node.wait_for_log("received again with no new instance", timeout_s=60)
    time.sleep(1.0)
    again = node.states()[study_uid]
    assert again["state"] == "delivered" and again["analyses"] == 1 and again["sends"] == 1
    got = orthanc.instances_by_modality(study_uid)
    assert len(got["SR"]) == 1 and len(got["SEG"]) == len(first["outputs"]) - 1


def test_kill_9_mid_analysis_then_restart_delivers_once_by_stow(env, tmp_path):
    orthanc = env["orthanc"]
    if dicomweb_plugin() is None:
        pytest.fail("Orthanc's DICOMweb plugin is missing (apt-get install orthanc-dicomweb)")
    folder, study_uid = env["studies"][2]
    node = NodeProcess(tmp_path / "store", allow="TESTSCU", settle_s=1.0, stow=[orthanc.dicomweb_url])
    try:
        node.start()
        files = sorted(f for f in folder.rglob("*") if f.is_file())
        assert send_with_pynetdicom(files, node.port) == [0] * len(files)
        node.wait_for_log("analysis started", timeout_s=60, poll_s=0.01)
        node.kill9()
        state = node.states()[study_uid]
        assert state["state"] == "complete", state["state"]  # killed in the middle of the analysis
        time.sleep(1.5)  # the worker notices its parent is gone
        assert not list((tmp_path / "store").glob("studies/*/g1/result-*/report.json"))
        node.start()
        node.wait_for_log("delivered (", timeout_s=120, since_start=True)
        got = orthanc.wait_for_results(study_uid, timeout_s=30)
        state = node.wait_state(study_uid, "delivered")
        assert state["analyses"] == 1 and state["sends"] == 1
        assert len(got["SR"]) == 1 and len(got["SEG"]) == len(state["outputs"]) - 1
        assert "resuming: 1 studies to analyze" in node.log()
    finally:
        node.stop()
        node.cleanup_group()


def test_restart_after_analysis_before_delivery_sends_same_uids(env, tmp_path):
    """A result analyzed but not delivered (destination down) is sent after a restart without a
    second analysis, and the re-sent instances keep their UIDs."""
    orthanc = env["orthanc"]
    folder, study_uid = env["studies"][4]
    down = free_port()  # nothing listens there: every attempt fails
    node = NodeProcess(tmp_path / "store", allow="TESTSCU", settle_s=1.0, send_to=[f"ORTHANC@127.0.0.1:{down}"])
    try:
        node.start()
        files = sorted(f for f in folder.rglob("*") if f.is_file())
        assert send_with_pynetdicom(files, node.port) == [0] * len(files)
        node.wait_for_log("sending failed (attempt 2)", timeout_s=120)
        before = node.states()[study_uid]
        assert before["state"] == "analyzed" and before["attempts"] >= 2
        node.stop()
        node.args[node.args.index(f"ORTHANC@127.0.0.1:{down}")] = f"ORTHANC@127.0.0.1:{orthanc.dicom_port}"
        node.start()
        node.wait_for_log("delivered (", timeout_s=60, since_start=True)
        after = node.states()[study_uid]
        assert after["analyses"] == 1 and after["outputs"] == before["outputs"]
        got = orthanc.wait_for_results(study_uid, timeout_s=30)
        assert len(got["SR"]) == 1
    finally:
        node.stop()
        node.cleanup_group()


def _self_signed(tmp_path: Path) -> tuple[Path, Path]:
    import datetime

    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "localhost")])
    now = datetime.datetime.now(datetime.UTC)
    cert = (x509.CertificateBuilder().subject_name(name).issuer_name(name).public_key(key.public_key())
            .serial_number(x509.random_serial_number()).not_valid_before(now - datetime.timedelta(minutes=5))
            .not_valid_after(now + datetime.timedelta(days=1))
            .add_extension(x509.SubjectAlternativeName([x509.DNSName("localhost")]), critical=False)
            .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
            .sign(key, hashes.SHA256()))
    c, k = tmp_path / "node.crt", tmp_path / "node.key"
    c.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    k.write_bytes(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                    serialization.NoEncryption()))
    return c, k


def test_tls(tmp_path):
    import ssl

    from pynetdicom import AE

    cert, key = _self_signed(tmp_path)
    node = NodeProcess(tmp_path / "store", allow="TESTSCU", extra=["--tls-cert", str(cert), "--tls-key", str(key)])
    try:
        node.start()
        assert "(TLS)" in node.log()
        ctx = ssl.create_default_context(ssl.Purpose.SERVER_AUTH, cafile=str(cert))
        ae = AE(ae_title="TESTSCU")
        ae.add_requested_context("1.2.840.10008.1.1")
        ae.acse_timeout = ae.network_timeout = 10
        assoc = ae.associate("127.0.0.1", node.port, ae_title="LUMBARGRADE", tls_args=(ctx, "localhost"))
        assert assoc.is_established
        assert int(assoc.send_c_echo().Status) == 0
        assoc.release()
        plain = ae.associate("127.0.0.1", node.port, ae_title="LUMBARGRADE")  # no TLS: no association
        assert not plain.is_established
        ae.shutdown()
    finally:
        node.stop()
        node.cleanup_group()


def test_pull_from_dicomweb(env, tmp_path):
    if dicomweb_plugin() is None:
        pytest.fail("Orthanc's DICOMweb plugin is missing (apt-get install orthanc-dicomweb)")
    from lumbargrade.io import read_study

    orthanc = env["orthanc"]
    folder, study_uid = env["studies"][0]
    orthanc.upload_folder(folder)
    out = tmp_path / "pulled"
    cmd = [sys.executable, "-m", "lumbargrade", "pull", "--dicomweb", orthanc.dicomweb_url, "--study", study_uid,
           "--out", str(out)]
    r = subprocess.run(cmd, capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr
    assert _study_sops(out) == _study_sops(folder)  # MR series only: no SEG/SR pulled
    study = read_study(out)
    assert study.find("axial_t2") is not None and study.study_instance_uid == study_uid
    again = subprocess.run(cmd, capture_output=True, text=True, timeout=60)
    assert again.returncode == 2 and "--overwrite" in again.stderr and "Traceback" not in again.stderr
    missing = subprocess.run(cmd[:-4] + ["--study", "1.2.3.4.5.6", "--out", str(tmp_path / "none")],
                             capture_output=True, text=True, timeout=60)
    assert missing.returncode == 2 and "no such study" in missing.stderr
    assert len(missing.stderr.strip().splitlines()) == 1


@pytest.mark.slow
def test_twenty_studies_ten_random_kills_each_delivered_exactly_once(tmp_path):
    """A stream of 20 studies (one association each, re-sent whole when the node is down, as a
    PACS retries); the node is killed with SIGKILL at 10 random moments and restarted at once.
    Every study ends delivered, analyzed once, with exactly one SR and one set of SEGs in Orthanc."""
    import threading

    rng = random.Random(2024)
    studies = phantom_studies(tmp_path / "data", 20, seed=5)
    orthanc = Orthanc(tmp_path / "orthanc").start()
    node = NodeProcess(tmp_path / "store", allow="TESTSCU", settle_s=3.0,
                       send_to=[f"ORTHANC@127.0.0.1:{orthanc.dicom_port}"])
    sent: list[str] = []
    stop = threading.Event()

    def stream() -> None:
        for folder, uid in studies:
            files = sorted(f for f in folder.rglob("*") if f.is_file())
            while not stop.is_set():
                try:
                    st = send_with_pynetdicom(files, node.port, timeout_s=5)
                except Exception:
                    st = None
                if st is not None and st == [0] * len(files):
                    sent.append(uid)
                    break
                time.sleep(0.3)
            time.sleep(rng.uniform(0.0, 2.0))

    try:
        node.start()
        t = threading.Thread(target=stream, daemon=True)
        t.start()
        kills = 0
        while kills < 10:
            time.sleep(rng.uniform(1.0, 8.0))
            node.kill9()
            kills += 1
            node.stop()
            node.start()
        t.join(timeout=600)
        assert len(sent) == 20
        for _, uid in studies:
            node.wait_state(uid, "delivered", timeout_s=600)
        states = node.states()
        for _, uid in studies:
            st = states[uid]
            assert st["analyses"] == 1 and st["sends"] == 1, (uid, st)
            got = orthanc.instances_by_modality(uid)
            assert len(got.get("SR", [])) == 1 and len(got.get("SEG", [])) == len(st["outputs"]) - 1, got
        assert node.log().count("resuming") >= 1
    finally:
        stop.set()
        node.stop()
        node.cleanup_group()
        orthanc.stop()


def test_orthanc_routing_configuration_from_the_docs(env, tmp_path):
    """The Lua script of docs/pacs.md, in a real Orthanc: a study uploaded to Orthanc becomes
    stable, is routed to the node, and its results come back, once."""
    import re

    doc = (Path(__file__).resolve().parents[1] / "docs" / "pacs.md").read_text()
    lua = re.search(r"```lua\n(.*?)```", doc, re.DOTALL).group(1)
    folder, study_uid = env["studies"][3]
    node_port = free_port()
    orthanc = Orthanc(tmp_path / "orthanc", {"lumbargrade": ("LUMBARGRADE", "127.0.0.1", node_port)}, lua=lua)
    orthanc.start()
    node = NodeProcess(tmp_path / "store", port=node_port, allow="ORTHANC@127.0.0.1", settle_s=1.0,
                       send_to=[f"ORTHANC@127.0.0.1:{orthanc.dicom_port}"])
    try:
        node.start()
        orthanc.upload_folder(folder)  # nothing else: Orthanc's StableAge (2 s) and the script do the rest
        got = orthanc.wait_for_results(study_uid, timeout_s=120)
        node.wait_state(study_uid, "delivered")
        time.sleep(5.0)  # the results made the study change: it becomes stable once more
        assert "received again" not in node.log()  # the script did not route it again
        again = orthanc.instances_by_modality(study_uid)
        assert len(again["SR"]) == 1 and len(again["SEG"]) == len(got["SEG"])
    finally:
        node.stop()
        node.cleanup_group()
        orthanc.stop()


def test_limits_instances_per_study_association_size_and_disk_quota(env, tmp_path):
    """Beyond each limit instances are refused with 0xA700 (out of resources) and one log line;
    what arrived before the limit is stored."""
    folder_a, _ = env["studies"][0]
    folder_b, _ = env["studies"][1]
    files_a = sorted(f for f in folder_a.rglob("*") if f.is_file())
    files_b = sorted(f for f in folder_b.rglob("*") if f.is_file())

    def ok_then_refused(statuses: list[int]) -> int:
        n_ok = statuses.index(0xA700) if 0xA700 in statuses else len(statuses)
        assert all(s == 0 for s in statuses[:n_ok]) and all(s == 0xA700 for s in statuses[n_ok:]), statuses
        return n_ok

    node = NodeProcess(tmp_path / "s1", allow="TESTSCU", settle_s=600, extra=["--max-instances", "4"])
    try:
        node.start()
        assert ok_then_refused(send_with_pynetdicom(files_a[:7], node.port)) == 4
        node.wait_for_log("more than 4 instances", timeout_s=10)
    finally:
        node.stop()
        node.cleanup_group()
    size = max(f.stat().st_size for f in files_b[:8])
    node = NodeProcess(tmp_path / "s2", allow="TESTSCU", settle_s=600,
                       extra=["--max-association-mb", f"{3.5 * size / 2**20:.4f}",
                              "--disk-quota-gb", f"{5.5 * size / 2**30:.7f}"])
    try:
        node.start()
        first = ok_then_refused(send_with_pynetdicom(files_b[:8], node.port))  # the association's limit
        assert 1 <= first <= 4
        node.wait_for_log("received: further instances refused", timeout_s=10)
        second = ok_then_refused(send_with_pynetdicom(files_b[first:first + 8], node.port))  # the disk quota
        assert 1 <= second < 8
        node.wait_for_log("disk quota of", timeout_s=10)
    finally:
        node.stop()
        node.cleanup_group()
