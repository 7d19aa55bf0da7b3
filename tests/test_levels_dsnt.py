"""DSNT: soft-argmax, target heatmaps, regularisers, confidence."""

import numpy as np
import pytest

import torch  # the training extra: a hard dependency of this suite

from lumbargrade.levels import dsnt


def _peak(h, w, r, c, sharp=40.0):
    rr, cc = np.meshgrid(np.arange(h), np.arange(w), indexing="ij")
    logits = -sharp * ((rr - r) ** 2 + (cc - c) ** 2) / (h * w) * 64
    return torch.tensor(logits, dtype=torch.float64)[None, None]


@pytest.mark.parametrize("r,c", [(10.0, 20.0), (3.0, 60.0), (31.5, 7.25)])
def test_soft_argmax_returns_peak(r, c):
    heat = dsnt.spatial_softmax(_peak(48, 64, r, c))
    rc = dsnt.normalized_to_pixel(dsnt.soft_argmax(heat), 48, 64)[0, 0].numpy()
    assert rc == pytest.approx([r, c], abs=0.05)
    assert float(heat.sum()) == pytest.approx(1.0)


def test_pixel_normalised_round_trip_and_edges():
    rc = torch.tensor([[0.0, 0.0], [47.0, 63.0], [12.3, 40.9]])
    xy = dsnt.pixel_to_normalized(rc, 48, 64)
    assert torch.allclose(dsnt.normalized_to_pixel(xy, 48, 64), rc, atol=1e-5)
    # pixel centre 0 of n is at -1 + 1/n; the outer edge of the image is -1
    assert float(xy[0, 0]) == pytest.approx(-1 + 1 / 64)
    assert float(xy[1, 1]) == pytest.approx(1 - 1 / 48)


def test_gaussian_target_centre_and_js_zero_at_target():
    xy = dsnt.pixel_to_normalized(torch.tensor([[[20.0, 30.0]]]), 64, 64)
    g = dsnt.gaussian_heatmap(xy, 64, 64, sigma_px=1.5)
    rc = dsnt.normalized_to_pixel(dsnt.soft_argmax(g), 64, 64)[0, 0]
    assert rc.tolist() == pytest.approx([20.0, 30.0], abs=1e-3)
    assert float(dsnt.js_regulariser(g, xy, 1.5)) == pytest.approx(0.0, abs=1e-6)
    far = dsnt.pixel_to_normalized(torch.tensor([[[50.0, 5.0]]]), 64, 64)
    assert float(dsnt.js_regulariser(g, far, 1.5)) > 0.5  # nearly disjoint: close to log 2
    assert float(dsnt.variance_regulariser(g, 1.5)) == pytest.approx(0.0, abs=1e-6)


def test_concentration_sharp_vs_flat():
    sharp = dsnt.spatial_softmax(_peak(64, 64, 30, 30, sharp=400.0))
    flat = dsnt.spatial_softmax(torch.zeros(1, 1, 64, 64, dtype=torch.float64))
    assert float(dsnt.concentration(sharp)) > 0.9
    assert float(dsnt.concentration(flat)) < 0.02


def test_euclidean_loss_gradient_moves_towards_target():
    logits = torch.zeros(1, 1, 16, 16, requires_grad=True)
    target = dsnt.pixel_to_normalized(torch.tensor([[[2.0, 13.0]]]), 16, 16)
    opt = torch.optim.SGD([logits], lr=50.0)
    for _ in range(30):
        heat = dsnt.spatial_softmax(logits)
        loss = dsnt.euclidean_loss(dsnt.soft_argmax(heat), target).mean()
        opt.zero_grad()
        loss.backward()
        opt.step()
    rc = dsnt.normalized_to_pixel(dsnt.soft_argmax(dsnt.spatial_softmax(logits)), 16, 16)[0, 0]
    assert rc.tolist() == pytest.approx([2.0, 13.0], abs=0.5)
