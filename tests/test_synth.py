"""lumbargrade.segmentation.synth: domain randomisation from tissue maps."""

from __future__ import annotations

import numpy as np
import pytest

from lumbargrade.segmentation.synth import (
    SynthConfig,
    erase_dura,
    insert_cord,
    normalise_inside,
    random_fov_mask,
    synthesize,
    warp_coordinates,
)


def _tissues(shape=(96, 96)):
    """A toy tissue map: air, muscle (9) body, a disc (4 annulus / 3 nucleus), a sac of CSF (1) with
    a cord (16) inside."""
    rr, cc = np.mgrid[: shape[0], : shape[1]]
    t = np.zeros(shape, np.uint8)
    t[((rr - 48) / 40) ** 2 + ((cc - 48) / 44) ** 2 <= 1] = 9
    t[((rr - 35) / 12) ** 2 + ((cc - 48) / 18) ** 2 <= 1] = 4
    t[((rr - 35) / 7) ** 2 + ((cc - 48) / 10) ** 2 <= 1] = 3
    sac = ((rr - 60) / 7) ** 2 + ((cc - 48) / 9) ** 2 <= 1
    t[sac] = 1
    t[((rr - 60) / 3) ** 2 + ((cc - 48) / 4) ** 2 <= 1] = 16
    return t, sac


def test_images_are_finite_varied_and_reproducible():
    t, sac = _tissues()
    cfg = SynthConfig()
    a = [synthesize(t, sac, 0.7, np.random.default_rng(s), cfg) for s in range(8)]
    b = synthesize(t, sac, 0.7, np.random.default_rng(3), cfg)
    np.testing.assert_array_equal(a[3], b)
    assert all(x.shape == t.shape and np.isfinite(x).all() and x.min() >= 0 for x in a)
    # contrasts differ from draw to draw: the sac-to-muscle ratio varies widely
    body = (t == 9)
    ratios = [float(x[sac & (t == 1)].mean() / (x[body].mean() + 1e-6)) for x in a]
    assert max(ratios) / min(ratios) > 1.5


def test_csf_is_kept_bright_when_asked():
    t, sac = _tissues()
    cfg = SynthConfig(p_t2_prior=0.0, p_csf_bright=1.0, p_flow=0.0, noise=(0.0, 0.0), bias=0.0, gamma=0.0,
                      p_gibbs=0.0, p_ghost=0.0, blur_mm=(0.0, 0.0), resolution_mm=(0.7, 0.7), texture_max=0.0,
                      spread_max=0.0)
    for s in range(10):
        x = synthesize(t, sac, 0.7, np.random.default_rng(s), cfg)
        assert np.median(x[t == 1]) >= 0.74 * x.max()


def test_physical_prior_has_csf_brightest():
    t, sac = _tissues()
    cfg = SynthConfig(p_t2_prior=1.0, p_flow=0.0, noise=(0.0, 0.0), bias=0.0, gamma=0.0, p_gibbs=0.0, p_ghost=0.0,
                      blur_mm=(0.0, 0.0), resolution_mm=(0.7, 0.7), texture_max=0.0, spread_max=0.0)
    x = synthesize(t, sac, 0.7, np.random.default_rng(1), cfg)
    assert np.median(x[t == 1]) >= np.median(x[t == 9])


def test_field_of_view_masks_and_normalisation():
    cfg = SynthConfig(p_crop=1.0)
    rng = np.random.default_rng(0)
    masks = [random_fov_mask((160, 160), 0.7, rng, cfg, (90.0, 80.0)) for _ in range(20)]
    assert all(m is not None and 0 < m.mean() < 1 for m in masks)
    assert random_fov_mask((160, 160), 0.7, rng, SynthConfig(p_crop=0.0)) is None
    img = np.random.default_rng(1).uniform(0, 10, (160, 160)).astype(np.float32)
    m = masks[0]
    out = normalise_inside(img, m)
    assert np.percentile(out[m], 99) == pytest.approx(1.0, abs=1e-3)
    assert np.allclose(out[~m], out[m].min())


def test_warp_keeps_shape_and_centre_without_randomness():
    cfg = SynthConfig(rotate_deg=0.0, scale=0.0, translate_mm=0.0, p_flip=0.0, elastic_mm=0.0)
    c = warp_coordinates((64, 64), (80, 80), 0.7, np.random.default_rng(0), cfg)
    assert c.shape == (2, 64, 64)
    np.testing.assert_allclose(c[:, 0, 0], [8.0, 8.0])
    np.testing.assert_allclose(c[:, 63, 63], [71.0, 71.0])


def test_config_round_trip_and_unknown_keys():
    d = SynthConfig(p_crop=0.5).to_dict()
    assert SynthConfig.from_dict(d) == SynthConfig(p_crop=0.5)
    with pytest.raises(KeyError):
        SynthConfig.from_dict({"no_such": 1})


