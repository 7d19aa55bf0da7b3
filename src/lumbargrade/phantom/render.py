"""Image formation: partial volume, texture, coil shading, bias, Gibbs, chemical shift, noise.

``render_slice`` samples the implicit anatomy on ``supersample`` sub-planes spread across the
slice thickness along the normal and averages their signal (partial volume); labels and tissues
are sampled at the centre plane. Then, in order: per-tissue smooth texture, chemical shift of
fat along the readout axis, k-space truncation (Gibbs ringing and the acquisition PSF), the
posterior coil fall-off and a smooth bias field, and Rician noise (magnitude of signal plus
complex Gaussian noise, spec 2b).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ..geometry import SliceGeometry
from .anatomy import PatientAnatomy, classify, classify_spine, curve_coords, spine_roi
from .mr import MRParams, signal_table, texture_table
from .tissues import Tissue

__all__ = ["RenderedSlice", "bias_field", "coil_profile", "render_series", "render_slice"]

_FAT = np.zeros(256, bool)
_FAT[[int(Tissue.EPIDURAL_FAT), int(Tissue.SUBCUT_FAT), int(Tissue.MARROW),
      int(Tissue.MUSCLE_FATTY)]] = True
_FAT_SHARE = np.zeros(256, np.float32)  # fraction of a tissue's signal that is fat
_FAT_SHARE[[int(Tissue.EPIDURAL_FAT), int(Tissue.SUBCUT_FAT)]] = 1.0
_FAT_SHARE[int(Tissue.MARROW)] = 0.6
_FAT_SHARE[int(Tissue.MUSCLE_FATTY)] = 0.6


@dataclass
class RenderedSlice:
    """One rendered slice.

    image: float32 [rows, cols] magnitude, CSF about 1.0 near the canal.
    labels: uint8 [rows, cols] structure labels (0..6) at the slice centre plane.
    tissues: uint8 [rows, cols] tissue codes at the centre plane.
    """

    image: np.ndarray
    labels: np.ndarray
    tissues: np.ndarray
    geometry: SliceGeometry | None = None


def _smooth_field(pts: np.ndarray, seed: int, n: int = 6, wavelength=(120.0, 300.0)) -> np.ndarray:
    """Smooth random field in [-1, 1] of LPS points (sum of plane waves; same for every slice)."""
    g = np.random.default_rng(seed)
    f = np.zeros(pts.shape[:-1], np.float32)
    for _ in range(n):
        d = g.normal(size=3)
        d /= np.linalg.norm(d)
        lam = g.uniform(*wavelength)
        ph = g.uniform(0, 2 * np.pi)
        f += np.cos((pts @ d.astype(np.float32)) * np.float32(2 * np.pi / lam) + np.float32(ph))
    return f / np.float32(np.sqrt(n / 2.0) * 1.6)


_SEPTA = np.zeros(256, np.float32)  # depth of the dark fibrous septa network in a tissue
_SEPTA[int(Tissue.SUBCUT_FAT)] = 0.1  # faint septa only (fat is fairly homogeneous)
_SEPTA[int(Tissue.EPIDURAL_FAT)] = 0.05
_SEPTA[int(Tissue.MUSCLE)] = -0.9  # negative: bright fatty streaks between muscle fascicles
_SEPTA[int(Tissue.MUSCLE_FATTY)] = 0.2
_SEPTA[int(Tissue.MARROW)] = -0.25
_SEPTA[int(Tissue.VISCERA)] = 0.5


def _tile(anat: PatientAnatomy, key: str, sigma: float) -> np.ndarray:
    nz = anat.p["noise"]
    if key not in nz:
        from scipy.ndimage import gaussian_filter
        g = np.random.default_rng([nz["seed"], {"tex": 1, "septa": 2}.get(key, 3)])
        f = gaussian_filter(g.normal(size=(48, 48, 48)).astype(np.float32), sigma, mode="wrap")
        nz[key] = f / (f.std() + 1e-6)
    return nz[key]


def _texture(anat: PatientAnatomy, grid: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Smooth tissue texture in [-1, 1] and a random field whose zero level set is a network of
    thin lines (fat septa, fascicle boundaries); both periodic 3D fields (96 mm tile, 2 mm
    grid), so neighbouring slices agree."""
    from scipy.ndimage import map_coordinates

    c = (grid.reshape(-1, 3).T / np.float32(2.0)).astype(np.float32)
    a = map_coordinates(_tile(anat, "tex", 1.2), c, order=1, mode="grid-wrap")
    b = map_coordinates(_tile(anat, "septa", 1.1), c, order=1, mode="grid-wrap")
    tex = np.clip(a / 2.0, -1, 1).reshape(grid.shape[:-1])
    return tex.astype(np.float32), b.reshape(grid.shape[:-1]).astype(np.float32)


