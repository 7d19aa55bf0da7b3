"""3D anatomy of the lumbar phantom as an implicit function of patient points (LPS mm).

Coordinate model
----------------
* The spine centreline is a smooth planar curve ``C(s)`` in the mid-sagittal plane ``x = 0``,
  parametrised by arc length ``s`` (mm, increasing superiorly; ``s = 0`` at the S1 upper
  endplate). It runs through the centres of the vertebral bodies and discs from T9 to the
  coccyx. Its tangent angle ``phi(s)`` (from +z towards anterior, -y) changes with curvature
  spread over each motion segment, so that the segmental angles (recumbent lordosis, spec 1b)
  add up to the patient's T12-S1 lordosis; the sacrum curves back (kyphosis) below S1.
* Each point ``p`` is mapped to curve coordinates by nearest-point projection onto the curve
  (a per-patient lookup table over ``(y, z)``, bilinear): ``s`` (arc length of the foot point),
  ``v = (p - C(s)) . A(s)`` (signed distance along the anterior unit normal ``A``: +anterior)
  and ``u = x`` (+patient left). Near a disc the surfaces ``s = const`` are the planes parallel
  to the disc, so an axial slice whose normal is the disc's ``normal_lps`` through its centre
  samples exactly ``w = s - s_disc = 0``.
* A point belongs to the *level domain* of its nearest disc (boundaries at mid-vertebral body);
  all spine shapes are tested in that level's local ``(u, v, w)`` with per-level parameters
  gathered per point (vectorised). Shapes: vertebral bodies (cortex + marrow), discs
  (bean-shaped with a flat-concave posterior margin; annulus, nucleus by Pfirrmann grade,
  posterior bulge driven by ``central``), a trefoil canal at L4-S1 (lateral recesses holding the
  traversing roots), dural sac (a
  polar shape around the canal centre whose area at ``w = 0`` is set exactly by ``central``),
  cauda equina rootlets arranged after Schizas, epidural fat, ligamentum flavum, facet joints
  (articular processes, cartilage, joint space, effusion, osteophytes) turned by the facet
  angle, with a curved (J-shaped) joint line, neural foramina (fat, exiting root, fibrous tissue
  replacing fat with severity), pedicles, laminae (the upper vertebra's reach down to the disc
  level), spinous and transverse processes, interspinous ligament with fat.
* Body-wide tissues (skin outline, subcutaneous fat, abdominal wall, viscera, vessels, psoas,
  quadratus lumborum, paraspinal muscles with wandering fascial fat planes; bowel loops with
  mesenteric fat, fluid and gas; no muscle ring behind the back muscles) are defined in the
  same curve frame (``u, v`` with
  sizes interpolated along ``s``) or, for the body outline, in global ``(x, y)`` around the
  centreline's ``y`` at the point's ``z``.

Central stenosis (``LevelPathology.central``, grade cuts ``grades.CENTRAL_CUTS``) drives, at the
disc level only (plateau ``exp(-(w/7 mm)^4)`` along s): the sac area (piecewise linear in the
severity through fixed areas at the grade boundaries, a weighted geometric mean of absolute
Schonstrom bands and a fixed sac/disc area ratio; see ``AnatomyConfig.central_*``), a trefoil
shape (anterior disc bulge hugging the sac, posterolateral LF/facet indentation), and the Schizas
appearance, mapped as grade 0 = A1-A2 (rootlets layered dorsally), 1 = A3-A4 (rootlets fill more
than half / clump centrally, CSF around), 2 = B (rootlets fill the sac, thin CSF between),
3 = C-D (no CSF: homogeneous grey sac; posterior epidural fat lost towards D). Foraminal
severity (Lee): perineural fat lost along one axis (AP or SI, at random) up to 0.45, along both by
0.5 (a thin rim is left), root flattened from 0.75, plus a disc bulge into the foramen. Facet
severity (Weishaupt): joint narrowing, process hypertrophy, osteophytes from 0.3, effusion
from 0.35.

Everything is a pure function of arrays; every number is a field of :class:`AnatomyConfig`
(defaults from ``shared/specs/phantom-anatomy.md``, section cited next to each field).
"""

from __future__ import annotations

import dataclasses
import zlib
from dataclasses import dataclass, field

import numpy as np
from scipy.ndimage import map_coordinates

from ..levels.names import LEVELS
from .pathology import LevelPathology
from .tissues import Structure, Tissue

__all__ = [
    "ALL_LEVELS",
    "AnatomyConfig",
    "LevelAnatomy",
    "PatientAnatomy",
    "classify",
    "classify_spine",
    "curve_coords",
    "dural_sac_area_mm2",
    "sample_anatomy",
    "spine_roi",
    "structure_at",
    "tissue_at",
]

#: Discs modelled, cranial to caudal (graded ones are LEVELS; the rest only fill the sagittal).
ALL_LEVELS: tuple[str, ...] = ("T9/T10", "T10/T11", "T11/T12", "T12/L1") + tuple(LEVELS)
VERTEBRAE: tuple[str, ...] = ("T9", "T10", "T11", "T12", "L1", "L2", "L3", "L4", "L5", "S1")
_NL = len(ALL_LEVELS)
_LUMBAR0 = ALL_LEVELS.index("T12/L1")


@dataclass(frozen=True)
class AnatomyConfig:
    """Shape parameters (means, SDs) of the phantom anatomy; per-level tuples are for
    T12/L1, L1/L2, L2/L3, L3/L4, L4/L5, L5/S1 unless said otherwise."""

    # --- discs (spec 1a) ---
    disc_height_mm: tuple = (8.5, 10.0, 11.6, 12.5, 13.8, 13.0)  # mid-disc height, 1a
    disc_height_sd: float = 1.4  # 1a (SD 1.5-2.5, shrunk: part of it is Pfirrmann)
    disc_ant_post_mm: tuple = ((10.0, 6.5), (10.8, 7.3), (13.1, 8.6), (15.2, 9.1), (18.1, 10.1),
                               (18.7, 8.5))  # anterior / posterior disc heights, 1a
    disc_ap_mm: tuple = (32.0, 33.0, 34.5, 35.0, 35.5, 34.0)  # disc AP, 1a recommended 33-38
    disc_ap_sd: float = 2.0
    disc_ap_male_mm: float = 2.5  # 1a: about +3 mm for males
    disc_width_mm: tuple = (42.0, 44.0, 46.0, 48.0, 51.0, 52.0)  # 1a: 42-55 increasing caudally
    disc_width_sd: float = 2.5
    nucleus_ap_frac: tuple = (0.62, 0.63, 0.64, 0.64, 0.64, 0.72)  # 1a (In vivo morphology)
    nucleus_width_frac: float = 0.6  # [E]
    nucleus_height_frac: float = 0.7  # 1a: NP height 8.6 of 13.8 mm at L4/5
    pfirrmann_height_factor: tuple = (1.0, 1.0, 0.93, 0.78, 0.5)  # 3d: normal .. collapsed
    disc_posterior_concavity_mm: float = 4.5  # [E] kidney / bean shape, flat-concave back
    disc_concavity_sd: float = 0.15  # log-SD per level
    endplate_concavity_mm: float = 1.2  # [E]
    thoracic_disc_height_mm: float = 5.5
    # --- vertebrae (spec 1a) ---
    body_height_mm: tuple = (23.0, 24.5, 25.5, 26.5, 27.0, 27.5, 28.0)  # T12, L1..L5, S1 [E] 20-30
    body_height_sd: float = 1.5
    thoracic_body_height_mm: float = 21.0
    body_ap_inset_mm: float = 1.0  # body AP = disc AP - inset (disc slightly bulges) [E]
    body_width_inset_mm: float = 2.0
    cortex_mm: float = 1.2  # [E]
    endplate_mm: float = 1.0
    # --- sagittal layout (spec 1b) ---
    lordosis_deg: float = 40.0  # 1b: recumbent T12-S1 36.8 +- 13.2
    lordosis_sd_deg: float = 9.0
    segment_share: tuple = (0.01, 0.055, 0.10, 0.16, 0.23, 0.445)  # 1b standing segmental angles
    sacral_slope_deg: float = 36.0  # [E] supine sacral slope
    sacral_slope_sd_deg: float = 5.0
    sacral_slope_per_lordosis: float = 0.6  # deg of sacral slope per deg of lordosis [E]
    sacral_kyphosis_per_mm: float = 0.0085  # [E] rad/mm below S1
    thoracic_kyphosis_deg: float = 4.0  # per thoracic segment [E]
    # --- dural sac (spec 1c) ---
    sac_area_mm2: tuple = (200.0, 190.0, 180.0, 170.0, 160.0, 150.0)  # 1c suggested per level
    sac_area_patient_sd: float = 0.07  # log-SD (modest, correlated with body size) [E]
    sac_area_level_sd: float = 0.04
    sac_area_age_drop: float = 0.10  # 1c: 80-90 % in the 70s vs 20s (not L5/S1)
    sac_aspect: tuple = (1.45, 1.45, 1.45, 1.5, 1.55, 1.6)  # transverse / AP, 1c (18.9/13.8) [E]
    # Dural sac area at the central severity cuts 1..3 and at severity 1 (the grade boundaries):
    # a weighted geometric mean of absolute areas (Schonstrom/Bolender bands, 1c: <130 early,
    # <100 relative, <75 absolute stenosis) and of a fixed sac/disc area ratio times the
    # level's disc area (section 0: the ratio is what the paper's tree thresholds), so that both
    # the absolute area and the ratio fall monotonically and separate the grades.
    central_area_abs_mm2: tuple = (130.0, 100.0, 70.0, 40.0)
    # (x1.06 since the disc's posterior concavity went from 2 to 4.5 mm, which cut the disc
    # area by ~6 %: the absolute areas at the cuts stay where they were)
    central_ratio_at_cuts: tuple = (0.0922, 0.0710, 0.0498, 0.0286)
    central_ratio_weight: float = 0.75
    normal_margin: float = 1.15  # normal sac area >= this x the area at the first cut
    central_cuts: tuple = (0.25, 0.5, 0.75)  # grades.CENTRAL_CUTS
    stenosis_halfwidth_mm: float = 7.0  # focal narrowing along s (plateau, exp(-(w/h)^4))
    anterior_epidural_mm: float = 0.8
    dura_mm: float = 0.45  # thin dark dura-arachnoid outside the sac [E]  # PLL + thin fat between disc and sac
    n_rootlets: int = 28
    rootlet_radius_mm: float = 0.65  # 1-1.5 mm dots (3a)
    cord_radius_mm: tuple = (4.3, 3.4)  # transverse, AP semi-axes
    # conus tip: mean at the lower third of L1, range mid T12 to L2 (Saifuddin 1998, Br J Radiol
    # 71:1151, 504 adults) [S]; offset below the L1/L2 disc centre (negative: above) and its SD
    conus_offset_mm: float = -8.0
    conus_sd_mm: float = 12.0
    sac_end_below_s1_mm: float = 42.0  # thecal sac ends at S2 [E]
    # --- lumbosacral transitional vertebra (in 4-30 % of adults: Konin & Walz 2010, AJNR
    # 31:1778 [S]); 0 by default, the cohorts of the bundled pack have none. Drawn from a
    # stream of their own.
    # lumbarised S1: a mobile S1/S2 disc and an S1 body shaped like a lumbar one
    lumbarised_s1_rate: float = 0.0
    s1s2_disc_height_mm: tuple = (3.0, 7.0)  # its disc's height range [E]
    s1s2_disc_depth_mm: float = 30.0  # its centre below the S1 upper endplate (first sacral segment) [E]
    # sacralised L5: a rudimentary, thin L5/S1 disc (L5 partly fused to the sacrum)
    sacralised_l5_rate: float = 0.0
    sacralised_disc_height_mm: tuple = (2.0, 4.0)  # [E]
    # --- epidural fat and ligamentum flavum (spec 1f) ---
    posterior_fat_mm: float = 4.5  # 1f: dorsal triangle 3-7 mm
    lateral_fat_mm: float = 3.0
    lateral_recess_mm: float = 3.5  # [E] extra anterolateral canal depth (trefoil, L4-S1)
    traversing_root_mm: float = 1.4  # [E] radius of the traversing root in the lateral recess
    lf_thickness_mm: tuple = (3.0, 3.1, 3.2, 3.4, 3.7, 3.6)  # 1f (Khasawneh)
    lamina_mm: float = 5.0
    spinous_length_mm: float = 30.0
    spinous_height_mm: float = 25.0
    # --- facets (spec 1e) ---
    facet_angle_deg: tuple = (26.0, 28.0, 33.0, 42.0, 48.0, 52.0)  # to the sagittal plane, 1e
    facet_angle_sd: float = 6.0
    facet_tropism_sd: float = 3.0
    facet_gap_mm: float = 3.0  # 1e: 2-4 mm normal
    facet_length_mm: float = 17.0  # joint line length in the axial plane [E]
    facet_process_mm: float = 8.5  # thickness of each articular process [E]
    facet_cartilage_mm: float = 0.9
    facet_curvature_per_mm: float = 0.035  # [E] joint line bend, 1 / (2 x radius ~14 mm)
    facet_hypertrophy_mm: float = 3.5  # at severity 1 (Weishaupt 2-3)
    facet_osteophyte_mm: float = 3.5
    facet_effusion_mm: float = 2.5  # 1e: 2.75 +- 0.89 at unstable levels
    # --- foramen (spec 1d) ---
    foramen_height_mm: float = 20.0  # 1d: 17-22
    foramen_ap_mm: float = 10.0
    root_radius_mm: float = 2.6  # exiting root / DRG
    # --- body and soft tissue [E] (spec 1g) ---
    body_width_mm: float = 300.0
    body_width_sd: float = 25.0
    body_ap_mm: float = 220.0
    body_ap_sd: float = 22.0
    back_depth_mm: float = 88.0  # skin of the back behind the disc centre
    subcut_fat_mm: float = 18.0
    subcut_fat_sd: float = 7.0
    psoas_radius_mm: tuple = (6.0, 9.0, 12.0, 15.5, 18.0, 19.0)  # grows caudally, 1g
    erector_width_mm: float = 34.0
    multifidus_width_mm: float = 20.0
    aorta_radius_mm: float = 10.0
    ivc_radius_mm: tuple = (11.0, 7.5)
    age_muscle_fat: float = 0.25  # fraction of fatty muscle at age 80 [E]
    lookup_step_mm: float = 2.0  # resolution of the (y, z) -> (s, v) lookup table


