"""Generate a phantom cohort: DICOM studies, ``truth.json`` per patient and ``manifest.csv``.

Layout of ``DIR``::

    DIR/manifest.csv                 one row per (patient, level); see docs/dataset-format.md
    DIR/phantom_config.json          seed, patients, split and the resolved PhantomConfig
    DIR/<patient_id>/truth.json      ground truth (schema in :func:`generate_patient`)
    DIR/<patient_id>/dicom/sag_t2/0001.dcm ...   sagittal T2 FSE series
    DIR/<patient_id>/dicom/ax_t2/0001.dcm ...    axial T2 FSE series (one block per disc)
    DIR/<patient_id>/labels/L4-L5.png            8-bit label map of the disc-centre axial slice
    DIR/<patient_id>/preview.png                 montage (with ``preview=True``)

Determinism: patient ``i`` draws everything from ``SeedSequence([seed, i])`` and its children,
so the same seed gives the same bytes whatever the number of workers.
"""

from __future__ import annotations

import csv
import dataclasses
import hashlib
import json
import os
import re
import shutil
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import numpy as np

from ..errors import InputError
from ..levels.names import LEVELS, level_dirname
from .config import PhantomConfig
from .slice_bank import BANK_COLUMNS

__all__ = [
    "FINDING_COLUMNS",
    "MANIFEST_COLUMNS",
    "assign_splits",
    "generate_cohort",
    "generate_patient",
    "label_boxes",
    "label_measurements",
    "patient_id_for",
]

FINDING_COLUMNS = ("central_canal", "foramen_left", "foramen_right", "facet_left", "facet_right")
MANIFEST_COLUMNS = (
    ["patient_id", "split", "level", "study_dir", "study_instance_uid", "axial_image",
     "axial_sop_instance_uid", "label_map", "pixel_spacing_row_mm", "pixel_spacing_col_mm"]
    + list(FINDING_COLUMNS)
    + [f"{f}_{s}" for f in FINDING_COLUMNS for s in ("r2", "r3", "truth")]
    + ["tissue_map", "sagittal_image", "sagittal_tissue_map", "landmark_row", "landmark_col",
       "dural_sac_area_mm2", "disc_area_mm2", "dural_sac_ap_mm", "disc_ap_mm",
       "central_severity", "pfirrmann", "age", "sex"]
)
_PID_RE = re.compile(r"^P\d{4,}$")


def patient_id_for(index: int) -> str:
    return f"P{index:04d}"


def assign_splits(n: int, seed: int, split: Sequence[int] = (150, 20, 30)) -> list[str]:
    """'train'/'val'/'test' per patient index, a deterministic permutation from the seed.

    ``split`` gives counts; when they do not add up to ``n`` they are used as proportions
    (largest remainder), so the default 150/20/30 becomes 75/10/15 %.
    """
    s = np.asarray(split, dtype=np.float64)
    if s.shape != (3,) or (s < 0).any() or s.sum() <= 0:
        raise InputError("--split", f"expected three non-negative counts train,val,test, got {list(split)}")
    if int(s.sum()) == n and np.all(s == np.round(s)):
        counts = s.astype(int)
    else:
        raw = s / s.sum() * n
        counts = np.floor(raw).astype(int)
        for k in np.argsort(-(raw - counts), kind="stable")[: n - counts.sum()]:
            counts[k] += 1
    names = ["train"] * counts[0] + ["val"] * counts[1] + ["test"] * counts[2]
    perm = np.random.default_rng(np.random.SeedSequence([int(seed), 99991])).permutation(n)
    out = [""] * n
    for pos, i in enumerate(perm):
        out[int(i)] = names[pos]
    return out


def label_measurements(labels: np.ndarray, pixel_spacing: tuple[float, float]) -> dict[str, float]:
    """Truth measurements from an axial label map.

    ``*_area_mm2`` = pixel count x row spacing x column spacing. ``*_ap_mm`` = the number of rows
    spanned by the structure (max row - min row + 1) x row spacing, i.e. its extent along the
    image's column direction (the AP axis of an axial slice, tilted with the block). 0 when the
    structure is absent.
    """
    sr, sc = float(pixel_spacing[0]), float(pixel_spacing[1])
    out = {}
    for name, v in (("dural_sac", 1), ("disc", 2)):
        m = labels == v
        out[f"{name}_area_mm2"] = round(float(m.sum()) * sr * sc, 4)
        rows = np.flatnonzero(m.any(axis=1))
        out[f"{name}_ap_mm"] = round(float(rows[-1] - rows[0] + 1) * sr, 4) if rows.size else 0.0
    return {k: out[k] for k in ("dural_sac_area_mm2", "disc_area_mm2", "dural_sac_ap_mm", "disc_ap_mm")}


