"""Domain randomisation: new training images drawn from tissue label maps (after SynthSeg).

SynthSeg (Billot et al., Medical Image Analysis 2023) trains on images generated from label maps
with random intensities per label, so that the network learns shapes rather than one scanner's
contrast. :func:`synthesize` does the same for one axial field: every tissue code of the phantom
(:class:`lumbargrade.phantom.tissues.Tissue`) gets a random mean and spread, then the image goes
through what an MR acquisition does to it, each step with random strength:

1. intensities: with probability ``p_t2_prior`` the means follow a physically likely T2 FSE
   contrast (the phantom's relaxation table at a random TR/TE and field, with strong per-tissue
   jitter); otherwise they are uniform in [0, 1], except that CSF stays bright (``p_csf_bright``)
   and air dark (``p_air_dark``); a per-tissue Gaussian spread and a smooth multiplicative texture;
2. CSF flow voids: dark blobs inside the dural sac (``p_flow``);
3. partial volume and blur (Gaussian, ``blur_mm``);
4. resolution: acquired at ``resolution_mm`` (one side each, anisotropic) and interpolated back;
5. k-space truncation (Gibbs ringing, ``p_gibbs``) and motion ghosts along a phase axis
   (``p_ghost``);
6. a smooth bias field, Rician noise and a gamma curve;
7. field of view: the slice cropped to a band or box (narrow sagittal slabs reformatted to axial,
   small FOVs) and zero-filled outside (``p_crop``).

Before the intensities the tissue map itself may change (training draws only): a spinal cord or
conus of random size inside the dural sac, with a CSF ring that can be thin (:func:`insert_cord`,
``p_cord``), the dura erased (:func:`erase_dura`, ``p_dura_drop``): the phantom draws the
dura as a dark membrane 0.45 mm thick, a line a network can learn to follow, while on a real
1 mm T2 image it is rarely seen between bright CSF and epidural fat; and the cauda equina layered
as one confluent band against the posterior dura (:func:`layer_rootlets`, ``p_rootlet_layer``),
as a supine patient's nerve roots settle at L3-S1, where the phantom draws separate dots.

Spatial augmentation (rotation, scaling, translation, left-right flip and an elastic warp) is
applied to the tissue and structure maps before the intensities (:func:`warp_coordinates`).
Everything works on the network's field grid (``spacing`` mm per pixel) with numpy/scipy.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, fields

import numpy as np

__all__ = [
    "SynthConfig",
    "erase_dura",
    "insert_cord",
    "layer_rootlets",
    "normalise_inside",
    "random_fov_mask",
    "synthesize",
    "warp_coordinates",
]


@dataclass
class SynthConfig:
    """Ranges of the domain randomisation (each drawn uniformly per sample; ``p_*`` are
    probabilities). Lengths in mm."""

    p_t2_prior: float = 0.4
    p_csf_bright: float = 0.9
    p_air_dark: float = 0.85
    tissue_jitter: float = 0.5  # log-SD of the per-tissue factor on the T2 prior's means
    spread_max: float = 0.08  # within-tissue SD, in units of the intensity range
    texture_max: float = 0.25  # amplitude of the smooth multiplicative texture
    texture_mm: tuple[float, float] = (2.0, 12.0)  # its correlation length
    p_flow: float = 0.25
    blur_mm: tuple[float, float] = (0.0, 1.0)
    resolution_mm: tuple[float, float] = (0.3, 1.3)
    p_gibbs: float = 0.35
    gibbs_keep: tuple[float, float] = (0.45, 0.9)  # fraction of k-space kept along one axis
    p_ghost: float = 0.2
    ghost_amplitude: tuple[float, float] = (0.03, 0.2)
    bias: float = 0.6  # peak log-amplitude of the bias field
    noise: tuple[float, float] = (0.0, 0.1)  # Rician sigma, in units of the CSF/brightest mean
    gamma: float = 0.4  # log-gamma in [-gamma, gamma]
    p_crop: float = 0.35
    crop_band_mm: tuple[float, float] = (28.0, 80.0)  # width of a band kept (a narrow sagittal slab)
    crop_box_mm: tuple[float, float] = (60.0, 140.0)  # sides of a box kept (a small field of view)
    # spatial
    rotate_deg: float = 20.0
    scale: float = 0.15
    translate_mm: float = 30.0  # the structures anywhere near the field centre (sliding windows)
    p_flip: float = 0.5
    elastic_mm: float = 2.5  # SD of the control-point displacements
    elastic_grid: int = 5
    # label-map augmentation (training draws only): a cord or conus inside the dural sac
    p_cord: float = 0.0
    cord_fill: tuple[float, float] = (0.5, 0.8)  # its semi-axes as a fraction of the sac's
    cord_min_sac_mm2: float = 90.0  # sacs smaller than this (stenotic) are left as they are
    # label-map augmentation (training draws only): the dura around the sac replaced by its neighbours
    p_dura_drop: float = 0.0
    # label-map augmentation (training draws only): cauda equina layered against the posterior dura
    p_rootlet_layer: float = 0.0
    rootlet_layer_fill: tuple[float, float] = (0.15, 0.5)  # share of the sac's AP extent it fills
    rootlet_layer_mm: float = 1.5  # SD of its lumpy front, mm

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict) -> SynthConfig:
        known = {f.name for f in fields(cls)}
        unknown = set(d) - known
        if unknown:
            raise KeyError(f"unknown domain randomisation keys: {', '.join(sorted(unknown))}")
        kw = {k: tuple(v) if isinstance(v, list) else v for k, v in d.items()}
        return cls(**kw)


def warp_coordinates(
    out_size: tuple[int, int],
    in_size: tuple[int, int],
    spacing: float,
    rng: np.random.Generator,
    cfg: SynthConfig,
) -> np.ndarray:
    """Sampling coordinates ``[2, H, W]`` (input pixel units) of a random affine + elastic warp
    from an ``in_size`` field to an ``out_size`` one (centres aligned)."""
    from scipy import ndimage

    h, w = out_size
    theta = np.deg2rad(rng.uniform(-cfg.rotate_deg, cfg.rotate_deg))
    s = float(np.exp(rng.uniform(np.log(1 - cfg.scale), np.log(1 + cfg.scale)))) if cfg.scale > 0 else 1.0
    c, sn = np.cos(theta), np.sin(theta)
    m = np.array([[c, -sn], [sn, c]]) / s
    if rng.random() < cfg.p_flip:
        m = m @ np.diag([1.0, -1.0])
    t = rng.uniform(-cfg.translate_mm, cfg.translate_mm, size=2) / spacing
    ii, jj = np.meshgrid(np.arange(h, dtype=np.float32) - (h - 1) / 2,
                         np.arange(w, dtype=np.float32) - (w - 1) / 2, indexing="ij")
    ci, cj = (in_size[0] - 1) / 2 + t[0], (in_size[1] - 1) / 2 + t[1]
    r = m[0, 0] * ii + m[0, 1] * jj + ci
    q = m[1, 0] * ii + m[1, 1] * jj + cj
    if cfg.elastic_mm > 0:
        g = max(2, int(cfg.elastic_grid))
        sd = cfg.elastic_mm / spacing
        for arr in (r, q):
            coarse = rng.normal(0.0, sd, size=(g, g)).astype(np.float32)
            arr += ndimage.zoom(coarse, (h / g, w / g), order=3, mode="nearest")[:h, :w]
    return np.stack([r, q]).astype(np.float32)


def insert_cord(
    tissues: np.ndarray,
    sac: np.ndarray,
    spacing: float,
    rng: np.random.Generator,
    cfg: SynthConfig,
    cord_code: int | None = None,
    fluid_codes: tuple[int, ...] | None = None,
) -> np.ndarray:
    """A spinal cord or conus of random size in the dural sac of a tissue map (``[H, W]`` codes,
    ``sac`` bool, ``spacing`` mm per pixel); returns a new map, the structure labels stay as they
    are (the sac holds the cord).

    Above L2 a real sac is often mostly cord with a thin CSF ring; the phantom draws its cord
    from one size and taper, so most of its upper sacs have a thick ring. The cord here is an
    ellipse on the sac's own principal axes, ``cord_fill`` of its semi-axes (area 25-64 % of the
    sac by default), off-centre by a random 12 % (SD), kept one pixel inside the sac; only CSF,
    rootlet and cord pixels change (a cord already there is replaced). Drawn with probability
    ``p_cord`` on sacs of at least ``cord_min_sac_mm2``; no random number is used when
    ``p_cord`` is 0. ``cord_code`` / ``fluid_codes``: the phantom's codes by default
    (:class:`~lumbargrade.phantom.tissues.Tissue` CORD; CSF, ROOTLET and CORD)."""
    from scipy import ndimage

    from ..phantom.tissues import Tissue

    if cfg.p_cord <= 0 or rng.random() >= cfg.p_cord:
        return tissues
    if sac.sum() * spacing * spacing < cfg.cord_min_sac_mm2:
        return tissues
    if cord_code is None:
        cord_code = int(Tissue.CORD)
    if fluid_codes is None:
        fluid_codes = (int(Tissue.CSF), int(Tissue.ROOTLET), int(Tissue.CORD))
    ii, jj = np.nonzero(sac)
    i0, i1, j0, j1 = ii.min(), ii.max() + 1, jj.min(), jj.max() + 1
    ci, cj = ii.mean(), jj.mean()
    evals, evecs = np.linalg.eigh(np.cov(np.stack([ii - ci, jj - cj])))
    semi = 2.0 * np.sqrt(np.maximum(evals, 1e-6))  # the ellipse with the sac's second moments
    f = rng.uniform(*cfg.cord_fill)
    off = rng.normal(0.0, 0.12, 2) * semi
    gi, gj = np.mgrid[i0:i1, j0:j1]
    d = np.stack([gi - ci, gj - cj], axis=-1).astype(np.float64) @ evecs
    cord = ((d[..., 0] - off[0]) / (f * semi[0])) ** 2 + ((d[..., 1] - off[1]) / (f * semi[1])) ** 2 <= 1.0
    sub_sac = sac[i0:i1, j0:j1]
    cord &= ndimage.binary_erosion(np.pad(sub_sac, 1))[1:-1, 1:-1]
    sub = tissues[i0:i1, j0:j1]
    fluid = sub_sac & np.isin(sub, fluid_codes)
    new = sub.copy()
    new[fluid & (sub == cord_code)] = fluid_codes[0]
    new[fluid & cord] = cord_code
    out = tissues.copy()
    out[i0:i1, j0:j1] = new
    return out


def layer_rootlets(
    tissues: np.ndarray,
    sac: np.ndarray,
    spacing: float,
    rng: np.random.Generator,
    cfg: SynthConfig,
    rootlet_code: int | None = None,
    fluid_codes: tuple[int, ...] | None = None,
) -> np.ndarray:
    """The cauda equina as one band against the posterior dura of the dural sac in a tissue map
    (``[H, W]`` codes in the canonical view: posterior at higher rows; ``sac`` bool; ``spacing``
    mm per pixel); returns a new map, the structure labels stay as they are (the sac holds the
    roots).

    In a supine patient the lumbar nerve roots settle dorsally and, on a 1 mm T2 image, often
    merge into one grey band along the posterior wall of the sac; the phantom draws them as
    separate 1-1.5 mm dots. The band fills ``rootlet_layer_fill`` of the sac's anteroposterior
    extent from its posterior edge, with a front made lumpy by smooth noise (SD
    ``rootlet_layer_mm``); only CSF and rootlet pixels change (a cord stays). Drawn with
    probability ``p_rootlet_layer``; no random number is used when it is 0. ``rootlet_code`` /
    ``fluid_codes``: the phantom's codes by default (ROOTLET; CSF and ROOTLET)."""
    from ..phantom.tissues import Tissue

    if cfg.p_rootlet_layer <= 0 or rng.random() >= cfg.p_rootlet_layer or not sac.any():
        return tissues
    code = int(Tissue.ROOTLET) if rootlet_code is None else int(rootlet_code)
    if fluid_codes is None:
        fluid_codes = (int(Tissue.CSF), int(Tissue.ROOTLET))
    ii, jj = np.nonzero(sac)
    i0, i1, j0, j1 = ii.min(), ii.max() + 1, jj.min(), jj.max() + 1
    fill = rng.uniform(*cfg.rootlet_layer_fill)
    front = i1 - fill * (i1 - i0)  # rows at and below the front are posterior
    wiggle = _smooth_noise((1, j1 - j0), rng, max(1.0, 3.0 / spacing))[0]
    wiggle = wiggle / (float(np.abs(wiggle).max()) or 1.0) * cfg.rootlet_layer_mm / spacing
    rows = np.arange(i0, i1)[:, None]
    band = rows >= front + wiggle[None, :]
    sub = tissues[i0:i1, j0:j1]
    change = sac[i0:i1, j0:j1] & band & np.isin(sub, fluid_codes)
    out = tissues.copy()
    out[i0:i1, j0:j1] = np.where(change, code, sub)
    return out


