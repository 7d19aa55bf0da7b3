"""Reading the SPIDER sagittal PNG layout: ``images/<name>.png`` with ``masks/<name>.png``.

Mask values: 29 intervertebral disc (all levels one value), 76 vertebra (and part of the sacrum),
150 spinal canal, 0 background. Level identities were lost in the PNG conversion, so disc centres
are recovered from the disc mask's connected components, sorted top to bottom; the lowest disc
above the sacrum is L5/S1 and the four above it are L4/L5..L1/L2 (thoracic discs above are
dropped). Pixel spacing was lost: coordinates here are pixels ``[row, col]``.

Source: van der Graaf J.W. et al., "Lumbar spine segmentation in MR images: a dataset and a public
benchmark", Scientific Data 11, 264 (2024), doi:10.1038/s41597-024-03090-w (CC BY 4.0).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

import numpy as np

__all__ = [
    "CANAL_VALUE",
    "DISC_VALUE",
    "VERTEBRA_VALUE",
    "SpiderSlice",
    "disc_centres",
    "list_spider",
    "lumbar_disc_centres",
    "read_spider_image",
    "read_spider_mask",
]

DISC_VALUE = 29
VERTEBRA_VALUE = 76
CANAL_VALUE = 150

_NAME = re.compile(r"^(?P<study>[^_]+)_.*slice(?P<slice>\d+)\.png$")


@dataclass(frozen=True)
class SpiderSlice:
    """One SPIDER PNG slice: its study id, slice number and the image and mask paths."""

    study: str
    slice: int
    image: Path
    mask: Path


def list_spider(root: str | Path) -> list[SpiderSlice]:
    """All ``images/*.png`` under ``root`` that have a mask of the same name, sorted by name.

    Raises :class:`lumbargrade.errors.InputError` when the layout is not there.
    """
    from ..errors import InputError

    root = Path(root)
    img_dir, mask_dir = root / "images", root / "masks"
    if not img_dir.is_dir() or not mask_dir.is_dir():
        raise InputError(root, "not a SPIDER PNG folder (expected images/ and masks/ inside)")
    out = []
    for p in sorted(img_dir.glob("*.png")):
        m = _NAME.match(p.name)
        mp = mask_dir / p.name
        if not m or not mp.is_file():
            continue
        out.append(SpiderSlice(m.group("study"), int(m.group("slice")), p, mp))
    if not out:
        raise InputError(root, "no image/mask PNG pairs named <study>_..._slice<N>.png")
    return out


def read_spider_image(path: str | Path) -> np.ndarray:
    """8-bit PNG (grey, RGB or RGBA) -> (rows, cols) float32 grey image."""
    from PIL import Image

    with Image.open(path) as im:
        return np.asarray(im.convert("L"), dtype=np.float32)


def read_spider_mask(path: str | Path) -> np.ndarray:
    """Mask PNG -> (rows, cols) uint8 label values (first channel when not grey)."""
    from PIL import Image

    with Image.open(path) as im:
        a = np.asarray(im)
    if a.ndim == 3:
        a = a[..., 0]
    return a.astype(np.uint8)


def disc_centres(mask: np.ndarray, min_area_frac: float = 0.08) -> np.ndarray:
    """Centres ``(n, 2)`` [row, col] (pixels) of the discs in a label mask, top to bottom.

    A disc is often split into pieces (a tilted L5/S1 cut by the slice, annotation gaps).
    Components are merged when the straight segment between their centroids crosses little
    vertebra (value 76; adjacent discs always have a vertebral body between them) and they are
    closer than the typical disc spacing; the centre is the area-weighted centroid. Merged discs
    smaller than ``min_area_frac`` times the median area of the largest five are dropped as specks.
    """
    from scipy import ndimage

    mask = np.asarray(mask)
    disc = mask == DISC_VALUE
    vert = mask == VERTEBRA_VALUE
    lab, n = ndimage.label(disc)
    if n == 0:
        return np.zeros((0, 2))
    idx = np.arange(1, n + 1)
    area = np.asarray(ndimage.sum(disc, lab, idx), dtype=float)
    cents = np.asarray(ndimage.center_of_mass(disc, lab, idx), dtype=float).reshape(n, 2)
    ref = float(np.median(np.sort(area)[::-1][:5]))
    big = np.sort(cents[area >= 0.3 * ref][:, 0])
    spacing = float(np.median(np.diff(big))) if big.size >= 2 else float(mask.shape[0])
    comps = [[area[i], cents[i]] for i in np.argsort(cents[:, 0]) if area[i] >= 3]

    def vert_fraction(a: np.ndarray, b: np.ndarray) -> float:
        t = np.linspace(0.0, 1.0, 50)[:, None]
        pts = np.rint(a + t * (b - a)).astype(int)
        return float(vert[pts[:, 0], pts[:, 1]].mean())

    merged = True
    while merged:
        merged = False
        for i in range(len(comps)):
            for j in range(i + 1, len(comps)):
                a, b = comps[i], comps[j]
                if np.hypot(*(a[1] - b[1])) < 0.9 * spacing and vert_fraction(a[1], b[1]) < 0.25:
                    w = a[0] + b[0]
                    comps[i] = [w, (a[1] * a[0] + b[1] * b[0]) / w]
                    del comps[j]
                    merged = True
                    break
            if merged:
                break
    comps = [c for c in comps if c[0] >= min_area_frac * ref]
    comps.sort(key=lambda c: c[1][0])
    return np.array([c[1] for c in comps], dtype=float).reshape(-1, 2)


def lumbar_disc_centres(mask: np.ndarray) -> np.ndarray | None:
    """The five lumbar disc centres ``(5, 2)`` [row, col] (L1/L2..L5/S1), or None.

    The lowest disc is L5/S1 unless a disc lies inside the sacrum's extent: when the lowest
    vertebra component starts above a disc's centre and is the largest-bottomed one (the sacrum),
    discs below its top are dropped. Returns None when fewer than five discs are found.
    """
    c = disc_centres(mask)
    c = _drop_below_sacrum(mask, c)
    if len(c) < 5:
        return None
    return c[-5:]


def _drop_below_sacrum(mask: np.ndarray, centres: np.ndarray) -> np.ndarray:
    """Drop disc centres lying inside the sacrum: below the top of a vertebra component that has
    no disc below it and that extends further down than any disc (a sacral segment)."""
    from scipy import ndimage

    if len(centres) == 0:
        return centres
    vert = np.asarray(mask) == VERTEBRA_VALUE
    lab, n = ndimage.label(vert)
    if n == 0:
        return centres
    sl = ndimage.find_objects(lab)
    area = np.asarray(ndimage.sum(vert, lab, np.arange(1, n + 1)), dtype=float)
    big = [i for i in range(n) if area[i] >= 0.2 * float(np.median(np.sort(area)[::-1][:5]))]
    if not big:
        return centres
    low = max(big, key=lambda i: sl[i][0].stop)
    top, bottom = sl[low][0].start, sl[low][0].stop
    # a disc whose centre lies within the lowest vertebra component's row span, and with
    # vertebra tissue of that component both above and below it, is a sacral disc.
    keep = []
    for r, col in centres:
        inside = top + 2 < r < bottom - 2
        if inside:
            rows = np.nonzero(lab[:, int(round(col)) - 3:int(round(col)) + 4] == low + 1)[0]
            inside = rows.size > 0 and rows.min() < r - 2 and rows.max() > r + 2
        keep.append(not inside)
    return centres[np.array(keep, dtype=bool)]
