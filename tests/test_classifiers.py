"""Patch classifiers: registry, checkpoints, calibration, training, inference, mirroring."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

import torch  # the training extra: a hard dependency of this suite

from lumbargrade.grading.calibration import (
    expected_calibration_error,
    fit_platt,
    fit_temperature,
    nll,
    positive_probability,
    softmax,
    youden_threshold,
)
from lumbargrade.grading.classifier_inference import (
    Classifier,
    grade_level,
    grade_levels,
    load_classifier,
    save_classifier,
)
from lumbargrade.grading.classifiers import (
    create_classifier,
    list_classifiers,
    load_backbone_checkpoint,
    register_classifier,
)
from lumbargrade.grading.patches import PatchConfig, mirror_boxes

torch.set_num_threads(1)


# ------------------------------------------------------------------ registry


@pytest.fixture
def no_network(monkeypatch):
    """Any attempt to fetch weights fails the test."""
    import timm.models._builder as builder

    def boom(*a, **k):
        raise AssertionError("tried to download weights")

    monkeypatch.setattr(builder, "load_pretrained", boom)
    monkeypatch.setattr(torch.hub, "load_state_dict_from_url", boom)


@pytest.mark.parametrize("name", list_classifiers())
@pytest.mark.parametrize("in_chans", [1, 3])
def test_registry_builds_and_runs(name, in_chans, no_network):
    model = create_classifier(name, 3, in_chans=in_chans).eval()
    with torch.inference_mode():
        out = model(torch.randn(2, in_chans, 64, 64))
    assert out.shape == (2, 3)
    assert torch.isfinite(out).all()


def test_registry_has_required_models_and_rejects_unknown():
    assert {"bit_r50x1", "small_cnn"} <= set(list_classifiers())
    with pytest.raises(KeyError, match="unknown classifier"):
        create_classifier("no_such_net", 2)
    with pytest.raises(ValueError):
        register_classifier("small_cnn")(lambda n: None)


def test_small_cnn_batched_equals_per_item():
    model = create_classifier("small_cnn", 4).eval()
    x = torch.randn(5, 1, 64, 64)
    with torch.inference_mode():
        whole = model(x)
        single = torch.cat([model(x[i : i + 1]) for i in range(5)])
    torch.testing.assert_close(whole, single, atol=1e-5, rtol=1e-5)


def test_checkpoint_loading_adapts_stem_and_skips_head(tmp_path):
    from safetensors.torch import save_file

    src = create_classifier("small_cnn", 5, in_chans=3)
    path = tmp_path / "backbone.safetensors"
    save_file({k: v.contiguous() for k, v in src.state_dict().items()}, str(path))
    dst = create_classifier("small_cnn", 2, in_chans=1, checkpoint_path=path)
    s, d = src.state_dict(), dst.state_dict()
    stem = "features.0.weight"
    torch.testing.assert_close(d[stem], s[stem].sum(1, keepdim=True))
    torch.testing.assert_close(d["features.3.0.weight"], s["features.3.0.weight"])
    assert d["head.weight"].shape == (2, 256)  # head re-initialised, not copied
    # .pth files too, with a "state_dict" wrapper
    pth = tmp_path / "b.pth"
    torch.save({"state_dict": src.state_dict()}, pth)
    info = load_backbone_checkpoint(create_classifier("small_cnn", 2), pth)
    assert "head.weight" in info["skipped"] and info["loaded"] > 10
    # a file that matches nothing is an error, a missing file too
    save_file({"foo": torch.zeros(3)}, str(tmp_path / "junk.safetensors"))
    with pytest.raises(ValueError, match="matches"):
        create_classifier("small_cnn", 2, checkpoint_path=tmp_path / "junk.safetensors")
    with pytest.raises(FileNotFoundError):
        create_classifier("small_cnn", 2, checkpoint_path=tmp_path / "missing.pth")


def test_bit_checkpoint_from_imagenet_shape(tmp_path, no_network):
    from safetensors.torch import save_file

    src = create_classifier("bit_r50x1", 21, in_chans=3)  # a BiT-M-like head and RGB stem
    path = tmp_path / "bit.safetensors"
    save_file({k: v.contiguous() for k, v in src.state_dict().items()}, str(path))
    dst = create_classifier("bit_r50x1", 4, in_chans=1, checkpoint_path=path)
    torch.testing.assert_close(dst.stem.conv.weight, src.stem.conv.weight.sum(1, keepdim=True))
    torch.testing.assert_close(dst.stages[2].blocks[0].conv2.weight, src.stages[2].blocks[0].conv2.weight)
    assert dst.head.fc.weight.shape[0] == 4


# ------------------------------------------------------------------ calibration


def test_temperature_scaling_fixes_overconfidence():
    rng = np.random.default_rng(0)
    true = rng.normal(0, 1.5, size=(4000, 4))
    y = np.array([rng.choice(4, p=p) for p in softmax(true)])
    logits = 3.0 * true  # overconfident by a factor 3
    t = fit_temperature(logits, y)
    assert t == pytest.approx(3.0, rel=0.15)
    assert nll(logits, y, t) < nll(logits, y) - 0.1
    ece_before = expected_calibration_error(softmax(logits), y)
    ece_after = expected_calibration_error(softmax(logits, t), y)
    assert ece_after < 0.5 * ece_before
    assert np.array_equal(softmax(logits, t).argmax(1), logits.argmax(1))  # grades unchanged
    # well-calibrated logits keep T near 1
    assert fit_temperature(true, y) == pytest.approx(1.0, abs=0.15)


def test_platt_scaling_undoes_a_prior_correction_that_overshoots():
    rng = np.random.default_rng(1)
    d = rng.normal(0, 2.0, size=4000)  # true log-odds of the positive class
    y = (rng.random(4000) < 1 / (1 + np.exp(-d))).astype(int)
    logits = np.stack([np.zeros_like(d), 0.5 * d + 1.0], 1)  # under-confident and shifted up
    bias = np.array([0.0, -3.0])  # a prior correction that overshoots the other way
    t, b = fit_platt(logits, y, bias)
    p = softmax(logits + b[None, :], t)[:, 1]
    u = (0.5 * d + 1.0 + b[1] - b[0]) / t  # the fitted log-odds, ideally d
    assert t == pytest.approx(0.5, rel=0.15)
    assert np.median(np.abs(u - d)) < 0.3
    assert nll(logits + b[None, :], y, t) < nll(logits + bias[None, :], y, fit_temperature(logits + bias[None, :], y)) - 0.05
    assert abs(np.mean(p) - np.mean(y)) < 0.02
    assert np.array_equal(np.argsort(p), np.argsort(logits[:, 1] - logits[:, 0]))  # ranking (AUROC) kept
    # one class only: temperature alone, bias untouched
    t1, b1 = fit_platt(logits[y == 1], y[y == 1], bias)
    assert np.array_equal(b1, bias)


def test_ece_and_youden_worked_examples():
    p = np.array([[0.2, 0.8]] * 10)
    y = np.array([1] * 8 + [0] * 2)
    assert expected_calibration_error(p, y) == pytest.approx(0.0)
    y2 = np.array([1] * 5 + [0] * 5)
    assert expected_calibration_error(p, y2) == pytest.approx(0.3)
    s = np.array([0.1, 0.2, 0.3, 0.6, 0.7, 0.9])
    lab = np.array([0, 0, 0, 1, 1, 1])
    assert youden_threshold(s, lab) == pytest.approx(0.45)
    assert youden_threshold(s, np.ones(6)) == 0.5
    four = np.array([[0.1, 0.2, 0.3, 0.4]])
    assert positive_probability(four)[0] == pytest.approx(0.7)


# ------------------------------------------------------------------ inference


def _clf(task="foramen", seed=0, **cfg):
    torch.manual_seed(seed)
    k = 4 if task == "central" else 2
    model = create_classifier("small_cnn", k).eval()
    config = {"task": task, "model": "small_cnn", "num_classes": k, "temperature": 1.7,
              "logit_bias": [0.1 * i for i in range(k)], "threshold": 0.4,
              "patch": PatchConfig(patch_px=48).to_dict(), **cfg}
    return Classifier(model, config)


def _scene():
    rng = np.random.default_rng(3)
    rr, cc = np.mgrid[:128, :128]
    img = 100 + 20 * rng.normal(size=(128, 128))
    sac = (rr - 60) ** 2 + ((cc - 64) / 1.3) ** 2 < 11**2
    img[sac] += 400
    img[80:95, 30:50] += 200 * rng.random((15, 20))  # asymmetric structure
    boxes = {"facet_left": [70, 80, 104, 112], "facet_right": [72, 18, 102, 48],
             "foramen_left": [48, 84, 70, 114], "foramen_right": [50, 16, 70, 44]}
    return img.astype(np.float32), sac, boxes


def test_mirrored_left_patch_gives_right_prediction():
    img, sac, boxes = _scene()
    clfs = {"foramen": _clf("foramen", 1), "facet": _clf("facet", 2), "central": _clf("central", 3)}
    a = grade_level(img, (0.7, 0.7), sac, boxes, clfs)
    b = grade_level(img[:, ::-1], (0.7, 0.7), sac[:, ::-1], mirror_boxes(boxes, 128), clfs)
    for f in ("foramen", "facet"):
        assert b[f"{f}_left"]["probability"] == pytest.approx(a[f"{f}_right"]["probability"], abs=1e-5)
        assert b[f"{f}_right"]["probability"] == pytest.approx(a[f"{f}_left"]["probability"], abs=1e-5)
    # sides differ in this asymmetric scene, so the check above is not trivial
    assert a["foramen_left"]["probability"] != pytest.approx(a["foramen_right"]["probability"], abs=1e-6)


def test_grade_level_report_fields():
    img, sac, boxes = _scene()
    clfs = {"foramen": _clf("foramen"), "facet": _clf("facet"), "central": _clf("central")}
    out = grade_level(img, (0.7, 0.7), sac, {**boxes, "facet_right": None}, clfs)
    cc = out["central_canal_cnn"]
    assert cc["grade"] in ("normal", "mild", "moderate", "severe")
    assert len(cc["probabilities"]) == 4 and sum(cc["probabilities"]) == pytest.approx(1.0)
    assert cc["binary_probability"] == pytest.approx(cc["probabilities"][2] + cc["probabilities"][3])
    assert out["facet_right"] == {"probability": None, "label": None}
    for f in ("foramen_left", "foramen_right", "facet_left"):
        p = out[f]["probability"]
        assert 0.0 <= p <= 1.0
        assert out[f]["label"] == ("moderate/severe" if p >= 0.4 else "normal/mild")
    json.dumps(out)  # report-ready
    # several levels in one batch give the same as one by one; None classifiers are skipped
    many = grade_levels([(img, (0.7, 0.7), sac, boxes), (img[:, ::-1], (0.7, 0.7), sac[:, ::-1], boxes)],
                        {**clfs, "central_binary": None})
    one = grade_level(img, (0.7, 0.7), sac, boxes, clfs)
    assert set(many[0]) == set(one)
    assert many[0]["foramen_left"]["probability"] == pytest.approx(one["foramen_left"]["probability"], abs=1e-6)
    assert many[0]["central_canal_cnn"]["probabilities"] == pytest.approx(one["central_canal_cnn"]["probabilities"], abs=1e-6)
    # a central_binary classifier provides the binary probability
    out2 = grade_level(img, (0.7, 0.7), sac, boxes, {"central_binary": _clf("central_binary")})
    assert out2["central_canal_cnn"]["grade"] is None
    assert 0 <= out2["central_canal_cnn"]["binary_probability"] <= 1


def test_save_load_roundtrip_predicts_identically(tmp_path):
    clf = _clf("central", input_mean=0.5, input_std=0.5)
    x = np.random.default_rng(0).normal(size=(7, 48, 48)).astype(np.float32)
    save_classifier(clf, tmp_path / "central")
    back = load_classifier(tmp_path / "central")
    assert (back.input_mean, back.input_std) == (0.5, 0.5)
    with torch.inference_mode():
        direct = clf.model(torch.from_numpy((x - 0.5) / 0.5)[:, None]).numpy()
    np.testing.assert_allclose(back.logits(x), direct, atol=1e-5)
    np.testing.assert_allclose(back.predict(x), clf.predict(x), atol=1e-6)
    assert back.temperature == clf.temperature and back.threshold == clf.threshold
    assert back.patch == clf.patch
    # calibrated probabilities are softmax((logits + bias) / T)
    np.testing.assert_allclose(clf.predict(x), softmax(clf.logits(x) + clf.logit_bias, 1.7), atol=1e-9)


def test_load_classifier_bad_input(tmp_path):
    from lumbargrade.errors import InputError

    with pytest.raises(InputError, match="config.json"):
        load_classifier(tmp_path)
    save_classifier(_clf("facet"), tmp_path / "c")
    (tmp_path / "c" / "model.safetensors").write_bytes(b"garbage")
    with pytest.raises(InputError, match="cannot load weights"):
        load_classifier(tmp_path / "c")


# ------------------------------------------------------------------ training


def _synthetic(n, rng, px=32):
    """Class 1 patches hold a bright blob at the centre; class 0 only noise."""
    from lumbargrade.grading.classifier_training import PatchSet

    y = np.arange(n) % 2
    rr, cc = np.mgrid[:px, :px]
    blob = np.exp(-((rr - px / 2) ** 2 + (cc - px / 2) ** 2) / (2 * 3.0**2))
    x = rng.normal(0.3, 0.15, size=(n, px, px)) + y[:, None, None] * 0.8 * blob
    return PatchSet(x.astype(np.float32), y.astype(np.int64), [f"p{i // 2}" for i in range(n)])


def test_short_training_lowers_loss_and_writes_run(tmp_path):
    from lumbargrade.grading.classifier_training import train_on_patches

    rng = np.random.default_rng(0)
    cfg = {"epochs": 4, "batch_size": 16, "patch": {"patch_px": 32}, "model_kwargs": {"width": 8}}
    m = train_on_patches(_synthetic(64, rng), _synthetic(32, rng), "foramen", tmp_path / "run", cfg,
                         seed=1, progress=False)
    losses = [h["train_loss"] for h in m["history"]]
    assert losses[-1] < 0.7 * losses[0]
    for f in ("config.json", "model.safetensors", "checkpoint.pt", "metrics.json", "train.log"):
        assert (tmp_path / "run" / f).is_file()
    cfg_saved = json.loads((tmp_path / "run" / "config.json").read_text())
    assert cfg_saved["task"] == "foramen" and cfg_saved["model"] == "small_cnn"
    assert 0 < cfg_saved["threshold"] < 1 and cfg_saved["temperature"] > 0
    assert m["val"]["auroc"] > 0.9
    clf = load_classifier(tmp_path / "run")
    test = _synthetic(20, rng)
    p = clf.positive_probability(test.x)
    assert p[test.y == 1].mean() > p[test.y == 0].mean() + 0.3
    # resume: more epochs continue the history of the same run
    cfg["epochs"] = 5
    m2 = train_on_patches(_synthetic(64, rng), _synthetic(32, rng), "foramen", tmp_path / "run", cfg,
                          seed=1, progress=False)
    assert [h["epoch"] for h in m2["history"]] == [0, 1, 2, 3, 4]
    from lumbargrade.errors import InputError

    with pytest.raises(InputError, match="other patch"):
        train_on_patches(_synthetic(64, rng), _synthetic(32, rng), "foramen", tmp_path / "run",
                         {**cfg, "patch": {"patch_px": 48}}, progress=False)


def test_best_epoch_selection():
    from lumbargrade.grading.classifier_training import _better

    best = {"metric": 0.9, "loss": 0.5}
    assert _better({"metric": 0.95, "loss": 0.9}, best)
    assert not _better({"metric": 0.95, "loss": 0.9}, best, "loss")
    assert _better({"metric": 0.9, "loss": 0.4}, best)  # tie on the metric: lower loss wins
    assert not _better({"metric": None, "loss": 0.1}, best)
    assert _better({"metric": 0.1, "loss": 0.9}, best, "last")


def test_config_rejects_unknown_keys():
    from lumbargrade.errors import InputError
    from lumbargrade.grading.classifier_training import resolve_config

    cfg = resolve_config({"epochs": 3}, ["patch.patch_px=48", "augment.enabled=false", "balance=loss"])
    assert cfg["epochs"] == 3 and cfg["patch"]["patch_px"] == 48
    assert cfg["augment"]["enabled"] is False and cfg["balance"] == "loss"
    with pytest.raises(InputError, match="unknown config key"):
        resolve_config({}, ["epoch=3"])
    with pytest.raises(InputError, match="unknown model"):
        resolve_config({"model": "vgg"})


def _write_cohort(folder, n_patients=6, seed=0):
    """A tiny manifest cohort: NPY slices + PNG label maps; grades drive sac size / box brightness."""
    from PIL import Image

    rng = np.random.default_rng(seed)
    folder.mkdir(parents=True, exist_ok=True)
    header = ("patient_id,split,level,axial_image,pixel_spacing_row_mm,pixel_spacing_col_mm,label_map,"
              "central_canal,foramen_left,foramen_right,facet_left,facet_right")
    lines = [header]
    rr, cc = np.mgrid[:96, :96]
    for p in range(n_patients):
        split = "train" if p < n_patients - 2 else "val"
        for li, level in enumerate(["L3/L4", "L4/L5"]):
            g = int(rng.integers(0, 4))
            fl, fr = int(rng.integers(0, 2)), int(rng.integers(0, 2))
            lm = np.zeros((96, 96), np.uint8)
            lm[60:70, 30:66] = 2
            lm[(rr - 48) ** 2 + (cc - 48) ** 2 < (10 - 2 * g) ** 2] = 1
            lm[40:52, 66:80] = 5
            lm[40:52, 16:30] = 6
            lm[54:66, 62:76] = 3
            lm[54:66, 20:34] = 4
            img = rng.normal(100, 10, (96, 96)) + 300 * (lm == 1) + 150 * (lm == 2)
            img[40:52, 66:80] += 200 * fl
            img[40:52, 16:30] += 200 * fr
            name = f"p{p}_{li}"
            np.save(folder / f"{name}.npy", img.astype(np.float32))
            Image.fromarray(lm).save(folder / f"{name}_lm.png")
            lines.append(f"p{p},{split},{level},{name}.npy,0.8,0.8,{name}_lm.png,{g},{fl},{fr},0,1")
    (folder / "manifest.csv").write_text("\n".join(lines) + "\n")
    return folder / "manifest.csv"


@pytest.mark.parametrize("task,boxes", [("central", "truth"), ("foramen", "rule")])
def test_cli_trains_from_manifest(tmp_path, task, boxes):
    from lumbargrade.cli import main

    man = _write_cohort(tmp_path / "cohort")
    out = tmp_path / f"run_{task}"
    rc = main(["train", "classifier", "--task", task, "--data", str(man.parent), "--out", str(out),
               "--set", "epochs=2", "--set", "patch.patch_px=32", "--set", "batch_size=8",
               "--set", f"patch_boxes={boxes}", "--set", "threshold=youden", "--seed", "3"])
    assert rc == 0
    cfg = json.loads((out / "config.json").read_text())
    met = json.loads((out / "metrics.json").read_text())
    assert cfg["task"] == task and cfg["patch"]["patch_px"] == 32
    assert cfg["threshold_rule"] == "youden" and cfg["threshold"] == met["calibration"]["youden_threshold"]
    assert met["n_train"] == (8 if task == "central" else 16) and met["n_val"] == (4 if task == "central" else 8)
    clf = load_classifier(out)
    assert clf.predict(np.zeros((3, 32, 32), np.float32)).shape == (3, 4 if task == "central" else 2)
    # a bad --set is one line and exit status 2
    assert main(["train", "classifier", "--task", task, "--data", str(man), "--out", str(out),
                 "--set", "nope=1"]) == 2


def test_cli_pools_several_cohorts(tmp_path):
    """--data repeated: the rows of every manifest, each read from its own folder, in its own split."""
    from lumbargrade.cli import main

    a = _write_cohort(tmp_path / "a", n_patients=6, seed=0)
    b = _write_cohort(tmp_path / "b", n_patients=4, seed=1)  # the same patient ids (p0..), other images
    out = tmp_path / "run"
    rc = main(["train", "classifier", "--task", "central", "--data", str(a), "--data", str(b.parent),
               "--out", str(out), "--set", "epochs=1", "--set", "patch.patch_px=32", "--set", "batch_size=8",
               "--set", "patch_boxes=truth", "--seed", "0"])
    assert rc == 0
    met = json.loads((out / "metrics.json").read_text())
    assert met["n_train"] == 8 + 4 and met["n_val"] == 4 + 4
    cfg = json.loads((out / "config.json").read_text())
    assert [Path(p).parent.name for p in cfg["data"]] == ["a", "b"]
    assert (out / "command.txt").read_text().split().count("--data") == 2
    assert "COHORT_2" in (out / "command.txt").read_text()


def test_labels_from_reader_1_the_consensus_or_the_truth():
    """labels=reader1 reads the finding's column, truth its _truth column, consensus the median of
    readers 1-3 (binarised after the median for central_binary); a missing reader is a one-line error."""
    from lumbargrade.errors import InputError
    from lumbargrade.grading.classifier_training import label_columns, resolve_config, row_label

    row = {"_line": 7, "central_canal": "1", "central_canal_r2": "3", "central_canal_r3": "2",
           "central_canal_truth": "3", "foramen_left": "0", "foramen_left_r2": "1", "foramen_left_r3": "1",
           "foramen_left_truth": "1", "facet_left": "", "facet_left_r2": "", "facet_left_r3": ""}
    assert [row_label(row, "central_canal", "central", s) for s in ("reader1", "consensus", "truth")] == [1, 2, 3]
    assert [row_label(row, "central_canal", "central_binary", s) for s in ("reader1", "consensus", "truth")] == [0, 1, 1]
    assert [row_label(row, "foramen_left", "foramen", s) for s in ("reader1", "consensus", "truth")] == [0, 1, 1]
    assert row_label(row, "facet_left", "facet", "consensus") is None  # no reader graded it
    assert row_label(row, "facet_left", "facet", "truth") is None  # no _truth column
    with pytest.raises(InputError, match="line 7.*needs readers 1-3; foramen_left_r3 empty"):
        row_label(dict(row, foramen_left_r3=""), "foramen_left", "foramen", "consensus")
    assert label_columns("facet_right", "consensus") == ("facet_right", "facet_right_r2", "facet_right_r3")
    assert resolve_config({}, ["labels=truth"])["labels"] == "truth"
    with pytest.raises(InputError, match="labels must be reader1, consensus, truth"):
        resolve_config({}, ["labels=reader2"])


def test_cli_trains_on_true_labels_and_names_the_columns_it_lacks(tmp_path):
    from lumbargrade.cli import main

    man = _write_cohort(tmp_path / "cohort")
    out = tmp_path / "run"
    args = ["train", "classifier", "--task", "foramen", "--data", str(man), "--out", str(out), "--set", "epochs=1",
            "--set", "patch.patch_px=32", "--set", "batch_size=8", "--set", "patch_boxes=rule", "--seed", "0"]
    # this manifest has reader 1 only: truth labels are a clear error naming the columns
    assert main([*args, "--set", "labels=truth"]) == 2
    lines = man.read_text().splitlines()
    head = lines[0] + ",foramen_left_truth,foramen_right_truth"
    # the truth says the opposite of reader 1 on the left: what the run trains on must follow it
    body = [ln + f",{1 - int(ln.split(',')[8])},{ln.split(',')[9]}" for ln in lines[1:]]
    man.write_text("\n".join([head, *body]) + "\n")
    assert main([*args, "--set", "labels=truth"]) == 0
    assert json.loads((out / "config.json").read_text())["labels"] == "truth"
    from lumbargrade.grading.classifier_training import build_patch_set, resolve_config
    from lumbargrade.manifest import read_manifests, rows_for_split

    rows = rows_for_split(read_manifests([str(man)]), "train")
    cfg = resolve_config({}, ["patch_boxes=rule", "patch.patch_px=32", "synth_copies=0"])
    r1, truth = build_patch_set(rows, "foramen", cfg), build_patch_set(rows, "foramen", dict(cfg, labels="truth"))
    assert r1.source == truth.source and len(r1) == 16
    left = np.array([s.endswith("foramen_left") for s in r1.source])
    assert left.sum() == 8 and np.all(truth.y[left] == 1 - r1.y[left]) and np.all(truth.y[~left] == r1.y[~left])


@pytest.mark.slow
def test_bit_r50x1_trains_with_a_local_checkpoint(tmp_path):
    """The paper's configuration end to end on CPU: BiT-R50x1 from a local checkpoint, RGB stem."""
    from safetensors.torch import save_file

    from lumbargrade.grading.classifier_training import train_on_patches

    src = create_classifier("bit_r50x1", 21, in_chans=3)
    ck = tmp_path / "bit_m.safetensors"
    save_file({k: v.contiguous() for k, v in src.state_dict().items()}, str(ck))
    rng = np.random.default_rng(0)
    cfg = {"model": "bit_r50x1", "in_chans": 3, "input_mean": 0.5, "input_std": 0.5, "epochs": 2,
           "batch_size": 8, "lr": 1e-3, "patch": {"patch_px": 32}}
    m = train_on_patches(_synthetic(16, rng), _synthetic(8, rng), "facet", tmp_path / "bit", cfg,
                         checkpoint_path=ck, progress=False)
    assert len(m["history"]) == 2
    clf = load_classifier(tmp_path / "bit")
    assert clf.in_chans == 3 and clf.predict(_synthetic(4, rng).x).shape == (4, 2)


