"""T2 FSE contrast of the phantom: acquisition parameters and the signal of each tissue.

Signal (spec 2a): ``S = PD * (1 - exp(-TR/T1)) * exp(-TE/T2)``, normalised so that CSF = 1 at
the patient's TR/TE. Relaxation values per tissue at 1.5 T (T1 at 3 T where the spec gives one);
fat and marrow use their apparent FSE T2 (J-coupling suppression makes fat bright on FSE).
Per-patient tissue jitter perturbs PD and T2 (log-normal).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from .tissues import Tissue

__all__ = ["RELAXATION", "MRParams", "sample_mr_params", "signal_table", "tissue_signal"]

#: tissue -> (PD, T1 at 1.5 T ms, T2 ms, T1 at 3 T ms). Spec section 2a.
RELAXATION: dict[Tissue, tuple[float, float, float, float]] = {
    Tissue.AIR: (0.0, 1000.0, 1.0, 1000.0),
    Tissue.CSF: (1.0, 4300.0, 1800.0, 4400.0),
    Tissue.ROOTLET: (0.70, 800.0, 75.0, 900.0),
    Tissue.NUCLEUS: (0.88, 1100.0, 240.0, 1200.0),
    Tissue.NUCLEUS_P2: (0.85, 1000.0, 145.0, 1100.0),
    Tissue.NUCLEUS_P3: (0.70, 720.0, 76.0, 800.0),
    Tissue.NUCLEUS_P4: (0.55, 650.0, 52.0, 720.0),
    Tissue.NUCLEUS_P5: (0.48, 554.0, 48.0, 620.0),
    Tissue.ANNULUS: (0.65, 900.0, 48.0, 1000.0),
    Tissue.ANNULUS_INNER: (0.72, 950.0, 75.0, 1050.0),  # [E] between annulus and nucleus
    Tissue.MARROW: (0.90, 549.0, 85.0, 586.0),
    Tissue.CORTEX: (0.03, 1000.0, 2.0, 1000.0),
    Tissue.EPIDURAL_FAT: (1.0, 300.0, 165.0, 377.0),
    Tissue.SUBCUT_FAT: (1.0, 300.0, 165.0, 377.0),
    Tissue.MUSCLE: (0.80, 982.0, 42.0, 1233.0),
    Tissue.MUSCLE_FATTY: (0.90, 500.0, 95.0, 600.0),
    Tissue.LIGAMENTUM_FLAVUM: (0.60, 900.0, 40.0, 1000.0),
    Tissue.FACET_CARTILAGE: (0.70, 1024.0, 30.0, 1168.0),
    Tissue.EFFUSION: (1.0, 2850.0, 1000.0, 3000.0),
    Tissue.NERVE_ROOT: (0.70, 800.0, 80.0, 900.0),
    Tissue.VESSEL: (0.04, 1500.0, 50.0, 1600.0),  # flow void
    Tissue.VISCERA: (0.80, 900.0, 65.0, 1100.0),
    Tissue.CORD: (0.70, 745.0, 74.0, 850.0),
    Tissue.FIBROUS: (0.55, 900.0, 45.0, 1000.0),
    Tissue.BOWEL_FLUID: (0.95, 3000.0, 500.0, 3200.0),
    Tissue.INTERSPINOUS: (0.40, 900.0, 30.0, 1000.0),
}

#: multiplicative heterogeneity amplitude of each tissue's texture (0 = homogeneous) [E]
TEXTURE: dict[Tissue, float] = {
    Tissue.MARROW: 0.25, Tissue.MUSCLE: 0.22, Tissue.VISCERA: 0.45, Tissue.SUBCUT_FAT: 0.08,
    Tissue.EPIDURAL_FAT: 0.08, Tissue.LIGAMENTUM_FLAVUM: 0.1, Tissue.NERVE_ROOT: 0.1, Tissue.NUCLEUS_P2: 0.08, Tissue.NUCLEUS_P3: 0.15,
    Tissue.NUCLEUS_P4: 0.2, Tissue.NUCLEUS_P5: 0.2, Tissue.ANNULUS: 0.08, Tissue.CSF: 0.03,
    Tissue.MUSCLE_FATTY: 0.15, Tissue.BOWEL_FLUID: 0.2, Tissue.FIBROUS: 0.1,
}


@dataclass
class MRParams:
    """Acquisition and artefact parameters of one patient's study.

    noise_sigma: SD of each of the real and imaginary noise channels, as a fraction of CSF.
    bias_strength: amplitude of the smooth multiplicative bias field (0.1 -> 0.9..1.1).
    coil_falloff_mm: posterior coil decay length; signal ~ exp(-depth / coil_falloff_mm), depth
        from the skin of the back, normalised to 1 at the canal.
    gibbs: k-space truncation (ringing); kspace_fraction = (phase, readout) fraction kept.
    chemical_shift_px: fat displacement along the readout axis (pixels).
    readout_axis: 0 = rows, 1 = columns of the rendered image.
    tissue_jitter: tissue code -> multiplicative factor on the signal (per patient).
    """

    tr_ms: float = 4000.0
    te_ms: float = 100.0
    field_t: float = 1.5
    noise_sigma: float = 0.035
    bias_strength: float = 0.12
    coil_falloff_mm: float = 220.0
    gibbs: bool = True
    kspace_fraction: tuple[float, float] = (0.75, 0.9)
    chemical_shift_px: float = 1.0
    readout_axis: int = 1
    etl: int = 16
    tissue_jitter: dict[int, float] = field(default_factory=dict)
    field_seed: int = 0

    def to_dict(self) -> dict:
        d = dict(self.__dict__)
        d["tissue_jitter"] = {str(Tissue(k).name): float(v) for k, v in self.tissue_jitter.items()}
        d["kspace_fraction"] = list(self.kspace_fraction)
        return d


def sample_mr_params(rng: np.random.Generator, field_t: float | None = None) -> MRParams:
    """Sample TR 3000-5000 ms, TE 90-120 ms (spec 2a), noise 2-6 % of CSF (2b), bias,
    coil fall-off, Gibbs and chemical shift."""
    ft = float(field_t) if field_t is not None else float(rng.choice([1.5, 3.0]))
    jit = {}
    for t in RELAXATION:
        if t in (Tissue.AIR, Tissue.CSF, Tissue.CORTEX, Tissue.VESSEL):
            continue
        jit[int(t)] = float(np.exp(rng.normal(0.0, 0.07)))
    return MRParams(
        tr_ms=float(rng.uniform(3000, 5000)),
        te_ms=float(rng.uniform(90, 120)),
        field_t=ft,
        noise_sigma=float(rng.uniform(0.02, 0.055)),
        bias_strength=float(rng.uniform(0.05, 0.18)),
        coil_falloff_mm=float(rng.uniform(110, 220)),
        gibbs=bool(rng.uniform() < 0.8),
        kspace_fraction=(float(rng.uniform(0.62, 0.9)), float(rng.uniform(0.8, 1.0))),
        chemical_shift_px=float(rng.uniform(0.8, 2.0)) * (2.0 if ft >= 2.5 else 1.0) / 1.5,
        readout_axis=int(rng.integers(2)),
        etl=int(rng.integers(12, 25)),
        tissue_jitter=jit,
        field_seed=int(rng.integers(2 ** 31)),
    )


def signal_table(mr: MRParams, age: float = 50.0) -> np.ndarray:
    """(256,) float32 signal of every tissue code, CSF = 1."""
    tab = np.zeros(256, np.float32)

    def sig(pd, t1, t2):
        return pd * (1 - np.exp(-mr.tr_ms / t1)) * np.exp(-mr.te_ms / t2)

    hi = mr.field_t >= 2.5
    csf = RELAXATION[Tissue.CSF]
    ref = sig(csf[0], csf[3] if hi else csf[1], csf[2])
    for t, (pd, t1, t2, t13) in RELAXATION.items():
        if t == Tissue.MARROW:  # fattier (brighter) marrow with age [E]
            t2 = t2 * (1.0 + 0.25 * np.clip((age - 30.0) / 50.0, 0, 1))
        tab[int(t)] = sig(pd, t13 if hi else t1, t2) / ref * mr.tissue_jitter.get(int(t), 1.0)
    return tab


def tissue_signal(tissues: np.ndarray, mr: MRParams, anat=None) -> np.ndarray:
    """Noise-free magnitude (float32, CSF = 1) of an array of tissue codes.

    The nucleus signal follows the Pfirrmann grade through its tissue code (NUCLEUS..NUCLEUS_P5,
    assigned per level by the anatomy); ``anat`` supplies the age (marrow signal).
    """
    age = float(getattr(anat, "age", 50.0)) if anat is not None else 50.0
    return signal_table(mr, age)[np.asarray(tissues, dtype=np.uint8)]


def texture_table() -> np.ndarray:
    tab = np.zeros(256, np.float32)
    for t, a in TEXTURE.items():
        tab[int(t)] = a
    return tab