@dataclass
class LevelAnatomy:
    """One disc level in patient space (LPS mm) and its nominal sizes (mm, mm2)."""

    name: str
    centre_lps: np.ndarray  # (3,) disc centre
    normal_lps: np.ndarray  # (3,) unit vector along the spine axis, superior
    ap_lps: np.ndarray  # (3,) unit vector anterior
    s_mm: float  # arc length of the disc centre along the centreline
    disc_height_mm: float
    disc_ap_mm: float
    disc_width_mm: float
    sac_area_normal_mm2: float  # sac area this level would have without stenosis
    sac_area_mm2: float  # analytic dural sac area at the disc centre plane
    pathology: LevelPathology
    extra: dict = field(default_factory=dict)


@dataclass
class PatientAnatomy:
    """Per-patient anatomy: centreline, per-level parameters (``levels`` holds T12/L1..L5/S1)."""

    config: AnatomyConfig
    age: float
    sex: str
    levels: dict[str, LevelAnatomy]
    curve_s: np.ndarray  # (n,) arc length samples
    curve_yz: np.ndarray  # (n, 2) centreline y, z
    curve_phi: np.ndarray  # (n,) tangent angle (rad)
    p: dict  # per-level parameter arrays (index = ALL_LEVELS order) and scalars
    lut: dict  # (y, z) -> (s, v) lookup tables
    seed: int = 0

    @property
    def graded_levels(self) -> list[str]:
        return list(LEVELS)


# ----------------------------------------------------------------------------------------------
# sampling


def _cfg(config) -> AnatomyConfig:
    if config is None:
        return AnatomyConfig()
    if isinstance(config, AnatomyConfig):
        return config
    if isinstance(config, dict):
        names = {f.name for f in dataclasses.fields(AnatomyConfig)}
        unknown = set(config) - names
        if unknown:
            raise ValueError(f"unknown AnatomyConfig keys: {sorted(unknown)}")
        kw = {k: (tuple(v) if isinstance(v, list) else v) for k, v in config.items()}
        return AnatomyConfig(**kw)
    raise TypeError("config must be an AnatomyConfig, a dict or None")


def _vm(cu, cv, du, dv, kappa):
    """von Mises bump of a direction (cu, cv) around unit direction (du, dv)."""
    return np.exp(kappa * (cu * du + cv * dv - 1.0))


# directions in the (u, v) plane: u = patient left, v = anterior
_ANT = (0.0, 1.0)
_PL_L = (np.sin(np.radians(52)), -np.cos(np.radians(52)))
_PL_R = (-np.sin(np.radians(52)), -np.cos(np.radians(52)))
_POST = (0.0, -1.0)


def _sac_radius_unit(cu, cv, a, b, a_ant, a_plL, a_plR):
    """Sac radius before area scaling, for direction cosines (cu, cv) from the sac centre."""
    re = 1.0 / np.sqrt((cu / a) ** 2 + (cv / b) ** 2)
    m = (1.0 - a_ant * _vm(cu, cv, *_ANT, 2.2)
         - a_plL * _vm(cu, cv, *_PL_L, 4.0) - a_plR * _vm(cu, cv, *_PL_R, 4.0))
    return re * np.maximum(m, 0.18)


def _unit_area(a, b, a_ant, a_plL, a_plR, n=1440):
    t = np.linspace(0, 2 * np.pi, n, endpoint=False)
    r = _sac_radius_unit(np.cos(t), np.sin(t), a, b, a_ant, a_plL, a_plR)
    return 0.5 * float(np.sum(r * r)) * (2 * np.pi / n)


def _kidney_area(a: float, b: float, cc: float, step: float = 0.25) -> float:
    """Area (mm2) of the kidney-shaped disc cross-section (see _kidney)."""
    uu, vv = np.meshgrid(np.arange(-a - 1, a + 1, step), np.arange(-b - 1, b + 1, step))
    return float((_kidney(uu, vv, a, b, cc) <= 1.0).sum()) * step * step


