"""No build-machine paths or words about how the work was organised where users read: the
package data, the docs, the README, the benchmark results; and the code that records commands and
paths (trainers, pack build, reproduce, evaluate) writes placeholders and relative paths."""

from __future__ import annotations

import json
import re
import shlex
from pathlib import Path

import pytest

from lumbargrade.provenance import (
    command_placeholders,
    portable_argv,
    portable_command,
    portable_path,
    scrub_json,
    scrub_text,
)

pytestmark = pytest.mark.core

ROOT = Path(__file__).resolve().parents[1]
PACKAGE = ROOT / "src" / "lumbargrade"

#: An absolute path of a machine (temporary folders, home and work folders, mounts; Windows user
#: folders), and words about how the project was organised.
MACHINE_PATH = re.compile(
    r"(?:^|[^\w.~/-])/(?:tmp|work|root|home|Users|mnt|scratch|private/var|var/folders)/[\w.-]+"
    r"|\b[A-Za-z]:\\\\?(?:Users|work|tmp)\b",
)
PROCESS_WORDS = re.compile(r"[Ss]ession \d|[Ii]ssue #?\d|project target|\bworktree\b")

TEXT_SUFFIXES = {".json", ".md", ".txt", ".csv", ".html", ".yaml", ".yml", ".toml", ".cfg", ".rst"}


def _shipped_text_files() -> list[Path]:
    files = [ROOT / "README.md"]
    for root in (ROOT / "docs", ROOT / "benchmarks" / "results", PACKAGE):
        files += [p for p in root.rglob("*") if p.is_file() and p.suffix in TEXT_SUFFIXES and "__pycache__" not in p.parts]
    return files


def test_shipped_text_names_no_machine_path_and_no_process_words():
    files = _shipped_text_files()
    assert any(f.name == "pack.json" for f in files) and any(f.name == "command.txt" for f in files)
    hits = []
    for f in files:
        for n, line in enumerate(f.read_text(encoding="utf-8", errors="replace").splitlines(), 1):
            for pattern in (MACHINE_PATH, PROCESS_WORDS):
                m = pattern.search(line)
                if m:
                    hits.append(f"{f.relative_to(ROOT)}:{n}: {m.group(0).strip()}")
    assert not hits, "users read these files; use relative folders and placeholders:\n" + "\n".join(hits[:30])


def test_the_check_catches_what_it_is_for():
    for bad in ("--data /tmp/lg/c200/manifest.csv", '"model_pack": "/work/main/src"', "see /home/ana/x",
                "C:\\Users\\ana\\data", "(session 3 benchmark)", "issue #4", "| project target |"):
        assert MACHINE_PATH.search(bad) or PROCESS_WORDS.search(bad), bad
    for good in ("--data COHORT/manifest.csv", "runs/eval30", "https://doi.org/10.1007/s00330-023-09483-6",
                 "mm²/mm²", "0.31 / 0.23", "../shared/data/spider-sagittal", "/dev/null"):
        assert not (MACHINE_PATH.search(good) or PROCESS_WORDS.search(good)), good


def test_a_recorded_command_uses_placeholders():
    argv = ["lumbargrade", "train", "landmark-refiner", "--data", "/tmp/lg/c200/manifest.csv",
            "--real", "/srv/data/spider-sagittal", "--out", "/tmp/lg/runs2/landmark_refiner",
            f"--landmarks={PACKAGE / 'models' / 'default' / 'landmarks'}", "--set", "steps=10", "--seed", "0"]
    assert portable_argv(argv) == [
        "lumbargrade", "train", "landmark-refiner", "--data", "COHORT/manifest.csv", "--real", "SPIDER_DIR",
        "--out", "runs/landmark_refiner", "--landmarks=lumbargrade/models/default/landmarks",
        "--set", "steps=10", "--seed", "0"]
    assert shlex.split(portable_command(argv)) == portable_argv(argv)
    assert portable_argv(["lumbargrade", "train", "tree", "--data", "/tmp/x/cohort", "--out", "r"])[3:6] == [
        "--data", "COHORT", "--out"]
    # a file inside a run folder keeps the folder: two box rules of one project stay apart
    assert portable_argv(["lumbargrade", "train", "classifier", "--box-rule", "/tmp/x/runs/boxes_cal/box_rule.json",
                          "--segmentation", "/tmp/x/runs/seg"])[3:] == [
        "--box-rule", "runs/boxes_cal/box_rule.json", "--segmentation", "runs/seg"]
    # a repeated --data (pooled cohorts) keeps the cohorts apart: COHORT, COHORT_2
    pooled = ["lumbargrade", "train", "classifier", "--data", "/tmp/x/c200b/manifest.csv",
              "--data=/tmp/x/c200m/manifest.csv"]
    assert portable_argv(pooled)[3:] == ["--data", "COHORT/manifest.csv", "--data=COHORT_2/manifest.csv"]
    assert command_placeholders(pooled)["/tmp/x/c200m"] == "COHORT_2"