def coil_profile(anat: PatientAnatomy, pts: np.ndarray, mr: MRParams) -> np.ndarray:
    """Posterior spine-array sensitivity at LPS points: exp(-(depth - canal depth) / falloff),
    depth measured from the skin of the back (mm)."""
    z = pts[..., 2]
    cy = np.interp(z, anat.curve_yz[:, 1], anat.curve_yz[:, 0])
    skin = cy + anat.p["back"]
    depth = np.clip(skin - pts[..., 1], 0.0, None)
    ref = anat.p["back"] - 30.0  # canal depth
    prof = np.exp(-(depth - ref) / mr.coil_falloff_mm)
    return np.minimum(prof, 1.6).astype(np.float32)


def bias_field(pts: np.ndarray, mr: MRParams) -> np.ndarray:
    """Smooth multiplicative field 1 +- bias_strength (LPS points)."""
    return (1.0 + mr.bias_strength * np.clip(_smooth_field(pts, mr.field_seed), -1, 1)).astype(
        np.float32)


def _kspace_filter(water: np.ndarray, fat: np.ndarray, mr: MRParams) -> np.ndarray:
    """Chemical shift (fat moved by ``chemical_shift_px`` along the readout axis, a linear phase in
    k-space) and, with ``gibbs``, truncation to the central k-space fraction (phase, readout):
    ringing and blur like a smaller acquisition matrix zero-filled to the display matrix.
    Returns the complex image."""
    from scipy import fft as sfft

    rows, cols = water.shape
    kw = sfft.fft2(water.astype(np.complex64), workers=1)
    if mr.chemical_shift_px:
        n = water.shape[mr.readout_axis]
        ph = np.exp(-2j * np.pi * np.fft.fftfreq(n) * mr.chemical_shift_px).astype(np.complex64)
        shp = [1, 1]
        shp[mr.readout_axis] = n
        kw += sfft.fft2(fat.astype(np.complex64), workers=1) * ph.reshape(shp)
    else:
        kw += sfft.fft2(fat.astype(np.complex64), workers=1)
    if mr.gibbs:
        frac = mr.kspace_fraction
        fr = frac[1] if mr.readout_axis == 0 else frac[0]
        fc = frac[1] if mr.readout_axis == 1 else frac[0]
        kr = np.abs(np.fft.fftfreq(rows) * rows) <= fr * rows / 2
        kc = np.abs(np.fft.fftfreq(cols) * cols) <= fc * cols / 2
        kw *= (kr[:, None] & kc[None, :])
    return sfft.ifft2(kw, workers=1)


def _interp_index(n_out: int, stride: int):
    """Coarse sample positions (every ``stride`` pixels, plus the last) and, for every pixel,
    the left coarse index and the linear weight of the right one."""
    pos = np.arange(0, n_out, stride)
    if pos[-1] != n_out - 1:
        pos = np.append(pos, n_out - 1)
    x = np.arange(n_out)
    j = np.clip(np.searchsorted(pos, x, side="right") - 1, 0, len(pos) - 2)
    f = ((x - pos[j]) / (pos[j + 1] - pos[j])).astype(np.float32)
    return pos, j, f


def _upsample(c: np.ndarray, jr, fr, jc, fc) -> np.ndarray:
    c = np.asarray(c, np.float32)
    a = c[:, jc] * (1 - fc) + c[:, jc + 1] * fc  # (coarse rows, cols): small
    fr = fr[:, None]
    out = a[jr]
    out *= 1 - fr
    out += a[jr + 1] * fr
    return out


def _coarse(fn, grid: np.ndarray, stride: int = 4):
    """Evaluate a smooth function of LPS points on every ``stride``-th pixel and interpolate
    (separable, bilinear) to the full grid. ``fn`` maps (..., 3) points to one or more arrays."""
    pr, jr, fr = _interp_index(grid.shape[0], stride)
    pc, jc, fc = _interp_index(grid.shape[1], stride)
    out = fn(grid[np.ix_(pr, pc)])
    if isinstance(out, tuple):
        return tuple(_upsample(o, jr, fr, jc, fc) for o in out)
    return _upsample(out, jr, fr, jc, fc)


def _grid(geom: SliceGeometry) -> np.ndarray:
    """(rows, cols, 3) float32 LPS mm of the pixel centres."""
    r = np.arange(geom.rows, dtype=np.float32)[:, None, None] * np.float32(geom.pixel_spacing[0])
    c = np.arange(geom.columns, dtype=np.float32)[None, :, None] * np.float32(geom.pixel_spacing[1])
    return (geom.position.astype(np.float32) + r * geom.col_cosine.astype(np.float32)
            + c * geom.row_cosine.astype(np.float32))