def sample_anatomy(
    rng: np.random.Generator,
    pathology: dict[str, LevelPathology],
    age: float,
    sex: str,
    config: AnatomyConfig | dict | None = None,
) -> PatientAnatomy:
    """Sample one patient's anatomy.

    pathology: level name (``LEVELS``) -> :class:`LevelPathology`; missing levels are healthy.
    age: years; sex: 'M' or 'F'. The same rng state gives the same anatomy.
    """
    cfg = _cfg(config)
    male = str(sex).upper().startswith("M")
    g = rng
    nl = _NL
    lum = slice(_LUMBAR0, nl)
    nlum = nl - _LUMBAR0
    path = [pathology.get(n, LevelPathology()) for n in ALL_LEVELS]
    cent = np.clip([float(p.central) for p in path], 0.0, 1.0)
    forL = np.clip([float(p.foramen_left) for p in path], 0.0, 1.0)
    forR = np.clip([float(p.foramen_right) for p in path], 0.0, 1.0)
    facL = np.clip([float(p.facet_left) for p in path], 0.0, 1.0)
    facR = np.clip([float(p.facet_right) for p in path], 0.0, 1.0)
    pf = np.clip([int(p.pfirrmann) for p in path], 1, 5)
    for i in range(_LUMBAR0):  # thoracic discs: healthy
        cent[i] = forL[i] = forR[i] = facL[i] = facR[i] = 0.0
        pf[i] = 2

    # a lumbosacral transitional vertebra, from a stream of its own (a jumped copy of the rng:
    # every other draw of the patient is the same with or without it)
    jumped = getattr(g.bit_generator, "jumped", None)
    tg = np.random.Generator(jumped()) if jumped else np.random.default_rng(
        zlib.crc32(repr(g.bit_generator.state).encode()))
    u_lstv, h_s1s2, h_l5s1 = tg.random(), tg.uniform(*cfg.s1s2_disc_height_mm), tg.uniform(*cfg.sacralised_disc_height_mm)
    transition = ("lumbarised S1" if u_lstv < cfg.lumbarised_s1_rate else
                  "sacralised L5" if u_lstv < cfg.lumbarised_s1_rate + cfg.sacralised_l5_rate else None)

    size = float(np.exp(g.normal(0.0, 0.05))) * (1.03 if male else 0.97)
    # --- discs ---
    hmid = np.full(nl, cfg.thoracic_disc_height_mm)
    hmid[lum] = np.asarray(cfg.disc_height_mm) + g.normal(0, cfg.disc_height_sd, nlum)
    hmid = np.clip(hmid, 4.0, 18.0)
    hfac = np.asarray(cfg.pfirrmann_height_factor)[np.clip(pf, 1, 5) - 1]
    hmid = hmid * hfac
    if transition == "sacralised L5":
        hmid[-1] = min(float(hmid[-1]), float(h_l5s1))
    hant = np.full(nl, cfg.thoracic_disc_height_mm + 0.5)
    hpost = np.full(nl, cfg.thoracic_disc_height_mm - 0.5)
    ap_tab = np.asarray(cfg.disc_ant_post_mm)
    hant[lum] = ap_tab[:, 0] / ap_tab.mean(axis=1) * hmid[lum]
    hpost[lum] = ap_tab[:, 1] / ap_tab.mean(axis=1) * hmid[lum]
    hant[:_LUMBAR0] = hmid[:_LUMBAR0] + 0.5
    hpost[:_LUMBAR0] = hmid[:_LUMBAR0] - 0.5
    d_ap = np.full(nl, 29.0) * size
    d_ap[lum] = (np.asarray(cfg.disc_ap_mm) + (cfg.disc_ap_male_mm / 2) * (1 if male else -1)) * size
    d_ap = d_ap + g.normal(0, cfg.disc_ap_sd * 0.5, nl) + g.normal(0, cfg.disc_ap_sd * 0.8)
    d_w = np.full(nl, 38.0) * size
    d_w[lum] = np.asarray(cfg.disc_width_mm) * size
    d_w = d_w + g.normal(0, cfg.disc_width_sd * 0.5, nl) + g.normal(0, cfg.disc_width_sd * 0.8)
    # vertebral bodies: index j (VERTEBRAE); body j is above disc j, below disc j-1
    bh = np.full(len(VERTEBRAE), cfg.thoracic_body_height_mm)
    bh[3:] = np.asarray(cfg.body_height_mm)
    bh = bh * size + g.normal(0, cfg.body_height_sd, len(VERTEBRAE))

    # --- lordosis / curve ---
    L = np.radians(np.clip(g.normal(cfg.lordosis_deg, cfg.lordosis_sd_deg), 15, 65))
    share = np.asarray(cfg.segment_share) * np.exp(g.normal(0, 0.2, nlum))
    share = share / share.sum()
    theta = np.full(nl, -np.radians(cfg.thoracic_kyphosis_deg))
    theta[lum] = L * share
    # sacral slope rises with lordosis (pelvic alignment), spec 1b [E]
    phi_s1 = np.radians(g.normal(cfg.sacral_slope_deg, cfg.sacral_slope_sd_deg)) \
        + cfg.sacral_slope_per_lordosis * (L - np.radians(cfg.lordosis_deg))

    # arc-length layout, bottom (s=0 at S1 upper endplate) to top
    s_c = np.zeros(nl)
    s = 0.0
    for k in range(nl - 1, -1, -1):
        s_c[k] = s + hmid[k] / 2
        s = s + hmid[k] + bh[k]  # body above disc k is VERTEBRAE[k]
    s_top = s + 10.0
    s_bot = -135.0
    ds = 0.25
    ss = np.arange(s_bot, s_top + ds, ds)
    kap = np.zeros_like(ss)
    for k in range(nl):
        lo = s_c[k] - hmid[k] / 2 - bh[k + 1] / 2
        hi = s_c[k] + hmid[k] / 2 + bh[k] / 2
        m = (ss >= lo) & (ss < hi)
        kap[m] += theta[k] / (hi - lo)
    kap[ss < -bh[-1] / 2] -= cfg.sacral_kyphosis_per_mm
    # smooth curvature (3 mm)
    ker = np.exp(-0.5 * (np.arange(-24, 25) * ds / 3.0) ** 2)
    kap = np.convolve(kap, ker / ker.sum(), mode="same")
    i0 = int(np.argmin(np.abs(ss)))
    phi = phi_s1 - (np.cumsum(kap) * ds - np.cumsum(kap)[i0] * ds)
    ty, tz = -np.sin(phi), np.cos(phi)
    y = np.cumsum(ty) * ds
    z = np.cumsum(tz) * ds
    # place L3/L4 disc centre near the origin, with a small random table offset
    k34 = ALL_LEVELS.index("L3/L4")
    j34 = int(np.argmin(np.abs(ss - s_c[k34])))
    y = y - y[j34] + g.uniform(-8, 8)
    z = z - z[j34] + g.uniform(-12, 12)

    def frame(sv):
        j = int(np.clip(np.round((sv - s_bot) / ds), 0, len(ss) - 1))
        ph = phi[j]
        c = np.array([0.0, y[j], z[j]])
        n = np.array([0.0, -np.sin(ph), np.cos(ph)])
        a = np.array([0.0, -np.cos(ph), -np.sin(ph)])
        return c, n, a

    # --- dural sac ---
    agef = 1.0 - cfg.sac_area_age_drop * np.clip((age - 25.0) / 50.0, 0, 1)
    a0 = np.full(nl, 200.0)
    a0[lum] = np.asarray(cfg.sac_area_mm2)
    lvl_age = np.ones(nl) * agef
    lvl_age[-1] = 1.0  # no age effect at L5/S1 (1c)
    a0 = a0 * lvl_age * size ** 2 * np.exp(g.normal(0, cfg.sac_area_patient_sd)
                                           + g.normal(0, cfg.sac_area_level_sd, nl))
    asp = np.full(nl, 1.4)
    asp[lum] = np.asarray(cfg.sac_aspect)
    asp = asp * np.exp(g.normal(0, 0.06, nl))
    conc = cfg.disc_posterior_concavity_mm * np.exp(g.normal(0, cfg.disc_concavity_sd, nl))
    disc_area = np.array([_kidney_area(d_w[k] / 2, d_ap[k] / 2, conc[k]) for k in range(nl)])
    lam = cfg.central_ratio_weight
    cut_area = (np.asarray(cfg.central_area_abs_mm2)[None, :] ** (1 - lam)
                * (np.asarray(cfg.central_ratio_at_cuts)[None, :] * disc_area[:, None]) ** lam)
    a0 = np.maximum(a0, cfg.normal_margin * cut_area[:, 0])
    target = np.array([np.interp(np.clip(cent[k], 0, 1), [0.0, *cfg.central_cuts, 1.0],
                                 [a0[k], *cut_area[k]]) for k in range(nl)])
    sac_a0 = np.sqrt(a0 * asp / np.pi)
    sac_b0 = a0 / (np.pi * sac_a0)
    sac_v = -d_ap / 2 + conc - cfg.anterior_epidural_mm - sac_b0
    # shape of the narrowing: share of disc vs posterolateral (LF / facet) compression
    dshare = np.clip(0.45 + 0.08 * (pf - 3) + g.normal(0, 0.12, nl), 0.2, 0.8)
    a_ant = 0.55 * cent * dshare
    a_plL = 0.45 * cent * (1 - dshare) * (0.7 + 0.6 * facL)
    a_plR = 0.45 * cent * (1 - dshare) * (0.7 + 0.6 * facR)
    kscale = np.array([np.sqrt(target[k] / _unit_area(sac_a0[k], sac_b0[k], a_ant[k], a_plL[k],
                                                      a_plR[k])) for k in range(nl)])
    k0 = np.array([np.sqrt(a0[k] / _unit_area(sac_a0[k], sac_b0[k], 0, 0, 0)) for k in range(nl)])
    # rootlets: seeds in the unit disc, per level (same index = same rootlet along s)
    nr = cfg.n_rootlets
    seeds_r = np.sqrt(g.uniform(0.05, 1.0, nr))
    seeds_t = g.uniform(-np.pi, np.pi, nr)
    roots = np.zeros((nl, nr, 3))  # normalised x (transverse), y (AP), radius
    roots_norm = np.zeros((nl, nr, 3))  # the same rootlets without stenosis
    c1, c2, c3 = cfg.central_cuts
    for k in range(nl):
        jr = seeds_r * np.exp(g.normal(0, 0.05, nr))
        jt = seeds_t + g.normal(0, 0.12, nr)
        frac = jt / (2 * np.pi)  # -0.5..0.5
        # anchor arrangements (normalised coordinates of the sac ellipse)
        ang0 = -np.pi / 2 + frac * np.radians(150)
        rad0 = 0.55 + 0.38 * np.clip(jr, 0, 1)
        p0 = np.stack([rad0 * np.cos(ang0), rad0 * np.sin(ang0)], -1)  # A1-A2 dorsal layer
        ang1 = -np.pi / 2 + frac * np.radians(230)
        rad1 = 0.25 + 0.68 * np.clip(jr, 0, 1)
        p1 = np.stack([rad1 * np.cos(ang1), rad1 * np.sin(ang1) - 0.08], -1)  # A3 dorsal > half
        rad2 = 0.62 * np.clip(jr, 0, 1)
        p2 = np.stack([rad2 * np.cos(jt), rad2 * np.sin(jt) - 0.05], -1)  # A4 central clump
        rad3 = 0.85 * np.clip(jr, 0, 1)
        p3 = np.stack([rad3 * np.cos(jt), rad3 * np.sin(jt)], -1)  # B fills the sac
        c = cent[k]
        anchors = [(0.0, p0), (c1 * 0.999, p1), (0.5 * (c1 + c2), p2), (c2, p3), (1.0, p3)]
        xs = [a for a, _ in anchors]
        px = np.array([np.interp(c, xs, [p[i, 0] for _, p in anchors]) for i in range(nr)])
        py = np.array([np.interp(c, xs, [p[i, 1] for _, p in anchors]) for i in range(nr)])
        r0 = cfg.rootlet_radius_mm * np.exp(g.normal(0, 0.1, nr))
        fill = np.interp(c, [0, c2 * 0.999, c2, c3], [0.0, 0.0, 0.3, 0.7])
        rfill = np.sqrt(fill * target[k] / (nr * np.pi))
        # caudal levels: fewer rootlets (roots have exited)
        keep = np.arange(nr) < round(nr * (1.0 - 0.07 * max(0, k - _LUMBAR0)))
        roots[k, :, 0] = px
        roots[k, :, 1] = py
        roots[k, :, 2] = np.where(keep, np.maximum(r0, rfill), 0.0)
        roots_norm[k, :, 0] = p0[:, 0]
        roots_norm[k, :, 1] = p0[:, 1]
        roots_norm[k, :, 2] = np.where(keep, r0, 0.0)
    # posterior epidural fat: lost at Schizas D
    fatloss = np.clip((cent - 0.6) / 0.3, 0, 1) ** 1.5
    pfat = cfg.posterior_fat_mm * np.exp(g.normal(0, 0.2, nl))
    pfat[-1] *= 1.5  # more epidural fat at L5/S1 (1f)
    lft = np.full(nl, 2.8)
    lft[lum] = np.asarray(cfg.lf_thickness_mm)
    lft = lft * np.exp(g.normal(0, 0.08, nl))

    # --- facets ---
    fang = np.full(nl, np.radians(22.0))
    fang[lum] = np.radians(np.asarray(cfg.facet_angle_deg))
    fang = fang + np.radians(g.normal(0, cfg.facet_angle_sd, nl))
    trop = np.radians(g.normal(0, cfg.facet_tropism_sd, nl))
    fangL, fangR = fang + trop / 2, fang - trop / 2

    def facet_side(sev):
        gap = cfg.facet_gap_mm * np.exp(g.normal(0, 0.1, nl)) * (1 - 0.7 * np.clip(sev, 0, 1))
        hyp = cfg.facet_hypertrophy_mm * np.clip(sev, 0, 1) ** 1.5
        ost = cfg.facet_osteophyte_mm * np.clip((sev - 0.3) / 0.7, 0, 1) * g.uniform(0.6, 1.3, nl)
        eff = cfg.facet_effusion_mm * np.clip((sev - 0.35) / 0.65, 0, 1) * g.uniform(0.3, 1.4, nl)
        return gap, hyp, ost, eff

    fL = facet_side(facL)
    fR = facet_side(facR)
    fu = sac_a0 + cfg.lateral_fat_mm + 4.5 + g.normal(0, 0.8, nl)
    fv = sac_v - 0.8 * sac_b0 - 3.5 + g.normal(0, 0.8, nl)

    # --- foramina ---
    def foramen_side(sev):
        first_ap = g.uniform(size=nl) < 0.5
        l1 = np.clip((sev - 0.1) / 0.35, 0, 1)
        l2 = np.clip((sev - 0.3) / 0.2, 0, 1)
        loss_ap = np.where(first_ap, l1, l2)
        loss_si = np.where(first_ap, l2, l1)
        deform = np.clip((sev - 0.75) / 0.25, 0, 1)
        return loss_ap, loss_si, deform

    foL = foramen_side(forL)
    foR = foramen_side(forR)
    fh = cfg.foramen_height_mm * np.exp(g.normal(0, 0.08, nl))

    # --- soft tissue ---
    body_w = max(220.0, g.normal(cfg.body_width_mm, cfg.body_width_sd)) * (1.04 if male else 1.0)
    body_ap = max(170.0, g.normal(cfg.body_ap_mm, cfg.body_ap_sd))
    subcut = float(np.clip(g.normal(cfg.subcut_fat_mm, cfg.subcut_fat_sd), 6, 45))
    back = cfg.back_depth_mm + 0.6 * (subcut - cfg.subcut_fat_mm) + g.normal(0, 5)
    psoas = np.full(nl, 4.0)
    psoas[lum] = np.asarray(cfg.psoas_radius_mm) * (1.1 if male else 0.9)
    psoas = psoas * np.exp(g.normal(0, 0.1))
    muscle_fat = cfg.age_muscle_fat * np.clip((age - 30) / 50, 0, 1) * (1.3 if not male else 1.0)

    p = {
        "s_c": s_c, "hmid": hmid, "hant": hant, "hpost": hpost, "d_ap": d_ap, "d_w": d_w, "pf": pf, "bh": bh,
        "theta": theta, "conc": conc, "sac_a0": sac_a0, "sac_b0": sac_b0, "sac_v": sac_v, "a_ant": a_ant,
        "a_plL": a_plL, "a_plR": a_plR, "kscale": kscale, "k0": k0, "cent": cent, "target": target, "a0": a0,
        "roots": roots, "roots_norm": roots_norm, "fatloss": fatloss, "pfat": pfat, "lft": lft, "fangL": fangL, "fangR": fangR,
        "fgapL": fL[0], "fhypL": fL[1], "fostL": fL[2], "feffL": fL[3],
        "fgapR": fR[0], "fhypR": fR[1], "fostR": fR[2], "feffR": fR[3], "fu": fu, "fv": fv,
        "faplL": foL[0], "fsiL": foL[1], "fdefL": foL[2], "faplR": foR[0], "fsiR": foR[1], "fdefR": foR[2],
        "forL": forL, "forR": forR, "facL": facL, "facR": facR, "fh": fh, "psoas": psoas,
        "npf": np.array([cfg.nucleus_ap_frac[max(0, k - _LUMBAR0)] for k in range(nl)]),
        "body_w": body_w, "body_ap": body_ap, "subcut": subcut, "back": back, "muscle_fat": muscle_fat,
        "s_bot": s_bot, "s_top": s_top, "conus": s_c[ALL_LEVELS.index("L1/L2")] - cfg.conus_offset_mm
        + g.normal(0, cfg.conus_sd_mm), "bounds": np.concatenate([[np.inf], (s_c[:-1] + s_c[1:]) / 2, [-np.inf]]),
        "texture_seed": int(g.integers(2 ** 31)),
    }
    p["transition"] = transition
    p["s1s2_h"] = float(h_s1s2) if transition == "lumbarised S1" else 0.0
    # smooth random fields (5 mm grid): bowel loops, fatty streaks in muscle
    nstep = 5.0
    nx0, ny0, nz0 = -170.0, y.min() - 150.0, z.min() - 10.0
    shp = (int(340 / nstep) + 1, int((y.max() - y.min() + 420) / nstep) + 1,
           int((z.max() - z.min() + 20) / nstep) + 1)
    p["noise"] = {"origin": (nx0, ny0, nz0), "step": nstep, "shape": shp, "seed": int(g.integers(2 ** 31))}
    p["lerp_names"] = ("d_ap", "d_w", "conc", "sac_a0", "sac_b0", "sac_v", "k0", "pfat", "lft",
                       "fu", "fv", "psoas")
    p["lerp_tab"] = np.stack([np.asarray(p[nm], np.float64) for nm in p["lerp_names"]], 1)
    p["lerp_rows"] = [np.asarray(p[nm], np.float32) for nm in p["lerp_names"]]
    for key, val in list(p.items()):
        if isinstance(val, np.ndarray) and val.dtype == np.float64:
            p[key] = val.astype(np.float32)
        elif isinstance(val, (np.floating,)):
            p[key] = float(val)
    # lookup table (y, z) -> (s, v)
    step = cfg.lookup_step_mm
    y0, y1 = y.min() - 140.0, y.max() + 140.0
    z0, z1 = z.min() - 5.0, z.max() + 5.0
    gy = np.arange(y0, y1 + step, step)
    gz = np.arange(z0, z1 + step, step)
    YY, ZZ = np.meshgrid(gy, gz, indexing="ij")
    q = np.stack([YY.ravel(), ZZ.ravel()], -1)
    # nearest coarse curve sample (brute force in chunks), then two Newton steps on the fine curve
    cs = slice(0, len(ss), 8)
    cyz = np.stack([y[cs], z[cs]], -1)
    sc_ = ss[cs]
    q32, c32 = q.astype(np.float32), cyz.astype(np.float32)
    s_l = np.empty(len(q))
    for a in range(0, len(q), 16384):  # no BLAS (it may spin threads)
        qa = q32[a:a + 16384]
        d2 = (qa[:, None, 0] - c32[None, :, 0]) ** 2 + (qa[:, None, 1] - c32[None, :, 1]) ** 2
        s_l[a:a + 16384] = sc_[np.argmin(d2, axis=1)]
    for _ in range(3):
        j = np.clip(np.round((s_l - s_bot) / ds).astype(int), 0, len(ss) - 1)
        dy = q[:, 0] - y[j]
        dz = q[:, 1] - z[j]
        s_l = np.clip(ss[j] + dy * ty[j] + dz * tz[j], ss[0], ss[-1])
    j = np.clip(np.round((s_l - s_bot) / ds).astype(int), 0, len(ss) - 1)
    dy = q[:, 0] - y[j]
    dz = q[:, 1] - z[j]
    s_l = ss[j] + dy * ty[j] + dz * tz[j]
    v_l = dy * (-np.cos(phi[j])) + dz * (-np.sin(phi[j]))
    lut = {"y0": y0, "z0": z0, "step": step, "S": s_l.reshape(YY.shape).astype(np.float32),
               "V": v_l.reshape(YY.shape).astype(np.float32)}

    levels = {}
    for k, name in enumerate(ALL_LEVELS):
        if k < _LUMBAR0:
            continue
        c, n, a = frame(s_c[k])
        levels[name] = LevelAnatomy(
            name=name, centre_lps=c, normal_lps=n, ap_lps=a, s_mm=float(s_c[k]),
            disc_height_mm=float(hmid[k]), disc_ap_mm=float(d_ap[k]), disc_width_mm=float(d_w[k]),
            sac_area_normal_mm2=float(a0[k]), sac_area_mm2=float(target[k]),
            pathology=path[k],
            extra={"facet_angle_left_deg": float(np.degrees(fangL[k])),
                       "facet_angle_right_deg": float(np.degrees(fangR[k])),
                       "segment_angle_deg": float(np.degrees(theta[k]))},
        )
    return PatientAnatomy(config=cfg, age=float(age), sex="M" if male else "F", levels=levels,
                          curve_s=ss, curve_yz=np.stack([y, z], -1), curve_phi=phi, p=p, lut=lut)