def test_inserted_cord_stays_inside_the_sac_and_leaves_a_csf_ring():
    t, sac = _tissues()
    t[58:62, 44:53] = 24  # a dark band inside the sac (dura, a flow void): not fluid, kept
    cfg = SynthConfig(p_cord=1.0, cord_fill=(0.6, 0.8))
    sac_area = sac.sum()
    fills = []
    for s in range(20):
        out = insert_cord(t, sac, 0.7, np.random.default_rng(s), cfg)
        cord = out == 16
        assert cord.any() and not (cord & ~sac).any()
        # only fluid inside the sac changed; everything else is as it was
        changed = out != t
        assert not (changed & ~sac).any()
        assert set(np.unique(out[changed])) <= {1, 16}
        assert (out[58:62, 44:53] == 24).all()
        # the sac's edge is never cord: a CSF ring of at least one pixel is kept
        edge = sac & ~np.pad(sac, 1)[2:, 1:-1] | sac & ~np.pad(sac, 1)[:-2, 1:-1] \
            | sac & ~np.pad(sac, 1)[1:-1, 2:] | sac & ~np.pad(sac, 1)[1:-1, :-2]
        assert not (cord & edge).any()
        fills.append(cord.sum() / sac_area)
    # the toy's own cord fills 19 % of its sac; the inserted ones 0.6-0.8 of the semi-axes (less the band)
    assert 0.15 < min(fills) and max(fills) < 0.75 and max(fills) - min(fills) > 0.1


def test_erased_dura_takes_the_tissue_outside_it_and_nothing_else_changes():
    from scipy import ndimage

    t, sac = _tissues()
    ring = ndimage.binary_dilation(sac) & ~sac
    t[ring] = 24  # a one-pixel dura all round the sac
    t[ring & (np.arange(96)[:, None] > 62)] = 7  # epidural fat behind the sac instead of dura there
    behind = ndimage.binary_dilation(ring, iterations=3) & ~ring & ~sac
    t[behind & (np.arange(96)[:, None] > 60)] = 7  # ...and a fat pad behind the ring
    t[85:90, 44:53] = 24  # an interspinous ligament far behind the sac: not dura, kept
    out = erase_dura(t, sac, np.random.default_rng(0), SynthConfig(p_dura_drop=1.0))
    assert not ((out == 24) & ring).any()
    changed = out != t
    assert changed.any() and not (changed & ~ring).any()  # only the dura ring changed
    assert (out[sac] == t[sac]).all() and (out[85:90, 44:53] == 24).all()
    # each erased pixel took a tissue found just outside it, never the sac's CSF or cord
    assert set(np.unique(out[changed])) <= {7, 9} and 7 in set(np.unique(out[changed]))


def _without_draws(change):
    """``change(rng)`` with a fresh generator; asserts that it drew no random number."""
    rng = np.random.default_rng(0)
    state = rng.bit_generator.state
    out = change(rng)
    assert rng.bit_generator.state == state
    return out


def test_dura_erasing_is_off_by_default_and_uses_no_random_numbers():
    t, sac = _tissues()
    assert _without_draws(lambda rng: erase_dura(t, sac, rng, SynthConfig())) is t


def test_cord_insertion_is_off_by_default_and_uses_no_random_numbers():
    t, sac = _tissues()
    assert _without_draws(lambda rng: insert_cord(t, sac, 0.7, rng, SynthConfig())) is t
    # a stenotic sac (below cord_min_sac_mm2) keeps its own content
    small = insert_cord(t, sac, 0.3, np.random.default_rng(0), SynthConfig(p_cord=1.0))
    assert small is t


def test_layered_rootlets_fill_the_back_of_the_sac_and_nothing_else():
    from lumbargrade.phantom.tissues import Tissue
    from lumbargrade.segmentation.synth import layer_rootlets

    t, sac = _tissues()
    root = int(Tissue.ROOTLET)
    cord = t == 16
    t[52:56, 40:44] = 24  # something not fluid inside the sac (a flow void, the dura): kept
    ii = np.nonzero(sac)[0]
    height = ii.max() + 1 - ii.min()
    cfg = SynthConfig(p_rootlet_layer=1.0, rootlet_layer_fill=(0.2, 0.45), rootlet_layer_mm=1.0)
    fronts = []
    for s in range(20):
        out = layer_rootlets(t, sac, 0.7, np.random.default_rng(s), cfg)
        changed = out != t
        assert changed.any() and not (changed & ~sac).any()  # only inside the sac
        assert set(np.unique(out[changed])) == {root}  # CSF became rootlet; nothing else
        assert (out[cord] == 16).all() and (out[52:56, 40:44] == 24).all()
        band = out == root
        rows = np.nonzero(band)[0]
        assert rows.max() == ii.max()  # against the posterior (higher-row) wall of the sac
        # each column's band is one run from its front to the back of the sac (no islands)
        for j in np.unique(np.nonzero(band)[1]):
            col = np.nonzero(band[:, j] | (cord[:, j] & (np.arange(96) > rows.min())))[0]
            assert col.max() - col.min() + 1 == len(col)
        fronts.append((ii.max() + 1 - rows.min()) / height)
    # the deepest point of the front stays near the drawn fill (+ the lumpy front, 1 mm = 1.4 px)
    assert 0.15 < min(fronts) and max(fronts) < 0.45 + 2.0 / height + 0.05
    assert max(fronts) - min(fronts) > 0.1


def test_rootlet_layering_is_off_by_default_and_uses_no_random_numbers():
    from lumbargrade.segmentation.synth import layer_rootlets

    t, sac = _tissues()
    assert _without_draws(lambda rng: layer_rootlets(t, sac, 0.7, rng, SynthConfig())) is t
    assert layer_rootlets(t, np.zeros_like(sac), 0.7, np.random.default_rng(0), SynthConfig(p_rootlet_layer=1.0)) is t
