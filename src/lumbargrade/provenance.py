"""Paths in records that other people read: commands and results without this machine's folders.

A model pack, a run folder's ``command.txt`` or an evaluation's ``metrics.json`` travels: a
recorded ``--data /home/me/scratch/c200/manifest.csv`` is noise on every other machine. What is
recorded instead:

* commands (:func:`portable_command`): each path option's value becomes a placeholder that says
  what it is (:data:`PLACEHOLDERS`: ``--data COHORT/manifest.csv``, ``--real SPIDER_DIR``,
  ``--out runs/segmentation``); any other absolute path as by :func:`portable_path`;
* paths in results (:func:`portable_path`): relative to the folder the record is written into, or
  to the current folder, when inside it; inside the installed package as ``lumbargrade/...``;
  otherwise the placeholder the caller names (``COHORT``), or ``.../<name>``;
* files already written (:func:`scrub_text`, :func:`scrub_json`, used by ``pack build``): every
  known path replaced by its placeholder, then every remaining absolute path as above.
"""

from __future__ import annotations

import json
import os
import re
import shlex
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

__all__ = [
    "ABSOLUTE_PATH",
    "PLACEHOLDERS",
    "command_placeholders",
    "portable_argv",
    "portable_command",
    "portable_path",
    "scrub_json",
    "scrub_text",
]

#: Command-line options whose value is a path -> the placeholder recorded for it. ``runs`` keeps
#: the folder's name (``runs/segmentation``); the others keep a file's name (``COHORT/manifest.csv``).
PLACEHOLDERS = {
    "--data": "COHORT",
    "--real": "SPIDER_DIR",
    "--out": "runs",
    "--segmentation": "runs",
    "--landmarks": "runs",
    "--models": "runs",
    "--predictions": "runs",
    "--box-rule": "runs",
    "--fat-shift": "runs",
    "--checkpoint": "CHECKPOINT_DIR",
    "--bit-checkpoint": "CHECKPOINT_DIR",
    "--config": "CONFIG_DIR",
    "--rules": "CONFIG_DIR",
    "--batch": "STUDIES",
}

#: An absolute POSIX path with at least two parts (``/tmp/x``), not inside a URL or a fraction.
ABSOLUTE_PATH = re.compile(r"(?<![\w.:/~-])/(?:[\w.+~-]+/)+[\w.+~-]*")

_PACKAGE = Path(__file__).resolve().parent
_IN_A_CHECKOUT = re.compile(r".*/lumbargrade/((?:models|data)(?:/.*)?)")


def _inside(path: Path, root: Path) -> Path | None:
    try:
        return path.relative_to(root)
    except ValueError:
        return None


def _absolute(path: str | Path) -> Path:
    return Path(os.path.abspath(os.path.expanduser(str(path))))


def portable_path(path: str | Path | None, base: str | Path | None = None,
                  placeholder: str | None = None) -> str | None:
    """How to record ``path`` in a file others read (see the module docstring).

    ``base``: the folder the record is written into (paths inside it become relative to it);
    ``placeholder``: what an outside path is recorded as (a file keeps its name under it:
    ``COHORT/manifest.csv``); default ``.../<name>``."""
    if path is None:
        return None
    p = _absolute(path)
    if base is not None:
        rel = _inside(p, _absolute(base))
        if rel is not None:
            return rel.as_posix() or "."
    rel = _inside(p, _PACKAGE)
    if rel is not None:
        return ("lumbargrade/" + rel.as_posix()).rstrip("/.")
    m = _IN_A_CHECKOUT.fullmatch(p.as_posix())
    if m:  # the bundled models of another copy of the package (a checkout, site-packages)
        return "lumbargrade/" + m.group(1)
    cwd = Path.cwd()
    rel = _inside(p, cwd) if cwd.parent != cwd else None
    if rel is not None:
        return rel.as_posix() or "."
    if placeholder is not None:
        return placeholder if not p.suffix else f"{placeholder}/{p.name}"
    return f".../{p.name}" if p.name else "..."


def _placeholder_value(option: str, value: str, nth: int = 1) -> str:
    """The placeholder of the ``nth`` occurrence of a path option (a repeated ``--data``: the
    second is ``COHORT_2``, so the record still tells the cohorts apart)."""
    ph = PLACEHOLDERS[option]
    if nth > 1 and ph != "runs":
        ph = f"{ph}_{nth}"
    p = _absolute(value)
    if _inside(p, _PACKAGE) is not None or _IN_A_CHECKOUT.fullmatch(p.as_posix()):
        return portable_path(p)  # the bundled pack or one of its models
    if ph == "runs":
        if p.suffix and p.parent.name:  # a file in a run folder: keep the folder (runs/boxes_cal/box_rule.json)
            return f"runs/{p.parent.name}/{p.name}"
        return f"runs/{p.name}" if p.name else "runs"
    return ph if not p.suffix else f"{ph}/{p.name}"


