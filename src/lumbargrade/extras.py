"""Optional install extras: which modules a command needs beyond the inference core.

``pip install lumbargrade`` installs the inference core (numpy, scipy, pydicom, highdicom, nibabel,
pillow, tqdm, onnxruntime): ``analyze``, ``demo``, ``inspect``, ``landmarks``, ``regrade``,
``phantom`` and the networks under ONNX Runtime. ``pip install "lumbargrade[train]"`` adds PyTorch
and what training, ONNX export, the evaluation figures, phantom previews and ``reproduce`` need.
:func:`require` checks for the modules without importing them (cheap) and raises
:class:`lumbargrade.errors.MissingExtra` (one line, exit 2) when one is missing.
"""

from __future__ import annotations

import importlib.util
from collections.abc import Iterable

from .errors import MissingExtra

__all__ = ["TRAIN_MODULES", "missing", "require", "torch_available"]

#: Import names the ``train`` extra provides (see pyproject.toml).
TRAIN_MODULES = ("torch", "monai", "timm", "safetensors", "sklearn", "matplotlib", "onnx")


def missing(modules: Iterable[str]) -> list[str]:
    """The modules of ``modules`` that cannot be imported here (found without importing them)."""
    out = []
    for name in modules:
        try:
            found = importlib.util.find_spec(name) is not None
        except (ImportError, ValueError):
            found = False
        if not found:
            out.append(name)
    return out


def require(what: str, modules: Iterable[str] = ("torch",), extra: str = "train",
            alternative: str | None = None) -> None:
    """Raise :class:`MissingExtra` for ``lumbargrade <what>`` when one of ``modules`` is missing
    (``alternative``: what the user can do instead, e.g. ``--no-figures``)."""
    if missing(modules):
        raise MissingExtra(what, extra, alternative)


def torch_available() -> bool:
    """Whether PyTorch (and safetensors, which loads the pack's weights into it) can be imported."""
    return not missing(("torch", "safetensors"))