def test_patches_placed_by_the_pipeline_and_domain_randomised_copies(tmp_path):
    """--segmentation: the patches sit where analyze puts them (the segmenter's masks, the pack's
    box placement); rows with a tissue map add synth_copies domain-randomised copies each."""
    from PIL import Image

    from lumbargrade.cli import main
    from lumbargrade.modelpack import default_pack_path

    man = _write_cohort(tmp_path / "cohort")
    lines = man.read_text().splitlines()
    out_lines = [lines[0] + ",tissue_map"]
    for line in lines[1:]:
        lm_rel = line.split(",")[6]
        lm = np.asarray(Image.open(man.parent / lm_rel))
        tis = np.full(lm.shape, 9, np.uint8)  # muscle
        tis[lm == 1], tis[lm == 2] = 1, 4  # CSF in the sac, annulus in the disc
        tis[np.isin(lm, (5, 6))] = 7  # foraminal fat
        Image.fromarray(tis).save(man.parent / lm_rel.replace("_lm", "_tis"))
        out_lines.append(line + "," + lm_rel.replace("_lm", "_tis"))
    man.write_text("\n".join(out_lines) + "\n")
    out = tmp_path / "run"
    rc = main(["train", "classifier", "--task", "central", "--data", str(man), "--out", str(out),
               "--segmentation", str(default_pack_path()), "--set", "epochs=1", "--set", "patch.patch_px=32",
               "--set", "batch_size=8", "--set", "synth_copies=2"])
    assert rc == 0
    cfg = json.loads((out / "config.json").read_text())
    met = json.loads((out / "metrics.json").read_text())
    assert cfg["patch_boxes"] == "pipeline" and cfg["synth_copies"] == 2
    assert met["n_train"] == 8 * 3 and met["n_val"] == 4  # val: no synthetic copies
    # patch_boxes=pipeline without a segmenter is a one-line error
    assert main(["train", "classifier", "--task", "central", "--data", str(man), "--out", str(tmp_path / "r2"),
                 "--set", "patch_boxes=pipeline"]) == 2