def dural_sac_area_mm2(anat: PatientAnatomy, level: str) -> float:
    """Analytic dural sac area (mm2) in the plane through the disc centre normal to the axis."""
    return anat.levels[level].sac_area_mm2


# ----------------------------------------------------------------------------------------------
# evaluation


def curve_coords(anat: PatientAnatomy, pts: np.ndarray):
    """(..., 3) LPS mm -> (s, v, u) arrays (float32): arc length, anterior offset, left offset.

    Bilinear interpolation in the patient's (y, z) lookup table (clamped at its border)."""
    lut = anat.lut
    pts = np.asarray(pts, dtype=_F)
    S, V = lut["S"], lut["V"]
    ny, nz = S.shape
    iy = np.clip((pts[..., 1] - _F(lut["y0"])) / _F(lut["step"]), 0, ny - 1.001)
    iz = np.clip((pts[..., 2] - _F(lut["z0"])) / _F(lut["step"]), 0, nz - 1.001)
    y0 = iy.astype(np.int32)
    z0 = iz.astype(np.int32)
    fy = iy - y0
    fz = iz - z0
    i00 = y0 * nz + z0
    w00 = (1 - fy) * (1 - fz)
    w01 = (1 - fy) * fz
    w10 = fy * (1 - fz)
    w11 = fy * fz
    Sf, Vf = S.ravel(), V.ravel()
    s = Sf[i00] * w00 + Sf[i00 + 1] * w01 + Sf[i00 + nz] * w10 + Sf[i00 + nz + 1] * w11
    v = Vf[i00] * w00 + Vf[i00 + 1] * w01 + Vf[i00 + nz] * w10 + Vf[i00 + nz + 1] * w11
    return s, v, pts[..., 0]


