"""Services around the analysis: the DICOM node (``lumbargrade serve``) that receives studies,
analyzes them and sends the SEG and SR back, the DICOMweb download (``lumbargrade pull``), and the
review web app (:mod:`.review`, ``lumbargrade review``, extra ``review``).

Everything here needs the optional ``pacs`` extra (pynetdicom, dicomweb-client), imported lazily:
:func:`require_pacs` turns a missing extra into one line naming it.
"""

from __future__ import annotations

__all__ = ["require_pacs"]

EXTRA_HINT = "pip install 'lumbargrade[pacs]'"


def require_pacs(command: str, modules: tuple[str, ...] = ("pynetdicom", "dicomweb_client")) -> None:
    """Raise :class:`lumbargrade.errors.InputError` (exit 2) when the ``pacs`` extra is missing."""
    import importlib.util

    from ..errors import InputError

    missing = [m for m in modules if importlib.util.find_spec(m) is None]
    if missing:
        raise InputError(
            command, f"needs the optional 'pacs' extra ({', '.join(missing)} not installed): {EXTRA_HINT}"
        )
