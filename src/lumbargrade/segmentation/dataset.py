"""Segmentation samples from manifest rows, preprocessed once and cached in memory.

Each row's axial image is resampled to the fixed field (``target_spacing`` mm, ``size`` pixels
plus a ``margin`` on each side for augmentation) and normalised; its label map is reduced to the
network's classes (:func:`to_classes`) and resampled to the same grid. Rows with a
``tissue_map`` column (the phantom's slice bank, :mod:`lumbargrade.phantom.slice_bank`) also
keep the tissue codes, from which domain randomisation draws new images
(:mod:`lumbargrade.segmentation.synth`).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import numpy as np

from ..errors import InputError
from .augment import AugmentConfig, centre_crop, intensity_augment, spatial_augment
from .preprocessing import labels_to_field, preprocess, to_field

__all__ = ["CLASSES", "SAC_CLASSES", "SEG_CLASSES", "SegmentationDataset", "prepare_item", "to_classes"]

#: the network's classes (index = class) without and with the facet and foramen regions
SEG_CLASSES = ("background", "dural_sac", "disc")
CLASSES = {False: SEG_CLASSES, True: SEG_CLASSES + ("facet", "foramen")}
#: the classes of the dural sac refiner (role ``sac_refiner``)
SAC_CLASSES = ("background", "dural_sac")


def to_classes(labels: np.ndarray, regions: bool) -> np.ndarray:
    """Label map values (1 sac, 2 disc, 3/4 facet L/R, 5/6 foramen L/R) -> class indices
    (1 sac, 2 disc and, with ``regions``, 3 facet, 4 foramen: sides merged, the side is decided
    from the patient geometry afterwards); anything else 0."""
    lab = np.asarray(labels)
    lut = np.zeros(256, np.uint8)
    lut[1], lut[2] = 1, 2
    if regions:
        lut[3] = lut[4] = 3
        lut[5] = lut[6] = 4
    return lut[lab.astype(np.uint8)]


def prepare_item(
    image: np.ndarray,
    spacing: tuple[float, float],
    labels: np.ndarray | None,
    target_spacing: float,
    size: tuple[int, int],
    margin: int = 0,
    regions: bool = False,
    sac_field: bool = False,
):
    """One slice -> (normalised field ``[H+2m, W+2m]`` float32, class labels uint8 or None, grid).

    ``sac_field``: the field is centred on the dural sac of ``labels`` (its centroid) and the
    labels keep the sac alone (:data:`SAC_CLASSES`), as the sac refiner sees a slice."""
    padded = (size[0] + 2 * margin, size[1] + 2 * margin)
    centre = None
    if sac_field and labels is not None:
        centre = _centre(np.asarray(labels) == 1)
    field, grid = preprocess(image, spacing, target_spacing, padded, centre)
    lab = None
    if labels is not None:
        classes = to_classes(labels, regions)
        if sac_field:
            classes = (classes == 1).astype(np.uint8)
        n = len(SAC_CLASSES) if sac_field else len(CLASSES[bool(regions)])
        lab = labels_to_field(classes, grid, n_classes=n)
    return field, lab, grid


def _load_tissues(row: dict):
    from pathlib import Path

    from ..manifest import load_image_file

    value = row.get("tissue_map", "")
    if not value:
        return None
    p = Path(value)
    if not p.is_absolute():
        p = Path(row.get("_base_dir", ".")) / p
    if not p.is_file():
        raise InputError(p, f"tissue map not found (manifest line {row.get('_line')})")
    return load_image_file(p).astype(np.uint8)


class SegmentationDataset:
    """Cached fields of manifest rows; ``ds[i] -> (x [1,H,W] float32, y [H,W] int64)``.

    ``augment``: spatial and intensity augmentation of the rendered image (:mod:`.augment`); None
    gives the centre crop unchanged. ``synth``: a :class:`~.synth.SynthConfig`; with it and
    ``augment``, a row that has a tissue map yields an image drawn from its tissue codes with
    probability ``p_synth`` (domain randomisation), else its rendered image under the synth
    recipe's spatial warp and field-of-view crop. :meth:`_synthetic` draws one explicitly. ``self.rng`` (a numpy Generator whose state the trainer checkpoints)
    drives every draw; with neither, the centre crop is returned unchanged.
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
        regions: bool = False,
        synth=None,
        p_synth: float = 0.0,
        sac_field: bool = False,
    ) -> None:
        from ..manifest import axial_view_of, load_axial, load_label_map

        self.size = (int(size[0]), int(size[1]))
        self.margin = int(margin)
        self.augment = augment
        self.synth = synth
        self.p_synth = float(p_synth)
        self.regions = bool(regions)
        self.spacing = float(target_spacing)
        self.rng = np.random.default_rng(seed)
        self.rows = list(rows)
        self.images: list[np.ndarray] = []
        self.labels: list[np.ndarray] = []
        self.tissues: list[np.ndarray | None] = []
        it = progress(self.rows) if progress else self.rows
        any_regions = False
        for row in it:
            image, spacing = load_axial(row)
            labels = load_label_map(row)
            if labels.shape != image.shape:
                raise InputError(
                    row.get("label_map"),
                    f"label map shape {labels.shape} differs from the image's {image.shape}",
                )
            # train in the canonical view, as the pipeline segments (anterior up, patient's left at
            # higher columns), whatever the stored layout (prone, feet first, transposed)
            view, stored_shape = axial_view_of(row), image.shape
            image, labels = view.to_canonical(image), view.to_canonical(labels)
            spacing = view.canonical_spacing(spacing)
            any_regions = any_regions or bool(np.isin(labels, (3, 4, 5, 6)).any())
            f, lab, grid = prepare_item(image, spacing, labels, target_spacing, self.size, self.margin,
                                        self.regions, sac_field)
            tis = _load_tissues(row) if synth is not None else None
            if tis is not None:
                if tis.shape != stored_shape:
                    raise InputError(row.get("tissue_map"), f"tissue map shape {tis.shape} differs from the "
                                     f"image's {stored_shape}")
                tis = to_field(view.to_canonical(tis).astype(np.float32), grid, order=0, cval=0.0,
                               antialias=False).astype(np.uint8)
            self.images.append(f)
            self.labels.append(lab)
            self.tissues.append(tis)
        if self.regions and self.rows and not any_regions:
            raise InputError(
                self.rows[0].get("_base_dir", "manifest"),
                "no label map has facet or foramen regions (values 3-6); train with --set regions=false "
                "or add them",
            )

    def __len__(self) -> int:
        return len(self.images)

    def _synthetic(self, i: int, label_augment: bool = True) -> tuple[np.ndarray, np.ndarray]:
        """One domain-randomised image of item ``i`` and its labels; ``label_augment``: the
        tissue map may also change (:func:`~.synth.insert_cord`, :func:`~.synth.erase_dura`,
        :func:`~.synth.layer_rootlets`; off for the fixed validation
        images, so that runs with other recipes are scored on the same images)."""
        from scipy import ndimage

        from .synth import (
            erase_dura,
            insert_cord,
            layer_rootlets,
            normalise_inside,
            random_fov_mask,
            synthesize,
            warp_coordinates,
        )

        tis, lab = self.tissues[i], self.labels[i]
        coords = warp_coordinates(self.size, tis.shape, self.spacing, self.rng, self.synth)
        t = ndimage.map_coordinates(tis, coords, order=0, mode="constant", cval=0)
        y = ndimage.map_coordinates(lab, coords, order=0, mode="constant", cval=0)
        if label_augment:
            t = insert_cord(t, y == 1, self.spacing, self.rng, self.synth)
            t = erase_dura(t, y == 1, self.rng, self.synth)
            t = layer_rootlets(t, y == 1, self.spacing, self.rng, self.synth)
        img = synthesize(t, y == 1, self.spacing, self.rng, self.synth)
        inside = random_fov_mask(self.size, self.spacing, self.rng, self.synth, _centre(y == 1))
        return normalise_inside(img, inside), y

    def _rendered(self, i: int) -> tuple[np.ndarray, np.ndarray]:
        from scipy import ndimage

        from .synth import normalise_inside, random_fov_mask, warp_coordinates

        img, lab = self.images[i], self.labels[i]
        if self.synth is not None:
            coords = warp_coordinates(self.size, img.shape, self.spacing, self.rng, self.synth)
            x = ndimage.map_coordinates(img, coords, order=1, mode="constant", cval=float(img.min()))
            y = ndimage.map_coordinates(lab, coords, order=0, mode="constant", cval=0)
            inside = random_fov_mask(self.size, self.spacing, self.rng, self.synth, _centre(y == 1))
            if inside is not None:
                x = normalise_inside(x, inside)
        else:
            x, y = spatial_augment(img, lab, self.size, self.rng, self.augment)
        if self.augment is not None:
            x = intensity_augment(x, self.rng, self.augment)
        return x, y

    def __getitem__(self, i: int):
        img, lab = self.images[i], self.labels[i]
        if self.augment is not None and self.synth is not None and self.tissues[i] is not None \
                and self.rng.random() < self.p_synth:
            img, lab = self._synthetic(i)
        elif self.augment is not None:
            img, lab = self._rendered(i)
        else:
            img, lab = centre_crop(img, self.size), centre_crop(lab, self.size)
        return (
            np.ascontiguousarray(img[None], dtype=np.float32),
            np.ascontiguousarray(lab, dtype=np.int64),
        )

    def sampling_weights(self, small_sac_power: float, cord_weight: float = 1.0) -> np.ndarray | None:
        """Per-item draw probabilities that favour small dural sacs (stenotic levels, rare and the
        hardest to outline): ``(median_area / area) ** small_sac_power``, clipped to [1, 4] x the
        median item's weight; items whose tissue map puts the spinal cord or conus inside the field
        (the upper sac, where a real sac is mostly cord) weigh ``cord_weight`` times more.
        ``None`` for uniform (power 0, cord weight 1)."""
        if (small_sac_power <= 0 and cord_weight == 1.0) or not len(self):
            return None
        w = np.ones(len(self))
        if small_sac_power > 0:
            area = np.array([max(int((lab == 1).sum()), 1) for lab in self.labels], float)
            w = np.clip((np.median(area) / area) ** small_sac_power, 1.0, 4.0)
        if cord_weight != 1.0:
            from ..phantom.tissues import Tissue

            cord = np.array([t is not None and bool((t == Tissue.CORD).any()) for t in self.tissues])
            w = w * np.where(cord, float(cord_weight), 1.0)
        return w / w.sum()

    def batches(self, batch_size: int, shuffle: bool, weights: np.ndarray | None = None,
                n_items: int | None = None):
        """Yield ``(x [B,1,H,W], y [B,H,W])`` numpy batches; shuffling uses ``self.rng``; with
        ``weights`` (see :meth:`sampling_weights`) or ``n_items``, an epoch draws ``n_items``
        (default ``len(self)``) items with replacement in those proportions."""
        n = len(self) if n_items is None else int(n_items)
        if shuffle and (weights is not None or n != len(self)):
            order = self.rng.choice(len(self), size=n, replace=True, p=weights)
        else:
            order = self.rng.permutation(len(self)) if shuffle else np.arange(len(self))
        for s in range(0, len(order), batch_size):
            items = [self[int(i)] for i in order[s : s + batch_size]]
            yield np.stack([a for a, _ in items]), np.stack([b for _, b in items])


def _centre(mask: np.ndarray) -> tuple[float, float] | None:
    if not mask.any():
        return None
    ii, jj = np.nonzero(mask)
    return float(ii.mean()), float(jj.mean())


class FixedSet:
    """A frozen list of ``(x, y)`` items (e.g. one draw of domain-randomised validation images,
    so that every epoch is scored on the same images), with the dataset's ``batches`` API."""

    def __init__(self, items: list[tuple[np.ndarray, np.ndarray]]) -> None:
        self.items = items

    def __len__(self) -> int:
        return len(self.items)

    def batches(self, batch_size: int, shuffle: bool = False, weights=None, n_items=None):
        for s in range(0, len(self.items), batch_size):
            part = self.items[s : s + batch_size]
            yield np.stack([a for a, _ in part]), np.stack([b for _, b in part])