def tissue_at(anat: PatientAnatomy, points_lps: np.ndarray) -> np.ndarray:
    """Tissue codes (uint8, :class:`Tissue`) at (..., 3) LPS mm points."""
    return classify(anat, points_lps)[0]


def structure_at(anat: PatientAnatomy, points_lps: np.ndarray) -> np.ndarray:
    """Structure labels (uint8, 0..6, :data:`STRUCTURE_LABELS`) at (..., 3) LPS mm points."""
    return classify(anat, points_lps)[1]


_F = np.float32
_ROI_U = 62.0  # spine shapes lie within |u| < _ROI_U and _ROI_V0 < v < disc front (mm)
_ROI_V0 = -82.0


def _ell(x, y, a, b):
    return (x / a) ** 2 + (y / b) ** 2


def _sample_noise(anat: PatientAnatomy, key: str, x, y, z):
    nz = anat.p["noise"]
    if key not in nz:  # built on first use (deterministic from the patient's seed)
        from scipy.ndimage import gaussian_filter
        gg = np.random.default_rng(nz["seed"] + (0 if key == "bowel" else 1))
        sig = 1.7 if key == "bowel" else (0.5, 0.5, 2.5)
        f = gaussian_filter(gg.normal(size=nz["shape"]).astype(np.float32), sig)
        nz[key] = f / (f.std() + 1e-6)
    o, st = nz["origin"], nz["step"]
    c = np.stack([(x - o[0]) / st, (y - o[1]) / st, (z - o[2]) / st]).astype(_F)
    return map_coordinates(nz[key], c, order=1, mode="nearest")


class _Ops:
    """Paint operations (global indices, tissue, label) applied in priority order."""

    def __init__(self):
        self.ops = []

    def add(self, prio, idx, mask, tissue, label=0):
        if mask is not None:
            if not np.any(mask):
                return
            sel = idx[mask]
            if np.ndim(tissue) > 0:
                tissue = tissue[mask]
        else:
            sel = idx
        if sel.size:
            self.ops.append((prio, len(self.ops), sel, tissue, label))

    def apply(self, t, l):
        for _, _, sel, tis, lab in sorted(self.ops, key=lambda o: (o[0], o[1])):
            t[sel] = tis
            l[sel] = lab


def classify(anat: PatientAnatomy, points_lps: np.ndarray, sv=None, background=None
             ) -> tuple[np.ndarray, np.ndarray]:
    """(tissue codes, structure labels) at (..., 3) LPS mm points, both uint8 of shape (...).

    sv: optional precomputed ``(s, v)`` of the points (from :func:`curve_coords`).
    background: optional pair of uint8 arrays (same shape as the points) that receive the
    body-wide tissues and labels before the spine shapes are painted (see classify_spine)."""
    pts = np.asarray(points_lps, dtype=_F)
    shape = pts.shape[:-1]
    P = pts.reshape(-1, 3)
    T = np.zeros(P.shape[0], np.uint8)
    Lb = np.zeros(P.shape[0], np.uint8)
    if sv is not None:
        sv = (np.asarray(sv[0], _F).reshape(-1), np.asarray(sv[1], _F).reshape(-1))
    bg = None
    if background is not None:
        bg = (background[0].reshape(-1), background[1].reshape(-1))
    if P.shape[0]:
        _classify_flat(anat, P, T, Lb, sv, bg)
    return T.reshape(shape), Lb.reshape(shape)


def spine_roi(anat: PatientAnatomy, s: np.ndarray, v: np.ndarray, u: np.ndarray,
              margin: float = 0.0) -> np.ndarray:
    """Points whose tissue depends on the spine shapes (everything else varies slowly)."""
    return (np.abs(u) < _ROI_U + margin) & (v > _ROI_V0 - margin) & (v < 30 + margin) & \
        (s > anat.p["s_bot"] - margin)


def _classify_flat(anat, P, T, Lb, sv=None, bg=None):
    p = anat.p
    cfg = anat.config
    x, yy, zz = P[:, 0], P[:, 1], P[:, 2]
    # ---------------- body outline (global x, y around the centreline y at z) ----------------
    cy = np.interp(zz, anat.curve_yz[:, 1], anat.curve_yz[:, 0]).astype(_F)
    dyb = yy - (cy + _F(p["back"] - p["body_ap"] / 2))
    ax_, ay_ = _F(p["body_w"] / 2), _F(p["body_ap"] / 2)
    ex = (x / ax_) ** 2
    ey = (dyb / ay_) ** 2
    inside = np.where(dyb > 0, ex * ex + ey * ey, ex + ey) <= 1.0
    idx = np.nonzero(inside)[0]
    if idx.size == 0:
        if bg is not None:
            bg[0][...] = T
            bg[1][...] = Lb
        return
    T[idx] = Tissue.SUBCUT_FAT
    ops = _Ops()
    sc = _F(p["subcut"])
    xi, dyi = x[idx], dyb[idx]
    ex = (xi / (ax_ - sc)) ** 2
    ey = np.where(dyi > 0, (dyi / (ay_ - sc)) ** 2, (dyi / (ay_ - _F(0.8) * sc)) ** 2)
    inner = np.where(dyi > 0, ex * ex + ey * ey, ex + ey) <= 1.0
    ex = (xi / (ax_ - sc - 11)) ** 2
    ey = np.where(dyi > 0, (dyi / (ay_ - sc - 11)) ** 2, (dyi / (ay_ - _F(0.8) * sc - 11)) ** 2)
    cav0 = inner & (np.where(dyi > 0, ex * ex + ey * ey, ex + ey) <= 1.0)
    del ex, ey
    # curve coordinates for points inside the body
    if sv is None:
        s, v, _ = curve_coords(anat, P[idx])
    else:
        s, v = sv[0][idx], sv[1][idx]
    u = xi
    au = np.abs(u)
    # abdominal wall (anterior / lateral ring) and the abdominal cavity, anterior to the spine
    front = v > -20.0 - 0.6 * np.maximum(au - 70.0, 0.0)
    # the wall muscles (obliques, transversus, latissimus laterally) wrap the cavity anteriorly
    # and laterally only; behind, the back muscles meet the subcutaneous fat directly
    wall = ~cav0 & (au > 40.0) & ((v > -30.0) | (au > 100.0 + 0.9 * np.maximum(-v - 30.0, 0.0)))
    ops.add(0, idx, inner & (front | wall), Tissue.MUSCLE)
    cav = cav0 & front
    # viscera: bowel loops (fluid / gas / wall) from a smooth random field
    j = np.nonzero(cav)[0]
    fcav = np.zeros(idx.size, _F)
    if j.size:
        ops.add(1, idx[j], None, Tissue.VISCERA)
        fcav[j] = _sample_noise(anat, "bowel", xi[j], yy[idx[j]], zz[idx[j]])
        f = fcav[j]
        ant = v[j] > 35
        # bowel loops in mesenteric fat: fat fills the thin channels between loops (a level
        # band of the smooth field); fluid-filled and gas-filled loops among grey ones
        ops.add(2, idx[j], np.abs(f - 0.1) < 0.08, Tissue.SUBCUT_FAT)
        ops.add(2, idx[j], (f > 0.75 + 0.6 * (~ant)) & (f < 1.9), Tissue.BOWEL_FLUID)
        ops.add(2, idx[j], ant & (f < -1.2), Tissue.AIR)
    # level domain and interpolation weights along s
    k, w, kn, tt = _domain(p, s)

    names = p["lerp_names"]
    tab = p["lerp_tab"]

    def lerp(name, j=None):
        a = tab[:, names.index(name)]
        if j is None:
            return a[k] * (1 - tt) + a[kn] * tt
        return a[k[j]] * (1 - tt[j]) + a[kn[j]] * tt[j]

    def sub(mask):
        return np.nonzero(mask)[0]

    dap = lerp("d_ap")
    # anterior structures: retroperitoneal fat, kidneys, psoas, vessels (v > -30)
    ja = sub(cav & (au < 150))
    if ja.size:
        ua, va, sa, aua = u[ja], v[ja], s[ja], au[ja]
        dapa = dap[ja]
        pw = lerp("d_w", ja) / 2
        psr = lerp("psoas", ja)
        # irregular boundary: the bowel field perturbs the fat pad's outline
        retro = _ell(ua, va - 6, pw + 1.9 * psr + 4, dapa / 2 + 17) <= 1.0 + 0.25 * fcav[ja]
        ops.add(3, idx[ja], retro, Tissue.SUBCUT_FAT)
        s23 = float(p["s_c"][ALL_LEVELS.index("L2/L3")])
        kid = retro & (np.abs(sa - (s23 + 25)) < 55) & (aua > 35)
        if kid.any():
            kid &= _ell(aua - (pw + 2 * psr + 30), va, 26.0, 20.0) + ((sa - (s23 + 25)) / 55) ** 2 <= 1.0
            ops.add(4, idx[ja], kid, Tissue.VISCERA)
        ps_c_u = pw + psr * 0.85 + 3.0
        # oval, long axis tilted anteromedially, slightly irregular outline
        pu_, pv_ = aua - ps_c_u, va - (0.1 * dapa + 0.1 * psr)
        pr_u, pr_v = 0.93 * pu_ + 0.37 * pv_, -0.37 * pu_ + 0.93 * pv_
        psoas = (sa > -25) & (_ell(pr_u, pr_v, psr * 0.8, psr * 1.02) <= 1.0 + 0.1 * fcav[ja])
        ops.add(5, idx[ja], psoas, Tissue.MUSCLE)
        # vessels anterior to the spine: aorta (left), IVC (right), iliac vessels below
        jv = np.nonzero((va > dapa / 2) & (va < dapa / 2 + 30) & (aua < 80))[0]
        if jv.size:
            vv = va[jv] - (dapa[jv] / 2 + 12.0)
            uv, sv2 = ua[jv], sa[jv]
            s45 = float(p["s_c"][ALL_LEVELS.index("L4/L5")])
            s51 = float(p["s_c"][-1])
            ar = _F(cfg.aorta_radius_mm)
            spread = np.clip((s45 + 10 - sv2) * 0.35, 0, 45)
            aor = (_ell(uv - (9.0 + spread), vv, ar, ar) <= 1.0) | \
                ((_ell(uv - (9.0 - spread), vv, ar * 0.8, ar * 0.8) <= 1.0) & (sv2 < s45 + 10))
            aor &= sv2 > s51 - 40
            spread2 = np.clip((s51 + 15 - sv2) * 0.35, 0, 45)
            ivc = (_ell(uv + 14.0 + spread2, vv + 2, _F(cfg.ivc_radius_mm[0]),
                        _F(cfg.ivc_radius_mm[1])) <= 1.0) | \
                ((_ell(uv + 14.0 - 2 * spread2, vv + 2, 7.0, 7.0) <= 1.0) & (sv2 < s51 + 15))
            ivc &= sv2 > s51 - 45
            ops.add(8, idx[ja[jv]], aor | ivc, Tissue.VESSEL)
    # posterior structures: quadratus lumborum, back muscles
    jp = sub(inner & (v < 5.0))
    if jp.size:
        vp, sp_, aup, kp = v[jp], s[jp], au[jp], k[jp]
        sac_v = lerp("sac_v", jp)
        pw = lerp("d_w", jp) / 2
        psr = lerp("psoas", jp)
        ql = (sp_ > p["s_c"][-2]) & (_ell(aup - (pw + 2 * psr + 12), vp - (sac_v - 4), 15.0, 7.0) <= 1.0)
        ops.add(5, idx[jp], ql, Tissue.MUSCLE)
        # multifidus (medial) and erector spinae (lateral) fill the space between the posterior
        # elements and the subcutaneous fat (bones painted later win)
        fv_ = lerp("fv", jp)
        mv1 = _F(-p["back"]) + sc
        mfw = _F(cfg.multifidus_width_mm)
        esw = _F(cfg.erector_width_mm) * np.where(kp == _NL - 1, 0.6, 1.0).astype(_F)
        lat = 14.0 + mfw + esw * 1.75
        fu_ = lerp("fu", jp)
        # rounded lateral shoulder: the erector spinae's front slopes back laterally (fat and
        # quadratus lumborum in front of it)
        front_m = fv_ + 4.0 + np.clip((aup - fu_ - 10.0) * 0.4, 0.0, 6.0) \
            - 0.012 * np.maximum(aup - 45.0, 0.0) ** 2
        mc = 0.5 * (front_m + mv1)
        mh = np.maximum(6.0, 0.5 * (front_m - mv1))
        back_m = (vp < front_m) & (aup > 1.2) & (vp > mv1) & (_ell(aup, vp - mc, lat, mh * 1.25) <= 1.0)
        ops.add(6, idx[jp], back_m, Tissue.MUSCLE)
        # curved fascial fat planes: multifidus | longissimus | iliocostalis
        tdep = np.clip((mc - vp) / mh, -1.0, 1.0)  # -1 front .. +1 back
        split1 = 10.0 + mfw * (0.85 + 0.25 * tdep - 0.3 * tdep * tdep)
        split2 = split1 + esw * (0.75 + 0.1 * tdep - 0.25 * tdep * tdep)
        # the planes wander a little (smooth field) instead of following perfect arcs
        jm = np.nonzero(back_m)[0]
        if jm.size:
            wig = 2.2 * _sample_noise(anat, "bowel", xi[jp[jm]], yy[idx[jp[jm]]] + 40.0,
                                      zz[idx[jp[jm]]])
            am = aup[jm] + wig
            # (the longissimus | iliocostalis plane is subtle on T2: only where it wanders apart)
            ops.add(7, idx[jp[jm]], (np.abs(am - split2[jm]) < 0.3) & (wig > 1.0),
                    Tissue.MUSCLE_FATTY)
            ops.add(7, idx[jp[jm]], (np.abs(am - split1[jm]) < 0.3) & (wig > -1.2),
                    Tissue.SUBCUT_FAT)
    ops.apply(T, Lb)
    if bg is not None:
        bg[0][...] = T
        bg[1][...] = Lb
    # ---------------- spine ----------------
    _spine_region(anat, idx, u, v, w, s, k, kn, tt, dap, T, Lb)


