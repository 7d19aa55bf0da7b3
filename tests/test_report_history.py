"""Versions of an output folder: a commit replaces the files and keeps the old ones in history/;
a crash at any step leaves the old or the new version, complete, once recovered."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from lumbargrade.report.history import commit_version, recover, write_atomic


def _folder(tmp_path: Path) -> Path:
    out = tmp_path / "out"
    (out / "levels" / "L4-L5").mkdir(parents=True)
    (out / "report.json").write_text(json.dumps({"v": 1}))
    (out / "sr.dcm").write_bytes(b"old sr")
    (out / "levels" / "L4-L5" / "labels.png").write_bytes(b"old labels")
    return out


def _build(staging: Path) -> None:
    (staging / "report.json").write_text(json.dumps({"v": 2}))
    (staging / "sr.dcm").write_bytes(b"new sr")


def _state(out: Path) -> dict:
    return {str(p.relative_to(out)): p.read_bytes() for p in sorted(out.rglob("*")) if p.is_file()}


def test_commit_replaces_and_keeps_the_old_version(tmp_path):
    out = _folder(tmp_path)
    before = _state(out)
    stamp = commit_version(out, _build, stamp="T1")
    assert stamp == "T1"
    assert json.loads((out / "report.json").read_text()) == {"v": 2}
    assert (out / "sr.dcm").read_bytes() == b"new sr"
    assert (out / "levels/L4-L5/labels.png").read_bytes() == b"old labels"  # unchanged files carried over
    old = {k.removeprefix("history/T1/"): v for k, v in _state(out).items() if k.startswith("history/T1/")}
    assert old == before
    assert not [p for p in out.iterdir() if p.name.startswith(".")]  # no journal or staging left
    commit_version(out, _build, stamp="T2")  # the history is not copied into later versions
    assert sorted(p.name for p in (out / "history").iterdir()) == ["T1", "T2"]
    assert not (out / "history" / "T2" / "history").exists()


def test_a_failing_build_changes_nothing(tmp_path):
    out = _folder(tmp_path)
    before = _state(out)

    def bad(staging: Path) -> None:
        (staging / "report.json").write_text("half")
        raise RuntimeError("writer failed")

    with pytest.raises(RuntimeError):
        commit_version(out, bad)
    assert _state(out) == before
    assert not [p for p in out.iterdir() if p.name.startswith(".")]


@pytest.mark.parametrize("crash_after", [0, 1, 2, 3, 4, 5])
def test_a_crash_during_the_renames_is_finished_by_recover(tmp_path, monkeypatch, crash_after):
    """Kill the commit after n renames (a crashed process): recover() completes it."""
    out = _folder(tmp_path)
    before = _state(out)
    real_rename = Path.rename
    calls = {"n": 0}

    class Crash(BaseException):
        pass

    def rename(self, target):
        if calls["n"] >= crash_after:
            raise Crash()
        calls["n"] += 1
        return real_rename(self, target)

    monkeypatch.setattr(Path, "rename", rename)
    with pytest.raises(Crash):
        commit_version(out, _build, stamp="T1")
    monkeypatch.setattr(Path, "rename", real_rename)
    assert recover(out)
    after = _state(out)
    assert json.loads(after["report.json"]) == {"v": 2} and after["sr.dcm"] == b"new sr"
    assert after["levels/L4-L5/labels.png"] == b"old labels"
    assert {k.removeprefix("history/T1/"): v for k, v in after.items() if k.startswith("history/")} == before
    assert not [p for p in out.iterdir() if p.name.startswith(".")]
    assert not recover(out)  # nothing left to do


def test_staging_without_a_journal_is_dropped(tmp_path):
    out = _folder(tmp_path)
    before = _state(out)
    (out / ".version-tmp-X").mkdir()
    (out / ".version-tmp-X" / "report.json").write_text("never committed")
    assert recover(out)
    assert _state(out) == before


def test_write_atomic_replaces_whole_files(tmp_path):
    p = tmp_path / "a.json"
    write_atomic(p, "one")
    write_atomic(p, b"two")
    assert p.read_text() == "two"
    assert os.listdir(tmp_path) == ["a.json"]
