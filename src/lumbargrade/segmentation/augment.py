"""On-the-fly augmentation for axial MRI fields (numpy, one sample at a time).

Spatial: rotation (degrees), isotropic scaling, translation (field pixels) and a left-right flip,
applied as one affine resampling of a cached field that carries a margin round the output. The
flip is allowed because the segmentation labels (dural sac, disc) have no side; do not use it for
left/right labels. Intensity: scaling and offset, gamma, a smooth multiplicative bias field and
Rician noise (magnitude of complex Gaussian noise), all on the normalised image.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

__all__ = ["AugmentConfig", "centre_crop", "intensity_augment", "spatial_augment"]


@dataclass
class AugmentConfig:
    """Augmentation ranges (each drawn uniformly per sample); ``p_*`` are probabilities."""

    rotate_deg: float = 10.0
    scale: float = 0.10
    translate_px: float = 12.0
    p_flip: float = 0.5
    intensity_scale: float = 0.10
    intensity_shift: float = 0.05
    gamma: float = 0.30  # log-gamma drawn in [-gamma, gamma]
    bias_field: float = 0.30  # peak log-amplitude of the bias field
    noise_std: float = 0.05  # Rician sigma drawn in [0, noise_std]
    p_intensity: float = 0.8


def centre_crop(arr: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """The central ``size`` of the last two axes."""
    h, w = arr.shape[-2:]
    r0, c0 = (h - size[0]) // 2, (w - size[1]) // 2
    return arr[..., r0 : r0 + size[0], c0 : c0 + size[1]]


def spatial_augment(
    image: np.ndarray,
    labels: np.ndarray,
    size: tuple[int, int],
    rng: np.random.Generator,
    cfg: AugmentConfig,
) -> tuple[np.ndarray, np.ndarray]:
    """Random affine of ``image``/``labels`` (``[h, w]``, ``h >= H``) to an output of ``size``.

    Image bilinear (out-of-field filled with the image's minimum), labels nearest.
    """
    from scipy import ndimage

    theta = np.deg2rad(rng.uniform(-cfg.rotate_deg, cfg.rotate_deg))
    s = (
        float(np.exp(rng.uniform(np.log(1 - cfg.scale), np.log(1 + cfg.scale))))
        if cfg.scale > 0
        else 1.0
    )
    flip = rng.random() < cfg.p_flip
    t = rng.uniform(-cfg.translate_px, cfg.translate_px, size=2)
    c, sn = np.cos(theta), np.sin(theta)
    m = np.array([[c, -sn], [sn, c]]) / s
    if flip:
        m = m @ np.diag([1.0, -1.0])
    c_in = (np.array(image.shape[-2:], float) - 1) / 2
    c_out = (np.array(size, float) - 1) / 2
    offset = c_in + t - m @ c_out
    img = ndimage.affine_transform(
        image,
        m,
        offset=offset,
        output_shape=tuple(size),
        order=1,
        mode="constant",
        cval=float(image.min()),
        prefilter=False,
    )
    lab = ndimage.affine_transform(
        labels,
        m,
        offset=offset,
        output_shape=tuple(size),
        order=0,
        mode="constant",
        cval=0,
        prefilter=False,
    )
    return img.astype(np.float32), lab.astype(labels.dtype)


def _bias_field(shape: tuple[int, int], rng: np.random.Generator, amplitude: float) -> np.ndarray:
    from scipy import ndimage

    coarse = rng.normal(0.0, 1.0, size=(4, 4))
    field = ndimage.zoom(coarse, (shape[0] / 4, shape[1] / 4), order=3, mode="nearest")[
        : shape[0], : shape[1]
    ]
    peak = np.abs(field).max() or 1.0
    return np.exp(amplitude * rng.uniform(0, 1) * field / peak).astype(np.float32)


def intensity_augment(
    image: np.ndarray, rng: np.random.Generator, cfg: AugmentConfig
) -> np.ndarray:
    """Random intensity changes of a normalised image (values roughly 0-1); returns float32."""
    x = np.asarray(image, dtype=np.float32)
    if rng.random() >= cfg.p_intensity:
        return x
    x = np.clip(x, 0.0, None)
    if cfg.bias_field > 0:
        x = x * _bias_field(x.shape, rng, cfg.bias_field)
    if cfg.gamma > 0:
        g = float(np.exp(rng.uniform(-cfg.gamma, cfg.gamma)))
        x = np.power(x, g)
    if cfg.noise_std > 0:
        sigma = rng.uniform(0, cfg.noise_std)
        n1 = rng.normal(0, sigma, x.shape).astype(np.float32)
        n2 = rng.normal(0, sigma, x.shape).astype(np.float32)
        x = np.sqrt((x + n1) ** 2 + n2**2)
    x = x * float(rng.uniform(1 - cfg.intensity_scale, 1 + cfg.intensity_scale))
    x = x + float(rng.uniform(-cfg.intensity_shift, cfg.intensity_shift))
    return x.astype(np.float32)