def _spine_region(anat, idx, u, v, w, s, k, kn, tt, dap, T, Lb):
    ops = _Ops()
    roi = (np.abs(u) < _ROI_U) & (v > _ROI_V0) & (v < dap / 2 + 6)
    jr = np.nonzero(roi)[0]
    if jr.size:
        LT = _lerp_all(anat.p, k[jr], kn[jr], tt[jr])
        _spine(anat, ops, idx[jr], u[jr], v[jr], w[jr], s[jr], k[jr], kn[jr], tt[jr], LT)
    ops.apply(T, Lb)


def _domain(p, s):
    """Level domain k of arc lengths s, offset w from its disc, neighbour disc kn and the
    interpolation weight tt in [0, 0.5] towards it."""
    k = np.clip(np.searchsorted(-p["bounds"], -s) - 1, 0, _NL - 1)
    w = s - p["s_c"][k]
    kn = np.clip(np.where(w > 0, k - 1, k + 1), 0, _NL - 1)
    span = np.abs(p["s_c"][kn] - p["s_c"][k])
    tt = np.minimum(np.where(span > 0, np.abs(w) / np.maximum(span, 1e-3), 0), 0.5).astype(_F)
    return k, w, kn, tt


def classify_spine(anat: PatientAnatomy, points_lps: np.ndarray, bg_tissue: np.ndarray,
                   bg_label: np.ndarray, sv=None) -> tuple[np.ndarray, np.ndarray]:
    """Like :func:`classify`, but the body-wide tissues (outline, fat, muscles, viscera) are taken
    from ``bg_tissue``/``bg_label`` (e.g. the slice's centre plane) and only the spine shapes
    are evaluated at the points (used for the partial-volume sub-planes)."""
    P = np.asarray(points_lps, dtype=_F).reshape(-1, 3)
    T = np.array(bg_tissue, dtype=np.uint8).reshape(-1)
    Lb = np.array(bg_label, dtype=np.uint8).reshape(-1)
    if P.shape[0] == 0:
        return T, Lb
    if sv is None:
        s, v, _ = curve_coords(anat, P)
    else:
        s, v = np.asarray(sv[0], _F).reshape(-1), np.asarray(sv[1], _F).reshape(-1)
    k, w, kn, tt = _domain(anat.p, s)
    tab = anat.p["lerp_tab"][:, anat.p["lerp_names"].index("d_ap")]
    dap = tab[k] * (1 - tt) + tab[kn] * tt
    inside = T != Tissue.AIR
    j = np.nonzero(inside)[0]
    _spine_region(anat, j, P[j, 0], v[j], w[j], s[j], k[j], kn[j], tt[j], dap[j], T, Lb)
    return T, Lb


def _lerp_all(p, k, kn, tt):
    """Per-level parameters (list in ``p["lerp_names"]`` order, each (n,)) interpolated linearly
    along s between the point's disc and the neighbouring disc (continuous at the domain
    boundaries)."""
    t1 = 1 - tt
    return [r[k] * t1 + r[kn] * tt for r in p["lerp_rows"]]


