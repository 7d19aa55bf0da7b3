"""Interpretable decision tree for the central canal grade on a dural-sac-to-disc ratio.

The tree is fitted with scikit-learn's ``DecisionTreeClassifier`` (``max_depth=3,
max_leaf_nodes=4`` as in the paper) and then stored as plain data (:class:`RatioTree`): the
feature, its definition, the thresholds and the leaves' class frequencies. It is saved as JSON,
never pickled, and predicts without scikit-learn. Split semantics are scikit-learn's: at a node go
left when ``value <= threshold`` (values are rounded to float32 first, as scikit-learn does).

Grades: ``0 normal, 1 mild, 2 moderate, 3 severe`` (see docs/architecture.md).
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np

__all__ = [
    "CANDIDATE_FEATURES",
    "CENTRAL_GRADE_NAMES",
    "NORMALISED_SAC_AREA",
    "PAPER_TREE",
    "THRESHOLD_METHODS",
    "RatioTree",
    "feature_values",
    "fit_feature_tree",
    "fit_normalised_tree",
    "fit_tree",
    "normalised_sac_area",
    "paper_tree",
    "refit_thresholds_for_kappa",
    "select_feature",
    "tree_from_sklearn",
]

from .names import CENTRAL_GRADES as CENTRAL_GRADE_NAMES

#: The dural sac area normalised by disc size, ``dural_sac_area_mm2 / disc_area_mm2 ** a``, with the
#: exponent ``a`` fitted on the training data (``a = 1``: the area ratio; ``a = 0``: the absolute
#: dural sac area). Not a stored measurement: the tree computes it (:meth:`RatioTree.value_of`).
NORMALISED_SAC_AREA = "normalised_sac_area"
#: Exponents tried for :data:`NORMALISED_SAC_AREA`.
NORMALISED_EXPONENTS = tuple(round(0.05 * i, 2) for i in range(21))
#: Features tried by :func:`select_feature` (names of :class:`lumbargrade.measurements.Measurements`,
#: and :data:`NORMALISED_SAC_AREA`).
CANDIDATE_FEATURES = ("area_ratio", "ap_ratio", "sqrt_area_ratio", "dural_sac_area_mm2", NORMALISED_SAC_AREA)

_LEAF = -1
#: How a tree's thresholds are set: scikit-learn's greedy (Gini) splits, or those moved to the best
#: training kappa (:func:`refit_thresholds_for_kappa`).
THRESHOLD_METHODS = ("gini", "kappa")


def normalised_sac_area(sac_mm2, disc_mm2, exponent: float) -> np.ndarray:
    """``sac / disc ** exponent`` (areas in mm², arrays or scalars); NaN where either area is not
    finite or the disc area is not positive."""
    sac, disc = np.asarray(sac_mm2, dtype=np.float64), np.asarray(disc_mm2, dtype=np.float64)
    ok = np.isfinite(sac) & np.isfinite(disc) & (disc > 0)
    return np.where(ok, sac / np.where(ok, disc, 1.0) ** float(exponent), np.nan)


def _definition(name: str, exponent: float | None = None) -> str:
    from ..measurements import MEASUREMENT_DEFINITIONS

    if name == NORMALISED_SAC_AREA:
        a = "a" if exponent is None else _fmt(exponent)
        return (f"dural sac area / disc area^{a} (mm² / (mm²)^{a}; the exponent is fitted on the training "
                "data: 1 gives the area ratio, 0 the absolute dural sac area)")

    return MEASUREMENT_DEFINITIONS.get(name, name)


def _fmt(v: float) -> str:
    return f"{v:.4g}"


@dataclass
class RatioTree:
    """A fitted decision tree as plain data.

    ``nodes[i]``: ``{"feature": j or -1 for a leaf, "threshold": t, "left": i, "right": i,
    "frequencies": [per class]}`` with node 0 the root; go left when ``x[j] <= t``.
    ``frequencies`` are the (class-weighted) training class frequencies in the node, over
    ``classes``. ``compatible_features`` lists the measurements the thresholds may be applied to
    (used by the paper preset, whose ratio definition is uncertain). ``exponent``: the disc-area
    exponent of the feature :data:`NORMALISED_SAC_AREA` (None for the other features).
    """

    feature_names: list[str]
    feature_definitions: list[str]
    nodes: list[dict]
    classes: list[int] = field(default_factory=lambda: [0, 1, 2, 3])
    class_names: list[str] = field(default_factory=lambda: list(CENTRAL_GRADE_NAMES))
    name: str = "fitted"
    note: str = ""
    compatible_features: list[str] | None = None
    training: dict = field(default_factory=dict)
    exponent: float | None = None

    # ------------------------------------------------------------------ basics
    @property
    def feature_name(self) -> str:
        """The feature of a one-feature tree (the names joined with ',' otherwise)."""
        return ",".join(self.feature_names)

    @property
    def feature(self) -> str:
        """Alias of :attr:`feature_name`."""
        return self.feature_name

    @property
    def n_features(self) -> int:
        return len(self.feature_names)

    def value_of(self, measurements: Mapping[str, float]) -> float | None:
        """The one-feature tree's input for one level from its measurements (a dict of
        :class:`lumbargrade.measurements.Measurements` fields); None when it cannot be computed
        (a missing or non-finite measurement, e.g. from an empty mask)."""
        if self.n_features != 1:
            raise ValueError("value_of needs a one-feature tree")
        name = self.feature_names[0]
        if name == NORMALISED_SAC_AREA:
            sac, disc = measurements.get("dural_sac_area_mm2"), measurements.get("disc_area_mm2")
            v = None if sac is None or disc is None else float(normalised_sac_area(sac, disc, self.exponent))
        else:
            v = measurements.get(name)
        return None if v is None or not np.isfinite(v) else float(v)

    def thresholds(self) -> list[float]:
        """The split thresholds, sorted (ascending)."""
        return sorted(float(n["threshold"]) for n in self.nodes if n["feature"] != _LEAF)

    def _as_2d(self, values) -> np.ndarray:
        x = np.asarray(values, dtype=np.float64)
        if x.ndim == 0:
            x = x.reshape(1, 1)
        elif x.ndim == 1:
            x = x.reshape(-1, 1) if self.n_features == 1 else x.reshape(1, -1)
        if x.shape[1] != self.n_features:
            raise ValueError(f"expected {self.n_features} feature(s) {self.feature_names}, got {x.shape[1]}")
        if not np.all(np.isfinite(x)):
            raise ValueError("feature values must be finite (a NaN ratio comes from an empty mask)")
        return x.astype(np.float32).astype(np.float64)  # scikit-learn compares float32 inputs

    def _leaves(self, x: np.ndarray) -> np.ndarray:
        thr = np.array([np.nan if n["feature"] == _LEAF else float(n["threshold"]) for n in self.nodes])
        return _route(self.nodes, thr, x)

    def predict_proba(self, values) -> np.ndarray:
        """``(n, n_classes)`` leaf class frequencies for ``values`` (``(n,)`` for one feature, or ``(n, k)``)."""
        x = self._as_2d(values)
        freq = np.array([self.nodes[i]["frequencies"] for i in self._leaves(x)], dtype=float)
        return freq.reshape(x.shape[0], len(self.classes))

    def predict(self, values) -> np.ndarray:
        """Grades (values of ``classes``) for ``values``."""
        p = self.predict_proba(values)
        return np.asarray(self.classes)[np.argmax(p, axis=1)]

    def _leaf_class(self, i: int) -> int:
        return int(self.classes[int(np.argmax(self.nodes[i]["frequencies"]))])

    def _grade_name(self, g: int) -> str:
        return self.class_names[self.classes.index(g)]

    # ------------------------------------------------------------------ rules in words
    def _intervals(self) -> list[tuple[float, float, int]]:
        """One-feature tree: ``(lo, hi, grade)`` for each leaf (lo < x <= hi), merged where
        neighbours share a grade, sorted by ``lo`` descending."""
        out = []

        def walk(i, lo, hi):
            n = self.nodes[i]
            if n["feature"] == _LEAF:
                out.append((lo, hi, self._leaf_class(i)))
                return
            t = float(n["threshold"])
            walk(n["left"], lo, min(hi, t))
            walk(n["right"], max(lo, t), hi)

        walk(0, -math.inf, math.inf)
        out = [iv for iv in out if iv[0] < iv[1]]
        out.sort(key=lambda iv: iv[0])
        merged: list[list] = []
        for lo, hi, g in out:
            if merged and merged[-1][2] == g and merged[-1][1] == lo:
                merged[-1][1] = hi
            else:
                merged.append([lo, hi, g])
        return [tuple(m) for m in reversed(merged)]

    def _interval_words(self, lo: float, hi: float, g: int, name: str) -> str:
        if lo == -math.inf and hi == math.inf:
            cond = f"any {name}"
        elif lo == -math.inf:
            cond = f"{name} <= {_fmt(hi)}"
        elif hi == math.inf:
            cond = f"{name} > {_fmt(lo)}"
        else:
            cond = f"{_fmt(lo)} < {name} <= {_fmt(hi)}"
        return f"{cond} -> {self._grade_name(g)}"

    def _paths(self) -> list[tuple[list[str], int, int]]:
        out = []

        def walk(i, conds):
            n = self.nodes[i]
            if n["feature"] == _LEAF:
                out.append((conds, self._leaf_class(i), i))
                return
            f, t = self.feature_names[n["feature"]], _fmt(float(n["threshold"]))
            walk(n["left"], conds + [f"{f} <= {t}"])
            walk(n["right"], conds + [f"{f} > {t}"])

        walk(0, [])
        return out

    def rules_in_words(self, name: str | None = None) -> list[str]:
        """The rules, e.g. ``["ap_ratio > 0.31 -> normal", "0.23 < ap_ratio <= 0.31 -> mild", ...]``.

        One-feature trees give one interval per grade band (highest values first); trees on several
        features give one path per leaf (``"a <= 1 and b > 2 -> mild"``). ``name`` replaces the
        feature name in a one-feature tree.
        """
        if self.n_features == 1:
            nm = name or self.feature_names[0]
            return [self._interval_words(lo, hi, g, nm) for lo, hi, g in self._intervals()]
        return [(" and ".join(c) or "always") + f" -> {self._grade_name(g)}" for c, g, _ in self._paths()]

    def rule_for(self, value, name: str | None = None) -> str:
        """The rule that applies to one value (one-feature tree: its grade band; otherwise the path)."""
        x = self._as_2d(value)
        if x.shape[0] != 1:
            raise ValueError("rule_for takes one value")
        if self.n_features == 1:
            v = float(x[0, 0])
            nm = name or self.feature_names[0]
            for lo, hi, g in self._intervals():
                if lo < v <= hi:
                    return self._interval_words(lo, hi, g, nm)
        leaf = int(self._leaves(x)[0])
        for conds, g, i in self._paths():
            if i == leaf:
                return (" and ".join(conds) or "always") + f" -> {self._grade_name(g)}"
        raise AssertionError("leaf not found")  # pragma: no cover

    # ------------------------------------------------------------------ JSON
    def to_dict(self) -> dict:
        d = asdict(self)
        d["format"] = "lumbargrade.ratio_tree/1"
        d["rules"] = self.rules_in_words()
        return d

    def to_json(self, indent: int | None = 2) -> str:
        return json.dumps(self.to_dict(), indent=indent)

    @classmethod
    def from_dict(cls, d: Mapping) -> RatioTree:
        if d.get("format") not in (None, "lumbargrade.ratio_tree/1"):
            raise ValueError(f"unknown tree format {d.get('format')!r}")
        keys = {"feature_names", "feature_definitions", "nodes", "classes", "class_names", "name",
                "note", "compatible_features", "training", "exponent"}
        tree = cls(**{k: d[k] for k in keys if k in d})
        tree.validate()
        return tree

    @classmethod
    def from_json(cls, text: str) -> RatioTree:
        return cls.from_dict(json.loads(text))

    def save(self, path: str | Path) -> None:
        Path(path).write_text(self.to_json() + "\n")

    @classmethod
    def load(cls, path: str | Path) -> RatioTree:
        """Read a tree JSON file; a bad file raises :class:`~lumbargrade.errors.InputError`."""
        from ..errors import InputError

        try:
            return cls.from_json(Path(path).read_text())
        except FileNotFoundError:
            raise InputError(path, "tree file not found") from None
        except (ValueError, KeyError, TypeError) as e:
            raise InputError(path, f"not a valid decision-tree JSON file ({e})") from None

    def validate(self) -> None:
        """Check the node structure (raises ValueError)."""
        n = len(self.nodes)
        if n == 0:
            raise ValueError("tree has no nodes")
        if len(self.feature_definitions) != len(self.feature_names):
            raise ValueError("one definition per feature needed")
        if NORMALISED_SAC_AREA in self.feature_names and (
                self.n_features != 1 or self.exponent is None or not (0.0 <= self.exponent <= 1.0)):
            raise ValueError(f"{NORMALISED_SAC_AREA} needs a one-feature tree and an exponent in [0, 1]")
        for i, nd in enumerate(self.nodes):
            if nd["feature"] == _LEAF:
                if len(nd["frequencies"]) != len(self.classes):
                    raise ValueError(f"node {i}: frequencies do not match the classes")
            else:
                if not (0 <= nd["feature"] < self.n_features):
                    raise ValueError(f"node {i}: bad feature index")
                if not (0 < nd["left"] < n and 0 < nd["right"] < n):
                    raise ValueError(f"node {i}: bad child index")


def tree_from_sklearn(clf, feature_names: Sequence[str], classes: Sequence[int] = (0, 1, 2, 3),
                      class_names: Sequence[str] = CENTRAL_GRADE_NAMES, **meta) -> RatioTree:
    """Convert a fitted ``DecisionTreeClassifier`` to a :class:`RatioTree` (class frequencies are
    mapped onto ``classes``; grades absent from training get frequency 0)."""
    t = clf.tree_
    classes = [int(c) for c in classes]
    col = [classes.index(int(c)) for c in clf.classes_]
    nodes = []
    for i in range(t.node_count):
        v = np.asarray(t.value[i]).reshape(-1).astype(float)
        freq = np.zeros(len(classes))
        freq[col] = v
        s = freq.sum()
        freq = freq / s if s > 0 else freq
        leaf = t.children_left[i] == t.children_right[i]
        nodes.append({
            "feature": _LEAF if leaf else int(t.feature[i]),
            "threshold": None if leaf else float(t.threshold[i]),
            "left": None if leaf else int(t.children_left[i]),
            "right": None if leaf else int(t.children_right[i]),
            "frequencies": [float(f) for f in freq],
            "n_samples": int(t.n_node_samples[i]),
        })
    names = list(feature_names)
    return RatioTree(feature_names=names, feature_definitions=[_definition(n) for n in names],
                     nodes=nodes, classes=classes, class_names=list(class_names), **meta)


def fit_tree(X_ratio, grades, feature_name: str | Sequence[str], max_depth: int = 3,
             max_leaf_nodes: int = 4, class_weight=None, random_state: int = 0,
             classes: Sequence[int] = (0, 1, 2, 3),
             class_names: Sequence[str] = CENTRAL_GRADE_NAMES, thresholds: str = "gini") -> RatioTree:
    """Fit ``DecisionTreeClassifier(max_depth, max_leaf_nodes, class_weight)`` on a ratio and return
    it as a :class:`RatioTree`.

    ``X_ratio``: ``(n,)`` for one feature or ``(n, k)``; ``feature_name``: its name (or k names).
    Rows with a non-finite value are dropped (the count is kept in ``tree.training``).
    ``thresholds``: ``"gini"`` keeps scikit-learn's greedy splits (as the paper); ``"kappa"`` then
    moves the thresholds of a one-feature tree to the values that maximise the linearly weighted
    kappa on these rows (:func:`refit_thresholds_for_kappa`; same shape, same number of leaves).
    """
    if thresholds not in THRESHOLD_METHODS:
        raise ValueError(f"thresholds must be one of {THRESHOLD_METHODS}, got {thresholds!r}")
    from sklearn.tree import DecisionTreeClassifier

    x = np.asarray(X_ratio, dtype=float)
    if x.ndim == 1:
        x = x.reshape(-1, 1)
    names = [feature_name] if isinstance(feature_name, str) else list(feature_name)
    if x.shape[1] != len(names):
        raise ValueError(f"{x.shape[1]} feature column(s) but {len(names)} name(s)")
    y = np.asarray(grades).astype(int).ravel()
    if y.shape[0] != x.shape[0]:
        raise ValueError("X and grades differ in length")
    ok = np.all(np.isfinite(x), axis=1)
    if ok.sum() < 2:
        raise ValueError("fewer than two rows with finite feature values")
    clf = DecisionTreeClassifier(max_depth=max_depth, max_leaf_nodes=max_leaf_nodes,
                                 class_weight=class_weight, random_state=random_state)
    clf.fit(x[ok], y[ok])
    training = {"n": int(ok.sum()), "n_dropped_nonfinite": int((~ok).sum()), "max_depth": max_depth,
                "max_leaf_nodes": max_leaf_nodes, "class_weight": class_weight,
                "class_counts": {str(c): int((y[ok] == c).sum()) for c in classes}}
    tree = tree_from_sklearn(clf, names, classes, class_names, training=training)
    if thresholds == "kappa" and tree.n_features == 1:
        tree = refit_thresholds_for_kappa(tree, x[ok, 0], y[ok], class_weight=class_weight)
    tree.training["thresholds"] = thresholds if tree.n_features == 1 else "gini"
    return tree


def _route(nodes: list[dict], thresholds: np.ndarray, x: np.ndarray) -> np.ndarray:
    """Leaf index of each row of ``x`` (``(n, n_features)``, or ``(n,)`` for one feature) through
    ``nodes`` with ``thresholds[i]`` at internal node ``i`` (left when ``value <= threshold``)."""
    x = np.asarray(x, dtype=np.float64)
    x = x[:, None] if x.ndim == 1 else x
    leaf = np.array([n["feature"] == _LEAF for n in nodes])
    feature = np.array([0 if n["feature"] == _LEAF else n["feature"] for n in nodes])
    left = np.array([-1 if n["left"] is None else n["left"] for n in nodes])
    right = np.array([-1 if n["right"] is None else n["right"] for n in nodes])
    t = np.where(leaf, 0.0, thresholds)
    rows = np.arange(x.shape[0])
    at = np.zeros(x.shape[0], dtype=int)
    for _ in range(len(nodes)):
        inner = ~leaf[at]
        if not inner.any():
            break
        at = np.where(inner, np.where(x[rows, feature[at]] <= t[at], left[at], right[at]), at)
    return at


def _leaf_counts(leaf: np.ndarray, y_idx: np.ndarray, w: np.ndarray, n_nodes: int, k: int) -> np.ndarray:
    return np.bincount(leaf * k + y_idx, weights=w, minlength=n_nodes * k).reshape(n_nodes, k)


def refit_thresholds_for_kappa(tree: RatioTree, x, grades, class_weight=None, n_candidates: int = 400,
                               n_rounds: int = 4) -> RatioTree:
    """The same one-feature tree with its thresholds moved to maximise the linearly weighted kappa
    on ``(x, grades)`` (the training rows), each leaf predicting its (class-weighted) majority grade
    as before.

    The greedy splits of a decision tree minimise impurity one node at a time; the grading is
    scored by kappa over all nodes at once. Coordinate ascent over at most ``n_candidates``
    cut points (midpoints between quantiles of ``x``), each threshold kept between its ancestors'
    so the tree's shape and the order of its thresholds do not change, and no leaf is left without
    training rows; ties keep the current value. Leaf frequencies and sample counts are recomputed
    for the new thresholds.
    """
    from ..metrics import linear_weighted_kappa

    x = np.asarray(x, dtype=np.float64).astype(np.float32).astype(np.float64)
    y = np.asarray(grades).astype(int)
    classes = list(tree.classes)
    k = len(classes)
    y_idx = np.array([classes.index(int(g)) for g in y])
    if class_weight == "balanced":
        cnt = np.bincount(y_idx, minlength=k).astype(float)
        w = (len(y) / (k * np.maximum(cnt, 1.0)))[y_idx]
    else:
        w = np.ones(len(y))
    nodes = [dict(n) for n in tree.nodes]
    internal = [i for i, n in enumerate(nodes) if n["feature"] != _LEAF]
    if not internal or len(np.unique(x)) < 2:
        return tree
    thr = np.array([float(n["threshold"]) if n["feature"] != _LEAF else np.nan for n in nodes])
    u = np.unique(np.quantile(x, np.linspace(0.0, 1.0, n_candidates + 1)))
    cand = 0.5 * (u[:-1] + u[1:])

    def bounds(i: int) -> tuple[float, float]:
        """The interval node ``i``'s threshold must stay in: between its ancestors' thresholds."""
        out: dict[int, tuple[float, float]] = {}

        def walk(j, lo, hi):
            out[j] = (lo, hi)
            if nodes[j]["feature"] != _LEAF:
                walk(nodes[j]["left"], lo, min(hi, thr[j]))
                walk(nodes[j]["right"], max(lo, thr[j]), hi)

        walk(0, -math.inf, math.inf)
        return out[i]

    leaves = [i for i, n in enumerate(nodes) if n["feature"] == _LEAF]

    def score(t: np.ndarray) -> float:
        leaf = _route(nodes, t, x)
        counts = _leaf_counts(leaf, y_idx, w, len(nodes), k)
        if (counts[leaves].sum(axis=1) <= 0).any():  # an empty leaf would grade unseen values at random
            return -math.inf
        pred = np.asarray(classes)[np.argmax(counts, axis=1)][leaf]
        kap = linear_weighted_kappa(y, pred, n_classes=max(classes) + 1)
        return -math.inf if math.isnan(kap) else kap

    best = score(thr)
    start = best
    for _ in range(n_rounds):
        moved = False
        for i in internal:
            lo, hi = bounds(i)
            for v in cand[(cand > lo) & (cand < hi)]:
                t = thr.copy()
                t[i] = v
                s = score(t)
                if s > best + 1e-12:
                    best, thr, moved = s, t, True
        if not moved:
            break
    leaf = _route(nodes, thr, x)
    counts = _leaf_counts(leaf, y_idx, w, len(nodes), k)
    n_samples = np.bincount(leaf, minlength=len(nodes))
    # a node's counts: the sum over its leaves
    for i in reversed(range(len(nodes))):
        n = nodes[i]
        if n["feature"] != _LEAF:
            n["threshold"] = float(thr[i])
            counts[i] = counts[n["left"]] + counts[n["right"]]
            n_samples[i] = n_samples[n["left"]] + n_samples[n["right"]]
    for i, n in enumerate(nodes):
        s = counts[i].sum()
        n["frequencies"] = [float(f) for f in (counts[i] / s if s > 0 else counts[i])]
        n["n_samples"] = int(n_samples[i])
    training = {**tree.training, "thresholds": "kappa",
                "training_kappa_gini_thresholds": round(float(start), 4),
                "training_kappa": round(float(best), 4)}
    return RatioTree(feature_names=list(tree.feature_names), feature_definitions=list(tree.feature_definitions),
                     nodes=nodes, classes=classes, class_names=list(tree.class_names), name=tree.name,
                     note=tree.note, compatible_features=tree.compatible_features, training=training,
                     exponent=tree.exponent)


def fit_normalised_tree(sac_mm2, disc_mm2, grades, exponents: Sequence[float] = NORMALISED_EXPONENTS,
                        **fit_kwargs) -> RatioTree:
    """Fit a tree on ``dural sac area / disc area ** a`` (:data:`NORMALISED_SAC_AREA`) for each
    exponent ``a`` and keep the one with the best linearly weighted kappa on these (training) rows
    (ties: the exponent closest to 1, the area ratio). Areas in mm²; ``tree.training["exponents"]``
    records the kappa of every exponent tried."""
    from ..metrics import linear_weighted_kappa

    y = np.asarray(grades).astype(int)
    k = len(fit_kwargs.get("classes", (0, 1, 2, 3)))
    best, best_key, tried = None, None, {}
    for a in exponents:
        x = normalised_sac_area(sac_mm2, disc_mm2, a)
        ok = np.isfinite(x)
        tree = fit_tree(x, y, NORMALISED_SAC_AREA, **fit_kwargs)
        tree.exponent = float(a)
        kap = linear_weighted_kappa(y[ok], tree.predict(x[ok]), n_classes=k)
        tried[f"{a:g}"] = None if math.isnan(kap) else round(float(kap), 4)
        key = (-math.inf if math.isnan(kap) else kap, -abs(1.0 - a))
        if best_key is None or key > best_key:
            best, best_key = tree, key
    best.feature_definitions = [_definition(NORMALISED_SAC_AREA, best.exponent)]
    best.training = {**best.training, "exponent_selected_by": "training linear weighted kappa",
                     "exponents": tried}
    return best


def fit_feature_tree(features: Mapping[str, Sequence[float]], grades, name: str,
                     **fit_kwargs) -> tuple[RatioTree, np.ndarray]:
    """Fit the tree of one candidate feature on ``features`` (measurement name -> array); returns
    the tree and that feature's values on these rows (:data:`NORMALISED_SAC_AREA` is computed from
    the two areas, with its exponent fitted here)."""
    need = ("dural_sac_area_mm2", "disc_area_mm2") if name == NORMALISED_SAC_AREA else (name,)
    if any(n not in features for n in need):
        raise KeyError(f"feature {name!r} missing from the data")
    if name == NORMALISED_SAC_AREA:
        tree = fit_normalised_tree(features["dural_sac_area_mm2"], features["disc_area_mm2"], grades, **fit_kwargs)
        return tree, normalised_sac_area(features["dural_sac_area_mm2"], features["disc_area_mm2"], tree.exponent)
    x = np.asarray(features[name], float)
    return fit_tree(x, grades, name, **fit_kwargs), x


def feature_values(tree: RatioTree, features: Mapping[str, Sequence[float]]) -> np.ndarray:
    """A one-feature tree's input on rows given as ``features`` (measurement name -> array)."""
    name = tree.feature_names[0]
    if name == NORMALISED_SAC_AREA:
        return normalised_sac_area(features["dural_sac_area_mm2"], features["disc_area_mm2"], tree.exponent)
    return np.asarray(features[name], float)


