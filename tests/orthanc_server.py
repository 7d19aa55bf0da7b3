"""Test helpers: a real Orthanc (the Debian ``orthanc`` package) on loopback with a temporary
configuration, storage and index, random free ports, DICOMweb when the plugin is installed; the
lumbargrade node as a subprocess; phantom studies copied with new UIDs.

Used by tests/test_service_*.py and benchmarks/pacs_node.py.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

ORTHANC_CANDIDATES = ("Orthanc", "/usr/sbin/Orthanc", "/usr/bin/Orthanc")
DICOMWEB_PLUGIN_CANDIDATES = (
    "/usr/share/orthanc/plugins/libOrthancDicomWeb.so",
    "/usr/lib/orthanc/libOrthancDicomWeb.so",
)


def orthanc_binary() -> str | None:
    for c in ORTHANC_CANDIDATES:
        p = shutil.which(c) or (c if os.path.isfile(c) and os.access(c, os.X_OK) else None)
        if p:
            return p
    return None


def dicomweb_plugin() -> str | None:
    for c in DICOMWEB_PLUGIN_CANDIDATES:
        if os.path.isfile(c):
            return c
    found = sorted(Path("/usr/lib").rglob("libOrthancDicomWeb.so*")) if Path("/usr/lib").is_dir() else []
    return str(found[0]) if found else None


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class Orthanc:
    """An Orthanc process with its own folder; REST helpers on its HTTP port."""

    def __init__(self, folder: Path, modalities: dict[str, tuple[str, str, int]] | None = None,
                 aet: str = "ORTHANC", lua: str | None = None) -> None:
        self.folder = Path(folder)
        self.lua = lua
        self.aet = aet
        self.http_port = free_port()
        self.dicom_port = free_port()
        self.modalities = dict(modalities or {})
        self.proc: subprocess.Popen | None = None
        self.plugin = dicomweb_plugin()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.http_port}"

    @property
    def dicomweb_url(self) -> str:
        return f"{self.url}/dicom-web"

    def config(self) -> dict[str, Any]:
        cfg: dict[str, Any] = {
            "Name": "lumbargrade-test",
            "StorageDirectory": str(self.folder / "storage"),
            "IndexDirectory": str(self.folder / "index"),
            "HttpPort": self.http_port,
            "DicomPort": self.dicom_port,
            "DicomAet": self.aet,
            "RemoteAccessAllowed": False,
            "AuthenticationEnabled": False,
            "DicomAlwaysAllowStore": True,
            "DicomCheckCalledAet": False,
            "DicomScuTimeout": 30,
            "DicomModalities": {k: list(v) for k, v in self.modalities.items()},
            "StableAge": 2,
            "HttpThreadsCount": 8,
            "DicomThreadsCount": 4,
            "Plugins": [self.plugin] if self.plugin else [],
            "DicomWeb": {"Enable": True, "Root": "/dicom-web/"},
        }
        if self.lua:
            script = self.folder / "route.lua"
            script.parent.mkdir(parents=True, exist_ok=True)
            script.write_text(self.lua)
            cfg["LuaScripts"] = [str(script)]
        return cfg

    def start(self, timeout_s: float = 60.0) -> Orthanc:
        binary = orthanc_binary()
        if binary is None:
            raise RuntimeError("Orthanc is not installed (apt-get install orthanc)")
        self.folder.mkdir(parents=True, exist_ok=True)
        cfg_path = self.folder / "orthanc.json"
        cfg_path.write_text(json.dumps(self.config(), indent=2))
        log = open(self.folder / "orthanc.log", "ab")
        self.proc = subprocess.Popen([binary, str(cfg_path)], stdout=log, stderr=subprocess.STDOUT,
                                     cwd=self.folder, start_new_session=True)
        t_end = time.monotonic() + timeout_s
        while time.monotonic() < t_end:
            if self.proc.poll() is not None:
                raise RuntimeError(f"Orthanc exited with {self.proc.returncode}: {self.log_tail()}")
            try:
                self.get("/system")
                return self
            except (urllib.error.URLError, ConnectionError, OSError):
                time.sleep(0.2)
        raise RuntimeError(f"Orthanc did not answer within {timeout_s} s: {self.log_tail()}")

    def log_tail(self, n: int = 2000) -> str:
        p = self.folder / "orthanc.log"
        return p.read_text(errors="replace")[-n:] if p.is_file() else ""

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(timeout=10)
        self.proc = None

    # -- REST ---------------------------------------------------------------------------------
    def _request(self, method: str, path: str, body: bytes | None = None, ctype: str | None = None,
                 timeout: float = 120.0) -> bytes:
        req = urllib.request.Request(self.url + path, data=body, method=method)
        if ctype:
            req.add_header("Content-Type", ctype)
        with urllib.request.urlopen(req, timeout=timeout) as r:
            return r.read()

    def get(self, path: str) -> Any:
        return json.loads(self._request("GET", path))

    def get_bytes(self, path: str) -> bytes:
        return self._request("GET", path)

    def post(self, path: str, data: Any, raw: bool = False) -> Any:
        body = data if isinstance(data, bytes) else json.dumps(data).encode() if not isinstance(data, str) else data.encode()
        out = self._request("POST", path, body, "application/dicom" if raw else "application/json")
        return json.loads(out) if out.strip() else None

    def upload_folder(self, folder: Path) -> str:
        """POST every file of ``folder``; returns the Orthanc ID of the study."""
        study = None
        for f in sorted(Path(folder).rglob("*")):
            if f.is_file():
                study = self.post("/instances", f.read_bytes(), raw=True)["ParentStudy"]
        if study is None:
            raise ValueError(f"{folder}: no files")
        return study

    def study_id(self, study_uid: str) -> str | None:
        hits = self.post("/tools/lookup", study_uid)
        for h in hits or []:
            if h.get("Type") == "Study":
                return h["ID"]
        return None

    def send_study(self, modality: str, study_id: str, only: str | None = "MR") -> None:
        """Orthanc sends the study's series of modality ``only`` (None: all) to a configured
        modality by C-STORE (synchronously)."""
        series = [s["ID"] for s in self.get(f"/studies/{study_id}/series")
                  if only is None or s.get("MainDicomTags", {}).get("Modality") == only]
        self.post(f"/modalities/{modality}/store", {"Resources": series, "Synchronous": True})

    def instances_by_modality(self, study_uid: str) -> dict[str, list[str]]:
        """``{"MR": [instance IDs], "SEG": [...], "SR": [...]}`` of a study."""
        sid = self.study_id(study_uid)
        out: dict[str, list[str]] = {}
        if sid is None:
            return out
        for series in self.get(f"/studies/{sid}/series"):
            mod = series.get("MainDicomTags", {}).get("Modality", "?")
            out.setdefault(mod, []).extend(series.get("Instances", []))
        return out

    def wait_for_results(self, study_uid: str, timeout_s: float = 120.0, seg: int = 1, sr: int = 1) -> dict[str, list[str]]:
        t_end = time.monotonic() + timeout_s
        got: dict[str, list[str]] = {}
        while time.monotonic() < t_end:
            got = self.instances_by_modality(study_uid)
            if len(got.get("SEG", [])) >= seg and len(got.get("SR", [])) >= sr:
                return got
            time.sleep(0.25)
        raise TimeoutError(f"Orthanc has no SEG+SR for the study after {timeout_s} s: {({k: len(v) for k, v in got.items()})}")


class NodeProcess:
    """``lumbargrade serve`` as a subprocess with its log in a file."""

    def __init__(self, store: Path, port: int | None = None, allow: str = "ORTHANC,TESTSCU", settle_s: float = 2.0,
                 workers: int = 1, send_to: list[str] | None = None, stow: list[str] | None = None,
                 extra: list[str] | None = None, ae_title: str = "LUMBARGRADE") -> None:
        self.store = Path(store)
        self.port = port or free_port()
        self.ae_title = ae_title
        self.log_path = self.store.parent / f"{self.store.name}.log"
        self.args = ["--store", str(self.store), "--port", str(self.port), "--bind", "127.0.0.1",
                     "--ae-title", ae_title, "--allow", allow, "--settle-seconds", str(settle_s),
                     "--workers", str(workers), "--retry-max-seconds", "5", "--timeout", "20"]
        for d in send_to or []:
            self.args += ["--send-to", d]
        for u in stow or []:
            self.args += ["--stow", u]
        self.args += list(extra or [])
        self.proc: subprocess.Popen | None = None

    def start(self, wait: bool = True, timeout_s: float = 60.0) -> NodeProcess:
        self.store.parent.mkdir(parents=True, exist_ok=True)
        self._log = open(self.log_path, "ab")
        env = dict(os.environ, HF_HUB_OFFLINE="1", PYTHONUNBUFFERED="1")
        self.proc = subprocess.Popen([sys.executable, "-m", "lumbargrade", "serve", *self.args],
                                     stdout=self._log, stderr=subprocess.STDOUT, env=env, start_new_session=True)
        self._log_start = self.log_path.stat().st_size if self.log_path.is_file() else 0
        if wait:
            self.wait_for_log("listening on", timeout_s, since_start=True)
        return self

    def log(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.is_file() else ""

    def wait_for_log(self, text: str, timeout_s: float = 60.0, since_start: bool = False, count: int = 1,
                     poll_s: float = 0.05) -> str:
        t_end = time.monotonic() + timeout_s
        while time.monotonic() < t_end:
            log = self.log()
            part = log[self._log_start:] if since_start else log
            if part.count(text) >= count:
                return part
            if self.proc is not None and self.proc.poll() is not None:
                raise RuntimeError(f"node exited with {self.proc.returncode}:\n{part[-3000:]}")
            time.sleep(poll_s)
        raise TimeoutError(f"no {text!r} in the node's log after {timeout_s} s:\n{self.log()[-3000:]}")

    def kill9(self) -> None:
        """SIGKILL to the node process only (its workers notice and stop by themselves)."""
        if self.proc is not None and self.proc.poll() is None:
            os.kill(self.proc.pid, signal.SIGKILL)
            self.proc.wait(timeout=10)

    def stop(self, timeout_s: float = 30.0) -> int | None:
        if self.proc is None:
            return None
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=timeout_s)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait(timeout=10)
        rc = self.proc.returncode
        self.proc = None
        self._log.close()
        return rc

    def cleanup_group(self) -> None:
        """Kill anything left in the node's process group (workers of a killed node)."""
        if self.proc is not None:
            try:
                os.killpg(self.proc.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass

    def wait_state(self, study_uid: str, state: str = "delivered", timeout_s: float = 60.0) -> dict[str, Any]:
        t_end = time.monotonic() + timeout_s
        while time.monotonic() < t_end:
            st = self.states().get(study_uid)
            if st and st["state"] == state:
                return st
            time.sleep(0.05)
        raise TimeoutError(f"study not {state} after {timeout_s} s: {self.states().get(study_uid)}")

    def states(self) -> dict[str, dict[str, Any]]:
        """``{StudyInstanceUID: state.json}`` of every study in the store."""
        out = {}
        for f in (self.store / "studies").glob("*/state.json"):
            try:
                d = json.loads(f.read_text())
            except ValueError:
                continue
            out[d["study_uid"]] = d
        return out


def copy_study_with_new_uids(src: Path, dest: Path) -> str:
    """Copy a DICOM study folder with new Study, Series, SOP Instance and Frame of Reference UIDs
    (mapped consistently within the copy); returns the new StudyInstanceUID."""
    import pydicom
    from pydicom.uid import generate_uid

    mapping: dict[str, str] = {}

    def new(uid: str) -> str:
        if uid not in mapping:
            mapping[uid] = generate_uid()
        return mapping[uid]

    study = None
    for f in sorted(Path(src).rglob("*")):
        if not f.is_file():
            continue
        ds = pydicom.dcmread(f)
        for kw in ("StudyInstanceUID", "SeriesInstanceUID", "SOPInstanceUID", "FrameOfReferenceUID"):
            if kw in ds:
                setattr(ds, kw, new(str(getattr(ds, kw))))
        ds.file_meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
        study = str(ds.StudyInstanceUID)
        target = dest / f.relative_to(src)
        target.parent.mkdir(parents=True, exist_ok=True)
        ds.save_as(target, enforce_file_format=True)
    assert study is not None
    return study


def phantom_studies(root: Path, n: int, seed: int = 11) -> list[tuple[Path, str]]:
    """``n`` phantom studies (two generated patients, the rest copies with new UIDs):
    ``[(folder, StudyInstanceUID)]``."""
    import pydicom

    from lumbargrade.phantom.cohort import generate_cohort

    root = Path(root)
    k = min(n, 2)
    generate_cohort(root / "cohort", k, seed, split=(0, 0, k), progress=False)
    originals = sorted((root / "cohort").glob("P*/dicom"))
    out = []
    for i in range(n):
        dest = root / "studies" / f"S{i:02d}"
        if i < len(originals):
            shutil.copytree(originals[i], dest)
            first = next(p for p in sorted(dest.rglob("*")) if p.is_file())
            uid = str(pydicom.dcmread(first, stop_before_pixels=True).StudyInstanceUID)
        else:
            uid = copy_study_with_new_uids(originals[i % len(originals)], dest)
        out.append((dest, uid))
    return out


def send_with_pynetdicom(files: list[Path | Any], port: int, calling_ae: str = "TESTSCU", called_ae: str = "LUMBARGRADE",
                         host: str = "127.0.0.1", tls: tuple[Any, str] | None = None,
                         timeout_s: float = 30) -> list[int] | None:
    """C-STORE ``files`` (paths, or datasets) in one association; the status of each (-1, and no
    more, once the association is lost), or None when the association was not accepted."""
    from pynetdicom import AE
    from pynetdicom.presentation import StoragePresentationContexts

    ae = AE(ae_title=calling_ae)
    ae.requested_contexts = StoragePresentationContexts[:120]
    ae.acse_timeout = ae.network_timeout = ae.dimse_timeout = timeout_s
    assoc = ae.associate(host, port, ae_title=called_ae, tls_args=tls)
    if not assoc.is_established:
        ae.shutdown()
        return None
    out = []
    try:
        for f in files:
            st = assoc.send_c_store(f) if assoc.is_established else None  # a path: sent as its bytes
            out.append(int(st.Status) if st else -1)
            if out[-1] == -1:  # the peer went away: a PACS notices at once and sends again later
                break
    finally:
        if assoc.is_established:
            assoc.release()
        ae.shutdown()
    return out