def _smooth_noise(shape: tuple[int, int], rng: np.random.Generator, sigma_px: float) -> np.ndarray:
    from scipy import ndimage

    f = ndimage.gaussian_filter(rng.standard_normal(shape).astype(np.float32), sigma_px, mode="wrap")
    return f / (f.std() + 1e-6)


def _means(n_codes: int, rng: np.random.Generator, cfg: SynthConfig, csf: int, air: int) -> np.ndarray:
    """Mean intensity per tissue code (index = code)."""
    if rng.random() < cfg.p_t2_prior:
        from ..phantom.mr import sample_mr_params, signal_table

        tab = signal_table(sample_mr_params(rng), float(rng.uniform(20, 85)))[:n_codes].astype(np.float64)
        tab = tab * np.exp(rng.normal(0.0, cfg.tissue_jitter, n_codes))
        tab[csf] = max(tab[csf], float(tab.max()) * rng.uniform(0.9, 1.0))
        mu = tab / max(float(tab.max()), 1e-6)
    else:
        mu = rng.uniform(0.0, 1.0, n_codes)
        if rng.random() < cfg.p_csf_bright:
            mu[csf] = rng.uniform(0.75, 1.0)
    if rng.random() < cfg.p_air_dark:
        mu[air] = rng.uniform(0.0, 0.05)
    return mu.astype(np.float32)


