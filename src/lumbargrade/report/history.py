"""Versions of an ``analyze`` output folder: replace its files with a new version and keep the old
one, unchanged, in ``OUT/history/<timestamp>/``, so that a crash at any moment never leaves a
half-written folder.

:func:`commit_version` works in three steps:

1. the new version is built completely in a hidden staging folder ``OUT/.version-tmp-<ts>/``
   (the caller writes into it);
2. a journal ``OUT/.commit-<ts>.json`` names the staging folder, the history folder and the entries
   being replaced; it is written atomically and from then on the commit is decided;
3. the old entries are renamed into ``history/<ts>/``, then the staging entries into ``OUT``
   (renames within one file system), and the journal is removed.

:func:`recover` (called before every read or change of a folder by ``regrade`` and the review app)
finishes a commit whose journal exists (every step is idempotent) and removes a staging folder
without a journal (a version that was never committed). ``OUT`` holds either the old or the new
version of every entry, and both are complete.
"""

from __future__ import annotations

import datetime as _dt
import json
import os
import shutil
from collections.abc import Callable
from pathlib import Path

__all__ = ["commit_version", "new_timestamp", "recover", "write_atomic"]

_STAGING = ".version-tmp-"
_JOURNAL = ".commit-"


def write_atomic(path: str | Path, data: bytes | str) -> Path:
    """Write ``data`` to ``path`` through a temporary sibling and a rename (readers see the old or
    the new file, never a part); the file is flushed to disk before the rename."""
    p = Path(path)
    tmp = p.with_name(f".{p.name}.tmp-{os.getpid()}")
    raw = data.encode("utf-8") if isinstance(data, str) else bytes(data)
    with open(tmp, "wb") as f:
        f.write(raw)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, p)
    return p


def new_timestamp(out: Path, now: _dt.datetime | None = None) -> str:
    """A history folder name for ``now`` (UTC, microseconds), unique within ``out/history``."""
    now = now or _dt.datetime.now(_dt.UTC)
    base = now.strftime("%Y%m%dT%H%M%S%fZ")
    name, i = base, 1
    while (out / "history" / name).exists() or (out / f"{_JOURNAL}{name}.json").exists():
        i += 1
        name = f"{base}-{i}"
    return name


def _entries(folder: Path) -> list[str]:
    """The version's top-level entries: everything but ``history`` and hidden names."""
    return sorted(e.name for e in folder.iterdir() if e.name != "history" and not e.name.startswith("."))


def _finish(out: Path, journal: Path) -> None:
    j = json.loads(journal.read_text())
    staging, hist = out / j["staging"], out / j["history"]
    hist.mkdir(parents=True, exist_ok=True)
    for name in j["old"]:  # 1: the old entries into the history (skipping those already there)
        src, dst = out / name, hist / name
        if src.exists() and not dst.exists():
            src.rename(dst)
    if staging.is_dir():  # 2: the new entries into place
        for name in j["new"]:
            src, dst = staging / name, out / name
            if src.exists():
                src.rename(dst)
        shutil.rmtree(staging, ignore_errors=True)
    journal.unlink(missing_ok=True)


def recover(out: str | Path) -> bool:
    """Finish an interrupted commit in ``out`` (see the module docstring); drop staging folders
    that were never committed. Returns True when something was repaired."""
    out = Path(out)
    if not out.is_dir():
        return False
    repaired = False
    for journal in sorted(out.glob(f"{_JOURNAL}*.json")):
        try:
            _finish(out, journal)
        except (ValueError, KeyError):  # a journal cut short was never complete: not decided
            journal.unlink(missing_ok=True)
        repaired = True
    for staging in out.glob(f"{_STAGING}*"):
        if staging.is_dir():
            shutil.rmtree(staging, ignore_errors=True)
            repaired = True
    return repaired


def commit_version(out: str | Path, build: Callable[[Path], None], *, stamp: str | None = None,
                   copy_unchanged: bool = True) -> str:
    """Replace the contents of ``out`` by a new version and keep the old one in
    ``out/history/<stamp>/``; returns ``stamp``.

    ``build(staging)`` writes the new version into the staging folder, which (with
    ``copy_unchanged``) starts as a copy of the current version, so ``build`` only writes what
    changes. If ``build`` raises, nothing in ``out`` changes.
    """
    out = Path(out)
    recover(out)
    stamp = stamp or new_timestamp(out)
    staging = out / f"{_STAGING}{stamp}"
    staging.mkdir()
    try:
        if copy_unchanged:
            for name in _entries(out):
                src = out / name
                if src.is_dir():
                    shutil.copytree(src, staging / name)
                else:
                    shutil.copy2(src, staging / name)
        build(staging)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    journal = out / f"{_JOURNAL}{stamp}.json"
    write_atomic(journal, json.dumps({"staging": staging.name, "history": f"history/{stamp}",
                                      "old": _entries(out), "new": _entries(staging)}))
    _finish(out, journal)
    return stamp
