"""``lumbargrade train tree``: fit the central canal decision tree on a manifest.

For every (patient, level) row with a ``central_canal`` grade, the dural sac and disc masks are
taken from the ``label_map`` (``--truth-masks``) or predicted by a segmentation run / model pack
(``--segmentation``); :func:`lumbargrade.measurements.measure_level` gives the candidate features.
One tree per candidate is fitted on the ``train`` split and the one with the best linearly weighted
kappa on ``val`` is kept (or the feature named in the config).

RUN_DIR receives ``tree.json`` (the tree as data), ``config.json`` (resolved config),
``metrics.json`` (validation kappa / accuracy of every candidate, and of the paper's thresholds),
``measurements.csv`` (every row's measurements) and ``train.log``.
"""

from __future__ import annotations

import csv
import json
import math
import time
from pathlib import Path

from ..errors import InputError
from .tree import NORMALISED_SAC_AREA, THRESHOLD_METHODS

__all__ = ["DEFAULT_CONFIG", "measure_rows", "resolve_config", "run_cli"]

DEFAULT_CONFIG: dict = {
    "feature": "auto",  # "auto": best validation kappa among `candidates`; or one feature name
    # normalised_sac_area: dural sac area / disc area ** a, a in 0..1 fitted on the train rows
    "candidates": ["area_ratio", "ap_ratio", "sqrt_area_ratio", "dural_sac_area_mm2", NORMALISED_SAC_AREA],
    "max_depth": 3,
    "max_leaf_nodes": 4,
    "class_weight": None,  # or "balanced"
    # "gini": scikit-learn's greedy splits (as the paper); "kappa": the same tree with its thresholds
    # moved to the best training kappa; "auto": both fitted, the better validation kappa kept
    "thresholds": "auto",
    "largest_component": True,
    "diameter_method": "chord",  # AP/transverse diameters: "chord" through the centroid or "caliper"
    "target": "central_canal",
}

_FEATURES = ("dural_sac_area_mm2", "disc_area_mm2", "dural_sac_ap_mm", "disc_ap_mm",
             "dural_sac_transverse_mm", "disc_transverse_mm", "area_ratio", "ap_ratio", "sqrt_area_ratio")
#: What the tree may be fitted on: the measurements, and the dural sac area normalised by disc size.
_TREE_FEATURES = (*_FEATURES, NORMALISED_SAC_AREA)


def _parse_value(v: str):
    try:
        return json.loads(v)
    except json.JSONDecodeError:
        return v


def resolve_config(config_file: str | None = None, sets: list[str] | None = None, seed: int = 0) -> dict:
    """Defaults <- JSON file <- ``--set KEY=VALUE`` items; validated (InputError on a mistake)."""
    cfg = dict(DEFAULT_CONFIG)
    layers = []
    if config_file:
        p = Path(config_file)
        try:
            d = json.loads(p.read_text())
        except FileNotFoundError:
            raise InputError(p, "config file not found") from None
        except (json.JSONDecodeError, UnicodeDecodeError) as e:
            raise InputError(p, f"not valid JSON ({e})") from None
        if not isinstance(d, dict):
            raise InputError(p, "config must be a JSON object")
        layers.append((str(p), d))
    s = {}
    for item in sets or []:
        if "=" not in item:
            raise InputError("--set", f"{item!r} is not KEY=VALUE")
        k, v = item.split("=", 1)
        s[k.strip()] = _parse_value(v.strip())
    layers.append(("--set", s))
    for where, d in layers:
        for k, v in d.items():
            if k not in DEFAULT_CONFIG:
                raise InputError(where, f"unknown tree config key {k!r}; known: {', '.join(DEFAULT_CONFIG)}")
            cfg[k] = v
    if isinstance(cfg["candidates"], str):
        cfg["candidates"] = [c.strip() for c in cfg["candidates"].split(",") if c.strip()]
    for c in cfg["candidates"]:
        if c not in _TREE_FEATURES:
            raise InputError("config candidates", f"unknown feature {c!r}; known: {', '.join(_TREE_FEATURES)}")
    if cfg["feature"] != "auto" and cfg["feature"] not in _TREE_FEATURES:
        raise InputError("config feature", f"{cfg['feature']!r} is not 'auto' or one of {', '.join(_TREE_FEATURES)}")
    for k in ("max_depth", "max_leaf_nodes"):
        if not isinstance(cfg[k], int) or cfg[k] < (1 if k == "max_depth" else 2):
            raise InputError(f"config {k}", f"{cfg[k]!r} is not a valid integer")
    if cfg["diameter_method"] not in ("chord", "caliper"):
        raise InputError("config diameter_method", "must be \"chord\" or \"caliper\"")
    if cfg["thresholds"] not in ("auto", *THRESHOLD_METHODS):
        raise InputError("config thresholds", f"{cfg['thresholds']!r} is not one of auto, {', '.join(THRESHOLD_METHODS)}")
    if cfg["class_weight"] not in (None, "balanced"):
        raise InputError("config class_weight", "must be null or \"balanced\"")
    cfg["seed"] = int(seed)
    return cfg