def random_fov_mask(shape: tuple[int, int], spacing: float, rng: np.random.Generator,
                    cfg: SynthConfig, centre: tuple[float, float] | None = None) -> np.ndarray | None:
    """A boolean ``[H, W]`` field of view (a band of random width and direction through, or near,
    ``centre``, or a box), or None for the whole field (probability ``1 - p_crop``)."""
    if rng.random() >= cfg.p_crop:
        return None
    h, w = shape
    cy, cx = centre if centre is not None else ((h - 1) / 2, (w - 1) / 2)
    ii, jj = np.meshgrid(np.arange(h, dtype=np.float32), np.arange(w, dtype=np.float32), indexing="ij")
    width = rng.uniform(*cfg.crop_band_mm) / spacing
    off = rng.normal(0.0, width / 6)
    if rng.random() < 0.6:  # a band (a sagittal slab reformatted to axial: along AP)
        ang = rng.normal(0.0, 0.15) if rng.random() < 0.8 else rng.uniform(0, np.pi)
        d = (jj - cx) * np.cos(ang) - (ii - cy) * np.sin(ang) - off
        return np.abs(d) <= width / 2
    bw, bh = rng.uniform(*cfg.crop_box_mm, size=2) / spacing  # a small field of view
    return (np.abs(jj - cx - rng.normal(0, bw / 8)) <= bw / 2) & (np.abs(ii - cy - rng.normal(0, bh / 8)) <= bh / 2)