def test_recorded_paths_are_relative_or_placeholders(tmp_path):
    out = tmp_path / "eval"
    assert portable_path(out / "predictions", base=out) == "predictions"
    assert portable_path("/srv/cohorts/eval30", base=out, placeholder="COHORT") == "COHORT"
    assert portable_path("/srv/cohorts/eval30/manifest.csv", placeholder="COHORT") == "COHORT/manifest.csv"
    assert portable_path(PACKAGE / "models" / "default") == "lumbargrade/models/default"
    assert portable_path("/opt/other/site-packages/lumbargrade/models/default/tree") == "lumbargrade/models/default/tree"
    assert portable_path("/srv/x/y") == ".../y"


def test_scrub_replaces_known_paths_and_any_other_absolute_path():
    known = {"/tmp/lg/c200/manifest.csv": "COHORT/manifest.csv", "/tmp/lg/c200": "COHORT"}
    text = "sagittal images of manifest /tmp/lg/c200/manifest.csv (split train), cohort /tmp/lg/c200; /srv/a/b"
    assert scrub_text(text, known) == ("sagittal images of manifest COHORT/manifest.csv (split train), "
                                       "cohort COHORT; .../b")
    doc = scrub_json({"data": {"manifest": "/tmp/lg/c200/manifest.csv"}, "n": 3, "url": "https://x.org/a/b"}, known)
    assert doc == {"data": {"manifest": "COHORT/manifest.csv"}, "n": 3, "url": "https://x.org/a/b"}


def _fake_run(root: Path, name: str, command: str, config: dict) -> Path:
    run = root / name
    run.mkdir(parents=True)
    (run / "command.txt").write_text(command + "\n")
    (run / "config.json").write_text(json.dumps(config, indent=2) + "\n")
    (run / "metrics.json").write_text(json.dumps({"val_dice": 0.9, "coarse_model": str(PACKAGE / "models")}) + "\n")
    (run / "model.safetensors").write_bytes(b"weights /tmp/lg/not-text")
    return run


def test_pack_build_records_no_machine_path(tmp_path):
    """`pack build` (what makes every pack, a retrained one included) cleans what trainers
    recorded, also from runs made before the trainers wrote placeholders."""
    from lumbargrade.modelpack import build_pack

    cohort = tmp_path / "lg" / "c200"
    seg = _fake_run(tmp_path / "runs", "segmentation",
                    f"lumbargrade train segmentation --data {cohort}/manifest.csv --out {tmp_path}/runs/segmentation",
                    {"model": "unet_small", "data": f"{cohort}/manifest.csv"})
    lm = _fake_run(tmp_path / "runs", "landmarks",
                   f"lumbargrade train landmarks --data {cohort}/manifest.csv --real /srv/spider "
                   f"--out {tmp_path}/runs/landmarks",
                   {"model": "dsnt", "data": {"manifest": f"{cohort}/manifest.csv", "real": "/srv/spider"},
                    "trained_on": f"SPIDER; sagittal images of manifest {cohort}/manifest.csv (split train)"})
    boxes = tmp_path / "runs" / "boxes"
    boxes.mkdir(parents=True)
    (boxes / "box_rule.json").write_text("{}\n")
    (boxes / "command.txt").write_text(f"lumbargrade train boxes --data {cohort}/manifest.csv --out {boxes} "
                                       f"--segmentation {seg}\n")
    pack = build_pack(tmp_path / "pack", {"segmentation": seg, "landmarks": lm}, box_rule=boxes / "box_rule.json",
                      trained_on=f"phantom cohort {cohort}", extra={"out": str(tmp_path / "pack")})
    for f in pack.rglob("*"):
        if f.is_file() and f.suffix in (".json", ".txt"):
            text = f.read_text()
            assert str(tmp_path) not in text and "/srv/" not in text, (f.name, text[:500])
    manifest = json.loads((pack / "pack.json").read_text())
    assert manifest["components"]["landmarks"]["training_command"] == (
        "lumbargrade train landmarks --data COHORT/manifest.csv --real SPIDER_DIR --out runs/landmarks")
    assert manifest["box_rule"]["training_command"] == (
        "lumbargrade train boxes --data COHORT/manifest.csv --out runs/boxes --segmentation runs/segmentation")
    assert manifest["components"]["landmarks"]["trained_on"].endswith("manifest COHORT/manifest.csv (split train)")
    assert json.loads((pack / "landmarks" / "config.json").read_text())["data"] == {
        "manifest": "COHORT/manifest.csv", "real": "SPIDER_DIR"}
    assert (pack / "segmentation" / "model.safetensors").read_bytes() == b"weights /tmp/lg/not-text"


