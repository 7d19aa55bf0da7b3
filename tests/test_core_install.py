"""The inference core works without the training extra, and what needs the extra says so.

Each command runs in a fresh interpreter. "Without the training extra" is simulated by blocking
its modules (an import hook that answers "No module named ..." as when they are not installed),
so these tests mean the same with the full install as in CI's core-only environment, where they
run for real (``pytest -m core``).
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from lumbargrade.extras import TRAIN_MODULES
from lumbargrade.modelpack import NETWORK_COMPONENTS, default_pack_path

pytestmark = pytest.mark.core

_RUN = """
import sys
BLOCK = {block!r}
class Block:
    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] in BLOCK:
            raise ModuleNotFoundError(f"No module named {{name!r}}", name=name)
        return None
sys.meta_path.insert(0, Block())
from lumbargrade.cli import main
rc = main({argv!r})
print("TRAIN_MODULES_LOADED", sorted(m for m in {train!r} if m in sys.modules))
sys.exit(rc)
"""


def lumbargrade(*argv: str, block: bool = True, cwd: Path | None = None) -> subprocess.CompletedProcess:
    """``lumbargrade ARGV`` in a new interpreter; ``block``: without the training extra."""
    code = _RUN.format(block=list(TRAIN_MODULES) if block else [], argv=list(argv), train=list(TRAIN_MODULES))
    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=600,
                          check=False, cwd=cwd)


def loaded_training_modules(res: subprocess.CompletedProcess) -> list[str]:
    line = next(x for x in res.stdout.splitlines() if x.startswith("TRAIN_MODULES_LOADED"))
    return eval(line.split(" ", 1)[1])  # a list literal printed by _RUN


@pytest.fixture(scope="module")
def analysis(phantom_patient, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("core") / "analysis"
    res = lumbargrade("analyze", str(phantom_patient / "dicom"), "--out", str(out))
    assert res.returncode == 0, res.stderr[-3000:]
    return out


def test_analyze_imports_no_training_module(phantom_patient, tmp_path):
    """With everything installed, `analyze` still loads none of torch, MONAI, timm, safetensors,
    scikit-learn, matplotlib or onnx (the networks run on ONNX Runtime, fp32)."""
    out = tmp_path / "out"
    res = lumbargrade("analyze", str(phantom_patient / "dicom"), "--out", str(out), block=False)
    assert res.returncode == 0, res.stderr[-3000:]
    assert loaded_training_modules(res) == []
    report = json.loads((out / "report.json").read_text())
    assert set(report["software"]["runtime"].values()) == {"onnx"}
    assert set(report["software"]["runtime"]) == set(NETWORK_COMPONENTS)
    cfg = json.loads((out / "config.json").read_text())
    assert set(cfg["runtime"]["precision"].values()) == {"fp32"}
    assert cfg["runtime"]["sac_refiner_weight"] == 0.5  # the bundled pack blends the two looks
    assert list(out.glob("seg*.dcm")) and (out / "sr.dcm").is_file() and (out / "report.html").is_file()


def test_analyze_without_the_training_extra_writes_every_output(analysis):
    report = json.loads((analysis / "report.json").read_text())
    assert len(report["levels"]) == 5
    for f in ("sr.dcm", "report.html", "config.json", "levels/L4-L5/labels.png"):
        assert (analysis / f).is_file(), f
    assert list(analysis.glob("seg*.dcm"))  # one SEG instance per block orientation


def test_inference_commands_run_without_the_training_extra(phantom_patient, analysis, tmp_path):
    from lumbargrade.cli import _command_modules

    study = str(phantom_patient / "dicom")
    runs = {
        "inspect": ["inspect", study, "--json"],
        "landmarks": ["landmarks", study, "--json"],
        "phantom": ["phantom", "--out", str(tmp_path / "ph"), "--patients", "1", "--seed", "5", "--quiet"],
        "evaluate --no-figures": ["evaluate", "--data", str(phantom_patient.parent), "--out", str(tmp_path / "ev"),
                                  "--predictions", str(analysis.parent), "--no-figures", "--n-boot", "20"],
        "env-info": ["env-info"],
        "pack info": ["pack", "info"],
    }
    edited = tmp_path / "edited.png"
    shutil.copy(analysis / "levels" / "L4-L5" / "labels.png", edited)
    regraded = tmp_path / "regraded"
    shutil.copytree(analysis, regraded)
    runs["regrade"] = ["regrade", str(regraded), "--level", "L4/L5", "--labels", str(edited), "--by", "test"]
    if "segment" in _command_modules():  # the segmentation-only command, where this build has it
        runs["segment"] = ["segment", study, "--out", str(tmp_path / "seg")]
    for name, argv in runs.items():
        res = lumbargrade(*argv)
        assert res.returncode == 0, (name, res.stderr[-3000:])
        assert "Traceback" not in res.stderr, name
    assert json.loads((regraded / "report.json").read_text())["history"][-1]["by"] == "test"
    assert (tmp_path / "ev" / "metrics.json").is_file() and not list((tmp_path / "ev").glob("*.png"))
    # the evaluation names the pack that made the predictions it read
    sw = json.loads((analysis / "report.json").read_text())["software"]
    made_by = f"{sw['model_pack']} (sha256 {sw['model_pack_sha256']})"
    assert sw["model_pack"] and len(sw["model_pack_sha256"]) == 16
    assert json.loads((tmp_path / "ev" / "metrics.json").read_text())["model_pack_labels"] == [made_by]


EXTRA_LINE = 'lumbargrade {} needs the training extra: pip install "lumbargrade[train]"'


@pytest.mark.parametrize("argv, words", [
    (["train", "segmentation", "--data", "M", "--out", "R"], "train"),
    (["train", "landmarks", "--data", "M", "--out", "R"], "train"),
    (["train", "landmark-refiner", "--data", "M", "--out", "R"], "train"),
    (["train", "classifier", "--task", "facet", "--data", "M", "--out", "R"], "train"),
    (["train", "tree", "--data", "M", "--out", "R", "--truth-masks"], "train"),
    (["pack", "export-onnx", "P"], "pack export-onnx"),
    (["pack", "build", "--out", "P"], "pack build"),
    (["reproduce", "--out", "R"], "reproduce"),
    (["phantom", "--out", "R", "--patients", "1", "--preview"], "phantom --preview"),
    (["analyze", "S", "--out", "R", "--runtime", "torch"], "analyze --runtime torch"),
])
def test_commands_needing_the_extra_say_so_in_one_line(argv, words, tmp_path, phantom_patient):
    argv = [str(tmp_path / a) if a in ("M", "R", "P") else str(phantom_patient / "dicom") if a == "S" else a
            for a in argv]
    res = lumbargrade(*argv, cwd=tmp_path)
    assert res.returncode == 2, res.stderr[-2000:]
    lines = res.stderr.strip().splitlines()
    assert len(lines) == 1, res.stderr
    assert lines[0] == EXTRA_LINE.format(words)
    assert not (tmp_path / "R").exists()  # refused before doing anything


def test_evaluate_without_matplotlib_offers_no_figures(tmp_path):
    res = lumbargrade("evaluate", "--data", str(tmp_path), "--out", str(tmp_path / "ev"))
    assert res.returncode == 2
    assert res.stderr.strip() == EXTRA_LINE.format("evaluate") + " (or --no-figures)"


@pytest.mark.parametrize("damage", ["missing", "stale"])
def test_a_network_without_a_usable_export_is_one_line_without_torch(damage, phantom_patient, tmp_path):
    pack = tmp_path / "pack"
    shutil.copytree(default_pack_path(), pack)
    if damage == "missing":
        (pack / "segmentation" / "model.onnx").unlink()
    else:  # weights changed after the export
        with open(pack / "segmentation" / "model.safetensors", "ab") as f:
            f.write(b"\0")
    res = lumbargrade("analyze", str(phantom_patient / "dicom"), "--out", str(tmp_path / "o"), "--models", str(pack))
    assert res.returncode == 2, res.stderr[-2000:]
    lines = res.stderr.strip().splitlines()
    assert len(lines) == 1, res.stderr
    assert str(pack / "segmentation" / "model.onnx") in lines[0]
    assert ("no ONNX export" if damage == "missing" else "stale") in lines[0]
    assert 'pip install "lumbargrade[train]"' in lines[0]
    assert not (tmp_path / "o" / "report.json").exists()


def test_a_training_module_missing_deep_inside_a_command_is_one_line(monkeypatch, capsys):
    """The CLI's safety net: a ModuleNotFoundError for a module of the extra, wherever raised."""
    from lumbargrade import cli
    from lumbargrade.commands import inspect as inspect_cmd

    def run(args):
        raise ModuleNotFoundError("No module named 'torch'", name="torch")

    monkeypatch.setattr(inspect_cmd, "run", run)
    assert cli.main(["inspect", "anything"]) == 2
    assert capsys.readouterr().err.strip() == EXTRA_LINE.format("inspect")


def test_other_missing_modules_are_not_blamed_on_the_extra(monkeypatch):
    from lumbargrade import cli
    from lumbargrade.commands import inspect as inspect_cmd

    def run(args):
        raise ModuleNotFoundError("No module named 'pydicom'", name="pydicom")

    monkeypatch.setattr(inspect_cmd, "run", run)
    with pytest.raises(ModuleNotFoundError):
        cli.main(["inspect", "anything"])