def _spacing(row: dict, base_dir) -> tuple[float, float]:
    try:
        sp = (float(row["pixel_spacing_row_mm"]), float(row["pixel_spacing_col_mm"]))
        if sp[0] > 0 and sp[1] > 0:
            return sp
    except (KeyError, ValueError):
        pass
    from ..manifest import load_axial  # DICOM axial image: its PixelSpacing

    return load_axial(row, base_dir)[1]


def measure_rows(rows: list[dict], segmenter=None, largest_component: bool = True, log=print,
                 diameter_method: str = "chord") -> list[dict]:
    """Measurements for each manifest row: a dict of the row's identity, grade and features
    (NaN where a mask is empty). Truth masks from ``label_map`` when ``segmenter`` is None."""
    from ..manifest import axial_view_of, load_label_map
    from ..measurements import measure_level

    out = []
    n_empty = 0
    for i, row in enumerate(rows):
        view = axial_view_of(row)  # every slice in its canonical view (AP along the rows)
        sp = view.canonical_spacing(_spacing(row, None))
        if segmenter is None:
            lm = view.to_canonical(load_label_map(row))
            sac, disc = lm == 1, lm == 2
        else:
            from ..segmentation.inference import predict_rows

            (o,) = predict_rows(segmenter, [row])
            sac, disc = o.labels == 1, o.labels == 2
        m = measure_level(sac, disc, sp, largest_component=largest_component, diameter_method=diameter_method)
        if not m.valid:
            n_empty += 1
        rec = {"patient_id": row["patient_id"], "split": row["split"], "level": row["level"],
               "valid": m.valid, **{k: getattr(m, k) for k in _FEATURES}}
        out.append(rec)
        if (i + 1) % 200 == 0:
            log(f"measured {i + 1}/{len(rows)} rows")
    if n_empty:
        log(f"warning: {n_empty} row(s) with an empty dural sac or disc mask (features NaN, left out)")
    return out


def _grade(row: dict, target: str) -> int | None:
    v = row.get(target, "")
    if v == "" or v is None:
        return None
    try:
        g = int(float(v))
    except ValueError:
        raise InputError(f"manifest line {row.get('_line')}, column {target}", f"{v!r} is not a grade 0-3") from None
    if g not in (0, 1, 2, 3):
        raise InputError(f"manifest line {row.get('_line')}, column {target}", f"{v!r} is not a grade 0-3")
    return g