def pixel_bandwidth_hz(field_t: float, chemical_shift_px: float | None) -> float | None:
    """Receiver bandwidth per pixel (Hz) that displaces fat by ``chemical_shift_px`` pixels at
    ``field_t`` tesla: the fat-water frequency difference (3.5 ppm of the Larmor frequency, about
    224 Hz at 1.5 T) over the shift's size (its sign, the readout polarity, is not in a header).
    None without a shift."""
    from ..io.acquisition import FAT_WATER_PPM, PROTON_MHZ_PER_T

    if not chemical_shift_px:
        return None
    return FAT_WATER_PPM * PROTON_MHZ_PER_T * float(field_t) / abs(float(chemical_shift_px))


def label_boxes(labels: np.ndarray) -> dict[str, list[int] | None]:
    """Bounding boxes ``[row0, col0, row1, col1]`` (end-exclusive) of labels 3-6; None if absent
    (:func:`lumbargrade.boxes.rule.boxes_from_label_map`, as every stage reads them)."""
    from ..boxes.rule import boxes_from_label_map

    return boxes_from_label_map(labels)


def _default_backend() -> Any:
    from .anatomy import sample_anatomy
    from .mr import sample_mr_params
    from .render import render_slice

    return SimpleNamespace(sample_anatomy=sample_anatomy, sample_mr_params=sample_mr_params,
                           render_slice=render_slice)