def _kspace(img: np.ndarray, rng: np.random.Generator, cfg: SynthConfig, noise_sigma: float) -> np.ndarray:
    """Gibbs truncation, ghosts and complex noise in k-space/image space -> magnitude."""
    h, w = img.shape
    z = img.astype(np.complex64)
    axis = int(rng.integers(2))
    if rng.random() < cfg.p_gibbs:
        keep = rng.uniform(*cfg.gibbs_keep)
        k = np.fft.fft2(z)
        n = img.shape[axis]
        f = np.abs(np.fft.fftfreq(n) * n) <= keep * n / 2
        k *= f[:, None] if axis == 0 else f[None, :]
        z = np.fft.ifft2(k).astype(np.complex64)
    if rng.random() < cfg.p_ghost:
        amp = rng.uniform(*cfg.ghost_amplitude)
        shift = int(rng.integers(max(4, img.shape[axis] // 8), max(5, img.shape[axis] // 2)))
        z = z + amp * np.roll(z, shift, axis=axis) + (amp / 2) * np.roll(z, -shift, axis=axis)
    if noise_sigma > 0:
        z = z + (rng.standard_normal(img.shape) + 1j * rng.standard_normal(img.shape)).astype(np.complex64) \
            * np.float32(noise_sigma)
    return np.abs(z).astype(np.float32)


def normalise_inside(img: np.ndarray, inside: np.ndarray | None) -> np.ndarray:
    """Percentile scaling (1 -> 0, 99 -> 1) over the pixels ``inside`` the field of view; outside
    set to the inside's minimum before scaling (as :func:`..preprocessing.preprocess` does)."""
    vals = img[inside] if inside is not None and inside.any() else img.ravel()
    lo, hi = np.percentile(vals, [1.0, 99.0])
    out = img
    if inside is not None:
        out = np.where(inside, img, float(vals.min())).astype(np.float32)
    scale = hi - lo if hi - lo > 1e-6 else max(abs(float(hi)), 1.0)
    return ((out - lo) / scale).astype(np.float32)


def erase_dura(
    tissues: np.ndarray,
    sac: np.ndarray,
    rng: np.random.Generator,
    cfg: SynthConfig,
    dura_code: int | None = None,
    ring_px: int = 2,
) -> np.ndarray:
    """The dura removed from a tissue map (``[H, W]`` codes, ``sac`` bool): pixels of the dura's
    code within ``ring_px`` pixels outside the sac take the code of the nearest pixel that is
    neither sac nor dura (epidural fat, ligament, bone...), so the sac's edge is only the contrast
    of what lies inside against what lies outside. The structure labels stay as they are. Drawn
    with probability ``p_dura_drop``; no random number is used when it is 0. ``dura_code``: the
    phantom's (:class:`~lumbargrade.phantom.tissues.Tissue` INTERSPINOUS, which it shares with
    the interspinous ligament; only the ring next to the sac changes)."""
    from scipy import ndimage

    from ..phantom.tissues import Tissue

    if cfg.p_dura_drop <= 0 or rng.random() >= cfg.p_dura_drop or not sac.any():
        return tissues
    code = int(Tissue.INTERSPINOUS) if dura_code is None else int(dura_code)
    near = ndimage.binary_dilation(sac, iterations=max(1, int(ring_px))) & ~sac
    dura = near & (tissues == code)
    if not dura.any():
        return tissues
    source = ~(dura | sac)
    if not source.any():
        return tissues
    _, (ii, jj) = ndimage.distance_transform_edt(~source, return_indices=True)
    out = tissues.copy()
    out[dura] = tissues[ii[dura], jj[dura]]
    return out


def synthesize(
    tissues: np.ndarray,
    sac: np.ndarray,
    spacing: float,
    rng: np.random.Generator,
    cfg: SynthConfig,
    n_codes: int = 32,
    csf_code: int = 1,
    air_code: int = 0,
) -> np.ndarray:
    """One random image from a tissue map (already warped to the field).

    tissues: uint8 ``[H, W]`` tissue codes; sac: bool ``[H, W]`` dural sac (for flow voids);
    spacing: mm per field pixel. Returns the raw image, float32 ``[H, W]``; the caller crops the
    field of view (:func:`random_fov_mask`) and normalises (:func:`normalise_inside`).
    """
    from scipy import ndimage

    h, w = tissues.shape
    t = np.clip(tissues.astype(np.intp), 0, n_codes - 1)
    mu = _means(n_codes, rng, cfg, csf_code, air_code)
    sd = rng.uniform(0.0, cfg.spread_max, n_codes).astype(np.float32)
    img = mu[t] + sd[t] * rng.standard_normal((h, w)).astype(np.float32)
    if cfg.texture_max > 0:
        amp = rng.uniform(0.0, cfg.texture_max, n_codes).astype(np.float32)
        tex = _smooth_noise((h, w), rng, rng.uniform(*cfg.texture_mm) / spacing)
        img = img * (1.0 + amp[t] * np.clip(tex, -2.5, 2.5) * 0.4)
    if rng.random() < cfg.p_flow and sac.any():
        blobs = _smooth_noise((h, w), rng, rng.uniform(0.8, 2.0) / spacing)
        void = sac & (blobs > rng.uniform(1.0, 2.0))
        img = np.where(void, img * rng.uniform(0.05, 0.5), img)
    blur = rng.uniform(*cfg.blur_mm) / spacing
    if blur > 0.15:
        img = ndimage.gaussian_filter(img, blur, mode="nearest")
    res = rng.uniform(*cfg.resolution_mm, size=2)
    f = np.maximum(res / spacing, 1.0)
    if f.max() > 1.05:
        sig = 0.5 * np.sqrt(np.maximum(f * f - 1.0, 0.0))
        low = ndimage.gaussian_filter(img, sig, mode="nearest")
        small = ndimage.zoom(low, 1.0 / f, order=1, mode="nearest")
        img = ndimage.zoom(small, (h / small.shape[0], w / small.shape[1]), order=1, mode="nearest")[:h, :w]
        if img.shape != (h, w):
            img = np.pad(img, ((0, h - img.shape[0]), (0, w - img.shape[1])), mode="edge")
    if cfg.bias > 0:
        coarse = rng.normal(0.0, 1.0, size=(4, 4)).astype(np.float32)
        field = ndimage.zoom(coarse, (h / 4, w / 4), order=3, mode="nearest")[:h, :w]
        peak = float(np.abs(field).max()) or 1.0
        img = img * np.exp(cfg.bias * rng.uniform(0, 1) * field / peak)
    ref = float(np.percentile(img, 99.5)) or 1.0
    noise = rng.uniform(*cfg.noise) * ref
    img = _kspace(np.clip(img, 0.0, None), rng, cfg, noise)
    if cfg.gamma > 0:
        g = float(np.exp(rng.uniform(-cfg.gamma, cfg.gamma)))
        img = np.power(img / (float(img.max()) or 1.0), g)
    return img.astype(np.float32)