def test_pack_build_from_a_pack_replaces_one_component_and_keeps_the_rest(tmp_path):
    """`pack build --from PACK --classifier-foramen RUN`: the retrained component from its run
    (records cleaned), every other component, the box rule, box source, refiner weight and name
    from the base pack, byte for byte; the base itself is never the output."""
    import hashlib
    import shutil

    from lumbargrade.cli import main
    from lumbargrade.modelpack import default_pack_path, load_pack

    base = default_pack_path()
    run = tmp_path / "runs" / "foramen"
    shutil.copytree(base / "classifier_foramen", run, ignore=shutil.ignore_patterns("*.onnx"))
    cohort = tmp_path / "lg" / "c200"
    # as the trainer records them: the command with placeholders, the config with the real paths
    (run / "command.txt").write_text("lumbargrade train classifier --task foramen --data COHORT/manifest.csv "
                                     "--data COHORT_2/manifest.csv --out runs/foramen --set synth_copies=2\n")
    cfg = json.loads((run / "config.json").read_text())
    pooled = [f"{cohort}/manifest.csv", f"{cohort}-mixed/manifest.csv"]  # two cohorts: COHORT, COHORT_2
    (run / "config.json").write_text(json.dumps(dict(cfg, data=pooled)))
    out = tmp_path / "pack"
    assert main(["pack", "build", "--out", str(out), "--from", str(base), "--classifier-foramen", str(run),
                 "--version", "9.9.9", "--no-onnx"]) == 0
    old, new = load_pack(base).manifest, load_pack(out).manifest
    assert list(new["components"]) == list(old["components"])
    assert (new["name"], new["version"], new["box_source"], new["trained_on"]) == (
        old["name"], "9.9.9", old["box_source"], old["trained_on"])
    for comp, entry in old["components"].items():
        if comp != "classifier_foramen":
            assert new["components"][comp] == entry, comp
    entry = new["components"]["classifier_foramen"]
    assert entry["training_command"] == ("lumbargrade train classifier --task foramen --data COHORT/manifest.csv "
                                         "--data COHORT_2/manifest.csv --out runs/foramen --set synth_copies=2")
    assert json.loads((out / "classifier_foramen" / "config.json").read_text())["data"] == [
        "COHORT/manifest.csv", "COHORT_2/manifest.csv"]
    assert (out / "box_rule.json").read_bytes() == (base / "box_rule.json").read_bytes()

    def digest(f):
        return hashlib.sha256(f.read_bytes()).hexdigest()

    assert digest(out / "segmentation" / "model.safetensors") == digest(base / "segmentation" / "model.safetensors")
    # the kept components' records are left as they were (".../manifest.csv" stays: it names no path)
    for f in (base / "classifier_central").rglob("*.json"):
        assert digest(out / "classifier_central" / f.relative_to(base / "classifier_central")) == digest(f), f.name
    assert not (out / "classifier_foramen" / "model.onnx").exists()
    assert load_pack(out).fingerprint != load_pack(base).fingerprint
    # the base pack is never overwritten
    assert main(["pack", "build", "--out", str(base), "--from", str(base), "--overwrite", "--no-onnx"]) == 2
    assert load_pack(base).manifest == old


def test_train_records_its_command_with_placeholders(tmp_path, monkeypatch):
    import argparse
    import sys

    from lumbargrade.commands.train import _record_command

    out = tmp_path / "runs" / "tree"
    out.mkdir(parents=True)
    monkeypatch.setattr(sys, "argv", ["/usr/bin/lumbargrade", "train", "tree", "--data", str(tmp_path / "c" / "manifest.csv"),
                                      "--out", str(out), "--segmentation", str(tmp_path / "runs" / "segmentation")])
    _record_command(argparse.Namespace(out=str(out), task="tree", data="x"))
    assert (out / "command.txt").read_text() == (
        "lumbargrade train tree --data COHORT/manifest.csv --out runs/tree --segmentation runs/segmentation\n")
