"""Segmentation samples from ``manifest.csv`` rows, preprocessed once and cached in memory.

Each row's axial image is resampled to the fixed field (``target_spacing`` mm, ``size`` pixels
plus a ``margin`` on each side for augmentation) and normalised; its label map is reduced to
``0 background, 1 dural sac, 2 disc`` (values 3-6, the boxes, count as background) and resampled
to the same grid.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import numpy as np

from ..errors import InputError
from .augment import AugmentConfig, centre_crop, intensity_augment, spatial_augment
from .preprocessing import labels_to_field, preprocess

__all__ = ["SEG_CLASSES", "SegmentationDataset", "prepare_item"]

#: label values of the network's classes (index = class)
SEG_CLASSES = ("background", "dural_sac", "disc")


def prepare_item(
    image: np.ndarray,
    spacing: tuple[float, float],
    labels: np.ndarray | None,
    target_spacing: float,
    size: tuple[int, int],
    margin: int = 0,
):
    """One slice -> (normalised field ``[H+2m, W+2m]`` float32, labels uint8 or None, grid)."""
    padded = (size[0] + 2 * margin, size[1] + 2 * margin)
    field, grid = preprocess(image, spacing, target_spacing, padded)
    lab = None
    if labels is not None:
        lab3 = np.where(np.isin(labels, (1, 2)), labels, 0).astype(np.uint8)
        lab = labels_to_field(lab3, grid, n_classes=3)
    return field, lab, grid


class SegmentationDataset:
    """Cached (image, labels) fields for manifest rows; ``ds[i] -> (x [1,H,W] float32, y [H,W] int64)``.

    With ``augment`` set, each access draws a random spatial and intensity augmentation from
    ``self.rng`` (a numpy Generator whose state the trainer checkpoints); otherwise the centre
    crop is returned unchanged.
    """

    def __init__(
        self,
        rows: Sequence[dict],
        target_spacing: float,
        size: tuple[int, int],
        margin: int = 16,
        augment: AugmentConfig | None = None,
        seed: int = 0,
        progress: Callable | None = None,
    ) -> None:
        from ..manifest import load_axial, load_label_map

        self.size = (int(size[0]), int(size[1]))
        self.margin = int(margin)
        self.augment = augment
        self.rng = np.random.default_rng(seed)
        self.rows = list(rows)
        self.images: list[np.ndarray] = []
        self.labels: list[np.ndarray] = []
        it = progress(self.rows) if progress else self.rows
        for row in it:
            image, spacing = load_axial(row)
            labels = load_label_map(row)
            if labels.shape != image.shape:
                raise InputError(
                    row.get("label_map"),
                    f"label map shape {labels.shape} differs from the image's {image.shape}",
                )
            f, lab, _ = prepare_item(image, spacing, labels, target_spacing, self.size, self.margin)
            self.images.append(f)
            self.labels.append(lab)

    def __len__(self) -> int:
        return len(self.images)

    def __getitem__(self, i: int):
        img, lab = self.images[i], self.labels[i]
        if self.augment is not None:
            img, lab = spatial_augment(img, lab, self.size, self.rng, self.augment)
            img = intensity_augment(img, self.rng, self.augment)
        else:
            img, lab = centre_crop(img, self.size), centre_crop(lab, self.size)
        return (
            np.ascontiguousarray(img[None], dtype=np.float32),
            np.ascontiguousarray(lab, dtype=np.int64),
        )

    def sampling_weights(self, small_sac_power: float) -> np.ndarray | None:
        """Per-item draw probabilities that favour small dural sacs (stenotic levels, rare and the
        hardest to outline): ``(median_area / area) ** small_sac_power``, clipped to [1, 4] x the
        median item's weight; ``None`` for uniform (power 0)."""
        if small_sac_power <= 0 or not len(self):
            return None
        area = np.array([max(int((lab == 1).sum()), 1) for lab in self.labels], float)
        w = np.clip((np.median(area) / area) ** small_sac_power, 1.0, 4.0)
        return w / w.sum()

    def batches(self, batch_size: int, shuffle: bool, weights: np.ndarray | None = None):
        """Yield ``(x [B,1,H,W], y [B,H,W])`` numpy batches; shuffling uses ``self.rng``; with
        ``weights`` (see :meth:`sampling_weights`) an epoch draws ``len(self)`` items with
        replacement in those proportions."""
        if shuffle and weights is not None:
            order = self.rng.choice(len(self), size=len(self), replace=True, p=weights)
        else:
            order = self.rng.permutation(len(self)) if shuffle else np.arange(len(self))
        for s in range(0, len(order), batch_size):
            items = [self[int(i)] for i in order[s : s + batch_size]]
            yield np.stack([a for a, _ in items]), np.stack([b for _, b in items])
