"""Batch analysis: many studies in one process, resumable, per-study errors logged.

Six small phantom studies (two generated, copied with new StudyInstanceUIDs) and a tiny
random-weights pack (``benchmarks/pipeline_speed.make_random_pack(tiny=True)``); the grades are
meaningless, the bookkeeping is what is tested.
"""

from __future__ import annotations

import importlib.util
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def _bench_module():
    spec = importlib.util.spec_from_file_location("pipeline_speed", ROOT / "benchmarks" / "pipeline_speed.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def _copy_with_new_uid(src: Path, dest: Path) -> str:
    """Copy a DICOM study folder, giving every file a new StudyInstanceUID (one per copy)."""
    import pydicom
    from pydicom.uid import generate_uid

    uid = generate_uid()
    for f in sorted(src.rglob("*")):
        if not f.is_file():
            continue
        target = dest / f.relative_to(src)
        target.parent.mkdir(parents=True, exist_ok=True)
        ds = pydicom.dcmread(f)
        ds.StudyInstanceUID = uid
        ds.save_as(target)
    return uid


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    from lumbargrade.phantom.cohort import generate_cohort

    root = tmp_path_factory.mktemp("batch")
    generate_cohort(root / "cohort", 2, 11, split=(0, 0, 2), progress=False)
    originals = sorted((root / "cohort").glob("P*/dicom"))
    studies = root / "studies"
    studies.mkdir()
    uids = {}
    for i in range(6):
        dest = studies / f"S{i}"
        if i < len(originals):
            shutil.copytree(originals[i], dest)
            import pydicom

            first = next(p for p in sorted(dest.rglob("*")) if p.is_file())
            uids[dest.name] = str(pydicom.dcmread(first, stop_before_pixels=True).StudyInstanceUID)
        else:
            uids[dest.name] = _copy_with_new_uid(originals[i % len(originals)], dest)
    pack = _bench_module().make_random_pack(root / "pack", "fast", tiny=True, landmarks="random")
    return root, studies, pack, uids


def _log(out: Path) -> list[dict]:
    return [json.loads(line) for line in (out / "batch_log.jsonl").read_text().splitlines() if line.strip()]


def _start_and_kill_after(cmd: list[str], log: Path, n_ok: int, timeout_s: float) -> subprocess.Popen:
    """Start a batch command and SIGKILL it once ``n_ok`` studies are logged as done; returns the
    finished process."""
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.time() + timeout_s
    while time.time() < deadline and proc.poll() is None:
        if log.is_file() and sum(1 for line in log.read_text().splitlines() if '"ok"' in line) >= n_ok:
            proc.send_signal(signal.SIGKILL)
            break
        time.sleep(0.05)
    proc.wait()
    return proc


def _safe(uid: str) -> str:
    from lumbargrade.analysis_runner import _safe

    return _safe(uid)


def test_interrupted_batch_resumes_without_redoing_or_corrupting(setup, capsys):
    from lumbargrade.cli import main

    root, studies, pack, uids = setup
    out = root / "out_resume"
    names = sorted(uids)
    first_half = [str(studies / n) for n in names[:3]]
    # "interrupted halfway": the first run only gets through the first three studies
    assert main(["analyze", *first_half, "--out", str(out), "--models", str(pack)]) == 0
    done = {n: out / _safe(uids[n]) / "report.json" for n in names[:3]}
    assert all(p.is_file() for p in done.values())
    mtimes = {n: p.stat().st_mtime_ns for n, p in done.items()}
    contents = {n: p.read_bytes() for n, p in done.items()}

    # what a crash mid-write leaves: a temporary folder (never renamed into place) and, for
    # robustness, a result folder without report.json; neither may count as done
    stale_tmp = out / f".{_safe(uids[names[3]])}.tmp-999999"
    (stale_tmp / "levels").mkdir(parents=True)
    (stale_tmp / "config.json").write_text("{}")
    half = out / _safe(uids[names[4]])
    (half / "levels").mkdir(parents=True)
    (half / "config.json").write_text("{}")

    # a corrupt study among the good ones
    bad = studies / "S_corrupt"
    bad.mkdir()
    (bad / "IM0001.dcm").write_bytes(b"\x00" * 128 + b"DICM" + b"garbage" * 50)

    time.sleep(0.05)
    rc = main(["analyze", "--batch", str(studies), "--out", str(out), "--models", str(pack), "--workers", "2"])
    assert rc == 1  # one study failed
    err = capsys.readouterr().err
    assert "S_corrupt" in err

    entries = _log(out)[3:]  # the second run's entries
    by_input = {Path(e["input"]).name: e for e in entries}
    assert set(by_input) == {*names, "S_corrupt"}
    for n in names[:3]:
        assert by_input[n]["status"] == "skipped (done)"
    for n in names[3:]:
        assert by_input[n]["status"] == "ok", by_input[n]
    assert by_input["S_corrupt"]["status"] == "error" and by_input["S_corrupt"]["error"]

    # finished studies untouched, the rest complete and readable
    for n, p in done.items():
        assert p.stat().st_mtime_ns == mtimes[n]
        assert p.read_bytes() == contents[n]
    for n in names:
        rep = json.loads((out / _safe(uids[n]) / "report.json").read_text())
        assert rep["study_instance_uid"] == uids[n]
        assert len(rep["levels"]) >= 1
        for lv in rep["levels"]:
            assert (out / _safe(uids[n]) / lv["label_map"]).is_file()
    assert (half / "report.json").is_file()  # the half-written folder was redone, not trusted
    # no temporary folder of this process is left behind
    assert not list(out.glob(f".*.tmp-{os.getpid()}"))


def test_batch_with_two_processes_does_each_study_once_and_resumes(setup, capsys):
    from lumbargrade.cli import main

    root, studies, pack, uids = setup
    out = root / "out_processes"
    names = sorted(uids)
    # first run: four studies in two processes
    four = [str(studies / n) for n in names[:4]]
    assert main(["analyze", *four, "--out", str(out), "--models", str(pack), "--processes", "2"]) == 0
    entries = _log(out)
    assert sorted(Path(e["input"]).name for e in entries) == names[:4]
    assert all(e["status"] == "ok" for e in entries)
    done = {n: (out / _safe(uids[n]) / "report.json").read_bytes() for n in names[:4]}
    # the whole folder: the four are skipped, the other two analyzed, a bad one logged
    bad = studies.parent / "bad_for_processes"
    bad.mkdir()
    (bad / "IM0001.dcm").write_bytes(b"\x00" * 128 + b"DICM" + b"garbage" * 50)
    rc = main(["analyze", *[str(studies / n) for n in names], str(bad), "--out", str(out), "--models", str(pack),
               "--processes", "2"])
    assert rc == 1  # the corrupt study is logged as failed, not fatal for the others
    assert "analyzed" in capsys.readouterr().out
    second = {Path(e["input"]).name: e["status"] for e in _log(out)[4:]}
    assert {n: second[n] for n in names[:4]} == {n: "skipped (done)" for n in names[:4]}
    assert {n: second[n] for n in names[4:]} == {n: "ok" for n in names[4:]}
    assert second["bad_for_processes"] == "error"
    for n in names[:4]:
        assert (out / _safe(uids[n]) / "report.json").read_bytes() == done[n]


def test_stale_temporary_folders_are_cleaned(setup):
    from lumbargrade.cli import main

    root, studies, pack, uids = setup
    out = root / "out_clean"
    out.mkdir()
    stale = out / ".somestudy.tmp-999999"
    stale.mkdir()
    (stale / "config.json").write_text("{}")
    one = min(uids)
    main(["analyze", str(studies / one), str(studies / one), "--out", str(out), "--models", str(pack)])
    assert not stale.exists()


def test_error_exit_status_when_every_study_fails(setup, tmp_path):
    from lumbargrade.cli import main

    pack = setup[2]
    batch = tmp_path / "bad"
    for i in range(2):
        (batch / f"B{i}").mkdir(parents=True)
        (batch / f"B{i}" / "x.txt").write_text("not dicom")
    rc = main(["analyze", "--batch", str(batch), "--out", str(tmp_path / "o"), "--models", str(pack)])
    assert rc == 1
    entries = _log(tmp_path / "o")
    assert [e["status"] for e in entries] == ["error", "error"]


@pytest.mark.slow
def test_killed_batch_process_resumes(setup, tmp_path):
    """A real interruption: SIGKILL the batch process once two studies are logged, then rerun."""
    _, studies, pack, uids = setup
    out = tmp_path / "out_kill"
    cmd = [sys.executable, "-m", "lumbargrade", "analyze", "--batch", str(studies), "--out", str(out),
           "--models", str(pack)]
    proc = _start_and_kill_after(cmd, out / "batch_log.jsonl", n_ok=2, timeout_s=300)
    assert proc.returncode == -signal.SIGKILL  # really interrupted, not finished
    finished = {e["study_instance_uid"] for e in _log(out) if e.get("status") == "ok"}
    assert 2 <= len(finished) < len(uids)
    for d in out.iterdir():  # every visible result folder is complete; partial ones stay hidden
        if d.is_dir() and not d.name.startswith("."):
            assert (d / "report.json").is_file(), d
    mt = {u: (out / _safe(u) / "report.json").stat().st_mtime_ns for u in finished}
    p = subprocess.run(cmd, capture_output=True, text=True, check=False)
    entries = _log(out)
    second = entries[len(entries) - (len(uids) + 1):]  # + the corrupt study if the other test added it
    statuses = {e.get("study_instance_uid"): e["status"] for e in second if e.get("study_instance_uid")}
    for u in finished:
        assert statuses[u] == "skipped (done)"
        assert (out / _safe(u) / "report.json").stat().st_mtime_ns == mt[u]
    for u in uids.values():
        assert json.loads((out / _safe(u) / "report.json").read_text())["study_instance_uid"] == u
    assert p.returncode in (0, 1)


@pytest.mark.slow
def test_twenty_study_batch_killed_halfway_finishes_the_rest(tmp_path_factory):
    """The issue's check: 20 phantom studies through `analyze --batch --processes 2`, the whole
    batch SIGKILLed once about half are done (its parts stop with it), then rerun: the finished
    studies are neither redone nor changed, every study ends complete."""
    from lumbargrade.phantom.cohort import generate_cohort

    root = tmp_path_factory.mktemp("batch20")
    generate_cohort(root / "cohort", 20, 2024, split=(0, 0, 20), progress=False, workers=2)
    studies = root / "studies"
    studies.mkdir()
    for p in sorted((root / "cohort").glob("P*/dicom")):
        (studies / p.parent.name).symlink_to(p, target_is_directory=True)
    pack = _bench_module().make_random_pack(root / "pack", "fast", tiny=True, landmarks="random")
    out = root / "out"
    cmd = [sys.executable, "-m", "lumbargrade", "analyze", "--batch", str(studies), "--out", str(out),
           "--models", str(pack), "--processes", "2", "--outputs", "seg,sr"]
    proc = _start_and_kill_after(cmd, out / "batch_log.jsonl", n_ok=10, timeout_s=600)
    assert proc.returncode == -signal.SIGKILL
    time.sleep(1.5)  # the parts notice their parent is gone (they poll every 0.5 s)
    n_logged = len(_log(out))
    time.sleep(1.5)
    assert len(_log(out)) == n_logged, "a part kept running after the batch was killed"
    finished = {e["study_instance_uid"] for e in _log(out) if e.get("status") == "ok"}
    assert 10 <= len(finished) < 20
    for d in out.iterdir():  # every visible result folder is complete; partial ones stay hidden
        if d.is_dir() and not d.name.startswith("."):
            assert (d / "report.json").is_file(), d
    before = {u: (out / _safe(u) / "report.json").read_bytes() for u in finished}
    mtimes = {u: (out / _safe(u) / "report.json").stat().st_mtime_ns for u in finished}
    res = subprocess.run(cmd, capture_output=True, text=True, check=False)
    assert res.returncode == 0, res.stderr[-2000:]
    second = _log(out)[n_logged:]
    status = {e["study_instance_uid"]: e["status"] for e in second}
    assert len(status) == 20
    assert {u: status[u] for u in finished} == {u: "skipped (done)" for u in finished}
    assert sum(1 for s in status.values() if s == "ok") == 20 - len(finished)
    for u in finished:
        assert (out / _safe(u) / "report.json").read_bytes() == before[u]
        assert (out / _safe(u) / "report.json").stat().st_mtime_ns == mtimes[u]
    done = [d for d in out.iterdir() if d.is_dir() and not d.name.startswith(".")]
    assert len(done) == 20 and all((d / "report.json").is_file() and (d / "sr.dcm").is_file() for d in done)
