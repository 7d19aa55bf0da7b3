"""Network runtimes: numpy post-processing equals the torch maths; ONNX exports equal PyTorch;
stale exports are refused; the bundled pack runs the same with either runtime (that ONNX Runtime
runs without importing torch: tests/test_core_install.py); bf16 only where the CPU has it."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch  # the training extra: a hard dependency of this suite

from lumbargrade.errors import InputError
from lumbargrade.modelpack import NETWORK_COMPONENTS, default_pack_path, load_pack
from lumbargrade.runtime import (
    OnnxNet,
    TorchNet,
    cpu_native_bf16,
    export_onnx,
    load_onnx_net,
    resolve_runtime,
    run_net,
)


def test_numpy_dsnt_decoding_equals_the_torch_training_maths():
    from lumbargrade.levels import dsnt
    from lumbargrade.levels.heatmaps import decode_heatmaps, normalized_to_pixel

    rng = np.random.default_rng(0)
    logits = rng.normal(0, 3, (3, 5, 24, 20)).astype(np.float32)
    xy, conc = decode_heatmaps(logits)
    heat = dsnt.spatial_softmax(torch.from_numpy(logits).double())
    np.testing.assert_allclose(xy, dsnt.soft_argmax(heat).numpy(), atol=1e-9)
    np.testing.assert_allclose(conc, dsnt.concentration(heat).numpy(), atol=1e-9)
    np.testing.assert_allclose(normalized_to_pixel(xy, 24, 20),
                               dsnt.normalized_to_pixel(torch.from_numpy(xy), 24, 20).numpy())


@pytest.mark.parametrize("per_structure", [False, True])
def test_numpy_structure_probabilities_equal_torch(per_structure):
    from lumbargrade.segmentation.losses import structure_probs, structure_probs_np

    z = np.random.default_rng(1).normal(0, 4, (2, 2 if per_structure else 3, 8, 8)).astype(np.float32)
    np.testing.assert_allclose(structure_probs_np(z, per_structure),
                               structure_probs(torch.from_numpy(z), per_structure).numpy(), atol=1e-6)


def _tiny_landmark_folder(tmp_path: Path) -> tuple[Path, object]:
    from lumbargrade.levels.landmarks import create_model, save_model

    torch.manual_seed(0)
    net = create_model(n_points=5, widths=[4, 6, 8, 8, 8, 8], out_stride=4).eval()
    folder = tmp_path / "landmarks"
    save_model(net, folder, {"arch": {"name": "dsnt_unet_small", "widths": [4, 6, 8, 8, 8, 8]},
                             "preprocess": {"size": 64}})
    return folder, net


def test_export_matches_torch_and_a_stale_export_is_refused(tmp_path):
    folder, net = _tiny_landmark_folder(tmp_path)
    x = np.random.default_rng(2).uniform(0, 1, (2, 1, 64, 64)).astype(np.float32)
    rec = export_onnx(net, x, folder)
    assert rec["max_abs_diff_vs_torch_fp32"] < 1e-4
    onnx_net = load_onnx_net(folder, "auto")
    assert isinstance(onnx_net, OnnxNet)
    # another batch size than the export's (the batch axis is dynamic)
    x3 = np.random.default_rng(3).uniform(0, 1, (3, 1, 64, 64)).astype(np.float32)
    np.testing.assert_allclose(onnx_net(x3), run_net(net, x3), atol=1e-4)
    assert load_onnx_net(folder, "torch") is None
    # weights changed after the export: auto falls back to torch, onnx refuses with a clear error
    with torch.no_grad():
        next(net.parameters()).add_(0.1)
    from lumbargrade.levels.landmarks import save_model

    save_model(net, folder, json.loads((folder / "config.json").read_text()))
    assert load_onnx_net(folder, "auto") is None
    with pytest.raises(InputError, match="stale"):
        load_onnx_net(folder, "onnx")
    (folder / "model.onnx").unlink()
    with pytest.raises(InputError, match="no ONNX export"):
        load_onnx_net(folder, "onnx")


def test_a_corrupt_onnx_file_is_a_clear_error(tmp_path):
    folder, net = _tiny_landmark_folder(tmp_path)
    export_onnx(net, np.zeros((1, 1, 64, 64), np.float32), folder)
    (folder / "model.onnx").write_bytes(b"not an onnx file")
    with pytest.raises(InputError, match="cannot load the ONNX model"):
        load_onnx_net(folder, "onnx")


def test_runtime_names_are_checked(monkeypatch):
    assert resolve_runtime(None) in ("auto", "onnx", "torch")
    monkeypatch.setenv("LUMBARGRADE_RUNTIME", "torch")
    assert resolve_runtime(None) == "torch"
    assert resolve_runtime("onnx") == "onnx"
    with pytest.raises(InputError, match="unknown runtime"):
        resolve_runtime("tensorrt")


def test_bundled_pack_has_current_onnx_exports():
    pack = load_pack(default_pack_path(), runtime="onnx")
    for comp in NETWORK_COMPONENTS:
        for folder in pack.network_folders(comp):  # an ensemble: each member's export
            assert isinstance(load_onnx_net(folder, "onnx"), OnnxNet), folder
            rec = json.loads((folder / "onnx.json").read_text())
            assert rec["max_abs_diff_vs_torch_fp32"] < 1e-3, folder


@pytest.fixture(scope="module")
def phantom_study(tmp_path_factory) -> Path:
    from lumbargrade.phantom.cohort import generate_cohort

    root = tmp_path_factory.mktemp("phantom-rt")
    generate_cohort(root, 1, seed=91, split=(0, 0, 1), progress=False)
    return next(p for p in root.iterdir() if p.is_dir()) / "dicom"


def test_bundled_pack_grades_the_same_with_either_runtime(phantom_study, tmp_path):
    from lumbargrade.analysis_runner import analyze_one
    from lumbargrade.pipeline import AnalysisConfig

    reports = {}
    for rt in ("onnx", "torch"):
        pack = load_pack(default_pack_path(), runtime=rt)
        reports[rt] = analyze_one(phantom_study, tmp_path / rt, pack, AnalysisConfig(), outputs=())
        assert set(reports[rt]["software"]["runtime"].values()) == {rt}
        assert "landmark_refiner" in reports[rt]["software"]["runtime"]
        precision = json.loads((tmp_path / rt / "config.json").read_text())["runtime"]["precision"]
        seg = "bf16" if rt == "torch" and cpu_native_bf16() else "fp32"  # the segmenters' configs ask for bf16
        assert "sac_refiner" in reports[rt]["software"]["runtime"]
        assert precision == {c: (seg if c in ("segmentation", "sac_refiner") else "fp32") for c in NETWORK_COMPONENTS}
    a, b = reports["onnx"], reports["torch"]
    for la, lb in zip(a["levels"], b["levels"]):
        assert la["axial_sop_instance_uid"] == lb["axial_sop_instance_uid"]
        # torch runs the segmenter in bf16, ONNX Runtime in fp32: a few boundary pixels may differ
        assert la["measurements"]["dural_sac_area_mm2"] == pytest.approx(lb["measurements"]["dural_sac_area_mm2"], rel=0.03)
        assert la["measurements"]["area_ratio"] == pytest.approx(lb["measurements"]["area_ratio"], rel=0.03)
        pa, pb = la["central_canal"]["cnn"]["probabilities"], lb["central_canal"]["cnn"]["probabilities"]
        np.testing.assert_allclose(pa, pb, atol=0.05)
        for f in ("foramen_left", "foramen_right", "facet_left", "facet_right"):
            if la[f]["probability"] is None or lb[f]["probability"] is None:
                continue
            box_a, box_b = la["boxes"][f], lb["boxes"][f]
            edge_moved = max(abs(u - v) for u, v in zip(box_a, box_b))
            assert edge_moved <= 1, (la["level"], f, box_a, box_b)
            # the same box: the same patch, so the same probability (the networks agree to 1e-5);
            # a box edge one pixel away stretches the patch by about 3%, which moves the facet and
            # foramen probabilities by up to 0.13-0.16 (95th percentile on the validation patches)
            bound = 0.02 if edge_moved == 0 else 0.2
            assert abs(la[f]["probability"] - lb[f]["probability"]) < bound, (la["level"], f, box_a, box_b)


def test_export_onnx_command_writes_every_network(tmp_path):
    from lumbargrade.cli import main

    pack = tmp_path / "pack"
    shutil.copytree(default_pack_path(), pack)
    removed = list(pack.glob("**/model.onnx"))
    for f in removed:
        f.unlink()
    assert len(removed) >= len(NETWORK_COMPONENTS)
    assert main(["pack", "export-onnx", str(pack)]) == 0
    loaded = load_pack(pack)
    for comp in NETWORK_COMPONENTS:
        for folder in loaded.network_folders(comp):
            assert (folder / "model.onnx").is_file() and (folder / "onnx.json").is_file(), folder
    assert all(f.is_file() for f in removed)


class _DtypeProbe(torch.nn.Module):
    """A 1x1 convolution that records the dtype its output was computed in."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = torch.nn.Conv2d(1, 2, 1)
        self.seen = None

    def forward(self, x):
        y = self.conv(x)
        self.seen = y.dtype
        return y


@pytest.mark.parametrize("native, expected", [("1", torch.bfloat16), ("0", torch.float32)])
def test_bf16_only_where_the_cpu_has_it(native, expected, monkeypatch):
    monkeypatch.setenv("LUMBARGRADE_BF16", native)
    probe = _DtypeProbe()
    net = TorchNet(probe, bf16=True, channels_last=True)
    assert net.precision == ("bf16" if native == "1" else "fp32")
    y = net(np.ones((1, 1, 4, 4), np.float32))
    assert y.dtype == np.float32 and probe.seen == expected
    assert TorchNet(_DtypeProbe(), bf16=False).precision == "fp32"  # never bf16 unless the model asks


def test_this_machines_choice_follows_its_cpu_flags(monkeypatch):
    from lumbargrade import runtime

    monkeypatch.delenv("LUMBARGRADE_BF16", raising=False)
    assert cpu_native_bf16() == runtime.cpu_info()["native_bf16"]