# ------------------------------------------------------------------ ensembles


def test_ensemble_is_the_mean_of_its_members_with_its_own_threshold(tmp_path):
    from lumbargrade.grading.classifier_inference import ClassifierEnsemble

    a, b = _clf("foramen", 1), _clf("foramen", 2, temperature=0.8)
    ens = ClassifierEnsemble([a, b], {"threshold": 0.37})
    x = np.random.default_rng(1).normal(size=(5, 48, 48)).astype(np.float32)
    np.testing.assert_allclose(ens.predict(x), (a.predict(x) + b.predict(x)) / 2, atol=1e-12)
    assert not np.allclose(a.predict(x), b.predict(x))  # the mean is not one member's
    img, sac, boxes = _scene()
    out = grade_level(img, (0.7, 0.7), sac, boxes, {"foramen": ens})
    for f in ("foramen_left", "foramen_right"):
        p = out[f]["probability"]
        one = [grade_level(img, (0.7, 0.7), sac, boxes, {"foramen": m})[f]["probability"] for m in (a, b)]
        assert p == pytest.approx(np.mean(one), abs=1e-6)
        assert out[f]["label"] == ("moderate/severe" if p >= 0.37 else "normal/mild")
    # written as member folders + a config naming them, it loads back as the same ensemble
    for name, m in (("seed1", a), ("seed2", b)):
        save_classifier(m, tmp_path / "ens" / "members" / name)
    (tmp_path / "ens" / "config.json").write_text(json.dumps(
        {"task": "foramen", "members": ["members/seed1", "members/seed2"], "threshold": 0.37}))
    back = load_classifier(tmp_path / "ens")
    assert isinstance(back, ClassifierEnsemble) and back.threshold == 0.37 and len(back.members) == 2
    np.testing.assert_allclose(back.predict(x), ens.predict(x), atol=1e-6)


