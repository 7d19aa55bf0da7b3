"""Dural sac and disc segmentation on the axial T2 slice (stage one of the paper).

Importing this package is cheap: torch and MONAI load only when a model is built or loaded.

* :mod:`.models` - registry (``register_model``, ``create_model``, ``list_models``)
* :mod:`.preprocessing` - resampling to the fixed field (mm per pixel) and back
* :mod:`.dataset`, :mod:`.augment`, :mod:`.losses`, :mod:`.training` - ``lumbargrade train segmentation``
* :mod:`.inference` - ``load_segmenter(path).segment(image, spacing) -> (sac_mask, disc_mask)``
"""

from __future__ import annotations

import importlib
from typing import Any

__all__ = [
    "SegConfig",
    "Segmenter",
    "create_model",
    "list_models",
    "load_segmenter",
    "register_model",
    "train_segmentation",
]

_LAZY = {
    "create_model": ".models",
    "list_models": ".models",
    "register_model": ".models",
    "load_segmenter": ".inference",
    "Segmenter": ".inference",
    "SegConfig": ".training",
    "train_segmentation": ".training",
}


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        return getattr(importlib.import_module(_LAZY[name], __name__), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
