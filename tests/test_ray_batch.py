"""``analyze --batch ... --ray``: the batch on Ray, same per-study folders and resumable log.

The fast tests need no running Ray (the missing extra, option clashes, batch manifests); the
Ray runs are marked slow (a local Ray takes 5-30 s to start on a 2-core machine)."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from lumbargrade.cli import main

ROOT = Path(__file__).resolve().parents[1]


def test_ray_without_the_extra_is_one_line_naming_it(tmp_path, monkeypatch, capsys):
    (tmp_path / "b" / "S0").mkdir(parents=True)
    monkeypatch.setitem(sys.modules, "ray", None)  # `import ray` raises ImportError
    code = main(["analyze", "--batch", str(tmp_path / "b"), "--out", str(tmp_path / "o"), "--ray"])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and len(err) == 1
    assert "lumbargrade[scale]" in err[0] and err[0].startswith("lumbargrade: error: --ray")


def test_ray_and_processes_together_are_refused(tmp_path, capsys):
    (tmp_path / "b" / "S0").mkdir(parents=True)
    code = main(["analyze", "--batch", str(tmp_path / "b"), "--out", str(tmp_path / "o"), "--ray",
                 "--processes", "2"])
    assert code == 2 and "not both" in capsys.readouterr().err


def test_batch_manifest_csv_and_text(tmp_path):
    from lumbargrade.analysis_runner import read_batch_manifest
    from lumbargrade.errors import InputError

    for n in ("a", "b"):
        (tmp_path / "studies" / n).mkdir(parents=True)
    csv = tmp_path / "manifest.csv"
    csv.write_text("patient_id,split,level,study_dir\nP0,test,L1/L2,studies/a\nP0,test,L2/L3,studies/a\n"
                   "P1,test,L1/L2,studies/b\n")
    assert read_batch_manifest(csv) == [tmp_path / "studies" / "a", tmp_path / "studies" / "b"]
    txt = tmp_path / "list.txt"
    txt.write_text(f"# studies\nstudies/b\n\n{tmp_path / 'studies' / 'a'}  # absolute\n")
    assert read_batch_manifest(txt) == [tmp_path / "studies" / "b", tmp_path / "studies" / "a"]
    bad = tmp_path / "bad.csv"
    bad.write_text("patient_id,level\nP0,L1/L2\n")
    with pytest.raises(InputError, match="study_dir"):
        read_batch_manifest(bad)


def _ray_processes() -> list[int]:
    from lumbargrade.ray_runner import _ray_processes

    return [p.pid for p in _ray_processes()]


@pytest.fixture(scope="module")
def batch(tmp_path_factory):
    pytest.importorskip("ray")
    import importlib.util

    from lumbargrade.phantom.cohort import generate_cohort

    root = tmp_path_factory.mktemp("raybatch")
    generate_cohort(root / "cohort", 4, 31, split=(0, 0, 4), progress=False)
    studies = root / "studies"
    studies.mkdir()
    for p in sorted((root / "cohort").glob("P*/dicom")):
        (studies / p.parent.name).symlink_to(p, target_is_directory=True)
    spec = importlib.util.spec_from_file_location("pipeline_speed", ROOT / "benchmarks" / "pipeline_speed.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    pack = mod.make_random_pack(root / "pack", "fast", tiny=True, landmarks="random")
    return root, studies, pack


def _log(out: Path) -> list[dict]:
    return [json.loads(x) for x in (out / "batch_log.jsonl").read_text().splitlines() if x.strip()]


def _comparable(report: Path) -> dict:
    """report.json without timings and without the UIDs each run gives its new SEG and SR."""
    def drop(d):
        if isinstance(d, dict):
            return {k: drop(v) for k, v in d.items() if k not in ("sop_instance_uid", "series_instance_uid")}
        return [drop(v) for v in d] if isinstance(d, list) else d

    d = json.loads(report.read_text())
    d.pop("timings_s", None)
    d["dicom"] = drop(d.get("dicom"))
    return d


@pytest.mark.slow
def test_ray_batch_equals_one_process_and_resumes_after_the_driver_is_killed(batch, capsys):
    root, studies, pack = batch
    common = ["--batch", str(studies), "--models", str(pack), "--outputs", "seg,sr"]
    assert main(["analyze", *common, "--out", str(root / "one")]) == 0
    ray_out = root / "ray"
    cmd = [sys.executable, "-m", "lumbargrade", "analyze", *common, "--out", str(ray_out), "--ray"]
    # the driver is SIGKILLed once one study is logged
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.time() + 300
    while time.time() < deadline and proc.poll() is None:
        if (ray_out / "batch_log.jsonl").is_file() and _log(ray_out):
            proc.send_signal(signal.SIGKILL)
            break
        time.sleep(0.05)
    proc.wait()
    assert proc.returncode == -signal.SIGKILL
    first = {e["study_instance_uid"] for e in _log(ray_out) if e["status"] == "ok"}
    assert 1 <= len(first) < 4
    time.sleep(8)  # the reaper ends Ray's processes once the driver is gone
    assert _ray_processes() == []
    before = {u: (ray_out / u / "report.json").read_bytes() for u in first}
    res = subprocess.run(cmd, capture_output=True, text=True, check=False)
    assert res.returncode == 0, res.stderr[-2000:]
    second = _log(ray_out)[len(_log(ray_out)) - 4:]
    status = {e["study_instance_uid"]: e["status"] for e in second}
    assert len(status) == 4 and all(status[u] == "skipped (done)" for u in first)
    for u in first:
        assert (ray_out / u / "report.json").read_bytes() == before[u]
    # the same per-study folders and results as one process
    one = sorted(d.name for d in (root / "one").iterdir() if d.is_dir())
    assert sorted(d.name for d in ray_out.iterdir() if d.is_dir() and not d.name.startswith(".")) == one
    for u in one:
        assert _comparable(ray_out / u / "report.json") == _comparable(root / "one" / u / "report.json")
        for png in (root / "one" / u / "levels").glob("*/labels.png"):
            assert (ray_out / u / "levels" / png.parent.name / "labels.png").read_bytes() == png.read_bytes()
        assert (ray_out / u / "sr.dcm").is_file()
    assert _ray_processes() == []
