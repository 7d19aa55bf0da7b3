"""Image formation of the phantom (lumbargrade.phantom.render / mr)."""

import dataclasses

import numpy as np
import pytest

from lumbargrade.geometry import SliceGeometry
from lumbargrade.levels.names import LEVELS
from lumbargrade.phantom.anatomy import sample_anatomy, structure_at, tissue_at
from lumbargrade.phantom.mr import MRParams, sample_mr_params, signal_table, tissue_signal
from lumbargrade.phantom.pathology import LevelPathology
from lumbargrade.phantom.render import render_series, render_slice
from lumbargrade.phantom.tissues import Structure, Tissue


def _axial(anat, level="L4/L5", m=160, fov=140.0, th=4.0, off=0.0):
    lv = anat.levels[level]
    n = lv.normal_lps
    r = np.array([1.0, 0.0, 0.0])
    r = r - (r @ n) * n
    r /= np.linalg.norm(r)
    c = np.cross(n, r)
    ps = fov / m
    centre = lv.centre_lps + n * off - lv.ap_lps * 20
    pos = centre - (m - 1) / 2 * ps * r - (m - 1) / 2 * ps * c
    return SliceGeometry(pos, r, c, (ps, ps), m, m, th)


def _sagittal(anat, x=0.0, m=160, fov=300.0, th=4.0):
    lv = anat.levels["L3/L4"]
    r, c = np.array([0, 1.0, 0]), np.array([0, 0, -1.0])
    ps = fov / m
    centre = np.array([x, lv.centre_lps[1] + 20, lv.centre_lps[2]])
    pos = centre - (m - 1) / 2 * ps * r - (m - 1) / 2 * ps * c
    return SliceGeometry(pos, r, c, (ps, ps), m, m, th)


@pytest.fixture(scope="module")
def anat():
    path = {lv: LevelPathology() for lv in LEVELS}
    path["L4/L5"] = LevelPathology(central=0.3, facet_left=0.7, pfirrmann=3)
    return sample_anatomy(np.random.default_rng(4), path, 60.0, "M")


def test_mr_params_ranges_and_signal_order():
    for seed in range(20):
        mr = sample_mr_params(np.random.default_rng(seed))
        assert 3000 <= mr.tr_ms <= 5000 and 90 <= mr.te_ms <= 120
        assert 0.0 < mr.noise_sigma < 0.1
        tab = signal_table(mr)
        assert tab[Tissue.CSF] == pytest.approx(1.0, rel=0.01)
        assert tab[Tissue.MUSCLE] < tab[Tissue.MARROW] < tab[Tissue.SUBCUT_FAT]
        assert 0.05 < tab[Tissue.MUSCLE] < 0.3 and 0.6 < tab[Tissue.SUBCUT_FAT] < 1.4
        assert tab[Tissue.NUCLEUS] > tab[Tissue.NUCLEUS_P3] > tab[Tissue.NUCLEUS_P5]
        assert tab[Tissue.CORTEX] < 0.05 and tab[Tissue.AIR] == 0.0
    t = np.array([[Tissue.CSF, Tissue.MUSCLE]], np.uint8)
    assert tissue_signal(t, mr).shape == (1, 2)


def test_render_shapes_labels_and_determinism(anat):
    mr = sample_mr_params(np.random.default_rng(1))
    g = _axial(anat)
    a = render_slice(anat, g, mr, np.random.default_rng(9))
    b = render_slice(anat, g, mr, np.random.default_rng(9))
    assert a.image.dtype == np.float32 and a.image.shape == (g.rows, g.columns)
    assert a.labels.dtype == np.uint8 and a.tissues.dtype == np.uint8
    assert np.array_equal(a.image, b.image) and np.array_equal(a.labels, b.labels)
    # labels are the structures at the pixel centres of the slice plane
    # (the renderer interpolates the curve coordinates over the plane: a few boundary pixels may
    # differ from point-wise evaluation, by far less than a pixel in mm)
    grid = g.pixel_grid_lps()
    assert (a.labels == structure_at(anat, grid)).mean() > 0.998
    assert (a.tissues == tissue_at(anat, grid)).mean() > 0.995
    for lab in (1, 2, 3, 4, 5, 6):
        assert (a.labels == lab).sum() > 5, lab
    # radiological display: patient left (label 3) on the image's right
    cols3 = np.nonzero(a.labels == Structure.FACET_LEFT)[1].mean()
    cols4 = np.nonzero(a.labels == Structure.FACET_RIGHT)[1].mean()
    assert cols3 > cols4


