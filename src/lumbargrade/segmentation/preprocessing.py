"""Resampling an axial slice to the network's fixed grid (mm per pixel) and back; intensity scaling.

The network always sees a ``size = (H, W)`` field sampled at ``target_spacing`` mm per pixel,
centred on a point of the original image (by default its centre). A :class:`FieldGrid` records
the mapping, so predictions are mapped back onto the original ``[rows, cols]`` pixel grid exactly
(:func:`from_field`). Pure functions of arrays; spacing is ``(row_mm, col_mm)``.

Mapping (field index ``(i, j)`` -> original pixel ``(r, c)``, both pixel centres)::

    r = centre_r + (i - (H - 1) / 2) * target_spacing / row_mm
    c = centre_c + (j - (W - 1) / 2) * target_spacing / col_mm
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

__all__ = [
    "FieldGrid",
    "from_field",
    "from_field_within",
    "labels_to_field",
    "make_grid",
    "normalize_intensity",
    "preprocess",
    "to_field",
]


@dataclass(frozen=True)
class FieldGrid:
    """The network field within one image.

    Attributes
    ----------
    shape: (rows, cols) of the original image.
    spacing: (row_mm, col_mm) of the original image.
    centre: (row, col) original pixel coordinates of the field's centre.
    target_spacing: mm per field pixel (isotropic).
    size: (H, W) field pixels.
    """

    shape: tuple[int, int]
    spacing: tuple[float, float]
    centre: tuple[float, float]
    target_spacing: float
    size: tuple[int, int]

    @property
    def scale(self) -> tuple[float, float]:
        """Original pixels per field pixel along rows and columns."""
        return (self.target_spacing / self.spacing[0], self.target_spacing / self.spacing[1])

    def field_to_image(self, i: np.ndarray, j: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Field indices -> original (fractional) pixel coordinates."""
        sr, sc = self.scale
        h, w = self.size
        return (
            self.centre[0] + (np.asarray(i, float) - (h - 1) / 2) * sr,
            self.centre[1] + (np.asarray(j, float) - (w - 1) / 2) * sc,
        )

    def image_to_field(self, r: np.ndarray, c: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Original pixel coordinates -> field (fractional) indices."""
        sr, sc = self.scale
        h, w = self.size
        return (
            (np.asarray(r, float) - self.centre[0]) / sr + (h - 1) / 2,
            (np.asarray(c, float) - self.centre[1]) / sc + (w - 1) / 2,
        )


def make_grid(
    shape: tuple[int, int],
    spacing: tuple[float, float],
    target_spacing: float = 0.75,
    size: tuple[int, int] | int = (256, 256),
    centre: tuple[float, float] | None = None,
) -> FieldGrid:
    """A field of ``size`` pixels at ``target_spacing`` mm, centred on ``centre`` (original pixel
    coordinates; default the image centre)."""
    if isinstance(size, int):
        size = (size, size)
    rows, cols = int(shape[0]), int(shape[1])
    if centre is None:
        centre = ((rows - 1) / 2.0, (cols - 1) / 2.0)
    if not (spacing[0] > 0 and spacing[1] > 0 and target_spacing > 0):
        raise ValueError(f"spacing must be positive, got {spacing} and {target_spacing}")
    return FieldGrid(
        (rows, cols),
        (float(spacing[0]), float(spacing[1])),
        (float(centre[0]), float(centre[1])),
        float(target_spacing),
        (int(size[0]), int(size[1])),
    )


def _field_coords(grid: FieldGrid) -> np.ndarray:
    h, w = grid.size
    ii, jj = np.meshgrid(np.arange(h), np.arange(w), indexing="ij")
    r, c = grid.field_to_image(ii, jj)
    return np.stack([r, c])


def to_field(
    image: np.ndarray,
    grid: FieldGrid,
    order: int = 1,
    cval: float | None = None,
    antialias: bool = True,
) -> np.ndarray:
    """Sample ``image [rows, cols]`` on the field grid -> float32 ``[H, W]``.

    ``order`` 1 is bilinear, 0 nearest. Where the field leaves the image it is filled with
    ``cval`` (default: the image's minimum). With ``antialias`` and a coarser field than the
    image, the image is first smoothed (Gaussian, sigma ``0.5 * sqrt(f**2 - 1)`` pixels for a
    down-sampling factor ``f``).
    """
    from scipy import ndimage

    img = np.asarray(image, dtype=np.float32)
    if img.shape != grid.shape:
        raise ValueError(f"image shape {img.shape} != grid shape {grid.shape}")
    if cval is None:
        cval = float(img.min()) if img.size else 0.0
    if antialias and order > 0:
        sig = [0.5 * np.sqrt(f * f - 1.0) if f > 1.0 else 0.0 for f in grid.scale]
        if max(sig) > 0.1:
            img = ndimage.gaussian_filter(img, sigma=sig, mode="nearest")
    out = ndimage.map_coordinates(
        img, _field_coords(grid), order=order, mode="constant", cval=cval, prefilter=False
    )
    return out.astype(np.float32)


def labels_to_field(labels: np.ndarray, grid: FieldGrid, n_classes: int) -> np.ndarray:
    """Resample a label map (values ``0..n_classes-1``; others count as 0) to the field.

    Each class's indicator is resampled bilinearly and the field pixel takes the class of
    highest value (so thin shapes keep their area better than with nearest sampling).
    Returns uint8 ``[H, W]``.
    """
    lab = np.asarray(labels)
    probs = []
    for k in range(n_classes):
        ind = (lab == k) if k > 0 else ~np.isin(lab, np.arange(1, n_classes))
        probs.append(
            to_field(
                ind.astype(np.float32), grid, order=1, cval=1.0 if k == 0 else 0.0, antialias=False
            )
        )
    return np.argmax(np.stack(probs), axis=0).astype(np.uint8)


def from_field(field: np.ndarray, grid: FieldGrid, order: int = 1, cval: float = 0.0) -> np.ndarray:
    """Map field values ``[..., H, W]`` back onto the original pixel grid -> ``[..., rows, cols]``.

    Use ``order=1`` on probabilities (then threshold / argmax), ``order=0`` on labels. Original
    pixels outside the field get ``cval``.
    """
    from scipy import ndimage

    arr = np.asarray(field, dtype=np.float32)
    lead = arr.shape[:-2]
    if arr.shape[-2:] != grid.size:
        raise ValueError(f"field shape {arr.shape[-2:]} != grid size {grid.size}")
    rows, cols = grid.shape
    rr, cc = np.meshgrid(np.arange(rows), np.arange(cols), indexing="ij")
    fi, fj = grid.image_to_field(rr, cc)
    coords = np.stack([fi, fj])
    flat = arr.reshape((-1,) + grid.size)
    out = np.stack(
        [
            ndimage.map_coordinates(
                a, coords, order=order, mode="constant", cval=cval, prefilter=False
            )
            for a in flat
        ]
    )
    return out.reshape(lead + (rows, cols)).astype(np.float32)


def from_field_within(field: np.ndarray, grid: FieldGrid, order: int = 1, cval: float = 0.0) -> np.ndarray:
    """:func:`from_field` computed only over the original pixels the field covers (the same
    values; everything else ``cval``): cheaper when the field is a small part of the image."""
    sr, sc = grid.scale
    h, w = grid.size
    r0 = max(int(np.floor(grid.centre[0] - (h - 1) / 2 * sr)) - 1, 0)
    r1 = min(int(np.ceil(grid.centre[0] + (h - 1) / 2 * sr)) + 2, grid.shape[0])
    c0 = max(int(np.floor(grid.centre[1] - (w - 1) / 2 * sc)) - 1, 0)
    c1 = min(int(np.ceil(grid.centre[1] + (w - 1) / 2 * sc)) + 2, grid.shape[1])
    arr = np.asarray(field, dtype=np.float32)
    out = np.full(arr.shape[:-2] + tuple(grid.shape), cval, np.float32)
    if r1 <= r0 or c1 <= c0:
        return out
    sub = FieldGrid(shape=(r1 - r0, c1 - c0), spacing=grid.spacing,
                    centre=(grid.centre[0] - r0, grid.centre[1] - c0),
                    target_spacing=grid.target_spacing, size=grid.size)
    out[..., r0:r1, c0:c1] = from_field(arr, sub, order=order, cval=cval)
    return out


def normalize_intensity(image: np.ndarray, lower: float = 1.0, upper: float = 99.0) -> np.ndarray:
    """Robust scaling: percentile ``lower`` -> 0 and ``upper`` -> 1 (float32, not clipped)."""
    img = np.asarray(image, dtype=np.float32)
    lo, hi = np.percentile(img, [lower, upper])
    if not np.isfinite(lo) or not np.isfinite(hi):
        raise ValueError("image holds non-finite values")
    scale = hi - lo if hi - lo > 1e-6 else max(abs(hi), 1.0)
    return ((img - lo) / scale).astype(np.float32)


def preprocess(
    image: np.ndarray,
    spacing: tuple[float, float],
    target_spacing: float = 0.75,
    size: tuple[int, int] | int = (256, 256),
    centre: tuple[float, float] | None = None,
) -> tuple[np.ndarray, FieldGrid]:
    """Image -> (normalised float32 field ``[H, W]``, its :class:`FieldGrid`).

    Percentiles for the intensity scaling are taken over the field's pixels that lie inside the
    image.
    """
    grid = make_grid(np.shape(image), spacing, target_spacing, size, centre)
    field = to_field(image, grid, order=1)
    inside = (
        to_field(np.ones(grid.shape, np.float32), grid, order=0, cval=0.0, antialias=False) > 0.5
    )
    vals = field[inside] if inside.any() else field
    lo, hi = np.percentile(vals, [1.0, 99.0])
    scale = hi - lo if hi - lo > 1e-6 else max(abs(float(hi)), 1.0)
    return ((field - lo) / scale).astype(np.float32), grid
