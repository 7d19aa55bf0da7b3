"""Dice + cross-entropy losses and the rule that turns network outputs into structure masks.

Two output modes share one convention: :func:`structure_probs` gives ``[B, K, H, W]``
probabilities of the K structures (dural sac, disc and, with regions, facet, foramen).
``multiclass``: softmax over (background, structures...); ``per_structure``: one sigmoid logit per
structure.
"""

from __future__ import annotations

import numpy as np

__all__ = ["dice_score", "probs_to_labels", "seg_loss", "structure_probs"]


def _soft_dice(p, t, eps: float = 1.0, per_image: bool = True):
    """1 - soft Dice; p, t ``[B, K, H, W]``. ``per_image``: one value per (image, channel), so a
    small (stenotic) dural sac weighs as much as a large one; else pooled over the batch (per
    channel)."""
    dims = (2, 3) if per_image else (0, 2, 3)
    inter = (p * t).sum(dims)
    denom = p.sum(dims) + t.sum(dims)
    return 1.0 - (2 * inter + eps) / (denom + eps)


def seg_loss(
    logits,
    target,
    per_structure: bool = False,
    dice_weight: float = 1.0,
    ce_weight: float = 1.0,
    dice_per_image: bool = True,
):
    """Dice + cross-entropy. ``logits [B, C, H, W]``, ``target [B, H, W]`` int64 (0 .. C-1).

    Multi-class: CE over C classes + mean soft Dice over the structures. Per structure: BCE per
    structure logit + mean soft Dice of the sigmoids. Dice per image (default) or pooled over
    the batch.
    """
    import torch
    import torch.nn.functional as F

    logits = logits.float()
    if per_structure:
        k = logits.shape[1]
        t = torch.stack([(target == i + 1) for i in range(k)], dim=1).float()
        ce = F.binary_cross_entropy_with_logits(logits, t)
        dice = _soft_dice(torch.sigmoid(logits), t, per_image=dice_per_image).mean()
    else:
        ce = F.cross_entropy(logits, target)
        p = torch.softmax(logits, dim=1)
        t = F.one_hot(target, logits.shape[1]).permute(0, 3, 1, 2).float()
        dice = _soft_dice(p[:, 1:], t[:, 1:], per_image=dice_per_image).mean()
    return ce_weight * ce + dice_weight * dice


def structure_probs(logits, per_structure: bool = False):
    """Logits ``[B, C, H, W]`` -> ``[B, C-1, H, W]`` probabilities of the structures (dural sac,
    disc and, in a network with regions, facet, foramen) (torch); per structure: ``[B, C, H, W]``
    sigmoids."""
    import torch

    logits = logits.float()
    if per_structure:
        return torch.sigmoid(logits)
    return torch.softmax(logits, dim=1)[:, 1:]


def structure_probs_np(logits: np.ndarray, per_structure: bool = False) -> np.ndarray:
    """Logits ``[B, C, H, W]`` -> float32 structure probabilities (numpy; the same as
    :func:`structure_probs`)."""
    z = np.asarray(logits, dtype=np.float32)
    if per_structure:
        return (1.0 / (1.0 + np.exp(-z))).astype(np.float32)
    e = np.exp(z - z.max(axis=1, keepdims=True))
    return (e[:, 1:] / e.sum(axis=1, keepdims=True)).astype(np.float32)


def probs_to_labels(probs: np.ndarray, per_structure: bool = False) -> np.ndarray:
    """``[..., K, H, W]`` structure probabilities (sac, disc, ...) -> labels ``[..., H, W]`` uint8
    (0 background, k + 1 for structure k).

    Multi-class: argmax of (1 - sum, p_1, ..., p_K). Per structure: each thresholded at 0.5, the
    earlier structure taking precedence where several are set (dural sac over disc).
    """
    p = np.asarray(probs, dtype=np.float32)
    k = p.shape[-3]
    if per_structure:
        out = np.zeros(p.shape[:-3] + p.shape[-2:], np.uint8)
        for c in range(k - 1, -1, -1):
            out[p[..., c, :, :] > 0.5] = c + 1
        return out
    bg = 1.0 - p.sum(axis=-3, keepdims=True)
    return np.argmax(np.concatenate([bg, p], axis=-3), axis=-3).astype(np.uint8)


def dice_score(pred: np.ndarray, truth: np.ndarray) -> float:
    """Dice of two boolean masks; 1.0 when both are empty (:func:`lumbargrade.metrics.dice`)."""
    from ..metrics import dice

    return float(dice(pred, truth))