def _sv_plane(anat: PatientAnatomy, grid: np.ndarray):
    """Curve coordinates (s, v) of a planar pixel grid: exact (lookup table) on every 4th pixel,
    bilinear in between (s and v are smooth over a plane; error well below 0.01 mm)."""
    return _coarse(lambda g: curve_coords(anat, g)[:2], grid, 4)


def render_slice(
    anat: PatientAnatomy,
    geom: SliceGeometry,
    mr: MRParams,
    rng: np.random.Generator,
    supersample: int = 3,
) -> RenderedSlice:
    """Render one T2 FSE slice of the anatomy (see module docstring)."""
    n = max(1, int(supersample))
    grid = _grid(geom)
    normal = geom.normal.astype(np.float32)
    th = float(geom.thickness or 1.0)
    offs = ((np.arange(n) + 0.5) / n - 0.5) * th
    stab = signal_table(mr, anat.age)
    ttab = texture_table()
    # fatty streaks between muscle fascicles grow with age (spec 1g)
    sep_tab = _SEPTA.copy()
    sep_tab[int(Tissue.MUSCLE)] = -(1.5 + 2.5 * float(anat.p.get("muscle_fat", 0.0)))
    tex, sep_f = _coarse(lambda g: _texture(anat, g), grid, 3)
    septa = np.exp(-(sep_f / np.float32(0.12)) ** 2)
    # the (y, z) -> (s, v) map is the same on every sub-plane of a true sagittal slice
    sagittal = abs(float(normal[0])) > 0.99999
    key = ("sv", tuple(np.round(geom.position[1:], 4)), geom.orientation, geom.pixel_spacing,
           geom.rows, geom.columns)
    cache = anat.lut.setdefault("cache", {})
    if sagittal and key in cache:
        s0, v0 = cache[key]
    else:
        s0, v0 = _sv_plane(anat, grid)
        if sagittal:
            cache.clear()
            cache[key] = (s0, v0)
    u0 = grid[..., 0]
    bg_t = np.zeros(grid.shape[:2], np.uint8)
    bg_l = np.zeros(grid.shape[:2], np.uint8)
    tissues, labels = classify(anat, grid, sv=(s0, v0), background=(bg_t, bg_l))
    # signal of the centre plane everywhere; the other sub-planes differ only near the spine
    roi = spine_roi(anat, s0, v0, u0, margin=float(np.max(np.abs(offs))) + 1.0)
    tex_r, sep_r = tex[roi], septa[roi]

    def signal(t, tx, sp):
        sig = stab[t] * (1.0 + ttab[t] * tx) * (1.0 - sep_tab[t] * sp)
        fs = _FAT_SHARE[t]
        return sig - sig * fs, sig * fs

    w_c, f_c = signal(tissues, tex, septa)
    water = np.zeros(grid.shape[:2], np.float32)
    fat = np.zeros(grid.shape[:2], np.float32)
    wr = np.zeros(int(roi.sum()), np.float32)
    fr = np.zeros(int(roi.sum()), np.float32)
    n_c = 0
    bg_tr, bg_lr = bg_t[roi], bg_l[roi]
    for o in offs:
        if abs(o) < 1e-6:
            n_c += 1
            a, b = w_c[roi], f_c[roi]
        else:
            off = np.float32(o) * normal
            if sagittal:
                sv = (s0[roi], v0[roi])
            else:
                so, vo = _sv_plane(anat, grid + off)
                sv = (so[roi], vo[roi])
            t, _ = classify_spine(anat, grid[roi] + off, bg_tr, bg_lr, sv=sv)
            a, b = signal(t, tex_r, sep_r)
        wr += a
        fr += b
    water[...] = w_c
    fat[...] = f_c
    water[roi] = wr / n
    fat[roi] = fr / n
    if mr.gibbs or mr.chemical_shift_px:
        mag = np.abs(_kspace_filter(water, fat, mr)).astype(np.float32)
    else:
        mag = water + fat
    mag *= _coarse(lambda g: coil_profile(anat, g, mr) * bias_field(g, mr), grid, 8)
    sd = np.float32(mr.noise_sigma)
    nr = rng.standard_normal(mag.shape, dtype=np.float32) * sd
    ni = rng.standard_normal(mag.shape, dtype=np.float32) * sd
    out = np.sqrt((mag + nr) ** 2 + ni * ni).astype(np.float32)
    return RenderedSlice(image=out, labels=labels.astype(np.uint8), tissues=tissues.astype(np.uint8),
                         geometry=geom)


def render_series(
    anat: PatientAnatomy,
    geoms: list[SliceGeometry],
    mr: MRParams,
    rng: np.random.Generator,
    supersample: int = 3,
) -> list[RenderedSlice]:
    """Render every slice of a series, in the order given."""
    return [render_slice(anat, g, mr, rng, supersample) for g in geoms]
