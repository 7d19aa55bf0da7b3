"""An output that cannot be written is an error: one line naming the output and the cause, a
non-zero exit, no finished-looking result; a batch logs the study as failed and retries it."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from lumbargrade.cli import main

pytestmark = pytest.mark.core

CAUSE = "disk quota exceeded (test)"


def _break(monkeypatch, writer: str) -> None:
    """Make one writer fail the way a full disk or a library bug would."""

    def boom(*args, **kwargs):
        raise OSError(CAUSE)

    if writer == "seg":
        from lumbargrade.report import dicom_seg

        monkeypatch.setattr(dicom_seg, "_write_seg", boom)
    elif writer == "sr":
        from lumbargrade.report import dicom_sr

        monkeypatch.setattr(dicom_sr, "_write_sr", boom)
    elif writer == "html":
        from lumbargrade.report import html_report

        monkeypatch.setattr(html_report, "render_html", boom)
    else:  # report.json and the label maps: the folder itself
        from lumbargrade.report import json_report

        monkeypatch.setattr(json_report, "report_dict", lambda *a, **k: (_ for _ in ()).throw(OSError(28, CAUSE)))


OUTPUT = {"seg": "seg.dcm", "sr": "sr.dcm", "html": "report.html"}


@pytest.mark.parametrize("writer", ["seg", "sr", "html"])
def test_a_failing_writer_fails_analyze_with_one_line(writer, phantom_patient, tmp_path, monkeypatch, capsys):
    _break(monkeypatch, writer)
    out = tmp_path / "out"
    assert main(["analyze", str(phantom_patient / "dicom"), "--out", str(out)]) == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1, err
    assert err[0].startswith(f"lumbargrade: error: {out / OUTPUT[writer]}: cannot write the ")
    assert CAUSE in err[0]
    assert not (out / "report.json").exists()  # nothing that looks finished
    assert not list(tmp_path.glob(".out.tmp-*"))  # and no temporary folder left


def test_an_unwritable_folder_fails_analyze_with_one_line(phantom_patient, tmp_path, monkeypatch, capsys):
    _break(monkeypatch, "folder")
    out = tmp_path / "out"
    assert main(["analyze", str(phantom_patient / "dicom"), "--out", str(out), "--outputs", "none"]) == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and CAUSE in err[0] and str(out) in err[0], err
    assert not out.exists()


def test_a_failing_writer_marks_the_study_failed_in_a_batch_and_the_next_run_retries(
        phantom_cohort, tmp_path, monkeypatch, capsys):
    batch = tmp_path / "batch"
    batch.mkdir()
    patients = sorted(p for p in phantom_cohort.iterdir() if p.is_dir())[:2]
    for p in patients:
        (batch / p.name).symlink_to(p / "dicom", target_is_directory=True)
    out = tmp_path / "out"
    with monkeypatch.context() as m:
        _break(m, "sr")
        assert main(["analyze", "--batch", str(batch), "--out", str(out), "--outputs", "seg,sr"]) == 1
    log = [json.loads(line) for line in (out / "batch_log.jsonl").read_text().splitlines()]
    assert [e["status"] for e in log] == ["error", "error"]
    assert all("sr.dcm" in e["error"] and CAUSE in e["error"] for e in log)
    assert not list(out.glob("*/report.json"))
    capsys.readouterr()

    assert main(["analyze", "--batch", str(batch), "--out", str(out), "--outputs", "seg,sr"]) == 0
    log = [json.loads(line) for line in (out / "batch_log.jsonl").read_text().splitlines()]
    assert [e["status"] for e in log[2:]] == ["ok", "ok"]
    assert len(list(out.glob("*/report.json"))) == 2 and len(list(out.glob("*/sr.dcm"))) == 2


def test_a_failing_writer_fails_regrade_and_leaves_the_result_as_it_was(phantom_patient, tmp_path, monkeypatch,
                                                                       capsys):
    out = tmp_path / "out"
    assert main(["analyze", str(phantom_patient / "dicom"), "--out", str(out)]) == 0
    before = {p.relative_to(out): p.read_bytes() for p in out.rglob("*") if p.is_file()}
    edited = tmp_path / "edited.png"
    shutil.copy(out / "levels" / "L4-L5" / "labels.png", edited)
    capsys.readouterr()
    _break(monkeypatch, "seg")
    assert main(["regrade", str(out), "--level", "L4/L5", "--labels", str(edited), "--by", "test"]) == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and str(out / "seg.dcm") in err[0] and CAUSE in err[0], err
    after = {p.relative_to(out): p.read_bytes() for p in out.rglob("*") if p.is_file()}
    assert after == before
    assert not list(Path(out).glob(".regrade-tmp-*"))