def _jsonable(obj: Any) -> Any:
    if dataclasses.is_dataclass(obj) and not isinstance(obj, type):
        obj = dataclasses.asdict(obj)
    if isinstance(obj, dict):
        return {str(k): _jsonable(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_jsonable(v) for v in obj]
    if isinstance(obj, np.ndarray):
        return _jsonable(obj.tolist())
    if isinstance(obj, (np.floating, float)):
        return round(float(obj), 6)
    if isinstance(obj, (np.integer,)):
        return int(obj)
    return obj


def _save_png(arr: np.ndarray, path: Path) -> None:
    from PIL import Image

    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(np.asarray(arr, dtype=np.uint8), mode="L").save(path, format="PNG", optimize=False)


def generate_patient(
    out_dir: str | Path,
    index: int,
    seed: int,
    split: str = "train",
    config: PhantomConfig | None = None,
    preview: bool = False,
    backend: Any = None,
) -> list[dict]:
    """Generate patient ``index`` of the cohort with ``seed`` into ``out_dir/<patient_id>``.

    Writes the DICOM series, label maps, ``truth.json`` (and ``preview.png``) and returns the
    patient's manifest rows (paths relative to ``out_dir``). ``backend`` replaces the anatomy and
    rendering (an object with ``sample_anatomy``, ``sample_mr_params``, ``render_slice``); tests
    only.

    truth.json: ``patient_id, study_instance_uid, split, seed, age, sex, mr, acquisition,
    levels[{level, axial_series_instance_uid, axial_sop_instance_uid, axial_instance_number,
    axial_slice_distance_mm, label_map, boxes, landmark_patient_mm, normal_lps, pixel_spacing_mm,
    measurements, grades, severities, pfirrmann}], sagittal{series_instance_uid,
    mid_sop_instance_uid, mid_instance_number, landmarks_px}``.
    """
    from .acquisition import plan_axial, plan_sagittal
    from .dicom_writer import (
        SeriesInfo,
        StudyInfo,
        phantom_uid,
        slice_dataset,
        to_stored_pixels,
        write_dataset,
    )
    from .grades import sample_patient_pathology
    from .readers import simulate_readers

    cfg = config or PhantomConfig()
    be = backend or _default_backend()
    out_dir = Path(out_dir)
    pid = patient_id_for(index)
    pdir = out_dir / pid
    ss = np.random.SeedSequence([int(seed), int(index)])
    r_path, r_anat, r_mr, r_acq, r_read, r_render, r_misc = [np.random.default_rng(s) for s in ss.spawn(7)]

    age, sex, pathology = sample_patient_pathology(r_path, cfg.pathology)
    anat = be.sample_anatomy(r_anat, pathology, age, sex, config=cfg.anatomy)
    mr = be.sample_mr_params(r_mr)
    sag = plan_sagittal(r_acq, anat, cfg.acquisition)
    ax = plan_axial(r_acq, anat, cfg.acquisition)
    field_t = float(getattr(mr, "field_t", None) or getattr(mr, "field_strength_t", None)
                    or cfg.field_strengths[int(r_misc.integers(len(cfg.field_strengths)))])
    etl = int(getattr(mr, "etl", None) or getattr(mr, "echo_train_length", None) or r_misc.integers(12, 25))
    csf_value = float(round(r_misc.uniform(*cfg.csf_value_range)))

    cfg_key = hashlib.sha256(json.dumps(_jsonable(cfg.to_dict()), sort_keys=True).encode()).hexdigest()[:16]
    study_uid = phantom_uid(seed, cfg_key, pid, "study")
    study = StudyInfo(
        patient_id=pid, age_years=age, sex=sex, study_instance_uid=study_uid,
        frame_of_reference_uid=phantom_uid(seed, cfg_key, pid, "frame"), field_strength_t=field_t,
        repetition_time_ms=float(mr.tr_ms), echo_time_ms=float(mr.te_ms), echo_train_length=etl,
        accession=f"PH{int(seed) % 100000:05d}{index:05d}",
        pixel_bandwidth_hz=pixel_bandwidth_hz(field_t, getattr(mr, "chemical_shift_px", None)),
        readout_axis=getattr(mr, "readout_axis", None),
    )
    series_out: dict[str, dict] = {}
    bank_rows: list[dict] = []
    truth_labels: dict[str, np.ndarray] = {}
    images_for_preview: dict[str, np.ndarray] = {}
    truth_slices = {v: k for k, v in ax.truth_index.items()}
    for number, plan in ((1, sag), (2, ax)):
        s_uid = phantom_uid(seed, cfg_key, pid, plan.name)
        info = SeriesInfo(s_uid, number, plan.description, plan.spacing)
        sops, paths = [], []
        for k, geom in enumerate(plan.slices):
            rs = be.render_slice(anat, geom, mr, r_render, supersample=cfg.acquisition.supersample)
            sop = phantom_uid(seed, cfg_key, pid, plan.name, k)
            ds = slice_dataset(to_stored_pixels(rs.image, csf_value), geom, study, info, sop, k + 1)
            rel = Path(pid) / "dicom" / plan.name / f"{k + 1:04d}.dcm"
            write_dataset(ds, out_dir / rel)
            sops.append(sop)
            paths.append(rel.as_posix())
            if plan is ax and k in truth_slices:
                truth_labels[truth_slices[k]] = np.asarray(rs.labels, dtype=np.uint8)
                images_for_preview[truth_slices[k]] = np.asarray(rs.image, dtype=np.float32)
            if plan is ax and cfg.slice_bank:
                lv_k = plan.level_of[k] if k < len(plan.level_of) and plan.level_of[k] else None
                if lv_k is None:  # contiguous stack: the nearest disc
                    lv_k = min(LEVELS, key=lambda n: abs(float(geom.signed_distance(
                        np.asarray(anat.levels[n].centre_lps, dtype=np.float64)))))
                off = float(geom.signed_distance(np.asarray(anat.levels[lv_k].centre_lps, dtype=np.float64)))
                bank_rows.append(_bank_row(pdir, pid, split, lv_k, "disc_centre" if truth_slices.get(k) else
                                           "disc_block", off, rel.as_posix(), f"ax_{k + 1:04d}", rs, geom))
            if plan is sag and k == sag.truth_index["mid"]:
                images_for_preview["sagittal"] = np.asarray(rs.image, dtype=np.float32)
            if plan is sag and cfg.slice_bank and abs(k - sag.truth_index["mid"]) <= 1:
                # the mid-sagittal tissue map and its neighbours': domain randomisation of the landmark networks
                _save_png(rs.tissues, pdir / "bank" / f"sag_{k + 1:04d}_tissues.png")
        series_out[plan.name] = {"uid": s_uid, "sops": sops, "paths": paths}

    if cfg.slice_bank:
        from .slice_bank import extra_slice_plan, save_u16_png

        for lv_x, kind, geom in extra_slice_plan(anat, ax.slices[0], cfg.acquisition.ax_max_tilt_deg,
                                                 cfg.acquisition.ax_posterior_shift_mm):
            rs = be.render_slice(anat, geom, mr, r_render, supersample=cfg.acquisition.supersample)
            name = f"{kind}_{lv_x.replace('/', '-')}"
            img_rel = Path(pid) / "bank" / f"{name}_image.png"
            save_u16_png(to_stored_pixels(rs.image, csf_value), out_dir / img_rel)
            bank_rows.append(_bank_row(pdir, pid, split, lv_x, kind, 0.0, img_rel.as_posix(), name, rs, geom))

    mid = sag.truth_index["mid"]
    mid_geom = sag.slices[mid]
    landmarks_px = {}
    levels_truth = []
    rows = []
    for lv in LEVELS:
        a = anat.levels[lv]
        centre = np.asarray(a.centre_lps, dtype=np.float64)
        rc = mid_geom.patient_to_pixel(centre)
        landmarks_px[lv] = [round(float(rc[0]), 3), round(float(rc[1]), 3)]
        k = ax.truth_index[lv]
        g = ax.slices[k]
        labels = truth_labels[lv]
        lm_rel = f"labels/{level_dirname(lv)}.png"
        _save_png(labels, pdir / lm_rel)
        p = pathology[lv]
        sev = {"central": p.central, "foramen_left": p.foramen_left, "foramen_right": p.foramen_right,
               "facet_left": p.facet_left, "facet_right": p.facet_right}
        grades = simulate_readers(r_read, sev, cfg.readers)
        meas = label_measurements(labels, g.pixel_spacing)
        levels_truth.append({
            "level": lv,
            "axial_series_instance_uid": series_out["ax_t2"]["uid"],
            "axial_sop_instance_uid": series_out["ax_t2"]["sops"][k],
            "axial_instance_number": k + 1,
            "axial_image": series_out["ax_t2"]["paths"][k].split("/", 1)[1],
            "axial_slice_distance_mm": round(float(g.signed_distance(centre)), 4),
            "label_map": lm_rel,
            "boxes": label_boxes(labels),
            "landmark_patient_mm": [round(float(v), 4) for v in centre],
            "normal_lps": [round(float(v), 6) for v in np.asarray(a.normal_lps, dtype=float)],
            "pixel_spacing_mm": [g.pixel_spacing[0], g.pixel_spacing[1]],
            "measurements": meas,
            "grades": grades,
            "severities": {k2: round(float(v), 4) for k2, v in sev.items()},
            "pfirrmann": int(p.pfirrmann),
        })
        row: dict[str, Any] = {
            "patient_id": pid, "split": split, "level": lv, "study_dir": f"{pid}/dicom",
            "study_instance_uid": study_uid, "axial_image": series_out["ax_t2"]["paths"][k],
            "axial_sop_instance_uid": series_out["ax_t2"]["sops"][k], "label_map": f"{pid}/{lm_rel}",
            "tissue_map": f"{pid}/bank/ax_{k + 1:04d}_tissues.png" if cfg.slice_bank else "",
            "sagittal_tissue_map": f"{pid}/bank/sag_{mid + 1:04d}_tissues.png" if cfg.slice_bank else "",
            "pixel_spacing_row_mm": g.pixel_spacing[0], "pixel_spacing_col_mm": g.pixel_spacing[1],
            "sagittal_image": series_out["sag_t2"]["paths"][mid],
            "landmark_row": landmarks_px[lv][0], "landmark_col": landmarks_px[lv][1],
            **meas, "central_severity": round(float(p.central), 4), "pfirrmann": int(p.pfirrmann),
            "age": age, "sex": sex,
        }
        for f in FINDING_COLUMNS:
            r1, r2, r3 = grades[f]["readers"]
            row[f], row[f"{f}_r2"], row[f"{f}_r3"], row[f"{f}_truth"] = r1, r2, r3, grades[f]["truth"]
        rows.append(row)

    truth = {
        "patient_id": pid,
        "study_instance_uid": study_uid,
        "split": split,
        "seed": int(seed),
        "index": int(index),
        "age": age,
        "sex": sex,
        # a lumbosacral transitional vertebra ("lumbarised S1", "sacralised L5" or None; the
        # AnatomyConfig rates); the level names count down from T12 whatever lies below L5
        "lumbosacral_transition": getattr(anat, "p", {}).get("transition"),
        "mr": _jsonable(mr.to_dict() if hasattr(mr, "to_dict") else mr),
        "field_strength_t": field_t,
        "echo_train_length": etl,
        "csf_stored_value": csf_value,
        "axial_inplane": ax.inplane,
        "acquisition": {
            plan.name: {"description": plan.description, "n_slices": len(plan.slices),
                        "thickness_mm": plan.thickness, "spacing_mm": plan.spacing,
                        "rows": plan.slices[0].rows, "columns": plan.slices[0].columns,
                        "pixel_spacing_mm": list(plan.slices[0].pixel_spacing),
                        "series_instance_uid": series_out[plan.name]["uid"]}
            for plan in (sag, ax)
        },
        "levels": levels_truth,
        "sagittal": {
            "series_instance_uid": series_out["sag_t2"]["uid"],
            "mid_sop_instance_uid": series_out["sag_t2"]["sops"][mid],
            "mid_instance_number": mid + 1,
            "mid_image": series_out["sag_t2"]["paths"][mid].split("/", 1)[1],
            "landmarks_px": landmarks_px,
        },
    }
    (pdir / "truth.json").write_text(json.dumps(_jsonable(truth), indent=2) + "\n")
    if preview:
        from .preview import write_preview

        write_preview(pdir / "preview.png", truth, images_for_preview, truth_labels)
    if cfg.slice_bank:
        _write_csv(bank_rows, pdir / "bank" / "slices.csv", BANK_COLUMNS)
    return rows


def _bank_row(pdir: Path, pid: str, split: str, level: str, kind: str, offset_mm: float, image_rel: str,
              name: str, rs: Any, geom: Any) -> dict:
    """Write one bank slice's label and tissue maps; its slices.csv row (paths relative to the
    cohort folder)."""
    _save_png(rs.labels, pdir / "bank" / f"{name}_labels.png")
    _save_png(rs.tissues, pdir / "bank" / f"{name}_tissues.png")
    return {"patient_id": pid, "split": split, "level": level, "kind": kind, "offset_mm": round(offset_mm, 3),
            "axial_image": image_rel, "label_map": f"{pid}/bank/{name}_labels.png",
            "tissue_map": f"{pid}/bank/{name}_tissues.png",
            "pixel_spacing_row_mm": geom.pixel_spacing[0], "pixel_spacing_col_mm": geom.pixel_spacing[1],
            "slice_thickness_mm": geom.thickness}


def _job(args: tuple) -> tuple[int, list[dict], float, float]:
    out_dir, index, seed, split, config, preview = args
    t0, c0 = time.perf_counter(), time.process_time()
    rows = generate_patient(out_dir, index, seed, split, config, preview)
    return index, rows, time.perf_counter() - t0, time.process_time() - c0


def _fmt(v: Any) -> str:
    if isinstance(v, float):
        return f"{v:.6g}"
    return "" if v is None else str(v)


def _write_csv(rows: list[dict], path: Path, columns: Sequence[str]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w", newline="") as fh:
        w = csv.DictWriter(fh, fieldnames=list(columns), lineterminator="\n")
        w.writeheader()
        for r in rows:
            w.writerow({k: _fmt(r.get(k)) for k in columns})


def write_manifest(rows: list[dict], path: Path) -> None:
    _write_csv(rows, path, MANIFEST_COLUMNS)


def _gather_bank(out: Path, n_patients: int) -> Path | None:
    """Concatenate the patients' ``bank/slices.csv`` into ``out/slices.csv``."""
    rows: list[dict] = []
    for i in range(n_patients):
        p = out / patient_id_for(i) / "bank" / "slices.csv"
        if p.is_file():
            with open(p, newline="") as fh:
                rows.extend(csv.DictReader(fh))
    if not rows:
        return None
    _write_csv(rows, out / "slices.csv", BANK_COLUMNS)
    return out / "slices.csv"


def _prepare_out(out: Path, overwrite: bool) -> None:
    if out.exists() and not out.is_dir():
        raise InputError(out, "exists and is not a folder")
    if out.exists() and any(out.iterdir()):
        if not overwrite:
            raise InputError(out, "folder is not empty; pass --overwrite to replace a phantom cohort there")
        for p in out.iterdir():
            if p.is_dir() and _PID_RE.match(p.name):
                shutil.rmtree(p)
            elif p.name in ("manifest.csv", "phantom_config.json", "slices.csv"):
                p.unlink()
    out.mkdir(parents=True, exist_ok=True)


def generate_cohort(
    out_dir: str | Path,
    n_patients: int,
    seed: int = 0,
    split: Sequence[int] = (150, 20, 30),
    config: PhantomConfig | None = None,
    preview: bool = False,
    workers: int = 1,
    overwrite: bool = False,
    progress: bool = True,
) -> dict:
    """Generate ``n_patients`` phantom studies into ``out_dir`` and write ``manifest.csv``.

    Refuses (InputError) a non-empty ``out_dir`` unless ``overwrite`` (which removes earlier
    patient folders ``P####``, ``manifest.csv`` and ``phantom_config.json`` only). Returns
    ``{"manifest", "n_patients", "seconds", "seconds_per_patient", "patient_seconds",
    "patient_cpu_seconds"}`` (wall and CPU seconds of each patient in its process).
    """
    if n_patients < 1:
        raise InputError("--patients", f"must be at least 1, got {n_patients}")
    if workers < 1:
        raise InputError("--workers", f"must be at least 1, got {workers}")
    cfg = config or PhantomConfig()
    out = Path(out_dir)
    _prepare_out(out, overwrite)
    splits = assign_splits(n_patients, seed, split)
    (out / "phantom_config.json").write_text(json.dumps(_jsonable({
        "seed": int(seed), "n_patients": int(n_patients), "split": list(split),
        "config": cfg.to_dict(),
    }), indent=2) + "\n")
    jobs = [(str(out), i, int(seed), splits[i], cfg, bool(preview)) for i in range(n_patients)]
    t0 = time.perf_counter()
    results: dict[int, list[dict]] = {}
    per: dict[int, float] = {}
    cpu: dict[int, float] = {}
    bar = None
    if progress:
        from tqdm import tqdm

        bar = tqdm(total=n_patients, desc="phantom", unit="patient", file=sys.stderr)
    try:
        if workers == 1:
            for j in jobs:
                i, rows, dt, ct = _job(j)
                results[i], per[i], cpu[i] = rows, dt, ct
                if bar:
                    bar.update(1)
        else:
            import multiprocessing as mp
            from concurrent.futures import ProcessPoolExecutor, as_completed

            # workers get a fixed str-hash seed, so any use of hash() in the renderer is stable
            # from run to run; restored afterwards
            old = os.environ.get("PYTHONHASHSEED")
            os.environ["PYTHONHASHSEED"] = "0"
            try:
                with ProcessPoolExecutor(max_workers=workers, mp_context=mp.get_context("spawn")) as ex:
                    futs = [ex.submit(_job, j) for j in jobs]
                    for f in as_completed(futs):
                        i, rows, dt, ct = f.result()
                        results[i], per[i], cpu[i] = rows, dt, ct
                        if bar:
                            bar.update(1)
            finally:
                if old is None:
                    os.environ.pop("PYTHONHASHSEED", None)
                else:
                    os.environ["PYTHONHASHSEED"] = old
    finally:
        if bar:
            bar.close()
    all_rows = [r for i in range(n_patients) for r in results[i]]
    manifest = out / "manifest.csv"
    write_manifest(all_rows, manifest)
    _gather_bank(out, n_patients)
    dt = time.perf_counter() - t0
    return {
        "manifest": str(manifest),
        "n_patients": n_patients,
        "seconds": dt,
        "seconds_per_patient": dt / n_patients,
        "patient_seconds": [per[i] for i in range(n_patients)],
        "patient_cpu_seconds": [cpu[i] for i in range(n_patients)],
    }
