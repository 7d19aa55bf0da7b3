"""``lumbargrade pull``: download a study from a DICOMweb archive (QIDO-RS to list its series,
WADO-RS to retrieve them) into a folder that ``lumbargrade analyze`` reads."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

from ..errors import InputError
from .addresses import tag

__all__ = ["pull_study"]

#: Series of these modalities are downloaded by default (results such as SEG and SR are not).
DEFAULT_MODALITIES = ("MR",)


def _client(url: str, headers: dict[str, str], timeout_s: float) -> Any:
    import requests
    from dicomweb_client.api import DICOMwebClient

    class _Session(requests.Session):  # dicomweb-client sets no timeout of its own
        def request(self, *args: Any, **kwargs: Any) -> Any:
            kwargs.setdefault("timeout", timeout_s)
            return super().request(*args, **kwargs)

    session = _Session()
    session.headers.update(headers)
    return DICOMwebClient(url=url, session=session)


def _value(item: dict[str, Any], tag_hex: str) -> str | None:
    v = (item.get(tag_hex) or {}).get("Value")
    return str(v[0]) if v else None


def pull_study(url: str, study_uid: str, out: str | Path, modalities: tuple[str, ...] | None = DEFAULT_MODALITIES,
               headers: dict[str, str] | None = None, overwrite: bool = False, timeout_s: float = 60.0,
               progress: bool = True) -> dict[str, Any]:
    """Download the series of ``study_uid`` (those of ``modalities``; None: all) into
    ``out/<SeriesInstanceUID>/<SOPInstanceUID>.dcm``. Written to a temporary sibling folder and
    renamed into place. Returns ``{"series": n, "instances": n, "bytes": n, "skipped_series": n}``."""
    import os
    import shutil

    import requests

    out = Path(out)
    if out.exists() and (not out.is_dir() or any(out.iterdir())) and not overwrite:
        raise InputError(out, "already exists and is not empty; pass --overwrite to replace it")
    client = _client(url.rstrip("/"), headers or {}, timeout_s)
    where = f"{url} study {tag(study_uid)}"
    try:
        series = client.search_for_series(study_instance_uid=study_uid)
    except requests.HTTPError as e:
        code = getattr(e.response, "status_code", "?")
        raise InputError(url, f"QIDO-RS search answered HTTP {code}") from e
    except requests.RequestException as e:
        raise InputError(url, f"cannot reach the DICOMweb service ({type(e).__name__})") from e
    if not series:
        raise InputError(where, "no such study on the DICOMweb service (QIDO-RS found no series)")
    wanted = []
    for s in series:
        mod = _value(s, "00080060")
        uid = _value(s, "0020000E")
        if uid and (modalities is None or (mod or "").upper() in modalities):
            wanted.append((uid, mod))
    if not wanted:
        kinds = sorted({_value(s, "00080060") or "?" for s in series})
        raise InputError(where, f"no {'/'.join(modalities or ())} series (the study has {', '.join(kinds)}); "
                         "pass --modality to choose others")
    tmp = out.parent / f".{out.name}.tmp-{os.getpid()}"
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    n_inst = n_bytes = 0
    try:
        for k, (series_uid, mod) in enumerate(wanted, 1):
            try:
                datasets = client.retrieve_series(study_uid, series_uid)
            except requests.HTTPError as e:
                code = getattr(e.response, "status_code", "?")
                raise InputError(where, f"WADO-RS retrieval of series {k} answered HTTP {code}") from e
            except requests.RequestException as e:
                raise InputError(url, f"WADO-RS retrieval failed ({type(e).__name__})") from e
            d = tmp / _safe(series_uid)
            d.mkdir()
            for ds in datasets:
                path = d / f"{_safe(str(ds.SOPInstanceUID))}.dcm"
                ds.save_as(path, enforce_file_format=True)
                n_inst += 1
                n_bytes += path.stat().st_size
            if progress:
                print(f"series {k}/{len(wanted)} ({mod or '?'}): {len(datasets)} instances", file=sys.stderr)
        if out.exists():
            shutil.rmtree(out)
        tmp.rename(out)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return {"series": len(wanted), "instances": n_inst, "bytes": n_bytes, "skipped_series": len(series) - len(wanted)}


def _safe(uid: str) -> str:
    return "".join(ch if ch.isalnum() or ch in ".-_" else "_" for ch in uid)
