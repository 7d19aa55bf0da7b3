"""Series roles (``axial_t2``, ``sagittal_t2``) from rules kept as data.

The default rules are ``lumbargrade/data/role_rules.json`` (its ``_doc`` key explains every field).
Orientation comes first (a role names one plane), then words in SeriesDescription / ProtocolName /
SequenceName, then the sequence tags (ScanningSequence, EchoTime, RepetitionTime). A user file
(``--rules FILE``) overrides the defaults key by key; inside ``roles``, field by field.
"""

from __future__ import annotations

import copy
import json
import re
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from ..errors import InputError
from .model import Series

__all__ = ["assign_roles", "default_rules", "is_localizer", "load_rules", "role_score", "tokens"]

_TOKEN = re.compile(r"[A-Z0-9*]+")


def default_rules() -> dict:
    """The packaged rules (a fresh copy)."""
    from importlib.resources import files

    text = files("lumbargrade").joinpath("data/role_rules.json").read_text(encoding="utf-8")
    return json.loads(text)


def _merge(base: dict, user: dict) -> dict:
    out = copy.deepcopy(base)
    for k, v in user.items():
        if k == "roles" and isinstance(v, dict):
            roles = out.setdefault("roles", {})
            for role, fields in v.items():
                if fields is None:  # {"roles": {"sagittal_t2": null}} disables a role
                    roles.pop(role, None)
                    continue
                if not isinstance(fields, dict):
                    raise ValueError(f"roles.{role} must be an object")
                roles[role] = {**roles.get(role, {}), **fields}
        elif k == "localizer" and isinstance(v, dict):
            out["localizer"] = {**out.get("localizer", {}), **v}
        else:
            out[k] = v
    return out


def load_rules(rules: str | Path | dict | None = None) -> dict:
    """Rules as a dict: the defaults, overridden by a user JSON file (path) or dict."""
    base = default_rules()
    if rules is None:
        return base
    if isinstance(rules, dict):
        user, where = rules, "rules"
    else:
        where = str(rules)
        p = Path(rules)
        if not p.is_file():
            raise InputError(where, "rules file not found")
        try:
            user = json.loads(p.read_text(encoding="utf-8"))
        except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
            raise InputError(where, f"rules file is not valid JSON ({e})") from None
    if not isinstance(user, dict):
        raise InputError(where, "rules must be a JSON object")
    try:
        out = _merge(base, user)
        for role, r in out.get("roles", {}).items():
            if r.get("plane") not in ("axial", "sagittal", "coronal", "oblique"):
                raise ValueError(f"roles.{role}.plane must be axial, sagittal, coronal or oblique")
    except ValueError as e:
        raise InputError(where, str(e)) from None
    return out


def tokens(*texts: str | None) -> set[str]:
    """Upper-case word tokens (runs of letters, digits and '*') of the given texts."""
    out: set[str] = set()
    for t in texts:
        if t:
            out.update(_TOKEN.findall(str(t).upper()))
    return out


def _words(ws: Iterable[str]) -> set[str]:
    return {str(w).upper() for w in ws}


def is_localizer(series: Series, rules: dict, other_planes: set[str] | None = None) -> bool:
    """True for scouts: ImageType says LOCALIZER, a localizer word in the description, or at most
    ``max_slices`` slices in a plane that another series of the study covers with more slices
    (``other_planes``: the planes of the study's larger series, None = unknown)."""
    loc = rules.get("localizer", {})
    if _words(loc.get("image_type", [])) & {str(v).upper() for v in series.image_type}:
        return True
    if _words(loc.get("words", [])) & tokens(series.description, series.protocol_name):
        return True
    if series.plane == "mixed":
        return True
    if series.n_slices <= int(loc.get("max_slices", 2)):
        if other_planes is None or (other_planes - {series.plane}):
            return True
    return False


def role_score(series: Series, rule: dict) -> int | None:
    """Score of a series for one role rule, or None when it does not qualify."""
    if series.is_localizer or series.plane != rule.get("plane"):
        return None
    if series.n_slices < int(rule.get("min_slices", 1)):
        return None
    mods = _words(rule.get("modalities", []))
    if mods and series.modality and series.modality.upper() not in mods:
        return None
    words = tokens(series.description, series.protocol_name, series.sequence_name)
    if words & _words(rule.get("exclude", [])):
        return None
    te, tr = series.echo_time_ms, series.repetition_time_ms
    t1_te, t1_tr = rule.get("t1_max_echo_time_ms"), rule.get("t1_max_repetition_time_ms")
    if te is not None and tr is not None and t1_te is not None and t1_tr is not None:
        if te < float(t1_te) and tr < float(t1_tr):
            return None
    score = 0
    if words & _words(rule.get("include", [])):
        score += int(rule.get("include_score", 2))
    t2_te, t2_tr = rule.get("t2_min_echo_time_ms"), rule.get("t2_min_repetition_time_ms")
    if (
        "SE" in tokens(series.scanning_sequence)
        and te is not None
        and tr is not None
        and t2_te is not None
        and t2_tr is not None
        and te >= float(t2_te)
        and tr >= float(t2_tr)
    ):
        score += int(rule.get("tag_score", 1))
    if words & _words(rule.get("penalize", [])):
        score -= int(rule.get("penalty_score", 1))
    if score < int(rule.get("min_score", 0)):
        return None
    return score


def assign_roles(series: list[Series], rules: dict) -> list[str]:
    """Mark localizers, then give each role to at most one series (in place); return warnings.

    Tie-break among qualifying series: highest score, then most slices, then lowest
    SeriesNumber, then SeriesInstanceUID.
    """
    warnings: list[str] = []
    big_planes = {
        s.plane for s in series if s.n_slices > int(rules.get("localizer", {}).get("max_slices", 2))
    }
    for s in series:
        s.role = None
        s.is_localizer = is_localizer(s, rules, big_planes)
    for role, rule in rules.get("roles", {}).items():
        cands = []
        for s in series:
            if s.role is not None:
                continue
            sc = role_score(s, rule)
            if sc is not None:
                cands.append((sc, s))
        if not cands:
            continue
        cands.sort(
            key=lambda t: (
                -t[0],
                -t[1].n_slices,
                t[1].series_number if t[1].series_number is not None else 1 << 30,
                t[1].series_instance_uid,
            )
        )
        chosen = cands[0][1]
        chosen.role = role
        if len(cands) > 1:
            names = ", ".join(
                f"'{s.description}' ({s.series_instance_uid}, score {sc}, {s.n_slices} slices)"
                for sc, s in cands
            )
            warnings.append(
                f"{len(cands)} series qualify for {role}: {names}; chose "
                f"'{chosen.description}' (highest score, then most slices, then lowest "
                f"SeriesNumber)"
            )
    return warnings


def describe_rules(rules: dict) -> dict[str, Any]:
    """A short dict of the rules in force (for logs and reports)."""
    return {
        role: {
            "plane": r.get("plane"),
            "include": r.get("include", []),
            "exclude": r.get("exclude", []),
        }
        for role, r in rules.get("roles", {}).items()
    }