def run_cli(args) -> int:
    """Entry point of ``lumbargrade train tree`` (see the module docstring)."""
    import numpy as np

    from ..manifest import data_paths, read_manifests
    from ..metrics import accuracy, linear_weighted_kappa
    from .tree import PAPER_TREE, fit_feature_tree, select_feature

    t_start = time.perf_counter()
    truth = bool(getattr(args, "truth_masks", False))
    seg_path = getattr(args, "segmentation", None)
    if truth and seg_path:
        raise InputError("train tree", "give either --truth-masks or --segmentation, not both")
    if not truth and not seg_path:
        raise InputError("train tree", "say which masks to fit on: --segmentation RUN_OR_PACK (predicted "
                         "masks, as in the paper) or --truth-masks")
    cfg = resolve_config(getattr(args, "config", None), getattr(args, "set", None), getattr(args, "seed", 0) or 0)
    cfg["masks"] = "truth" if truth else "predicted"
    cfg["segmentation"] = str(seg_path) if seg_path else None
    datas = data_paths(args.data)
    where = ", ".join(datas)
    cfg["data"] = datas[0] if len(datas) == 1 else datas

    out = Path(args.out)
    if out.exists() and not out.is_dir():
        raise InputError(out, "exists and is not a folder")
    if (out / "tree.json").exists() and not getattr(args, "overwrite", False):
        raise InputError(out, "already holds a fitted tree (tree.json); use --overwrite to replace it")
    out.mkdir(parents=True, exist_ok=True)
    log_f = open(out / "train.log", "w")  # noqa: SIM115 - closed in the finally below

    def log(msg: str) -> None:
        line = f"[{time.strftime('%H:%M:%S')}] {msg}"
        print(line, flush=True)
        log_f.write(line + "\n")
        log_f.flush()

    try:
        rows = read_manifests(datas)
        target = cfg["target"]
        if not any(target in r for r in rows):
            raise InputError(where, f"the manifest has no {target!r} column (reader-1 grades)")
        if truth and not any(r.get("label_map") for r in rows):
            raise InputError(where, "--truth-masks needs the label_map column")
        graded = [r for r in rows if r.get("split") in ("train", "val") and _grade(r, target) is not None]
        n_tr = sum(r["split"] == "train" for r in graded)
        n_va = sum(r["split"] == "val" for r in graded)
        if n_tr < 2:
            raise InputError(where, f"fewer than 2 graded rows in the train split ({n_tr})")
        if n_va < 1 and cfg["feature"] == "auto":
            raise InputError(where, "no graded rows in the val split to choose the feature on "
                             "(add some, or name one with --set feature=ap_ratio)")
        log(f"manifest {where}: {len(rows)} rows; {n_tr} train and {n_va} val rows with a {target} grade")
        segmenter = None
        if not truth:
            try:
                from ..segmentation.inference import load_segmenter
            except ModuleNotFoundError as e:
                if e.name and e.name.startswith("lumbargrade"):
                    raise InputError(seg_path, "predicted masks need lumbargrade.segmentation.inference, "
                                     "which is not available in this build; use --truth-masks") from e
                raise
            sp_dir = Path(seg_path)
            if not sp_dir.is_dir():
                raise InputError(sp_dir, "segmentation run or model pack folder not found")
            if not (sp_dir / "config.json").is_file() and (sp_dir / "segmentation" / "config.json").is_file():
                sp_dir = sp_dir / "segmentation"  # a model pack: its segmentation component
            segmenter = load_segmenter(sp_dir)
            log(f"masks predicted by {seg_path}")
        else:
            log("masks from the ground-truth label maps")
        recs = measure_rows(graded, segmenter, bool(cfg["largest_component"]), log, cfg["diameter_method"])
        grades = np.array([_grade(r, target) for r in graded])
        split = np.array([r["split"] for r in graded])

        def data(s):
            sel = split == s
            return {k: np.array([rec[k] for rec, m in zip(recs, sel) if m], float) for k in _FEATURES}, grades[sel]

        train, val = data("train"), data("val")
        fit_kw = {"max_depth": cfg["max_depth"], "max_leaf_nodes": cfg["max_leaf_nodes"],
                  "class_weight": cfg["class_weight"], "random_state": cfg["seed"]}
        candidates = list(cfg["candidates"]) if cfg["feature"] == "auto" else [cfg["feature"]]
        methods = list(THRESHOLD_METHODS) if cfg["thresholds"] == "auto" else [cfg["thresholds"]]
        by_method: dict = {}
        if n_va:
            best_key = None
            for method in methods:
                t, sc = select_feature(train, val, candidates, thresholds=method, **fit_kw)
                kap = sc[t.feature_name]["kappa"]
                by_method[method] = {"feature": t.feature_name, "val_kappa": kap,
                                     "val_accuracy": sc[t.feature_name]["accuracy"],
                                     "rules": sc[t.feature_name]["rules"]}
                key = -math.inf if kap is None else kap
                if best_key is None or key > best_key:  # ties keep the first: gini, the paper's
                    tree, scores, best_key = t, sc, key
            if len(methods) > 1:
                tree.training = {**tree.training, "thresholds_selected_by": "validation linear weighted kappa"}
        else:
            method = "gini" if cfg["thresholds"] == "auto" else cfg["thresholds"]
            tree, _ = fit_feature_tree(train[0], train[1], cfg["feature"], thresholds=method, **fit_kw)
            scores = {}
        tree.training = {**tree.training, "masks": cfg["masks"], "data": cfg["data"], "target": target,
                         "diameter_method": cfg["diameter_method"]}
        if cfg["diameter_method"] == "caliper" and tree.feature_name == "ap_ratio":
            tree.feature_definitions = [("dural sac AP extent / disc AP extent (mm / mm, caliper extents "
                                        "along AP; measure with diameter_method='caliper')")]

        metrics: dict = {"selected_feature": tree.feature_name, "masks": cfg["masks"],
                         "thresholds": tree.training.get("thresholds", "gini"),
                         "n_train": int(n_tr), "n_val": int(n_va), "candidates": scores}
        if by_method:
            metrics["threshold_methods"] = by_method
        if n_va:
            paper = {}
            for f in PAPER_TREE.compatible_features:
                xv, yv = val[0][f], val[1]
                ok = np.isfinite(xv)
                if ok.any():
                    pred = PAPER_TREE.predict(xv[ok])
                    k = linear_weighted_kappa(yv[ok], pred, n_classes=4)
                    paper[f] = {"kappa": None if math.isnan(k) else k, "accuracy": accuracy(yv[ok], pred)}
            metrics["paper_thresholds_on_val"] = paper
            metrics["val_kappa"] = scores[tree.feature_name]["kappa"]
            metrics["val_accuracy"] = scores[tree.feature_name]["accuracy"]
        for method, sc in by_method.items():
            kap = "n/a" if sc["val_kappa"] is None else f"{sc['val_kappa']:.3f}"
            log(f"  thresholds {method:<6s} best feature {sc['feature']:<20s} val kappa {kap}")
        log(f"  kept: {tree.training.get('thresholds', 'gini')} thresholds; candidates with them:")
        for name, sc in scores.items():
            kap = "n/a" if sc["kappa"] is None else f"{sc['kappa']:.3f}"
            acc = "n/a" if sc["accuracy"] is None else f"{sc['accuracy']:.3f}"
            log(f"  {name:<20s} val kappa {kap}  accuracy {acc}")
        for f, sc in metrics.get("paper_thresholds_on_val", {}).items():
            kap = "n/a" if sc["kappa"] is None else f"{sc['kappa']:.3f}"
            log(f"  paper 0.31/0.23/0.19 on {f:<14s} val kappa {kap}  accuracy {sc['accuracy']:.3f}")

        tree.save(out / "tree.json")
        (out / "config.json").write_text(json.dumps(cfg, indent=2) + "\n")
        metrics["seconds"] = round(time.perf_counter() - t_start, 2)
        (out / "metrics.json").write_text(json.dumps(metrics, indent=2) + "\n")
        with open(out / "measurements.csv", "w", newline="") as f:
            w = csv.DictWriter(f, fieldnames=["patient_id", "split", "level", target, "valid", *_FEATURES])
            w.writeheader()
            for rec, g in zip(recs, grades):
                w.writerow({**rec, target: int(g)})
        log(f"tree on {tree.feature_name} ({tree.feature_definitions[0]}):")
        for rule in tree.rules_in_words():
            log(f"  {rule}")
        log(f"wrote {out / 'tree.json'}")
    finally:
        log_f.close()
    return 0