def _spine(anat, ops, gidx, u, v, w, s, k, kn, tt, LT):
    p = anat.p
    cfg = anat.config
    au = np.abs(u)
    names = p["lerp_names"]

    def lerp(name):
        return LT[names.index(name)]

    dap = lerp("d_ap")
    dw = lerp("d_w")
    conc = lerp("conc")
    a0 = lerp("sac_a0")
    b0 = lerp("sac_b0")
    sv = lerp("sac_v")
    k0 = lerp("k0")
    pf_ = lerp("pfat")
    lft = lerp("lft")
    fu = lerp("fu")
    fv = lerp("fv")
    bd, ad = dap / 2, dw / 2
    h = p["hmid"][k]
    d_up = np.where(k == 0, 60.0, p["s_c"][np.maximum(k - 1, 0)] - p["s_c"][k]).astype(_F)
    d_dn = np.where(k == _NL - 1, 60.0, p["s_c"][k] - p["s_c"][np.minimum(k + 1, _NL - 1)]).astype(_F)
    # disc local half height (wedge + endplate concavity)
    rho2 = np.minimum(_ell(u, v, ad, bd), 1.0)
    hloc = h + (p["hant"][k] - p["hpost"][k]) * np.clip(v / dap, -0.5, 0.5) \
        + _F(cfg.endplate_concavity_mm) * (1 - rho2)
    half = hloc / 2
    s_end = -cfg.sac_end_below_s1_mm

    # ================= canal: sac, epidural fat, LF, bulge, laminae =================
    cm = (au < a0 + 14) & (v < sv + b0 + 8) & (v > sv - b0 - 22) & (s > s_end - 60)
    jc = np.nonzero(cm)[0]
    if jc.size:
        _canal(anat, ops, gidx[jc], u[jc], v[jc], w[jc], s[jc], k[jc], kn[jc], tt[jc],
               a0[jc], b0[jc], sv[jc], k0[jc], pf_[jc], lft[jc], half[jc], fu[jc], d_dn[jc],
               bd[jc], ad[jc], conc[jc], h[jc])

    # ================= vertebral bodies =================
    bm = (au < ad + 2) & (np.abs(v) < bd + 3) & (np.abs(w) > half - 0.01) & (s > -125)
    jb = np.nonzero(bm)[0]
    if jb.size:
        ub, vb, wb, hb = u[jb], v[jb], w[jb], half[jb]
        sacral = (k[jb] == _NL - 1) & (wb < -hb)
        h12 = _F(p["s1s2_h"])  # lumbarised S1 (0: none): the sacrum's taper starts below S1/S2
        s12 = _F(cfg.s1s2_disc_depth_mm)
        depth = np.where(sacral, np.maximum(-(wb + hb) - (s12 if h12 > 0 else 0.0), 0.0), 0.0)
        ta = np.where(sacral, np.clip(1.0 - depth / 150.0, 0.35, 1.0), 1.0).astype(_F)
        tb = np.where(sacral, np.clip(1.0 - (depth - 25) / 90.0, 0.3, 1.0), 1.0).astype(_F)
        ab = (ad[jb] - _F(cfg.body_width_inset_mm / 2)) * ta
        bb = (bd[jb] - _F(cfg.body_ap_inset_mm / 2)) * tb
        cc = conc[jb] + 0.5
        outer = _kidney(ub, vb, ab, bb, cc) <= 1.0
        ops.add(30, gidx[jb], outer, Tissue.CORTEX)
        cx = _F(cfg.cortex_mm)
        inner = outer & (_kidney(ub, vb, ab - cx, bb - cx, cc) <= 1.0) & \
            (np.abs(wb) > hb + _F(cfg.endplate_mm))
        # sacral segment remnants (dark lines between S1..S5)
        srem = inner & (s[jb] < -30) & (np.abs(((s[jb] + 30) % 22.0) - 11.0) > 10.2)
        if h12 > 0:  # the S1/S2 disc between its own endplates (not a graded level: no label)
            d12 = np.abs(s[jb] + s12)
            srem |= inner & (d12 < h12 / 2 + _F(cfg.endplate_mm))
            disc12 = inner & (d12 < h12 / 2)
            ops.add(32, gidx[jb], disc12, Tissue.ANNULUS)
            nuc12 = disc12 & (_ell(ub, vb, ab * 0.55, bb * 0.45) + (d12 / (0.4 * h12)) ** 2 <= 1.0)
            ops.add(33, gidx[jb], nuc12, Tissue.NUCLEUS_P2)
        ops.add(31, gidx[jb], inner & ~srem, Tissue.MARROW)

    # ================= posterior elements =================
    pm = (v < -bd + 4) & (s > -45)
    jp = np.nonzero(pm)[0]
    if jp.size:
        _posterior(anat, ops, gidx[jp], u[jp], v[jp], w[jp], s[jp], k[jp], a0[jp], b0[jp],
                   sv[jp], k0[jp], pf_[jp], lft[jp], fu[jp], fv[jp], bd[jp], ad[jp], h[jp],
                   d_up[jp], d_dn[jp], half[jp], conc[jp])

    # ================= disc =================
    dm = (np.abs(w) <= half) & (au < ad + 4) & (np.abs(v) < bd + 5) & (s > -8)
    jd = np.nonzero(dm)[0]
    if jd.size:
        ud, vd, wd, kd = u[jd], v[jd], w[jd], k[jd]
        fsev = np.where(ud > 0, p["forL"][kd], p["forR"][kd])
        grow = fsev * np.clip((np.abs(ud) - a0[jd]) / 10, 0, 1)
        disc = _kidney(ud, vd, ad[jd] + 1.5 * fsev, bd[jd] + 2.5 * grow, conc[jd]) <= 1.0
        ops.add(60, gidx[jd], disc, Tissue.ANNULUS, Structure.DISC)
        pfk = p["pf"][kd]
        an = ad[jd] * _F(cfg.nucleus_width_frac)
        bn = bd[jd] * p["npf"][kd]
        vn = -0.05 * bd[jd]
        hn = h[jd] * _F(cfg.nucleus_height_frac) * np.where(pfk >= 4, 0.75, 1.0).astype(_F) + 1.0
        q = (wd / (hn / 2)) ** 2
        en = _ell(ud, vd - vn, an, bn)
        inner_af = disc & (_ell(ud, vd - vn, an * 1.38, bn * 1.3) + q * q * 0.6 <= 1.0) & (pfk <= 3)
        ops.add(61, gidx[jd], inner_af, Tissue.ANNULUS_INNER, Structure.DISC)
        nuc = disc & (en + q * q <= 1.0)
        nt = np.choose(np.clip(pfk, 1, 5) - 1, [int(Tissue.NUCLEUS), int(Tissue.NUCLEUS_P2),
                                                 int(Tissue.NUCLEUS_P3), int(Tissue.NUCLEUS_P4),
                                                 int(Tissue.NUCLEUS_P5)]).astype(np.uint8)
        ops.add(61, gidx[jd], nuc, nt, Structure.DISC)


def _kidney(u, v, a, b, cc):
    """Kidney-shaped cross-section: round anteriorly, flat and concave posteriorly; <= 1 inside."""
    e2 = (u / a) ** 2
    vv = np.where(v < 0, v - cc * (1 - np.minimum(e2, 1.0)), v)
    q = (vv / b) ** 2
    return np.where(vv < 0, e2 * e2 + q * q, e2 + q)


def _canal(anat, ops, gidx, u, v, w, s, k, kn, tt, a0, b0, sv, k0, pf_, lft, half, fu, d_dn,
           bd, ad, conc, h):
    p = anat.p
    cfg = anat.config
    au = np.abs(u)
    du, dv = u, v - sv
    r = np.sqrt(du * du + dv * dv) + _F(1e-6)
    cu, cv = du / r, dv / r
    omega = np.exp(-(w / _F(cfg.stenosis_halfwidth_mm)) ** 4).astype(_F)
    R0 = k0 * _sac_radius_unit(cu, cv, a0, b0, 0.0, 0.0, 0.0)
    ksc = k0 + (p["kscale"][k] - p["k0"][k]) * omega
    R = ksc * _sac_radius_unit(cu, cv, a0, b0, p["a_ant"][k] * omega, p["a_plL"][k] * omega,
                               p["a_plR"][k] * omega)
    s_end = -cfg.sac_end_below_s1_mm
    taper = np.clip((s - s_end) / 25.0, 0.0, 1.0).astype(_F)
    R = R * np.where(s < 0, np.sqrt(taper), 1.0).astype(_F)
    fpost = pf_ * _vm(cu, cv, *_POST, 3.0)
    flat = _F(cfg.lateral_fat_mm) * (_vm(cu, cv, 1.0, 0.0, 3.0) + _vm(cu, cv, -1.0, 0.0, 3.0))
    f0 = 0.6 + fpost + flat
    # trefoil canal at L4/L5 and L5/S1 (half at L3/L4): fat-filled lateral recesses reach
    # anterolaterally behind the disc (the disc, painted later, trims them), each holding the
    # traversing root
    tref = np.clip((k - (_NL - 4)) / 2.0, 0.0, 1.0).astype(_F)
    lob_l = _vm(cu, cv, 0.92, 0.38, 7.0)
    lob_r = _vm(cu, cv, -0.92, 0.38, 7.0)
    canal = r < R0 + f0 + _F(cfg.lateral_recess_mm) * tref * (lob_l + lob_r)
    ops.add(10, gidx, canal, Tissue.EPIDURAL_FAT)
    re_ = k0 / np.sqrt((0.92 / a0) ** 2 + (0.38 / b0) ** 2) + _F(1.7)
    rr_ = _F(cfg.traversing_root_mm)
    troot = (tref > 0.4) & (s > -2) & \
        (((u - 0.92 * re_) ** 2 + (dv - 0.38 * re_) ** 2 < rr_ * rr_) |
         ((u + 0.92 * re_) ** 2 + (dv - 0.38 * re_) ** 2 < rr_ * rr_))
    ops.add(11, gidx, troot, Tissue.NERVE_ROOT)
    # disc bulge hugging the sac (central stenosis), broad-based with severity
    cent = p["cent"][k]
    gap_a = _F(cfg.anterior_epidural_mm) * (1 - 0.6 * cent)
    # the disc reaches back to the sac (plus a thin gap) in the midline and tapers laterally
    # (Gaussian in u) to its normal posterior margin
    ub = a0 * (0.35 + 1.0 * cent)
    e2 = np.minimum((u / ad) ** 2, 1.0)
    margin = -bd * (1.0 - e2 * e2) ** 0.25 + conc * (1.0 - e2)
    reach = (margin - (sv - 0.25 * b0)) * np.exp(-(u / ub) ** 2) * np.minimum(cent / 0.15, 1.0)
    bulge = (cv > 0.2) & (r > R + gap_a) & (v > margin - reach) & (v < 0) & \
        (np.abs(w) <= p["hpost"][k] / 2 + 0.5 * cent) & (cent > 0.0) & (s > -5)
    ops.add(63, gidx, bulge, Tissue.ANNULUS, Structure.DISC)
    # ligamentum flavum: from the (stenosis-shrunk) sac + remaining fat out to the normal wall
    fl_c = 0.6 * (1 - cent) + (fpost + flat * 0.3) * (1 - p["fatloss"][k])
    r_out = R0 + f0 + lft
    lf = (cv < -0.05) & (r > R + fl_c) & (r < r_out + 0.9 * cent) & (w > -d_dn + 22) & (w < 9.0) \
        & (au < fu + 2) & (s > -20)
    ops.add(70, gidx, lf, Tissue.LIGAMENTUM_FLAVUM)
    # dura: thin dark membrane just outside the sac
    ops.add(89, gidx, (r >= R) & (r < R + _F(cfg.dura_mm)) & (s > s_end), Tissue.INTERSPINOUS)
    # dural sac
    sac = (r < R) & (s > s_end)
    j = np.nonzero(sac)[0]
    if j.size == 0:
        return
    tis = np.full(j.size, Tissue.CSF, np.uint8)
    kj, knj, tj, om = k[j], kn[j], tt[j], omega[j]
    rn = p["roots_norm"]
    base = rn[kj] * (1 - tj)[:, None, None] + rn[knj] * tj[:, None, None]
    ro = base + om[:, None, None] * (p["roots"][kj] - rn[kj])
    a_eff = (a0[j] * ksc[j])[:, None]
    b_eff = (b0[j] * ksc[j])[:, None]
    rx = ro[:, :, 0] * a_eff
    ry = ro[:, :, 1] * b_eff + sv[j][:, None]
    rad = ro[:, :, 2]
    d2 = (u[j][:, None] - rx) ** 2 + (v[j][:, None] - ry) ** 2
    tis[np.any(d2 < rad * rad, axis=1)] = Tissue.ROOTLET
    sev = (cent[j] >= cfg.central_cuts[2]) & (om > 0.5)
    tis[sev] = Tissue.ROOTLET
    cr = (np.clip((s[j] - p["conus"]) / 25.0, 0, 1) * (s[j] > p["conus"])).astype(_F)
    cord = _ell(u[j], v[j] - sv[j] - 0.5, _F(cfg.cord_radius_mm[0]) * cr + 1e-3,
                _F(cfg.cord_radius_mm[1]) * cr + 1e-3) <= 1.0
    tis[cord] = Tissue.CORD
    ops.add(90, gidx[j], None, tis, Structure.DURAL_SAC)


