"""Differentiable spatial to numerical transform (DSNT; Nibali et al., arXiv:1801.07372, 2018).

Heatmaps are normalised with a spatial softmax; coordinates are the expectation of the pixel
grid under that distribution. Normalised coordinates are ``(x, y) = (col, row)`` as in the
paper, pixel centre ``i`` of ``n`` at ``(2 i + 1) / n - 1``, so -1 and +1 are the image's outer edges. All functions take torch tensors shaped
``(batch, points, H, W)``.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

__all__ = [
    "concentration",
    "euclidean_loss",
    "gaussian_heatmap",
    "js_regulariser",
    "normalized_to_pixel",
    "pixel_to_normalized",
    "soft_argmax",
    "spatial_softmax",
    "variance_regulariser",
]


def _axis(n: int, device=None, dtype=None) -> torch.Tensor:
    return (2.0 * torch.arange(n, device=device, dtype=dtype) + 1.0) / n - 1.0


def spatial_softmax(logits: torch.Tensor) -> torch.Tensor:
    """(B, P, H, W) unnormalised scores -> probability maps that sum to 1 over H x W."""
    b, p, h, w = logits.shape
    return F.softmax(logits.reshape(b, p, h * w), dim=-1).reshape(b, p, h, w)


def soft_argmax(heatmaps: torch.Tensor) -> torch.Tensor:
    """(B, P, H, W) probability maps -> (B, P, 2) normalised (x, y) expectations in [-1, 1]."""
    _, _, h, w = heatmaps.shape
    xs = _axis(w, heatmaps.device, heatmaps.dtype)
    ys = _axis(h, heatmaps.device, heatmaps.dtype)
    x = (heatmaps.sum(dim=2) * xs).sum(dim=-1)
    y = (heatmaps.sum(dim=3) * ys).sum(dim=-1)
    return torch.stack([x, y], dim=-1)


def normalized_to_pixel(xy: torch.Tensor, height: int, width: int) -> torch.Tensor:
    """(..., 2) normalised (x, y) -> (..., 2) pixel [row, col] (pixel centres at integers)."""
    col = ((xy[..., 0] + 1.0) * width - 1.0) / 2.0
    row = ((xy[..., 1] + 1.0) * height - 1.0) / 2.0
    return torch.stack([row, col], dim=-1)


def pixel_to_normalized(rc: torch.Tensor, height: int, width: int) -> torch.Tensor:
    """(..., 2) pixel [row, col] -> (..., 2) normalised (x, y)."""
    x = (2.0 * rc[..., 1] + 1.0) / width - 1.0
    y = (2.0 * rc[..., 0] + 1.0) / height - 1.0
    return torch.stack([x, y], dim=-1)


def gaussian_heatmap(xy: torch.Tensor, height: int, width: int, sigma_px: float) -> torch.Tensor:
    """(B, P, 2) normalised centres -> (B, P, H, W) normalised Gaussians (sigma in heatmap px)."""
    xs = _axis(width, xy.device, xy.dtype)
    ys = _axis(height, xy.device, xy.dtype)
    sx = sigma_px * 2.0 / width
    sy = sigma_px * 2.0 / height
    gx = torch.exp(-0.5 * ((xs[None, None, :] - xy[..., :1]) / sx) ** 2)  # (B, P, W)
    gy = torch.exp(-0.5 * ((ys[None, None, :] - xy[..., 1:]) / sy) ** 2)  # (B, P, H)
    g = gy[..., :, None] * gx[..., None, :]
    return g / g.sum(dim=(-2, -1), keepdim=True).clamp_min(1e-12)


def js_regulariser(heatmaps: torch.Tensor, xy_target: torch.Tensor, sigma_px: float) -> torch.Tensor:
    """(B, P) Jensen-Shannon divergence between each heatmap and a Gaussian at the target."""
    _, _, h, w = heatmaps.shape
    q = gaussian_heatmap(xy_target, h, w, sigma_px)
    p = heatmaps
    m = 0.5 * (p + q)
    eps = 1e-12

    def kl(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
        return (a * (torch.log(a + eps) - torch.log(b + eps))).sum(dim=(-2, -1))

    return 0.5 * kl(p, m) + 0.5 * kl(q, m)


def variance_regulariser(heatmaps: torch.Tensor, sigma_px: float) -> torch.Tensor:
    """(B, P) squared difference between each heatmap's variance and the target variance
    (normalised units, summed over x and y)."""
    _, _, h, w = heatmaps.shape
    xs = _axis(w, heatmaps.device, heatmaps.dtype)
    ys = _axis(h, heatmaps.device, heatmaps.dtype)
    mu = soft_argmax(heatmaps)
    vx = (heatmaps.sum(dim=2) * (xs - mu[..., :1]) ** 2).sum(-1)
    vy = (heatmaps.sum(dim=3) * (ys - mu[..., 1:]) ** 2).sum(-1)
    tx = (sigma_px * 2.0 / w) ** 2
    ty = (sigma_px * 2.0 / h) ** 2
    return (vx - tx) ** 2 + (vy - ty) ** 2


def euclidean_loss(xy: torch.Tensor, xy_target: torch.Tensor) -> torch.Tensor:
    """(B, P) Euclidean distance between predicted and target normalised coordinates."""
    return torch.linalg.norm(xy - xy_target, dim=-1)


def concentration(heatmaps: torch.Tensor, radius_px: float = 3.0) -> torch.Tensor:
    """(B, P) probability mass within ``radius_px`` heatmap pixels of the soft-argmax: a
    confidence in [0, 1] (near 1 for a sharp single peak, low for a spread or split map)."""
    _, _, h, w = heatmaps.shape
    rc = normalized_to_pixel(soft_argmax(heatmaps), h, w)  # (B, P, 2)
    rr = torch.arange(h, device=heatmaps.device, dtype=heatmaps.dtype)
    cc = torch.arange(w, device=heatmaps.device, dtype=heatmaps.dtype)
    d2 = (rr[None, None, :, None] - rc[..., :1, None]) ** 2 + (cc[None, None, None, :] - rc[..., 1:, None]) ** 2
    return (heatmaps * (d2 <= radius_px ** 2)).sum(dim=(-2, -1))
