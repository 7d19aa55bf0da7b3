"""Preview montage of one phantom patient (matplotlib, Agg backend, no pyplot state).

Panel 1: the mid-sagittal T2 with the five disc-centre landmarks. Panels 2-6: each level's
disc-centre axial slice (a 120 mm window around the canal) with the label map outlined (dural sac, disc, facets, foramina) and the
true grade / reader grades printed.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from ..levels.names import LEVELS

__all__ = ["LABEL_COLOURS", "write_preview"]

LABEL_COLOURS = {1: "#00e5ff", 2: "#ffd600", 3: "#ff4081", 4: "#e040fb", 5: "#76ff03", 6: "#00e676"}
_SHORT = {"central_canal": "CC", "foramen_left": "FL", "foramen_right": "FR",
          "facet_left": "FcL", "facet_right": "FcR"}


def _window(img: np.ndarray) -> tuple[float, float]:
    lo, hi = np.percentile(img, [1, 99.5])
    return float(lo), float(max(hi, lo + 1e-6))


def _crop(img: np.ndarray, lab: np.ndarray, h_px: float, w_px: float) -> tuple[np.ndarray, np.ndarray]:
    """A window of about ``h_px`` x ``w_px`` pixels centred on the labelled structures."""
    r, c = np.nonzero(lab)
    if r.size == 0:
        return img, lab
    cr, cc = (r.min() + r.max()) / 2, (c.min() + c.max()) / 2
    r0 = int(np.clip(round(cr - h_px / 2), 0, max(0, img.shape[0] - h_px)))
    c0 = int(np.clip(round(cc - w_px / 2), 0, max(0, img.shape[1] - w_px)))
    r1, c1 = int(min(img.shape[0], r0 + round(h_px))), int(min(img.shape[1], c0 + round(w_px)))
    return img[r0:r1, c0:c1], lab[r0:r1, c0:c1]


def write_preview(
    path: str | Path,
    truth: dict,
    images: dict[str, np.ndarray],
    labels: dict[str, np.ndarray],
    crop_mm: float = 120.0,
) -> None:
    """Write the montage PNG. ``images`` has ``'sagittal'`` and each level's axial image,
    ``labels`` each level's label map, ``truth`` is the patient's truth.json dict. Axial panels
    show a ``crop_mm`` square centred on the labelled structures."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(15, 10), dpi=80, facecolor="black")
    FigureCanvasAgg(fig)
    axes = fig.subplots(2, 3)
    ax0 = axes[0, 0]
    sag = images["sagittal"]
    lo, hi = _window(sag)
    ax0.imshow(sag, cmap="gray", vmin=lo, vmax=hi, interpolation="nearest")
    for lv, (r, c) in truth["sagittal"]["landmarks_px"].items():
        ax0.plot([c], [r], "+", color="#ff1744", ms=10, mew=2)
        ax0.text(c + 8, r, lv, color="#ff1744", fontsize=8, va="center")
    ax0.set_title(f"{truth['patient_id']}  {truth['sex']} {truth['age']:.0f}y  mid-sagittal",
                  color="white", fontsize=10)
    levels = {d["level"]: d for d in truth["levels"]}
    for i, lv in enumerate(LEVELS):
        ax = axes.flat[i + 1]
        ps = levels[lv].get("pixel_spacing_mm", [1.0, 1.0])
        img, lab = _crop(images[lv], labels[lv], crop_mm / float(ps[0]), crop_mm / float(ps[1]))
        lo, hi = _window(img)
        ax.imshow(img, cmap="gray", vmin=lo, vmax=hi, interpolation="nearest")
        for v, colour in LABEL_COLOURS.items():
            m = (lab == v).astype(float)
            if m.any() and not m.all():
                ax.contour(m, levels=[0.5], colors=[colour], linewidths=0.8)
        g = levels[lv]["grades"]
        txt = "  ".join(f"{_SHORT[k]} {g[k]['truth']}|{''.join(str(r) for r in g[k]['readers'])}"
                        for k in _SHORT)
        meas = levels[lv]["measurements"]
        ax.set_title(f"{lv}  DSCA {meas['dural_sac_area_mm2']:.0f} mm²  Pf {levels[lv]['pfirrmann']}",
                     color="white", fontsize=10)
        ax.text(0.01, 0.01, txt, transform=ax.transAxes, color="yellow", fontsize=7.5,
                va="bottom", ha="left", bbox={"facecolor": "black", "alpha": 0.6, "lw": 0})
    for ax in axes.flat:
        ax.set_axis_off()
    fig.text(0.5, 0.005, "grades: truth|readers 1,2,3 (CC 0-3; foramen/facet 0/1);  "
             "outline: cyan sac, yellow disc, pink/magenta facet L/R, green foramen L/R",
             color="white", ha="center", fontsize=8)
    fig.tight_layout(rect=(0, 0.02, 1, 1))
    p = Path(path)
    p.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(p, format="png", facecolor="black", metadata={"Software": None})