def _posterior(anat, ops, gidx, u, v, w, s, k, a0, b0, sv, k0, pf_, lft, fu, fv, bd, ad, h,
               d_up, d_dn, half, conc):
    p = anat.p
    cfg = anat.config
    au = np.abs(u)
    left = u > 0
    # ---------- foramina ----------
    uc = a0 + _F(cfg.lateral_fat_mm) + 13.0
    fm = (au > uc - 11) & (au < uc + 11) & (v > -bd - 11) & (v < -bd + 6)
    jf = np.nonzero(fm)[0]
    if jf.size:
        uf, vf, wf, kf = au[jf], v[jf], w[jf], k[jf]
        lf_ = left[jf]
        fh = p["fh"][kf]
        hf = h[jf]
        wc = -0.5 * hf - 1.0 + fh / 2
        vc = -bd[jf] - 4.0
        ucf = uc[jf]
        eu, ev, ew = _F(10.5), _F(cfg.foramen_ap_mm / 2 + 1.0), fh / 2
        fr = _ell(uf - ucf, vf - vc, eu, ev) + ((wf - wc) / ew) ** 2 <= 1.0
        lab = np.where(lf_, Structure.FORAMEN_LEFT, Structure.FORAMEN_RIGHT).astype(np.uint8)
        if fr.any():
            ops.ops.append((20, len(ops.ops), gidx[jf][fr], Tissue.FIBROUS, lab[fr]))
        t_ = uf - (ucf - eu)
        rw = wc + 0.25 * ew - 0.3 * t_
        rv = vc + 0.25 * t_ - 1.0
        rr = _F(cfg.root_radius_mm)
        dfm = np.where(lf_, p["fdefL"][kf], p["fdefR"][kf])
        ra_v = rr * (1 - 0.45 * dfm)
        ra_w = rr * (1 + 0.25 * dfm)
        lap = np.where(lf_, p["faplL"][kf], p["faplR"][kf])
        lsi = np.where(lf_, p["fsiL"][kf], p["fsiR"][kf])
        rim = 0.8 * (1 - dfm)  # a thin fat rim survives until the root deforms (Lee 2 vs 3)
        fev = ra_v + rim + (ev + 2 - ra_v) * (1 - lap)
        few = ra_w + rim + (ew + 2 - ra_w) * (1 - lsi)
        fat = fr & (_ell(vf - rv, wf - rw, fev, few) <= 1.0)
        root = fr & (_ell(vf - rv, wf - rw, ra_v, ra_w) <= 1.0)
        for m, tis, pr in ((fat, Tissue.EPIDURAL_FAT, 21), (root, Tissue.NERVE_ROOT, 22)):
            if m.any():
                ops.ops.append((pr, len(ops.ops), gidx[jf][m], tis, lab[m]))
    # ---------- pedicles and transverse processes ----------
    uin = a0 + _F(cfg.lateral_fat_mm * 0.6)
    fhk = p["fh"][k]
    wped_dn = (w < -0.5 * h - 2.5) & (w > -0.5 * h - 17.5)
    wped_up = (w > -0.5 * h - 1.0 + fhk + 1.0) & (w < d_up - 3.0)
    ped = (au > uin) & (au < uin + 8.5) & (v < -bd + 3) & (v > fv - 1) & (wped_dn | wped_up) & (s > -20)
    ops.add(40, gidx, ped, Tissue.CORTEX)
    ops.add(41, gidx, ped & (au > uin + 1.2) & (au < uin + 7.3) & (v < -bd + 1.8) & (v > fv + 0.2),
            Tissue.MARROW)
    tpl = np.where(k == ALL_LEVELS.index("L3/L4") - 1, 34.0, 28.0).astype(_F)
    tpv = np.abs(v - (fv + 4))
    tp = (au > uin + 5) & (au < uin + 5 + tpl) & (tpv < 3.5) & (np.abs(w + 0.5 * h + 10) < 5.0) & (s > 0)
    ops.add(40, gidx, tp, Tissue.CORTEX)
    ops.add(41, gidx, tp & (tpv < 2.0) & (au < uin + 3 + tpl), Tissue.MARROW)
    # ---------- laminae, spinous processes, interspinous ligament ----------
    du, dv = u, v - sv
    r = np.sqrt(du * du + dv * dv) + _F(1e-6)
    cu, cv = du / r, dv / r
    R0 = k0 * _sac_radius_unit(cu, cv, a0, b0, 0.0, 0.0, 0.0)
    fpost = pf_ * _vm(cu, cv, *_POST, 3.0)
    flat = _F(cfg.lateral_fat_mm) * (_vm(cu, cv, 1.0, 0.0, 3.0) + _vm(cu, cv, -1.0, 0.0, 3.0))
    r_out = R0 + 0.6 + fpost + flat + lft
    lam_t = _F(cfg.lamina_mm)
    # the upper vertebra's laminae slope down behind the disc level (seen at its centre)
    lam_w = ((w > -5.0) & (w < 24)) | ((w < -d_dn + 24) & (w > -d_dn + 2))
    lam = (cv < -0.15) & (r > r_out) & (r < r_out + lam_t) & lam_w & (au < fu + 4) & (s > -25)
    vlam = sv - (b0 * 0 + k0 * b0 + pf_ + lft + lam_t * 0.5)
    depth = np.maximum(0, vlam - v)
    spl = _F(cfg.spinous_length_mm)
    sp_band = (au < 3.5 + 0.04 * depth) & (v < vlam) & (v > vlam - spl)
    isp = sp_band & (au < 1.2) & (s > -40)
    ops.add(42, gidx, isp, Tissue.INTERSPINOUS)
    # interspinous fat between the ligament's oblique fibre bundles; the supraspinous
    # ligament (posterior 3 mm) stays dark
    ji = np.nonzero(isp)[0]
    patch = np.zeros(isp.shape, _F)
    if ji.size:  # an irregular smooth field (the bowel field at scaled-down coordinates)
        o = p["noise"]["origin"]
        patch[ji] = _sample_noise(anat, "bowel", 2.5 * u[ji], o[1] + 60.0 + 2.5 * depth[ji],
                                  o[2] + 10.0 + (2.5 * s[ji]) % 300.0)
    ops.add(42, gidx, isp & (patch > -0.4) & (v > vlam - spl + 3.0),
            Tissue.EPIDURAL_FAT)
    sph = _F(cfg.spinous_height_mm)
    w1 = w + 0.25 * depth
    sp_w = ((w1 > 1.0) & (w1 < 1.0 + sph)) | ((w1 > -d_dn + 1.0) & (w1 < -d_dn + 1.0 + sph))
    sp = sp_band & sp_w & (s > -25)
    ops.add(43, gidx, lam | sp, Tissue.CORTEX)
    lam_m = lam & (r > r_out + 1.0) & (r < r_out + lam_t - 1.0)
    sp_m = sp & (au < 2.3 + 0.04 * depth) & (w1 > 1.6) & (w1 < sph + 0.4) | \
        sp & (au < 2.3 + 0.04 * depth) & (w1 > -d_dn + 1.6) & (w1 < -d_dn + sph + 0.4)
    sp_m &= (v < vlam - 1.0) & (v > vlam - spl + 1.2)
    ops.add(44, gidx, lam_m | sp_m, Tissue.MARROW)
    # ---------- facet joints ----------
    fm = (au > fu - 16) & (au < fu + 16) & (np.abs(v - fv) < 16) & (w > -14) & (w < 11) & (s > -15)
    jf = np.nonzero(fm)[0]
    if jf.size == 0:
        return
    uf, vf, wf, kf = u[jf], v[jf], w[jf], k[jf]
    lf_ = uf > 0
    sgn = np.where(lf_, 1.0, -1.0).astype(_F)
    ang = np.where(lf_, p["fangL"][kf], p["fangR"][kf])
    sa, ca = np.sin(ang), np.cos(ang)
    pu, pv = uf - sgn * fu[jf], vf - fv[jf]
    pp = pu * sgn * sa - pv * ca  # along the joint (anteromedial -> posterolateral)
    qq = pu * sgn * ca + pv * sa  # towards the superior articular process (anterolateral)
    # the joint is curved: the superior process's surface is concave and cradles the inferior
    # process (J-shaped joint line; ends bent towards the inferior process)
    qq = qq + _F(cfg.facet_curvature_per_mm) * pp * pp

    def pick(name):
        return np.where(lf_, p[name + "L"][kf], p[name + "R"][kf])

    gap, hyp, ost, eff = pick("fgap"), pick("fhyp"), pick("fost"), pick("feff")
    sev = np.where(lf_, p["facL"][kf], p["facR"][kf])
    L2 = _F(cfg.facet_length_mm / 2)
    T = _F(cfg.facet_process_mm)
    wtaper = 1.0 - np.clip((np.abs(wf + 1.5) - 8.0) / 4.0, 0, 1) * 0.5
    th = (T + hyp) / 2
    sap_c = gap / 2 + th
    la = (L2 + 1.5 + hyp * 0.3) * wtaper
    lb = (L2 + hyp * 0.3) * wtaper
    sap = _ell(pp - 0.5, qq - sap_c, la, th) <= 1.0
    iap = _ell(pp + 0.5, qq + sap_c, lb, th) <= 1.0
    lj = L2 * wtaper
    jsp = (np.abs(pp) < lj) & (np.abs(qq) < gap / 2 + 0.01)
    ost1 = np.maximum(ost, 0.1)
    ost_m = (ost > 0.2) & ((_ell(pp - lj, qq, ost1, ost1) <= 1.0) | (_ell(pp + lj, qq, ost1, ost1) <= 1.0))
    lab = np.where(lf_, Structure.FACET_LEFT, Structure.FACET_RIGHT).astype(np.uint8)

    def put(m, tis, pr):
        if m.any():
            ops.ops.append((pr, len(ops.ops), gidx[jf][m], tis, lab[m]))

    put(sap | iap | ost_m, Tissue.CORTEX, 50)
    marrow = (sap & (_ell(pp - 0.5, qq - sap_c, la - 1.2, th - 1.1) <= 1.0)) | \
             (iap & (_ell(pp + 0.5, qq + sap_c, lb - 1.2, th - 1.1) <= 1.0))
    put(marrow, Tissue.MARROW, 51)
    put(jsp, Tissue.FACET_CARTILAGE, 52)
    fluid_w = np.maximum(gap - 2 * _F(cfg.facet_cartilage_mm) * (1 - 0.5 * sev), 0.0)
    put(jsp & (np.abs(qq) < fluid_w / 2 + 0.5 * eff), Tissue.EFFUSION, 53)
    cap = (eff > 0.2) & (_ell(pp - lj - 1.0, qq, 1.0 + eff, 1.0 + 0.8 * eff) <= 1.0) & ~(sap | iap)
    put(cap, Tissue.EFFUSION, 53)