def select_feature(train: tuple[Mapping[str, Sequence[float]], Sequence[int]],
                   val: tuple[Mapping[str, Sequence[float]], Sequence[int]],
                   candidates: Sequence[str] = CANDIDATE_FEATURES, **fit_kwargs
                   ) -> tuple[RatioTree, dict[str, dict]]:
    """Fit one tree per candidate feature on ``train`` and keep the one with the best validation
    linearly weighted kappa (ties: accuracy, then candidate order).

    ``train`` / ``val``: ``(features, grades)`` with ``features[name]`` an array per item.
    Returns ``(best_tree, scores)``, ``scores[name] = {"kappa", "accuracy", "n_val", "rules"}``;
    validation rows with a non-finite value are left out of that feature's score.
    """
    from ..metrics import accuracy, linear_weighted_kappa

    ftr, ytr = train
    fva, yva = val
    ytr, yva = np.asarray(ytr).astype(int), np.asarray(yva).astype(int)
    k = len(fit_kwargs.get("classes", (0, 1, 2, 3)))
    best, best_key, scores = None, None, {}
    for name in candidates:
        need = ("dural_sac_area_mm2", "disc_area_mm2") if name == NORMALISED_SAC_AREA else (name,)
        if any(n not in fva for n in need):
            raise KeyError(f"feature {name!r} missing from the data")
        tree, _ = fit_feature_tree(ftr, ytr, name, **fit_kwargs)
        xv = feature_values(tree, fva)
        ok = np.isfinite(xv)
        if ok.sum() == 0:
            scores[name] = {"kappa": None, "accuracy": None, "n_val": 0, "rules": tree.rules_in_words()}
            continue
        pred = tree.predict(xv[ok])
        kap = linear_weighted_kappa(yva[ok], pred, n_classes=k)
        acc = accuracy(yva[ok], pred)
        scores[name] = {"kappa": None if math.isnan(kap) else kap, "accuracy": acc,
                        "n_val": int(ok.sum()), "rules": tree.rules_in_words()}
        key = (-math.inf if math.isnan(kap) else kap, acc)
        if best_key is None or key > best_key:
            best, best_key = tree, key
    if best is None:
        raise ValueError("no candidate feature could be scored on the validation data")
    best.training = {**best.training, "selected_by": "validation linear weighted kappa",
                     "validation": scores[best.feature_name]}
    return best, scores