def test_contrast_noise_and_coil(anat):
    mr = dataclasses.replace(sample_mr_params(np.random.default_rng(2)), gibbs=False,
                             chemical_shift_px=0.0, bias_strength=0.0)
    g = _axial(anat, level="L3/L4", m=200, fov=240.0)
    rs = render_slice(anat, g, mr, np.random.default_rng(0))
    img, t = rs.image, rs.tissues
    from scipy.ndimage import binary_erosion
    csf = binary_erosion(t == Tissue.CSF, iterations=1)
    muscle = binary_erosion(t == Tissue.MUSCLE, iterations=2)
    air = binary_erosion(t == Tissue.AIR, iterations=2)
    assert 0.6 < np.median(img[csf]) < 1.5
    assert np.median(img[muscle]) < 0.45 * np.median(img[csf])
    # background is Rayleigh: mean = sigma * sqrt(pi / 2)
    if air.sum() > 200:
        assert np.mean(img[air]) == pytest.approx(mr.noise_sigma * np.sqrt(np.pi / 2), rel=0.2)
    # posterior coil: subcutaneous fat at the back brighter than anterior fat
    fat = binary_erosion(t == Tissue.SUBCUT_FAT, iterations=2)
    rows = np.nonzero(fat)[0]
    post = fat & (np.arange(g.rows)[:, None] > np.percentile(rows, 80))
    ant = fat & (np.arange(g.rows)[:, None] < np.percentile(rows, 20))
    if post.sum() > 50 and ant.sum() > 50:
        assert np.median(img[post]) > np.median(img[ant])


def test_partial_volume_and_series(anat):
    mr = dataclasses.replace(MRParams(), noise_sigma=0.0, gibbs=False, chemical_shift_px=0.0,
                             bias_strength=0.0)
    g = _sagittal(anat)
    one = render_slice(anat, g, mr, np.random.default_rng(0), supersample=1)
    three = render_slice(anat, g, mr, np.random.default_rng(0), supersample=3)
    assert np.array_equal(one.labels, three.labels)
    d = np.abs(one.image - three.image) > 1e-3
    assert 0 < d.mean() < 0.5  # differs only near edges along the normal
    # intermediate values appear only with partial volume
    sig = signal_table(mr, anat.age)
    vals = np.unique(np.round(one.image[one.labels == Structure.DURAL_SAC], 3))
    assert len(vals) < len(np.unique(np.round(three.image[three.labels == Structure.DURAL_SAC], 3)))
    assert sig[Tissue.CSF] > 0
    series = render_series(anat, [g, _sagittal(anat, x=8.0)], mr, np.random.default_rng(0))
    assert len(series) == 2 and not np.array_equal(series[0].image, series[1].image)


_SNIPPET = """
import hashlib, numpy as np
from lumbargrade.phantom.anatomy import sample_anatomy
from lumbargrade.phantom.mr import sample_mr_params
from lumbargrade.phantom.render import render_slice
from lumbargrade.geometry import SliceGeometry
a = sample_anatomy(np.random.default_rng(3), {}, 50.0, "F")
lv = a.levels["L4/L5"]
g = SliceGeometry(lv.centre_lps - 40 * np.array([1.0, 0, 0]) - 40 * np.array([0, 0, -1.0]),
                  np.array([1.0, 0, 0]), np.array([0, 0, -1.0]), (1.0, 1.0), 64, 80, 3.0)
r = render_slice(a, g, sample_mr_params(np.random.default_rng(1)), np.random.default_rng(2))
print(hashlib.sha256(r.image.tobytes() + r.labels.tobytes()).hexdigest())
"""


def test_same_seed_same_image_across_processes():
    import os
    import subprocess
    import sys

    outs = set()
    for hs in ("1", "2"):
        env = dict(os.environ, PYTHONHASHSEED=hs)
        res = subprocess.run([sys.executable, "-c", _SNIPPET], env=env, capture_output=True,
                             text=True, timeout=120, check=True)
        outs.add(res.stdout.strip())
    assert len(outs) == 1
