"""New DICOM UIDs for the SEG and SR: random, or derived from a seed so that re-running the same
analysis (the DICOM node after a restart) gives the same SOP Instance UIDs and a receiving
archive sees a re-sent result as the same instances, not as duplicates."""

from __future__ import annotations

from typing import Any

__all__ = ["new_uid", "result_seed"]


def result_seed(result: Any) -> str | None:
    """The UID seed a :class:`lumbargrade.pipeline.StudyResult` carries (None: random UIDs)."""
    return getattr(result, "uid_seed", None) or None


def new_uid(seed: str | None, *parts: Any) -> str:
    """A random UID when ``seed`` is None; otherwise a UID that is a function of ``seed`` and
    ``parts`` only (pydicom's ``generate_uid`` with those as entropy sources)."""
    from pydicom.uid import generate_uid

    if not seed:
        import highdicom as hd

        return str(hd.UID())
    return str(generate_uid(entropy_srcs=["lumbargrade-output", str(seed), *(str(p) for p in parts)]))