def paper_tree(feature_name: str = "ratio") -> RatioTree:
    """The paper's thresholds (Bharadwaj 2023): > 0.31 normal, > 0.23 mild, > 0.19 moderate,
    otherwise severe.

    The paper calls the ratio "the ratio between the cross-sectional areas of the dural sac and
    the intervertebral disk", but as a whole-disc area ratio these cut-offs are anatomically
    impossible (a normal sac of ~150 mm² over a 1300-2000 mm² disc gives 0.08-0.12; spec section 0).
    They fit an AP-diameter ratio or the square root of the area ratio, so the preset lists
    ``compatible_features = ["ap_ratio", "sqrt_area_ratio"]`` and not ``area_ratio``.
    """
    def leaf(g):
        return {"feature": _LEAF, "threshold": None, "left": None, "right": None,
                "frequencies": [1.0 if i == g else 0.0 for i in range(4)]}

    def split(t, left, right):
        # thresholds stored as float32 values, since inputs are compared after float32 rounding
        return {"feature": 0, "threshold": float(np.float32(t)), "left": left, "right": right,
                "frequencies": [0.25] * 4}

    nodes = [split(0.23, 1, 2), split(0.19, 3, 4), split(0.31, 5, 6),
             leaf(3), leaf(2), leaf(1), leaf(0)]
    return RatioTree(
        feature_names=[feature_name],
        feature_definitions=[("dural-sac-to-disc ratio of Bharadwaj et al. 2023 (stated as an area "
                              "ratio; the thresholds only fit an AP-diameter ratio or sqrt(area ratio))")],
        nodes=nodes, name="paper",
        note="Thresholds 0.31/0.23/0.19 from Bharadwaj et al., Eur Radiol 2023. The paper names the "
             "sac/disc cross-sectional-area ratio, but for a whole-disc area ratio they are anatomically "
             "impossible (normal ~0.08-0.12); they are consistent with the AP-diameter ratio "
             "(DDRDIA) or the square root of the area ratio. Apply to ap_ratio or sqrt_area_ratio.",
        compatible_features=["ap_ratio", "sqrt_area_ratio"],
    )


PAPER_TREE = paper_tree()
