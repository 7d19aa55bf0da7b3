"""The reader's own statements on an ``analyze`` output: grades and the signature.

* :func:`set_reader_grades`: the grades a reader gives for a level (any of the five findings;
  ``None`` leaves a finding to the models), kept in the level's record as ``"reader": {"grades",
  "by", "when"}``. The SR's qualitative evaluations and the HTML report show them.
* :func:`sign_off`: the reader signs the report: ``report.json`` gains ``"signed": {"by", "when",
  "organization"}`` and a **new SR instance** is written, VERIFIED and FINAL, with the reader as
  verifying observer and the previous SR in its Predecessor Documents Sequence (the previous SR
  itself is kept in ``OUT/history/``).

Both keep the previous outputs in ``OUT/history/<timestamp>/`` (see :mod:`lumbargrade.regrade`); a
later change of masks, slice or grades withdraws the signature (the history keeps it).
"""

from __future__ import annotations

import copy
import datetime as _dt
from pathlib import Path
from typing import Any

from .errors import InputError
from .grading.names import BINARY_LABELS, CENTRAL_GRADES, LATERAL_FINDINGS

__all__ = ["FINDING_CHOICES", "set_reader_grades", "sign_off", "study_status"]

#: The grades a reader can give, per finding.
FINDING_CHOICES: dict[str, tuple[str, ...]] = {
    "central_canal": CENTRAL_GRADES,
    **{k: BINARY_LABELS for k in LATERAL_FINDINGS},
}


def study_status(report: dict[str, Any]) -> str:
    """``"signed"``, ``"in review"`` (changed or graded by a reader, not signed) or ``"new"``."""
    if report.get("signed"):
        return "signed"
    if report.get("history") or any((r.get("reader") or {}).get("grades") for r in report.get("levels", [])):
        return "in review"
    return "new"


def _check_grades(grades: Any) -> dict[str, str | None]:
    if not isinstance(grades, dict) or not grades:
        raise InputError("grades", "give at least one finding and its grade")
    out: dict[str, str | None] = {}
    for key, value in grades.items():
        if key not in FINDING_CHOICES:
            raise InputError("grades", f"unknown finding {key!r}; one of {', '.join(FINDING_CHOICES)}")
        if value in (None, ""):
            out[key] = None
            continue
        if value not in FINDING_CHOICES[key]:
            raise InputError("grades", f"{key}: {value!r} is not one of {', '.join(FINDING_CHOICES[key])}")
        out[key] = str(value)
    return out


def set_reader_grades(
    out: str | Path,
    level: str,
    grades: dict[str, str | None],
    *,
    by: str,
    now: _dt.datetime | None = None,
    **load: Any,
) -> dict[str, Any]:
    """Record the reader's ``grades`` for ``level`` (``{"central_canal": "moderate",
    "foramen_left": "moderate/severe", ...}``; ``None`` returns a finding to the models) and
    rewrite the SR and HTML; returns the new report. ``load``: see
    :func:`lumbargrade.regrade.load_analysis`."""
    from .regrade import _check_by, _check_level, history_entry, load_analysis, write_version
    from .report.history import new_timestamp

    by = _check_by(by)
    level = _check_level(level)
    grades = _check_grades(grades)
    an = load_analysis(out, **load)
    idx = an.level_index(level)
    now = now or _dt.datetime.now(_dt.UTC)
    when = now.isoformat(timespec="seconds")
    ts = new_timestamp(an.out, now)
    new = copy.deepcopy(an.report)
    rec = new["levels"][idx]
    merged = dict((rec.get("reader") or {}).get("grades") or {})
    merged.update(grades)
    merged = {k: v for k, v in merged.items() if v}
    if merged:
        rec["reader"] = {"grades": merged, "by": by, "when": when}
    else:
        rec.pop("reader", None)
    said = ", ".join(f"{k} {v or 'as the models'}" for k, v in grades.items())
    history_entry(new, {"when": when, "by": by, "level": level, "reason": f"reader's grades: {said}",
                        "previous": f"history/{ts}", "source": "reader"})
    return write_version(an, new, ts, writers=("sr", "html"))


def sign_off(
    out: str | Path,
    *,
    by: str,
    organization: str = "",
    now: _dt.datetime | None = None,
    **load: Any,
) -> dict[str, Any]:
    """Sign the report in ``out`` as ``by`` (of ``organization``): a new, verified SR instance
    and the signed state in ``report.json`` and the HTML; returns the new report. ``load``: see
    :func:`lumbargrade.regrade.load_analysis`."""
    from .regrade import _check_by, history_entry, load_analysis, write_version
    from .report.history import new_timestamp

    by = _check_by(by)
    organization = " ".join(str(organization or "").split())[:64]
    an = load_analysis(out, **load)
    if an.report.get("signed"):
        s = an.report["signed"]
        raise InputError(an.out, f"already signed by {s.get('by')} at {s.get('when')}")
    now = now or _dt.datetime.now(_dt.UTC)
    when = now.isoformat(timespec="seconds")
    ts = new_timestamp(an.out, now)
    new = copy.deepcopy(an.report)
    history_entry(new, {"when": when, "by": by, "level": None, "reason": "signed off",
                        "previous": f"history/{ts}", "source": "reader"})
    new["signed"] = {"by": by, "when": when, "organization": organization}
    return write_version(an, new, ts, writers=("sr", "html"))