def test_ensemble_folder_errors(tmp_path):
    from lumbargrade.errors import InputError

    save_classifier(_clf("foramen", 1), tmp_path / "e" / "members" / "a")
    save_classifier(_clf("facet", 2), tmp_path / "e" / "members" / "b")
    cfg = tmp_path / "e" / "config.json"
    for members, match in ((["members/a", "members/b"], "share the task"),
                           (["../outside"], "outside"), ([], "non-empty list"),
                           (["members/a", "members/missing"], "no config.json")):
        cfg.write_text(json.dumps({"members": members}))
        with pytest.raises(InputError, match=match):
            load_classifier(tmp_path / "e")
    # a pack is not built from an ensemble whose member is missing
    from lumbargrade.modelpack import build_pack

    cfg.write_text(json.dumps({"members": ["members/a", "members/missing"]}))
    with pytest.raises(InputError, match="member folder not found"):
        build_pack(tmp_path / "pack", {"classifier_foramen": tmp_path / "e"})


def test_cli_trains_an_ensemble_and_the_pack_carries_it(tmp_path):
    """--ensemble 2: two members (seeds 3, 4) on the same patches, the threshold chosen for their
    mean on val; the pack copies the members, scrubs their records and exports one ONNX per member."""
    from lumbargrade.cli import main
    from lumbargrade.grading.classifier_inference import ClassifierEnsemble
    from lumbargrade.modelpack import build_pack, export_pack_onnx, load_pack

    man = _write_cohort(tmp_path / "cohort")
    out = tmp_path / "run"
    args = ["train", "classifier", "--task", "foramen", "--data", str(man.parent), "--out", str(out),
            "--set", "epochs=2", "--set", "patch.patch_px=32", "--set", "batch_size=8",
            "--set", "patch_boxes=truth", "--set", "threshold=youden", "--seed", "3"]
    assert main(args + ["--ensemble", "0"]) == 2 and not out.exists()  # a clear error, before any work
    rc = main(args + ["--ensemble", "2"])
    assert rc == 0
    cfg = json.loads((out / "config.json").read_text())
    met = json.loads((out / "metrics.json").read_text())
    assert cfg["members"] == ["members/seed3", "members/seed4"] and cfg["seeds"] == [3, 4]
    assert met["ensemble"] == 2 and [m["seed"] for m in met["members"]] == [3, 4]
    assert cfg["threshold"] == met["calibration"]["youden_threshold"]
    ens = load_classifier(out)
    assert isinstance(ens, ClassifierEnsemble)
    x = np.random.default_rng(0).normal(0.3, 0.2, (4, 32, 32)).astype(np.float32)
    m3, m4 = load_classifier(out / "members" / "seed3"), load_classifier(out / "members" / "seed4")
    np.testing.assert_allclose(ens.predict(x), (m3.predict(x) + m4.predict(x)) / 2, atol=1e-9)
    assert not np.allclose(m3.predict(x), m4.predict(x))  # two seeds, two networks
    # the val figure is the mean's: recompute it from the members on the same val patches
    from lumbargrade.grading.classifier_training import build_patch_set, resolve_config
    from lumbargrade.manifest import read_manifests, rows_for_split
    from lumbargrade.metrics import binary_auroc

    val = build_patch_set(rows_for_split(read_manifests([str(man)]), "val"), "foramen",
                          resolve_config({"patch": {"patch_px": 32}, "patch_boxes": "truth", "synth_copies": 0}))
    pos = ens.positive_probability(val.x)
    assert met["val"]["auroc"] == pytest.approx(binary_auroc(val.y, pos))

    pack = build_pack(tmp_path / "pack", {"classifier_foramen": out}, version="9.9.9")
    for name in ("seed3", "seed4"):
        assert (pack / "classifier_foramen" / "members" / name / "model.safetensors").is_file()
        assert "checkpoint.pt" not in {p.name for p in (pack / "classifier_foramen" / "members" / name).iterdir()}
        assert str(tmp_path) not in (pack / "classifier_foramen" / "members" / name / "config.json").read_text()
    res = export_pack_onnx(pack)
    assert len(res["classifier_foramen"]["members"]) == 2
    assert all("error" not in r for r in res["classifier_foramen"]["members"])
    for runtime in ("onnx", "torch"):
        clf = load_pack(pack, runtime=runtime).get("classifier_foramen")
        assert isinstance(clf, ClassifierEnsemble) and clf.runtime == runtime
        np.testing.assert_allclose(clf.predict(x), ens.predict(x), atol=1e-4)