def command_placeholders(argv: Sequence[str]) -> dict[str, str]:
    """``{path as given: placeholder}`` for the path options of a command line (and the
    absolute form of each path), longest first, to replace those paths in other records. A value
    already anonymous (``.../name``) maps nothing but keeps its place in the count (``COHORT_2``)."""
    out: dict[str, str] = {}
    args = list(argv)
    seen: dict[str, int] = {}
    for i, a in enumerate(args):
        opt, eq, val = a.partition("=")
        if eq and opt in PLACEHOLDERS:
            value = val
        elif a in PLACEHOLDERS and i + 1 < len(args):
            opt, value = a, args[i + 1]
        else:
            continue
        if not value or value.startswith("-"):
            continue
        seen[opt] = seen.get(opt, 0) + 1
        if value == "..." or value.startswith(".../"):  # already anonymous (docstring)
            continue
        ph = _placeholder_value(opt, value, seen[opt])
        pairs = [(value, ph)]
        if "/" in ph and PLACEHOLDERS[opt] != "runs":  # COHORT/manifest.csv: its folder is COHORT
            pairs.append((str(Path(value).parent), ph.rsplit("/", 1)[0]))
        for v, placeholder in pairs:
            for form in {v, str(_absolute(v)), str(Path(v).resolve())}:
                if form not in (".", "/") and len(form) > 1:
                    out.setdefault(form, placeholder)
    return dict(sorted(out.items(), key=lambda kv: -len(kv[0])))


def portable_argv(argv: Sequence[str]) -> list[str]:
    """``argv`` with the values of path options as placeholders and other absolute paths made
    portable (see :func:`portable_path`); options and other values unchanged."""
    args = list(argv)
    out: list[str] = []
    seen: dict[str, int] = {}
    i = 0
    while i < len(args):
        a = args[i]
        opt, eq, val = a.partition("=")
        if a.startswith("--") and eq and opt in PLACEHOLDERS:
            seen[opt] = seen.get(opt, 0) + 1
            out.append(f"{opt}={_placeholder_value(opt, val, seen[opt])}")
        elif a in PLACEHOLDERS and i + 1 < len(args) and not args[i + 1].startswith("-"):
            seen[a] = seen.get(a, 0) + 1
            out += [a, _placeholder_value(a, args[i + 1], seen[a])]
            i += 1
        else:
            out.append(scrub_text(a))
        i += 1
    return out


def portable_command(argv: Sequence[str]) -> str:
    """One shell line of :func:`portable_argv` (``argv`` starting with the program name)."""
    return shlex.join(portable_argv(argv))


def scrub_text(text: str, known: Mapping[str, str] | None = None) -> str:
    """``text`` with every path of ``known`` (path -> placeholder; longest first) replaced, then
    every remaining absolute path made portable (:func:`portable_path`)."""
    for path, ph in sorted((known or {}).items(), key=lambda kv: -len(kv[0])):
        text = re.sub(r"(?<![\w.:/~-])" + re.escape(path) + r"(?![\w.+~-])", ph, text)
    return ABSOLUTE_PATH.sub(lambda m: portable_path(m.group(0).rstrip("/")) or m.group(0), text)


def scrub_json(obj: Any, known: Mapping[str, str] | None = None) -> Any:
    """:func:`scrub_text` on every string (keys included) of a JSON-like object."""
    if isinstance(obj, str):
        return scrub_text(obj, known)
    if isinstance(obj, Mapping):
        return {scrub_text(str(k), known): scrub_json(v, known) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [scrub_json(v, known) for v in obj]
    return obj


def scrub_file(path: str | Path, known: Mapping[str, str] | None = None) -> bool:
    """Rewrite a ``.json`` or text file in place with :func:`scrub_json` / :func:`scrub_text`;
    True when it changed. JSON keeps two-space indentation."""
    path = Path(path)
    text = path.read_text(encoding="utf-8")
    if path.suffix == ".json":
        try:
            new = json.dumps(scrub_json(json.loads(text), known), indent=2) + "\n"
        except ValueError:
            new = scrub_text(text, known)
    else:
        new = scrub_text(text, known)
    if new != text:
        path.write_text(new, encoding="utf-8")
        return True
    return False
